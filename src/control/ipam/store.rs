//! Where the IPAM state lives: the [`IpamStore`] trait, an in-memory store for
//! tests and the durable on-disk [`FileStore`].
//!
//! # On-disk layout (`<state_dir>/ipam/`)
//!
//! * `lock`: held with an exclusive advisory lock while a store is open, so a
//!   second daemon on the same directory fails instead of handing out the same
//!   addresses twice.
//! * `state.json`: a snapshot. First line
//!   `podnet-ipam-state <format> <generation> <body length> <FNV-1a 64 of body>`,
//!   then the JSON body. Replaced only by write-temp, fsync, rename, fsync-dir.
//! * `changes.log`: the changes since that snapshot. Header line
//!   `podnet-ipam-log <format> <generation>`, followed by ` periodic` when
//!   the log was written under [`SyncPolicy::Periodic`], then records
//!   `[u32 LE length][u32 LE !length][u64 LE FNV-1a 64 of payload][JSON change]`,
//!   then zeros to the end.
//!
//! Why a log: rewriting the snapshot costs two fsyncs and a rename per
//! allocation; appending one record to a log whose blocks were written when it
//! was created costs one `fdatasync` that touches no metadata, several times
//! cheaper on ext4. The log is preallocated with real zeros (not a sparse
//! `set_len`) for that reason. When it is full, or on every open, the state is
//! compacted into a new snapshot of the next generation and a fresh log.
//!
//! Crash rules: an operation returns only after its record is written to the
//! log and, under [`SyncPolicy::Always`], synced to the disk; under
//! [`SyncPolicy::Periodic`] (the default) it is synced within 50 ms. The
//! object store's [`crate::control::store::sync`] says exactly what each
//! policy guarantees. A log whose generation is older than the snapshot's is
//! a leftover of an interrupted compaction and is ignored (the snapshot
//! already holds it). A damaged record with nothing but zeros after it is the
//! one write that was cut short, never acknowledged, and is dropped (the
//! length is stored twice so a damaged length is told from a cut write). In
//! a log written under [`SyncPolicy::Periodic`], a damaged record with data
//! after it may be a power cut in the unsynced tail: it and everything after
//! it are dropped, with a warning. Anything else that does not parse or check
//! out is reported as [`StoreError::Corrupt`] naming the file, and the files
//! are left untouched for the operator. Snapshots and fresh logs are always
//! synced, whatever the policy.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::state::{IpamChange, IpamState};
use crate::control::store::sync::LogSync;
pub use crate::control::store::SyncPolicy;

/// The default state directory of the daemon.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/podnet";

const FORMAT: u32 = 1;
const STATE_MAGIC: &str = "podnet-ipam-state";
const LOG_MAGIC: &str = "podnet-ipam-log";
/// Size of a fresh log; about 4000 allocations fit before a compaction.
const LOG_CAPACITY: u64 = 1 << 20;
const RECORD_HEADER: usize = 16;
/// A change larger than this (a garbage collection of many pods) is written as
/// a compaction instead; the bound lets a damaged last record be told from
/// damage in the middle of the log.
const MAX_RECORD: usize = 4096 - RECORD_HEADER;

/// Why the IPAM state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system call failed.
    #[error("could not {op} {}: {source}; check the permissions and free space of the state directory", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error of the system call.
        #[source]
        source: io::Error,
    },
    /// Another process holds the state directory.
    #[error("{} is locked by another process; is another podnetd using this state directory?", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A state file is damaged; it was left untouched.
    #[error("IPAM state file {} is corrupt: {reason}; it was left untouched: restore it from a backup, or move the ipam directory away to start empty (every address in use is then forgotten)", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A state file was written by a newer (or unknown) podnet.
    #[error("IPAM state file {} has format {found}, this podnet reads format {FORMAT}; run the podnet version that wrote it", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format number found.
        found: String,
    },
}

/// Where [`super::Ipam`] keeps its state. A store must make each committed change
/// survive a crash of the process before `commit` returns (and a power loss,
/// as its sync policy says).
pub trait IpamStore: Send {
    /// The state as of the last committed change, or `None` if nothing was ever
    /// committed. Damage must be an error, never an empty state.
    fn load(&mut self) -> Result<Option<IpamState>, StoreError>;

    /// Durably records `change`. `state` is the state all earlier commits led to
    /// (`change` is not applied to it yet); a store may write that whole instead
    /// of, or besides, the change. After an error the change counts as not made.
    fn commit(&mut self, state: &IpamState, change: &IpamChange) -> Result<(), StoreError>;

    /// What [`IpamStore::load`] had to drop from damaged files, one message
    /// each naming the file, for the operator; taken once.
    fn take_repairs(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// A store in memory, for tests. Clones share the same state, so a test can drop
/// an [`super::Ipam`] and open a new one on a clone to simulate a restart.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<Option<IpamState>>>,
}

impl IpamStore for MemoryStore {
    fn load(&mut self) -> Result<Option<IpamState>, StoreError> {
        Ok(self.state.lock().clone())
    }

    fn commit(&mut self, state: &IpamState, change: &IpamChange) -> Result<(), StoreError> {
        let mut next = state.clone();
        next.apply(change).map_err(|e| StoreError::Corrupt {
            path: PathBuf::from("<memory>"),
            reason: e.to_string(),
        })?;
        *self.state.lock() = Some(next);
        Ok(())
    }
}

/// The durable on-disk store (layout and crash rules in the module docs).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Held for the lifetime of the store; the OS drops the lock if we die.
    _lock: File,
    generation: u64,
    /// `None` until the first compaction, and after a failed write (the next
    /// commit then starts a new generation rather than trust a half-written log).
    log: Option<LogWriter>,
    log_capacity: u64,
    sync: LogSync,
    /// What loading dropped from a damaged log.
    repairs: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct LogWriter {
    file: Arc<File>,
    offset: u64,
}

impl FileStore {
    /// Opens (creating if needed) `<state_dir>/ipam` and locks it, with the
    /// default [`SyncPolicy`].
    pub fn open(state_dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        Self::open_with_sync(state_dir, SyncPolicy::default())
    }

    /// [`FileStore::open`] writing under `sync`.
    pub fn open_with_sync(
        state_dir: impl AsRef<Path>,
        sync: SyncPolicy,
    ) -> Result<FileStore, StoreError> {
        let dir = state_dir.as_ref().join("ipam");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    op: "lock",
                    path: lock_path,
                    source: e,
                })
            }
        }
        let log_path = dir.join("changes.log");
        let sync = LogSync::new(sync, &log_path.display().to_string())
            .map_err(io_err("start the sync thread for", &log_path))?;
        Ok(FileStore {
            dir,
            _lock: lock,
            generation: 0,
            log: None,
            log_capacity: LOG_CAPACITY,
            repairs: Mutex::default(),
            sync,
        })
    }

    /// The policy the store writes under.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync.policy()
    }

    /// A smaller log, so tests reach compaction quickly.
    #[cfg(test)]
    pub(crate) fn with_log_capacity(mut self, bytes: u64) -> FileStore {
        self.log_capacity = bytes.max(2 * (RECORD_HEADER + MAX_RECORD) as u64);
        self
    }

    /// The snapshot file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The change log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("changes.log")
    }

    /// Writes `state` as the snapshot of the next generation and starts an empty
    /// log for it.
    fn compact(&mut self, state: &IpamState) -> Result<(), StoreError> {
        self.log = None;
        let generation = self.generation + 1;
        let body = serde_json::to_vec(state).map_err(|e| StoreError::Io {
            op: "serialize",
            path: self.state_path(),
            source: io::Error::other(e),
        })?;
        let mut snapshot = format!(
            "{STATE_MAGIC} {FORMAT} {generation} {} {:016x}\n",
            body.len(),
            fnv1a64(&body)
        )
        .into_bytes();
        snapshot.extend_from_slice(&body);
        // The snapshot must be durable before a log of its generation can be:
        // a newer log beside an older snapshot reads as corruption.
        self.replace(&self.state_path(), &snapshot)?;

        let mut log = match self.sync.policy() {
            SyncPolicy::Always => format!("{LOG_MAGIC} {FORMAT} {generation}\n"),
            periodic => format!("{LOG_MAGIC} {FORMAT} {generation} {periodic}\n"),
        }
        .into_bytes();
        let header = log.len() as u64;
        log.resize(self.log_capacity as usize, 0);
        let file = Arc::new(self.replace(&self.log_path(), &log)?);
        self.generation = generation;
        self.sync.replaced(file.clone());
        self.log = Some(LogWriter {
            file,
            offset: header,
        });
        Ok(())
    }

    /// Atomically replaces `path` with `contents`: temp file, fsync, rename,
    /// fsync of the directory. Returns the new file, open for writing.
    fn replace(&self, path: &Path, contents: &[u8]) -> Result<File, StoreError> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(contents).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.dir))?;
        Ok(file)
    }

    fn append(&mut self, record: &[u8]) -> Result<bool, StoreError> {
        let path = self.log_path();
        if self.sync.failed() {
            // What the log holds may not be on the disk: rewrite it all.
            self.log = None;
        }
        let Some(log) = self.log.as_mut() else {
            return Ok(false);
        };
        if log.offset + record.len() as u64 > self.log_capacity {
            return Ok(false);
        }
        match self.sync.append(&log.file, &mut log.offset, record) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.log = None;
                Err(StoreError::Io {
                    op: "append to",
                    path,
                    source: e,
                })
            }
        }
    }

    fn read_snapshot(&self) -> Result<Option<(u64, IpamState)>, StoreError> {
        let path = self.state_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let (header, body) = split_header(&bytes)
            .ok_or_else(|| corrupt("no header line (truncated or not a podnet file)".into()))?;
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, format, generation, len, sum] = fields[..] else {
            return Err(corrupt(format!("bad header {header:?}")));
        };
        if magic != STATE_MAGIC {
            return Err(corrupt(format!("bad header {header:?}")));
        }
        check_format(&path, format)?;
        let generation: u64 = generation
            .parse()
            .map_err(|_| corrupt(format!("bad generation in header {header:?}")))?;
        let len: usize = len
            .parse()
            .map_err(|_| corrupt(format!("bad length in header {header:?}")))?;
        if body.len() != len {
            return Err(corrupt(format!(
                "header announces {len} bytes of state, the file holds {} (truncated or appended to)",
                body.len()
            )));
        }
        if sum != format!("{:016x}", fnv1a64(body)) {
            return Err(corrupt("checksum mismatch".into()));
        }
        let state = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((generation, state)))
    }

    /// Replays the log of `generation` onto `state`.
    fn replay_log(&self, generation: u64, state: &mut IpamState) -> Result<(), StoreError> {
        let path = self.log_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(());
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let (header, _) = split_header(&bytes)
            .ok_or_else(|| corrupt("no header line (truncated or not a podnet file)".into()))?;
        let fields: Vec<&str> = header.split(' ').collect();
        let (format, log_generation, written_under) = match fields[..] {
            [LOG_MAGIC, f, g] => (f, g, SyncPolicy::Always),
            [LOG_MAGIC, f, g, "periodic"] => (f, g, SyncPolicy::Periodic),
            _ => return Err(corrupt(format!("bad header {header:?}"))),
        };
        check_format(&path, format)?;
        let log_generation: u64 = log_generation
            .parse()
            .map_err(|_| corrupt(format!("bad generation in header {header:?}")))?;
        if log_generation < generation {
            // Left over from a compaction cut short: the snapshot already has it all.
            return Ok(());
        }
        if log_generation > generation {
            return Err(corrupt(format!(
                "log generation {log_generation} is newer than state file generation {generation} (was an old state.json restored?)"
            )));
        }
        let mut offset = header.len() + 1;
        let mut index = 0usize;
        loop {
            // Where only zeros may follow if the log ends here.
            let quiet_from = match read_slot(&bytes, offset) {
                Slot::Record(payload, next) => {
                    let change: IpamChange = serde_json::from_slice(payload).map_err(|e| {
                        corrupt(format!(
                            "record {index} at byte {offset} does not parse: {e}"
                        ))
                    })?;
                    state.apply(&change).map_err(|e| {
                        corrupt(format!("record {index} at byte {offset} does not fit: {e}"))
                    })?;
                    offset = next;
                    index += 1;
                    continue;
                }
                // A power cut may leave any bytes in an unsynced tail.
                Slot::BadHeader if written_under == SyncPolicy::Periodic => offset,
                Slot::BadHeader => {
                    return Err(corrupt(format!(
                        "record {index} at byte {offset} has a damaged header"
                    )))
                }
                Slot::Torn { end } => end,
                // Parts of a cut write may have landed after a header that did not.
                Slot::Zero => offset + RECORD_HEADER + MAX_RECORD,
            };
            let tail = bytes.get(quiet_from..).unwrap_or(&[]);
            if tail.iter().any(|&b| b != 0) && written_under == SyncPolicy::Periodic {
                let message = format!(
                    "the IPAM log {} is damaged at record {index} (byte {offset}) with data after it: \
                     taken as a power cut before the last changes were synced (store-sync = \"periodic\"); \
                     the changes from there on are dropped",
                    path.display()
                );
                tracing::warn!("{message}");
                self.repairs.lock().push(message);
                return Ok(());
            }
            if tail.iter().any(|&b| b != 0) {
                return Err(corrupt(format!(
                    "record {index} at byte {offset} is damaged or missing and more data follows it"
                )));
            }
            return Ok(());
        }
    }
}

impl IpamStore for FileStore {
    fn take_repairs(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.repairs.lock())
    }

    fn load(&mut self) -> Result<Option<IpamState>, StoreError> {
        let Some((generation, mut state)) = self.read_snapshot()? else {
            if self.log_path().exists() {
                return Err(StoreError::Corrupt {
                    path: self.state_path(),
                    reason: format!(
                        "missing, but {} exists (was it deleted by hand?)",
                        self.log_path().display()
                    ),
                });
            }
            return Ok(None);
        };
        self.replay_log(generation, &mut state)?;
        self.generation = generation;
        // Start from a fresh log: it also clears any write cut short at its end.
        self.compact(&state)?;
        Ok(Some(state))
    }

    fn commit(&mut self, state: &IpamState, change: &IpamChange) -> Result<(), StoreError> {
        let payload = serde_json::to_vec(change).map_err(|e| StoreError::Io {
            op: "serialize a change for",
            path: self.log_path(),
            source: io::Error::other(e),
        })?;
        if payload.len() > MAX_RECORD {
            let mut next = state.clone();
            next.apply(change).map_err(|e| StoreError::Corrupt {
                path: self.log_path(),
                reason: format!("a change does not fit the state: {e}"),
            })?;
            return self.compact(&next);
        }
        let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&(!(payload.len() as u32)).to_le_bytes());
        record.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        if self.append(&record)? {
            return Ok(());
        }
        // No log yet, or it is full: fold what it holds into a snapshot first.
        self.compact(state)?;
        if self.append(&record)? {
            Ok(())
        } else {
            Err(StoreError::Io {
                op: "append to",
                path: self.log_path(),
                source: io::Error::other("a fresh log has no room for one record"),
            })
        }
    }
}

/// What lies at one offset of the log.
enum Slot<'a> {
    /// A whole record: its payload and the offset after it.
    Record(&'a [u8], usize),
    /// A zero header: the end of what was written, or a write whose header
    /// never reached the disk.
    Zero,
    /// A sound header whose payload is short or fails its checksum: a write cut
    /// short, if nothing follows `end`.
    Torn { end: usize },
    /// A header that contradicts itself: damage.
    BadHeader,
}

fn read_slot(bytes: &[u8], offset: usize) -> Slot<'_> {
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER) else {
        // A header cut by the end of the file reads like a zero one.
        return Slot::Zero;
    };
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, check) = (word(0), word(4));
    if len == 0 && check == 0 && header[8..].iter().all(|&b| b == 0) {
        return Slot::Zero;
    }
    let len = len as usize;
    if check != !(len as u32) || len == 0 || len > MAX_RECORD {
        return Slot::BadHeader;
    }
    let sum = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let start = offset + RECORD_HEADER;
    let end = start + len;
    match bytes.get(start..end) {
        Some(payload) if fnv1a64(payload) == sum => Slot::Record(payload, end),
        _ => Slot::Torn { end },
    }
}

fn split_header(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let nl = bytes.iter().take(256).position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..nl]).ok()?;
    Some((header, &bytes[nl + 1..]))
}

fn check_format(path: &Path, format: &str) -> Result<(), StoreError> {
    if format == FORMAT.to_string() {
        Ok(())
    } else {
        Err(StoreError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: format.chars().take(32).collect(),
        })
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                op: "open",
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    Ok(Some(bytes))
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// FNV-1a, 64 bits: detects truncation and stray bytes; not a defence against
/// deliberate tampering (whoever can write the file can fix the sum).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = FileStore::open(dir.path()).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("lock"));
    }
}
