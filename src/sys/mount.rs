//! A pod's mount and UTS namespaces, and the mounts made inside them.
//!
//! Each pod gets one mount namespace and one UTS namespace, made once (not
//! per container start) and kept like its network namespace: bind mounts
//! of `/proc/thread-self/ns/{mnt,uts}` at `POD_NS_DIR/NAME/{mnt,uts}`, so
//! they outlive the daemon and a restart finds them.
//!
//! Design choices:
//! * The pod's mount namespace is a copy of the host's with every mount
//!   made a slave (`MS_REC | MS_SLAVE` on `/`): the host's filesystem
//!   stays visible (pods run host commands) and host mounts made later
//!   still reach it, but nothing mounted inside the pod propagates back.
//!   Its mounts (volumes, `/etc/hosts`) go away with the namespace.
//! * It is copied from a template namespace made once per process: the
//!   host's, made slave, without the pinned namespaces. A copy costs time
//!   in proportion to the mounts copied, and the host holds three pins per
//!   pod (network, mount, UTS): copied from the host's, every new pod
//!   would copy (then detach) every other pod's pins.
//! * [`POD_NS_DIR`] is a private mount (bound onto itself once, as
//!   iproute2 does for `/var/run/netns`, but private): the kernel refuses
//!   to bind a mount namespace file onto a shared mount. Inside a pod's
//!   namespace the copies of that directory and of `/var/run/netns` are
//!   detached, so a pod's namespace never pins other pods' namespaces nor
//!   receives the pins of pods made later.
//! * A mount namespace file is bound from the caller's (older) namespace:
//!   the kernel refuses a bind from inside the namespace itself (a loop).
//! * Like [`super::netns`], namespaces are entered on scratch threads
//!   ([`PodNs::run`]); the daemon's own threads never move. Joining a
//!   mount namespace needs a thread whose filesystem attributes are its
//!   own (`unshare(CLONE_FS)` first).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Where pods' mount and UTS namespaces are pinned.
pub const POD_NS_DIR: &str = "/run/podnet/ns";

static NS_DIR_SETUP: Mutex<()> = Mutex::new(());

/// The template pods' mount namespaces are copied from (see the module
/// doc), made on first use; `None` until then, or when it could not be
/// made (pods then copy the caller's namespace, as before).
static TEMPLATE: Mutex<Option<File>> = Mutex::new(None);

/// Errors of mount and UTS namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Preparing [`POD_NS_DIR`] (a private mount point) failed.
    #[error("preparing {POD_NS_DIR} failed at {stage}: {source}; this needs root (CAP_SYS_ADMIN) and a writable /run")]
    NsDir {
        stage: &'static str,
        source: io::Error,
    },
    /// A namespace step (unshare, setns, sethostname, bind of the ns file) failed.
    #[error("{stage} for the pod namespaces at {} failed: {source}; this needs root (CAP_SYS_ADMIN)", dir.display())]
    Namespace {
        stage: &'static str,
        dir: PathBuf,
        source: io::Error,
    },
    /// The pod's namespaces are not there.
    #[error("the pod's mount/UTS namespaces at {} do not exist (made when its network is set up)", dir.display())]
    NotFound { dir: PathBuf },
    /// A mount inside the pod failed.
    #[error("{what} {} on {} in the pod failed: {source}", source_path.display(), target.display())]
    Mount {
        what: &'static str,
        source_path: PathBuf,
        target: PathBuf,
        source: io::Error,
    },
    /// The scratch thread could not be started.
    #[error("spawning a thread to work inside the pod's namespaces failed: {0}")]
    Thread(io::Error),
}

fn ns_err<'a>(stage: &'static str, dir: &'a Path) -> impl FnOnce(Errno) -> MountError + 'a {
    move |e| MountError::Namespace {
        stage,
        dir: dir.to_owned(),
        source: e.into(),
    }
}

/// A pod's mount and UTS namespaces, by the directory they are pinned in.
/// No file is held open: the daemon keeps one per pod, and every process
/// it spawns closes each of its descriptors at exec, so each one held per
/// pod made spawning cost time in proportion to the pods.
#[derive(Debug)]
pub struct PodNs {
    dir: PathBuf,
}

/// The directory of a pod's pinned namespaces.
pub fn pod_ns_dir(name: &str) -> PathBuf {
    Path::new(POD_NS_DIR).join(name)
}

impl PodNs {
    /// Makes the mount and UTS namespaces of the pod `name` (under
    /// [`POD_NS_DIR`]), with `hostname`. A leftover of the same name is
    /// removed first.
    pub fn create(name: &str, hostname: &str) -> Result<PodNs, MountError> {
        prepare_ns_dir()?;
        let dir = pod_ns_dir(name);
        remove(name);
        fs::create_dir_all(&dir).map_err(|source| MountError::Namespace {
            stage: "mkdir",
            dir: dir.clone(),
            source,
        })?;
        for f in ["mnt", "uts"] {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(f))
                .map_err(|source| MountError::Namespace {
                    stage: "creating the namespace file",
                    dir: dir.clone(),
                    source,
                })?;
        }
        let host = hostname.to_owned();
        let d = dir.clone();
        let template = template();
        let made = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("podnet-mntns-add".into())
                .spawn_scoped(s, move || new_namespaces(&d, &host, template.as_ref()))
                .map_err(MountError::Thread)?
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        let (mnt, uts): (File, File) = match made {
            Ok(files) => files,
            Err(e) => {
                remove(name);
                return Err(e);
            }
        };
        // Bound from here, the older namespace (see the module doc).
        for (file, f) in [(&mnt, "mnt"), (&uts, "uts")] {
            let src = format!("/proc/self/fd/{}", file.as_raw_fd());
            if let Err(e) = mount(
                Some(src.as_str()),
                &dir.join(f),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ) {
                remove(name);
                return Err(ns_err("binding the namespace file", &dir)(e));
            }
        }
        Ok(PodNs { dir })
    }

    /// Opens the namespaces of the pod `name`.
    pub fn open(name: &str) -> Result<PodNs, MountError> {
        Self::open_dir(&pod_ns_dir(name))
    }

    /// Opens the namespaces pinned in `dir` (checks they are there).
    pub fn open_dir(dir: &Path) -> Result<PodNs, MountError> {
        let pod = PodNs {
            dir: dir.to_owned(),
        };
        pod.files()?;
        Ok(pod)
    }

    /// Both namespace files, opened from their pins.
    fn files(&self) -> Result<(File, File), MountError> {
        let dir = &self.dir;
        let open = |f: &str| -> Result<File, MountError> {
            let file = File::open(dir.join(f)).map_err(|_| MountError::NotFound {
                dir: dir.to_owned(),
            })?;
            // An unbound placeholder (a creation cut short) is no namespace.
            let fs = nix::sys::statfs::fstatfs(&file).map_err(ns_err("fstatfs", dir))?;
            #[allow(clippy::unnecessary_cast)] // the field's width differs between targets
            if fs.filesystem_type().0 as i64 != 0x6e73_6673 {
                return Err(MountError::NotFound {
                    dir: dir.to_owned(),
                });
            }
            Ok(file)
        };
        Ok((open("mnt")?, open("uts")?))
    }

    /// The directory the namespaces are pinned in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the *calling* thread into both namespaces (for a scratch
    /// thread, or a CLI that execs right after). The thread's filesystem
    /// attributes (cwd, root) become its own; its cwd is the pod's `/`.
    pub fn enter_current_thread(&self) -> Result<(), MountError> {
        // Both opened first: inside the pod's mount namespace the pins are
        // not visible.
        let (mnt, uts) = self.files()?;
        unshare(CloneFlags::CLONE_FS).map_err(ns_err("unshare(CLONE_FS)", &self.dir))?;
        setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(ns_err("setns(CLONE_NEWNS)", &self.dir))?;
        setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)
            .map_err(ns_err("setns(CLONE_NEWUTS)", &self.dir))?;
        Ok(())
    }

    /// Runs `f` on a fresh thread inside the pod's mount and UTS
    /// namespaces (the calling thread never moves).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, MountError> {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("podnet-mntns-run".into())
                .spawn_scoped(s, || {
                    self.enter_current_thread()?;
                    Ok(f())
                })
                .map_err(MountError::Thread)?
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// Removes the pinned namespaces of the pod `name` (the namespaces live on
/// while a process is in them). Nothing to do if they are not there.
pub fn remove(name: &str) {
    remove_dir(&pod_ns_dir(name));
}

fn remove_dir(dir: &Path) {
    for f in ["mnt", "uts"] {
        let _ = umount2(&dir.join(f), MntFlags::MNT_DETACH);
        let _ = fs::remove_file(dir.join(f));
    }
    let _ = fs::remove_dir(dir);
}

/// The prefix of a retired pin directory's name (see [`retire`]).
const RETIRED_PREFIX: &str = ".retired.";

/// Frees the name of the pod `name`'s pins at once, leaving their removal
/// (an unmount each, which waits out an RCU grace period) for later:
/// renames their directory and returns a handle that removes it. A pod of
/// the same name can be made in between. `None` if there is nothing.
pub fn retire(name: &str) -> Option<RetiredPins> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = pod_ns_dir(name);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let to =
        Path::new(POD_NS_DIR).join(format!("{RETIRED_PREFIX}{name}.{}.{n}", std::process::id()));
    match fs::rename(&dir, &to) {
        Ok(()) => Some(RetiredPins(to)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        // Removed here and now, as before, rather than left behind.
        Err(_) => {
            remove_dir(&dir);
            None
        }
    }
}

/// A pod's pins, renamed out of the way by [`retire`].
#[derive(Debug)]
pub struct RetiredPins(PathBuf);

impl RetiredPins {
    /// Unmounts and removes them.
    pub fn remove(self) {
        remove_dir(&self.0);
    }
}

/// Removes the retired pins a stopped daemon left (only garbage: their
/// pods are gone, whichever daemon made them).
pub fn remove_retired() {
    let Ok(entries) = fs::read_dir(POD_NS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(RETIRED_PREFIX))
        {
            remove_dir(&e.path());
        }
    }
}

/// The pods whose namespaces are pinned under [`POD_NS_DIR`].
pub fn list() -> Vec<String> {
    fs::read_dir(POD_NS_DIR)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with(RETIRED_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// A copy of the template namespace (made now if need be); `None` when
/// it cannot be made.
fn template() -> Option<File> {
    let mut t = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
    if t.is_none() {
        // Both pin directories must be mount points before the template
        // copies the host's tree, or a later bind onto them would
        // propagate into it (and its pins after it).
        let _ = super::netns::prepare_run_dir();
        let made = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("podnet-mntns-template".into())
                .spawn_scoped(s, || -> Result<File, MountError> {
                    let dir = Path::new(POD_NS_DIR);
                    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
                        .map_err(ns_err("unshare(CLONE_NEWNS) for the template", dir))?;
                    slave_without_pins(dir)?;
                    File::open("/proc/thread-self/ns/mnt").map_err(|source| MountError::Namespace {
                        stage: "opening the template's /proc/thread-self/ns/mnt",
                        dir: dir.to_owned(),
                        source,
                    })
                })
                .map_err(MountError::Thread)
                .and_then(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        match made {
            Ok(f) => *t = Some(f),
            Err(e) => tracing::warn!(
                "no template mount namespace ({e}); each pod's is copied from the host's, at a cost growing with the pods"
            ),
        }
    }
    t.as_ref().and_then(|f| f.try_clone().ok())
}

/// In a fresh mount namespace: every mount a slave of the host's, and the
/// copies of the pinned namespaces detached. A pod's namespace must not pin
/// other pods' namespaces; and `/var/run/netns` is a shared mount (as
/// iproute2 makes it), so as a slave the copy would also receive every
/// network namespace pinned or removed later (one more mount per pod in
/// every pod's namespace).
fn slave_without_pins(dir: &Path) -> Result<(), MountError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(ns_err("mount(/, MS_REC | MS_SLAVE)", dir))?;
    let _ = umount2(POD_NS_DIR, MntFlags::MNT_DETACH);
    let _ = umount2(super::netns::NETNS_RUN_DIR, MntFlags::MNT_DETACH);
    Ok(())
}

/// Runs on a scratch thread that exits right after: new mount and UTS
/// namespaces for it, copied from `template` when given, the mounts made
/// slaves, the copy of the pinned namespaces detached, the host name set;
/// returns both namespace files.
fn new_namespaces(
    dir: &Path,
    hostname: &str,
    template: Option<&File>,
) -> Result<(File, File), MountError> {
    unshare(CloneFlags::CLONE_FS).map_err(ns_err("unshare(CLONE_FS)", dir))?;
    if let Some(t) = template {
        setns(t.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(ns_err("setns(CLONE_NEWNS) into the template", dir))?;
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(ns_err("unshare(CLONE_NEWNS | CLONE_NEWUTS)", dir))?;
    // Already so when copied from the template; cheap then.
    slave_without_pins(dir)?;
    // SAFETY: a pointer and length of a live byte slice, only read.
    let rc = unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) };
    if rc != 0 {
        return Err(MountError::Namespace {
            stage: "sethostname",
            dir: dir.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    let open = |p: &str| {
        File::open(p).map_err(|source| MountError::Namespace {
            stage: "opening /proc/thread-self/ns",
            dir: dir.to_owned(),
            source,
        })
    };
    Ok((
        open("/proc/thread-self/ns/mnt")?,
        open("/proc/thread-self/ns/uts")?,
    ))
}

/// Makes [`POD_NS_DIR`] exist and be a private mount point.
fn prepare_ns_dir() -> Result<(), MountError> {
    let _serialised = NS_DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    fs::create_dir_all(POD_NS_DIR).map_err(|source| MountError::NsDir {
        stage: "mkdir",
        source,
    })?;
    let err = |stage| {
        move |e: Errno| MountError::NsDir {
            stage,
            source: e.into(),
        }
    };
    if !is_mount_point(Path::new(POD_NS_DIR)) {
        mount(
            Some(POD_NS_DIR),
            POD_NS_DIR,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err("mount(MS_BIND) onto itself"))?;
    }
    mount(
        None::<&str>,
        POD_NS_DIR,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("mount(MS_PRIVATE)"))
}

/// Whether `path` is a mount point in the calling thread's mount
/// namespace: the kernel's `STATX_ATTR_MOUNT_ROOT` (Linux 5.8+), else
/// `/proc/thread-self/mountinfo` (field 5; escapes decoded), whose size
/// grows with every pod's pinned namespaces.
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statx` only writes into the zeroed buffer it is given; the
    // path is a NUL-terminated string that outlives the call.
    let (rc, stx) = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            0,
            &mut stx,
        );
        (rc, stx)
    };
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if rc != 0 {
        return false;
    }
    if stx.stx_attributes_mask & root != 0 {
        return stx.stx_attributes & root != 0;
    }
    is_mount_point_by_mountinfo(path)
}

fn is_mount_point_by_mountinfo(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/thread-self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

/// Whether `target` is a mount point (in the calling thread's mount
/// namespace) whose source path ends with `suffix` (mountinfo's root
/// field: the bound path within its filesystem), so a bind podnet made is
/// told from one the host had there.
pub fn mounted_from(target: &Path, suffix: &str) -> bool {
    let Ok(info) = fs::read_to_string("/proc/thread-self/mountinfo") else {
        return false;
    };
    let want = target.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4
            && unescape_mountinfo(f[4]) == want
            && unescape_mountinfo(f[3]).ends_with(suffix)
    })
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bind-mounts `source` onto `target` (in the calling thread's mount
/// namespace), read-only if `read_only` (a bind then a read-only
/// remount, as the kernel needs).
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    let err = |what| {
        move |e: Errno| MountError::Mount {
            what,
            source_path: source.to_owned(),
            target: target.to_owned(),
            source: e.into(),
        }
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err("bind mount of"))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(err("read-only remount of the bind of"))?;
    }
    Ok(())
}

/// Detaches the mount at `target` (`umount2(MNT_DETACH)`), if any.
pub fn detach(target: &Path) {
    let _ = umount2(target, MntFlags::MNT_DETACH);
}

/// Mounts a tmpfs on `target` (mode 0755 or `mode`), of at most `size`
/// bytes if given.
pub fn tmpfs(target: &Path, size: Option<u64>, mode: u32) -> Result<(), MountError> {
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| MountError::Mount {
        what: "tmpfs",
        source_path: PathBuf::from("tmpfs"),
        target: target.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_missing_path_is_not() {
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/nonexistent/podnet")));
        assert!(!is_mount_point(Path::new("/proc/self")));
        assert!(is_mount_point_by_mountinfo(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
    }
}
