//! Named network namespaces, compatible with `ip netns`.
//!
//! A named namespace is an nsfs bind mount at `/var/run/netns/NAME`, made the way
//! iproute2 makes it, so `ip netns exec`, `ip -n` and `ip netns del` work on pods
//! podnet created and podnet can open namespaces a person created.
//!
//! Why a scratch thread: network namespaces are per thread. Creating one
//! (`unshare`) or entering one (`setns`) on a thread of the daemon would move that
//! thread for good, and every socket it opened afterwards would land in the pod.
//! [`NetNs::create`] and [`NetNs::run`] therefore do that on a short-lived thread
//! and the caller never changes namespace. [`NetNs::enter_current_thread`] is the
//! one exception, for a CLI that execs right after.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Where named namespaces live, as with `ip netns`.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Longest namespace name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// `f_type` of an nsfs file (linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Serialises the "make /var/run/netns a shared mount point" step, so two
/// threads creating namespaces at once don't stack two bind mounts; true
/// once it is done.
static RUN_DIR_SETUP: Mutex<bool> = Mutex::new(false);

/// Errors of namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name can't be a file name under /var/run/netns.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A namespace (or a stale file) of that name exists.
    #[error("network namespace {name:?} already exists at {}; pick another name or remove it (`ip netns del {name}`)", path.display())]
    AlreadyExists { name: String, path: PathBuf },
    /// Nothing at the path.
    #[error("network namespace {} does not exist; check the name (`ip netns list`) or the pid", path.display())]
    NotFound { path: PathBuf },
    /// The path exists but is not a namespace file (a plain file left behind by a
    /// creation that failed half-way, or a wrong path).
    #[error("{} is not a network namespace file (not on nsfs); if it is a leftover, remove it with `ip netns del`", path.display())]
    NotANamespace { path: PathBuf },
    /// Creating /var/run/netns or making it a shared mount point failed.
    #[error("preparing {NETNS_RUN_DIR} failed at {stage}: {source}; this needs root (CAP_SYS_ADMIN) and a writable /var/run")]
    RunDir {
        stage: &'static str,
        source: io::Error,
    },
    /// Creating the placeholder file for the bind mount failed.
    #[error("creating {} failed: {source}", path.display())]
    CreateFile { path: PathBuf, source: io::Error },
    /// `unshare(CLONE_NEWNET)` failed on the scratch thread.
    #[error("unshare(CLONE_NEWNET) failed: {source}; creating a network namespace needs root (CAP_SYS_ADMIN)")]
    Unshare { source: io::Error },
    /// Bind-mounting the new namespace onto its file failed.
    #[error("bind-mounting /proc/thread-self/ns/net onto {} failed: {source}; this needs root (CAP_SYS_ADMIN)", path.display())]
    BindMount { path: PathBuf, source: io::Error },
    /// Opening the namespace file failed for another reason than absence.
    #[error("opening network namespace {} failed: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    /// `setns(CLONE_NEWNET)` failed.
    #[error("setns(CLONE_NEWNET) into {} failed: {source}; entering a namespace needs root (CAP_SYS_ADMIN)", path.display())]
    Setns { path: PathBuf, source: io::Error },
    /// The scratch thread could not be started.
    #[error("spawning a thread to work inside network namespace {} failed: {source}", path.display())]
    Thread { path: PathBuf, source: io::Error },
    /// Removing a namespace failed.
    #[error("removing network namespace {} failed at {stage}: {source}; is it still in use, and are you root?", path.display())]
    Remove {
        stage: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Listing /var/run/netns failed.
    #[error("listing {NETNS_RUN_DIR} failed: {source}")]
    List { source: io::Error },
}

/// A network namespace, held open by a file descriptor (the namespace lives at
/// least as long as this value, even if its name is removed meanwhile).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Creates the named namespace `/var/run/netns/NAME`, like `ip netns add`.
    ///
    /// Fails with [`NetnsError::AlreadyExists`] when the name is taken.
    pub fn create(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        prepare_run_dir()?;
        let path = path_of(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
        {
            Ok(placeholder) => drop(placeholder),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::AlreadyExists {
                    name: name.to_owned(),
                    path,
                })
            }
            Err(source) => return Err(NetnsError::CreateFile { path, source }),
        }
        let made = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("podnet-netns-add".into())
                .spawn_scoped(s, || new_namespace_onto(&path))
                .map_err(|source| NetnsError::Thread {
                    path: path.clone(),
                    source,
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        if let Err(e) = made {
            // Leave no half-made name behind; a failure here changes nothing for
            // the caller, who gets the original error.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Self::open_inner(name.to_owned(), path)
    }

    /// Opens the existing named namespace `/var/run/netns/NAME`.
    pub fn open(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        Self::open_inner(name.to_owned(), path_of(name))
    }

    /// Opens any network namespace file, e.g. `/proc/PID/ns/net` or a CNI
    /// `CNI_NETNS` path. Its [`name`](Self::name) is the path as given.
    pub fn open_path(path: &Path) -> Result<NetNs, NetnsError> {
        Self::open_inner(path.display().to_string(), path.to_owned())
    }

    fn open_inner(name: String, path: PathBuf) -> Result<NetNs, NetnsError> {
        let file = match OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetnsError::NotFound { path })
            }
            Err(source) => return Err(NetnsError::Open { path, source }),
        };
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        #[allow(clippy::unnecessary_cast)] // the field's width differs between targets
        if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(NetnsError::NotANamespace { path });
        }
        Ok(NetNs { name, path, file })
    }

    /// The name (for a namespace opened by path: the path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace descriptor (for `setns`, or `IFLA_NET_NS_FD`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on a fresh thread that joined this namespace and returns its
    /// value. The calling thread never changes namespace. Sockets, TUN devices
    /// and netlink handles `f` opens belong to this namespace and keep working
    /// from any thread afterwards. A panic in `f` is resumed on the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("podnet-netns-run".into())
                .spawn_scoped(s, || {
                    self.enter_current_thread()?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    path: self.path.clone(),
                    source,
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves the *calling* thread into this namespace, for a CLI that execs a
    /// command right after (like `ip netns exec`). Daemon code uses
    /// [`run`](Self::run) instead.
    pub fn enter_current_thread(&self) -> Result<(), NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Setns {
            path: self.path.clone(),
            source: e.into(),
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Removes the named namespace, like `ip netns del`: detaches the bind mount and
/// unlinks the file. The namespace itself lives on while something (a process, an
/// open [`NetNs`], a socket) still holds it. `Ok` if it does not exist.
pub fn remove(name: &str) -> Result<(), NetnsError> {
    validate_name(name)?;
    let path = path_of(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a leftover plain file); still unlink it.
        Ok(()) | Err(Errno::ENOENT) | Err(Errno::EINVAL) => {}
        Err(e) => {
            return Err(NetnsError::Remove {
                stage: "umount2(MNT_DETACH)",
                path,
                source: e.into(),
            })
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            stage: "unlink",
            path,
            source,
        }),
    }
}

/// Names of the namespaces under /var/run/netns, sorted (empty if the directory
/// does not exist).
pub fn list() -> Result<Vec<String>, NetnsError> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetnsError::List { source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NetnsError::List { source })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn validate_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 64 bytes"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name == "." || name == ".." {
        "it is '.' or '..'"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Makes /var/run/netns exist and be a shared mount point, as iproute2 does, so
/// namespace mounts made here propagate into mount namespaces created later (a
/// pod process's `unshare -m`, `ip netns exec`) and `ip netns del` elsewhere
/// reaches them.
pub(crate) fn prepare_run_dir() -> Result<(), NetnsError> {
    let mut prepared = RUN_DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    // Once per process while it stays a mount point: MS_SHARED | MS_REC
    // walks every namespace pinned below it (one mount per pod), which made
    // each pod's creation cost time in proportion to the pods.
    if *prepared && super::mount::is_mount_point(Path::new(NETNS_RUN_DIR)) {
        return Ok(());
    }
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|source| NetnsError::RunDir {
        stage: "mkdir",
        source,
    })?;
    let mut bound = false;
    loop {
        match mount(
            Some(""),
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {
                *prepared = true;
                return Ok(());
            }
            // EINVAL: not a mount point yet; make it one by binding it onto itself.
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| NetnsError::RunDir {
                    stage: "mount(MS_BIND) onto itself",
                    source: e.into(),
                })?;
                bound = true;
            }
            Err(e) => {
                return Err(NetnsError::RunDir {
                    stage: "mount(MS_SHARED)",
                    source: e.into(),
                })
            }
        }
    }
}

/// Runs on a scratch thread that exits right after: gives the thread a new
/// network namespace and pins it at `path` with a bind mount.
fn new_namespace_onto(path: &Path) -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Unshare { source: e.into() })?;
    // /proc/self would name the thread group leader's namespace, not this thread's.
    mount(
        Some("/proc/thread-self/ns/net"),
        path,
        Some("none"),
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetnsError::BindMount {
        path: path.to_owned(),
        source: e.into(),
    })
}
