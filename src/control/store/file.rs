//! [`FileStore`]: the durable store podnetd keeps its objects in.
//!
//! # On-disk layout (`<state_dir>/store/`)
//!
//! * `lock`: held with an exclusive advisory lock while the store is open, so
//!   a second daemon on the same directory fails instead of writing beside
//!   the first.
//! * `snapshot`: every key at one revision. A header line
//!   `podnet-store-snapshot <format> <generation> <revision> <body length> <crc32 of body>`,
//!   then the keys as records (below). Replaced only by write-temp, fsync,
//!   rename, fsync-dir.
//! * `log`: the writes since that snapshot. A header line
//!   `podnet-store-log <format> <generation>`, followed by ` periodic` when
//!   the log was written under [`SyncPolicy::Periodic`], then records, then
//!   zeros to the end of the preallocated file (a log may grow past it
//!   while a compaction runs).
//! * `log.next`: a spare log, all zeros (header included), prepared for the
//!   next compaction; once one has started, the log of the next generation,
//!   which the writes go to until the compaction makes it the `log`.
//!
//! A record is `[u32 LE length][u32 LE !length][u32 LE crc32 of payload]`
//! then its payload: `[u8 op (1 put, 2 delete)][u64 revision][u64 create
//! revision][u64 version][u32 key length][key][value]`, all little endian.
//!
//! Why a log: rewriting every object per write costs time in proportion to
//! the objects held (the old daemon re-serialised its whole state file per
//! change). Appending one record to a log whose blocks were written when it
//! was made costs one `fdatasync` that touches no metadata. When a record
//! does not fit, the writes switch to the spare log (generation `g + 1`)
//! and a background thread writes the snapshot of generation `g + 1` (the
//! keys at the switch), then renames `log.next` to `log` (see
//! [`super::compactor`]); on every open the store is compacted at once.
//!
//! Crash rules: a write returns only after its record is written to the
//! log, and, under [`SyncPolicy::Always`], synced to the disk (what each
//! policy guarantees is in [`super::sync`]). A log whose generation is
//! older than the snapshot's is what an interrupted compaction left and is
//! ignored (the snapshot holds it). A compaction cut short leaves a
//! snapshot of generation `g` with `log` of `g` and `log.next` of `g + 1`
//! (the snapshot was not written yet: both are replayed, in that order), or
//! a snapshot of `g + 1` with `log` of `g` and `log.next` of `g + 1` (not
//! renamed yet: `log.next` is replayed); the old log is synced before the
//! first write to the next, so the two join without a gap. A damaged record followed only by zeros
//! is the one write that was cut short and never acknowledged, and is
//! dropped (the length is stored twice so that a damaged length is told
//! from a cut write). In a log written under [`SyncPolicy::Periodic`], a
//! damaged record with data after it may be a power cut in the middle of
//! the unsynced tail: every record from it on is dropped, with a warning.
//! Anything else that does not parse or check out is
//! [`OpenError::Corrupt`], naming the file, and the files are left
//! untouched for the operator. Snapshots and fresh logs are always synced
//! (write-temp, fsync, rename, fsync-dir) whatever the policy.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::compactor::{sync_dir, Compactor, Job, SpareLog, NEXT_LOG};
use super::encrypt::{Encryption, OpenValueError};
use super::engine::{Engine, DEFAULT_HISTORY};
use super::sync::{LogSync, SyncPolicy};
use super::{
    Event, EventKind, KeyValue, KvStore, Precondition, Revision, WatchError, WatchReceiver,
    WriteError,
};

const FORMAT: u32 = 1;
const SNAPSHOT_MAGIC: &str = "podnet-store-snapshot";
const LOG_MAGIC: &str = "podnet-store-log";
/// Least size of a fresh log (a few thousand pod writes before a
/// compaction); a log is as large as the snapshot when that is larger.
const LOG_CAPACITY: u64 = 16 << 20;
const RECORD_HEADER: usize = 12;
const PAYLOAD_FIXED: usize = 1 + 8 + 8 + 8 + 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
    /// Another process holds the directory.
    #[error("{} is locked by another process; is another podnetd using this state directory?", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A value could not be decrypted (wrong or missing key); the files
    /// were left untouched.
    #[error("object store {}: {source}; nothing was changed", path.display())]
    Encryption {
        /// The store directory.
        path: PathBuf,
        /// Which value and why.
        #[source]
        source: OpenValueError,
    },
    /// A file is damaged; it was left untouched.
    #[error("object store file {} is corrupt: {reason}; it was left untouched: restore the store directory from a backup, or move it away to start empty (every object is then forgotten)", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a [`FileStore`] is opened; `Default` is what the daemon uses.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When writes reach the disk.
    pub sync: SyncPolicy,
    /// Bytes of a fresh log (small values let tests reach compaction).
    pub log_capacity: u64,
    /// Events kept for watches (small values let tests reach 410 Gone).
    pub history: usize,
    /// The key Secrets are encrypted with in the files; `None` writes
    /// them in plaintext (values already encrypted then refuse to load).
    pub encryption: Option<Arc<Encryption>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncPolicy::default(),
            log_capacity: LOG_CAPACITY,
            history: DEFAULT_HISTORY,
            encryption: None,
        }
    }
}

/// The durable store (layout and crash rules in the module docs).
pub struct FileStore {
    inner: Mutex<Inner>,
    dir: PathBuf,
    /// What opening dropped from a damaged log (see [`FileStore::repairs`]).
    repairs: Vec<String>,
}

struct Inner {
    engine: Engine,
    generation: u64,
    /// `None` after a failed write: the next write compacts into a new
    /// generation rather than trust a log that may hold half a record.
    log: Option<LogWriter>,
    log_capacity: u64,
    sync: LogSync,
    encryption: Option<Arc<Encryption>>,
    /// Writes snapshots and spare logs; stopped (its job in hand finished)
    /// before the lock below is released.
    compactor: Compactor,
    /// Held for the lifetime of the store; the OS drops it if we die.
    _lock: File,
}

struct LogWriter {
    file: Arc<File>,
    offset: u64,
    /// Its preallocated size: a write past it switches to the spare log.
    capacity: u64,
}

impl FileStore {
    /// Opens (creating if needed) `<state_dir>/store`, locks it, loads it and
    /// compacts it into a new generation.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<FileStore, OpenError> {
        Self::open_with_options(state_dir, StoreOptions::default())
    }

    /// [`FileStore::open`] with a log of `log_capacity` bytes and a watch
    /// history of `history` events (small values let tests reach compaction
    /// and 410 quickly).
    pub fn open_with(
        state_dir: impl AsRef<Path>,
        log_capacity: u64,
        history: usize,
    ) -> Result<FileStore, OpenError> {
        Self::open_with_options(
            state_dir,
            StoreOptions {
                log_capacity,
                history,
                ..StoreOptions::default()
            },
        )
    }

    /// [`FileStore::open`] with every option.
    pub fn open_with_options(
        state_dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<FileStore, OpenError> {
        let StoreOptions {
            sync,
            log_capacity,
            history,
            encryption,
        } = options;
        let dir = state_dir.as_ref().join("store");
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
            Err(TryLockError::WouldBlock) => return Err(OpenError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let mut repairs = Vec::new();
        let (generation, revision, mut keys) = load(&dir, &mut repairs)?;
        for kv in keys.values_mut() {
            match Encryption::open(encryption.as_deref(), &kv.key, &kv.value) {
                Ok(None) => {}
                Ok(Some(plain)) => kv.value = Arc::from(plain),
                Err(source) => {
                    return Err(OpenError::Encryption {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        let log_path = dir.join("log");
        let sync = LogSync::new(sync, &log_path.display().to_string())
            .map_err(io_err("start the sync thread for", &log_path))?;
        let log_capacity = log_capacity.max(4096);
        let compactor = Compactor::start(dir.clone(), log_capacity, encryption.clone())
            .map_err(io_err("start the compaction thread for", &dir))?;
        let mut inner = Inner {
            engine: Engine::new(keys, revision, history),
            generation,
            log: None,
            log_capacity,
            sync,
            encryption,
            compactor,
            _lock: lock,
        };
        inner
            .compact(&dir, None)
            .map_err(|e| io_err("compact", &dir)(e))?;
        Ok(FileStore {
            inner: Mutex::new(inner),
            dir,
            repairs,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening had to drop from a damaged log (under the periodic
    /// sync policy, a damaged record with writes after it is taken as a
    /// power cut), one message each, for the operator; the file is
    /// `<dir>/log`.
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// The policy the store writes under.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.inner.lock().sync.policy()
    }

    /// Waits for the spare log, then makes the next compactions stop at
    /// `at`, as a crash there would leave the files.
    #[cfg(test)]
    pub(super) fn stop_compactions_at(&self, at: super::compactor::StopAt) {
        let inner = self.inner.lock();
        inner.compactor.wait_ready();
        inner.compactor.stop_at(at);
    }

    /// Makes every acknowledged write durable against power loss now
    /// (under [`SyncPolicy::Always`] they already are).
    pub fn sync(&self) -> io::Result<()> {
        self.inner.lock().sync.sync_now()
    }
}

impl Inner {
    /// Makes `event` durable: appended to the log (switching to the spare
    /// log when it is full), or, when the log cannot be trusted, in a
    /// snapshot of the next generation written at once.
    fn persist(&mut self, dir: &Path, record: &[u8], event: &Event) -> io::Result<()> {
        if self.sync.failed() || self.compactor.take_failure() {
            // What the log holds may not be on the disk, or a compaction
            // left the files half done: rewrite it all.
            self.log = None;
        }
        let full = self
            .log
            .as_ref()
            .is_some_and(|log| log.offset + record.len() as u64 > log.capacity);
        if full {
            if let Some(spare) = self.compactor.take_spare() {
                if self.switch(spare).is_err() {
                    self.log = None;
                }
            }
            // Without a spare (a compaction still runs, or the first spare
            // is being made) the log grows past its end.
        }
        let Some(log) = self.log.as_mut() else {
            return self.compact(dir, Some(event));
        };
        let appended = self.sync.append(&log.file, &mut log.offset, record);
        if appended.is_err() {
            self.log = None;
        }
        appended
    }

    /// Starts a compaction: the writes go on in `spare`, as the log of the
    /// next generation, and the compaction thread writes the snapshot of
    /// the keys as they are now.
    fn switch(&mut self, spare: SpareLog) -> io::Result<()> {
        let started = std::time::Instant::now();
        // The old log's last writes reach the disk before any of the next
        // log's can: recovery joins the two without a gap.
        self.sync.sync_now()?;
        let generation = self.generation + 1;
        let header = log_header(self.sync.policy(), generation);
        spare.file.write_all_at(&header, 0)?;
        let keys: Vec<KeyValue> = self.engine.keys().cloned().collect();
        let revision = self.engine.revision();
        self.generation = generation;
        self.sync.replaced(spare.file.clone());
        self.log = Some(LogWriter {
            file: spare.file,
            offset: header.len() as u64,
            capacity: spare.capacity,
        });
        tracing::debug!(
            generation,
            revision,
            held_ms = started.elapsed().as_secs_f64() * 1e3,
            "object store: log full, compacting in the background"
        );
        self.compactor.submit(Job::Snapshot {
            keys,
            generation,
            revision,
        });
        Ok(())
    }

    /// Writes every key (with `pending` applied) as the snapshot of the next
    /// generation, then an empty log for it, at once; then has a spare log
    /// prepared.
    fn compact(&mut self, dir: &Path, pending: Option<&Event>) -> io::Result<()> {
        self.log = None;
        self.compactor.wait_idle();
        let generation = self.generation + 1;
        let mut revision = self.engine.revision();
        let pending_key = pending.map(|e| e.kv.key.as_str());
        let mut keys: Vec<&KeyValue> = self
            .engine
            .keys()
            .filter(|kv| Some(kv.key.as_str()) != pending_key)
            .collect();
        if let Some(event) = pending {
            if event.kind == EventKind::Put {
                keys.push(&event.kv);
            }
            revision = event.revision();
        }
        let snapshot = snapshot_bytes(
            keys.into_iter(),
            generation,
            revision,
            self.encryption.as_deref(),
        );
        // The snapshot must be durable before a log of its generation is: a
        // newer log beside an older snapshot reads as corruption.
        replace(dir, &dir.join("snapshot"), &snapshot, ".tmp")?;

        let mut log = log_header(self.sync.policy(), generation);
        let header = log.len() as u64;
        // A log at least as large as the snapshot: a compaction rewrites
        // the whole store, so with a fixed log size a store of N objects
        // compacted every few thousand writes and a burst of N writes
        // cost N squared (deleting 4,000 pods was a quarter slower per pod
        // than 1,000). Growing the log with the store keeps each write's
        // share of compactions constant.
        let capacity = self.log_capacity.max(snapshot.len() as u64).max(header + 1);
        log.resize(capacity as usize, 0);
        let file = Arc::new(replace(dir, &dir.join("log"), &log, ".tmp")?);
        self.generation = generation;
        self.sync.replaced(file.clone());
        self.log = Some(LogWriter {
            file,
            offset: header,
            capacity,
        });
        self.compactor.submit(Job::Spare { capacity });
        Ok(())
    }
}

/// A snapshot file: header line, then `keys` as records.
pub(super) fn snapshot_bytes<'a>(
    keys: impl Iterator<Item = &'a KeyValue>,
    generation: u64,
    revision: Revision,
    encryption: Option<&Encryption>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for kv in keys {
        encode_put(&mut body, kv, encryption);
    }
    let mut snapshot = format!(
        "{SNAPSHOT_MAGIC} {FORMAT} {generation} {revision} {} {:08x}\n",
        body.len(),
        crc32fast::hash(&body)
    )
    .into_bytes();
    snapshot.extend_from_slice(&body);
    snapshot
}

/// The header line of a log of `generation` written under `policy`.
fn log_header(policy: SyncPolicy, generation: u64) -> Vec<u8> {
    match policy {
        SyncPolicy::Always => format!("{LOG_MAGIC} {FORMAT} {generation}\n"),
        periodic => format!("{LOG_MAGIC} {FORMAT} {generation} {periodic}\n"),
    }
    .into_bytes()
}

impl KvStore for FileStore {
    fn revision(&self) -> Revision {
        self.inner.lock().engine.revision()
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.inner.lock().engine.get(key)
    }

    fn range(&self, prefix: &str) -> (Vec<KeyValue>, Revision) {
        self.inner.lock().engine.range(prefix)
    }

    fn put(
        &self,
        key: &str,
        value: Arc<[u8]>,
        precondition: Precondition,
    ) -> Result<KeyValue, WriteError> {
        // Prepared and written under one lock, so revisions stay in order.
        let mut inner = self.inner.lock();
        let event = inner.engine.prepare_put(key, value, precondition)?;
        let record = encode_record(&event, inner.encryption.as_deref());
        inner
            .persist(&self.dir, &record, &event)
            .map_err(|e| WriteError::Storage(format!("{}: {e}", self.dir.display())))?;
        let kv = event.kv.clone();
        inner.engine.commit(event);
        Ok(kv)
    }

    fn delete(&self, key: &str, precondition: Precondition) -> Result<KeyValue, WriteError> {
        let mut inner = self.inner.lock();
        let event = inner.engine.prepare_delete(key, precondition)?;
        let record = encode_record(&event, inner.encryption.as_deref());
        inner
            .persist(&self.dir, &record, &event)
            .map_err(|e| WriteError::Storage(format!("{}: {e}", self.dir.display())))?;
        let gone = event.kv.clone();
        inner.engine.commit(event);
        Ok(gone)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, WatchError> {
        self.inner.lock().engine.watch(prefix, after)
    }

    fn oldest_watchable(&self) -> Revision {
        self.inner.lock().engine.oldest_watchable()
    }
}

/// The one place values reach the files: Secrets are sealed here.
fn encode_put(out: &mut Vec<u8>, kv: &KeyValue, encryption: Option<&Encryption>) {
    match encryption {
        Some(enc) if Encryption::applies_to(&kv.key) => {
            encode(out, OP_PUT, kv, &enc.seal(&kv.key, &kv.value))
        }
        _ => encode(out, OP_PUT, kv, &kv.value),
    }
}

fn encode_record(event: &Event, encryption: Option<&Encryption>) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + PAYLOAD_FIXED + event.kv.key.len());
    match event.kind {
        EventKind::Put => encode_put(&mut out, &event.kv, encryption),
        EventKind::Delete => encode(&mut out, OP_DELETE, &event.kv, &[]),
    }
    out
}

fn encode(out: &mut Vec<u8>, op: u8, kv: &KeyValue, value: &[u8]) {
    let len = PAYLOAD_FIXED + kv.key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(!(len as u32)).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let payload = out.len();
    out.push(op);
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(kv.key.as_bytes());
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[payload..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// One record read at an offset.
enum Slot {
    /// A record that checks out, and the offset after it.
    Record(u8, KeyValue, usize),
    /// Only zeros from here: the end of the written part.
    End,
    /// Something that is not a whole, intact record; `extent` is where it
    /// claims to end, if its length is intact.
    Damaged {
        reason: String,
        extent: Option<usize>,
    },
}

fn read_slot(bytes: &[u8], offset: usize) -> Slot {
    let rest = &bytes[offset..];
    if rest.iter().all(|&b| b == 0) {
        return Slot::End;
    }
    if rest.len() < RECORD_HEADER {
        return Slot::Damaged {
            reason: "a record header cut short".into(),
            extent: None,
        };
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let len = u32_at(rest, 0);
    if !len != u32_at(rest, 4) {
        return Slot::Damaged {
            reason: "a record length that does not match its copy".into(),
            extent: None,
        };
    }
    let len = len as usize;
    let extent = offset + RECORD_HEADER + len;
    if len < PAYLOAD_FIXED || extent > bytes.len() {
        return Slot::Damaged {
            reason: format!("a record of {len} bytes that does not fit"),
            extent: None,
        };
    }
    let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
    if crc32fast::hash(payload) != u32_at(rest, 8) {
        return Slot::Damaged {
            reason: "a record whose checksum does not match".into(),
            extent: Some(extent),
        };
    }
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().unwrap());
    let op = payload[0];
    let key_len = u32_at(payload, 25) as usize;
    if PAYLOAD_FIXED + key_len > len || !(op == OP_PUT || op == OP_DELETE) {
        return Slot::Damaged {
            reason: "a record with a bad operation or key length".into(),
            extent: Some(extent),
        };
    }
    let Ok(key) = std::str::from_utf8(&payload[PAYLOAD_FIXED..PAYLOAD_FIXED + key_len]) else {
        return Slot::Damaged {
            reason: "a record whose key is not UTF-8".into(),
            extent: Some(extent),
        };
    };
    let kv = KeyValue {
        key: key.to_string(),
        value: Arc::from(&payload[PAYLOAD_FIXED + key_len..]),
        mod_revision: u64_at(1),
        create_revision: u64_at(9),
        version: u64_at(17),
    };
    Slot::Record(op, kv, extent)
}

type Loaded = (u64, Revision, BTreeMap<String, KeyValue>);

/// Reads the snapshot and replays the logs that follow it (`log`, then
/// `log.next` where a compaction was cut short; see the module docs); what
/// a damaged log lost is told in `repairs`. Returns the newest generation
/// in use, the revision and the keys.
fn load(dir: &Path, repairs: &mut Vec<String>) -> Result<Loaded, OpenError> {
    let snapshot_path = dir.join("snapshot");
    let log_path = dir.join("log");
    let next_path = dir.join(NEXT_LOG);
    let snapshot = read_if_exists(&snapshot_path)?;
    let log = read_if_exists(&log_path)?;
    // All zeros (the header included) is a spare, never written to.
    let next = read_if_exists(&next_path)?.filter(|b| b.first().is_some_and(|&b| b != 0));
    let mut keys = BTreeMap::new();
    let (mut generation, mut revision) = match snapshot {
        None => {
            for bytes in [&log, &next].into_iter().flatten() {
                // A log with records but no snapshot: the snapshot was lost.
                if let Some((_, body)) = split_header(bytes) {
                    if body.iter().any(|&b| b != 0) {
                        return Err(OpenError::Corrupt {
                            path: snapshot_path,
                            reason: "missing, while a log beside it holds writes".into(),
                        });
                    }
                }
            }
            (0, 0)
        }
        Some(bytes) => read_snapshot(&snapshot_path, &bytes, &mut keys)?,
    };
    let snapshot_generation = generation;
    // Whether the log of the snapshot's generation was replayed, and
    // whether it was whole (a damaged tail was dropped otherwise).
    let mut replayed = None;
    if let Some(log) = log {
        let header = read_log_header(&log_path, &log)?;
        if header.generation > generation {
            return Err(OpenError::Corrupt {
                path: log_path,
                reason: format!(
                    "generation {} is newer than the snapshot's {generation} (the snapshot was replaced by an older one?)",
                    header.generation
                ),
            });
        }
        // An older one was left by a compaction; the snapshot holds it.
        if header.generation == generation {
            replayed = Some(replay(
                &log_path,
                &log,
                &header,
                &mut keys,
                &mut revision,
                repairs,
            )?);
        }
    }
    if let Some(next) = next {
        let header = read_log_header(&next_path, &next)?;
        let corrupt = |reason: String| OpenError::Corrupt {
            path: next_path.clone(),
            reason,
        };
        let follows = match header.generation {
            // Left by an older compaction; the snapshot holds it.
            g if g < snapshot_generation => false,
            // The snapshot was written, the rename of `log.next` not done.
            g if g == snapshot_generation && replayed.is_none() => true,
            // The snapshot of its generation was not written yet.
            g if g == snapshot_generation + 1 && replayed.is_some() => true,
            g => {
                return Err(corrupt(format!(
                "generation {g} does not follow the snapshot's {snapshot_generation} and the log's"
            )))
            }
        };
        if follows && replayed == Some(false) {
            let message = format!(
                "{} was dropped as well: it follows the damaged end of the log",
                next_path.display()
            );
            tracing::warn!("{message}");
            repairs.push(message);
        } else if follows {
            replay(
                &next_path,
                &next,
                &header,
                &mut keys,
                &mut revision,
                repairs,
            )?;
            generation = header.generation;
        }
    }
    Ok((generation, revision, keys))
}

/// What a log's header line says.
struct LogHeader {
    generation: u64,
    written_under: SyncPolicy,
    /// Where its records start.
    records: usize,
}

fn read_log_header(path: &Path, log: &[u8]) -> Result<LogHeader, OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (header, _) = split_header(log)
        .ok_or_else(|| corrupt("no header line (truncated or not a podnet file)".into()))?;
    let fields: Vec<&str> = header.split(' ').collect();
    let (magic, format, generation, written_under) = match fields[..] {
        [m, f, g] => (m, f, g, SyncPolicy::Always),
        [m, f, g, policy] => match policy.parse() {
            Ok(p @ SyncPolicy::Periodic) => (m, f, g, p),
            _ => return Err(corrupt(format!("bad header {header:?}"))),
        },
        _ => return Err(corrupt(format!("bad header {header:?}"))),
    };
    if magic != LOG_MAGIC || format != FORMAT.to_string() {
        return Err(corrupt(format!("bad header {header:?}")));
    }
    let generation = generation
        .parse()
        .map_err(|_| corrupt(format!("bad generation in header {header:?}")))?;
    Ok(LogHeader {
        generation,
        written_under,
        records: header.len() + 1,
    })
}

/// Applies a log's records to `keys` from `revision` on. Returns whether
/// the log was whole: `false` when a damaged tail was dropped (see the
/// module docs for what may be dropped).
fn replay(
    path: &Path,
    log: &[u8],
    header: &LogHeader,
    keys: &mut BTreeMap<String, KeyValue>,
    revision: &mut Revision,
    repairs: &mut Vec<String>,
) -> Result<bool, OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut offset = header.records;
    loop {
        match read_slot(log, offset) {
            Slot::End => return Ok(true),
            Slot::Record(op, kv, next) => {
                if kv.mod_revision != *revision + 1 {
                    return Err(corrupt(format!(
                        "record at byte {offset} has revision {}, expected {}",
                        kv.mod_revision,
                        *revision + 1
                    )));
                }
                *revision = kv.mod_revision;
                if op == OP_PUT {
                    keys.insert(kv.key.clone(), kv);
                } else {
                    keys.remove(&kv.key);
                }
                offset = next;
            }
            Slot::Damaged { reason, extent } => {
                let after = extent.unwrap_or(offset + RECORD_HEADER).min(log.len());
                if log[after..].iter().all(|&b| b == 0) {
                    tracing::warn!(
                        file = %path.display(),
                        "dropping the last record of the object store log, a write cut short ({reason}) that was never acknowledged"
                    );
                    return Ok(true);
                }
                if header.written_under == SyncPolicy::Periodic {
                    let message = format!(
                        "the object store log is damaged at byte {offset} ({reason}) with data after it: \
                         taken as a power cut before the last writes were synced (store-sync = \"periodic\"); \
                         the store reopens at revision {revision}, the last intact one, and the writes after it are dropped"
                    );
                    tracing::warn!(file = %path.display(), "{message}");
                    repairs.push(message);
                    return Ok(false);
                }
                return Err(corrupt(format!(
                    "{reason} at byte {offset}, with writes after it"
                )));
            }
        }
    }
}

fn read_snapshot(
    path: &Path,
    bytes: &[u8],
    keys: &mut BTreeMap<String, KeyValue>,
) -> Result<(u64, Revision), OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (header, body) = split_header(bytes)
        .ok_or_else(|| corrupt("no header line (truncated or not a podnet file)".into()))?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, format, generation, revision, len, crc] = fields[..] else {
        return Err(corrupt(format!("bad header {header:?}")));
    };
    if magic != SNAPSHOT_MAGIC || format != FORMAT.to_string() {
        return Err(corrupt(format!("bad header {header:?}")));
    }
    let parse = |s: &str, what: &str| -> Result<u64, OpenError> {
        s.parse()
            .map_err(|_| corrupt(format!("bad {what} in header {header:?}")))
    };
    let generation = parse(generation, "generation")?;
    let revision = parse(revision, "revision")?;
    let len = parse(len, "length")? as usize;
    if body.len() != len {
        return Err(corrupt(format!(
            "header announces {len} bytes, the file holds {} (truncated or appended to)",
            body.len()
        )));
    }
    if crc != format!("{:08x}", crc32fast::hash(body)) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let mut offset = 0;
    while offset < body.len() {
        match read_slot(body, offset) {
            Slot::Record(OP_PUT, kv, next) if kv.mod_revision <= revision => {
                keys.insert(kv.key.clone(), kv);
                offset = next;
            }
            _ => return Err(corrupt(format!("bad record at byte {offset}"))),
        }
    }
    Ok((generation, revision))
}

/// Atomically replaces `path` with `contents`: a temporary file (`path`
/// with `suffix`), fsync, rename, fsync of the directory. Returns the new
/// file, open for writing.
pub(super) fn replace(dir: &Path, path: &Path, contents: &[u8], suffix: &str) -> io::Result<File> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(suffix);
    let tmp = PathBuf::from(tmp_name);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)?;
    Ok(file)
}

fn split_header(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..end]).ok()?;
    Some((header, &bytes[end + 1..]))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, OpenError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> OpenError + 'p {
    move |source| OpenError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
