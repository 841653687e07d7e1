//! When the logs of the durable stores reach the disk: the [`SyncPolicy`]
//! shared by the object store ([`super::FileStore`]) and the IPAM store
//! ([`crate::control::ipam::FileStore`]), and [`LogSync`], which carries it
//! out for one log.
//!
//! Two failures matter, and they are not alike:
//!
//! * **The process dies** (SIGKILL, a panic, the OOM killer). A `write(2)`
//!   that returned has put its bytes in the kernel's page cache, which
//!   outlives the process: the kernel writes them back later whatever
//!   happens to the writer. A write is durable against this as soon as its
//!   `write(2)` returns, under both policies.
//! * **The machine stops** (power loss, a kernel panic, a hard reset).
//!   Only what `fdatasync(2)` has returned for is on the disk (as far as
//!   the disk honours cache flushes); page-cache bytes not yet written back
//!   are lost, and those written back may have reached the disk in any
//!   order.
//!
//! [`SyncPolicy::Always`] syncs each record before its write is
//! acknowledged: nothing acknowledged is lost to either failure, and each
//! write costs one `fdatasync` (about 3.5 ms on the disks measured for
//! issue 8; a pod creation makes several writes).
//!
//! [`SyncPolicy::Periodic`] (the default) acknowledges once the record is
//! written to the page cache, and a background thread syncs the log at most
//! [`SYNC_INTERVAL`] after the first unsynced write: nothing acknowledged is
//! lost when the process dies; when the machine stops, writes acknowledged
//! in the last [`SYNC_INTERVAL`] plus the time of one `fdatasync` may be
//! lost (and watchers may already have seen them). The store then reopens at
//! the last revision that reached the disk intact, with a warning: it never
//! reopens with a gap. Why 50 ms: the writes a power loss can take are
//! then few next to what a node loses anyway when it stops (every pod
//! process and network namespace), while a busy store syncs at most 20
//! times a second (under 10 % of the disk's time at 3.5 ms a sync) instead
//! of once per write, and an idle one not at all. etcd syncs every write
//! (that is [`SyncPolicy::Always`]); Redis
//! (`appendfsync everysec`) and MongoDB (journal every 100 ms) make the
//! same trade as this default, with a longer window.
//!
//! A log written under [`SyncPolicy::Periodic`] says so in its header, so
//! that recovery knows damage in the middle of its tail can be a power cut
//! (the written-back pages of a few unsynced records, in any order) rather
//! than corruption: it keeps every record up to the first damaged one and
//! drops the rest, as RocksDB's point-in-time recovery does. A log written
//! under [`SyncPolicy::Always`] keeps the strict rule (only the one write in
//! flight may be damaged). Every open compacts into a fresh log, so each
//! log is written under one policy, and changing the policy between runs
//! is safe.

use std::fmt;
use std::fs::File;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest an acknowledged write waits for its `fdatasync` under
/// [`SyncPolicy::Periodic`] (plus the duration of the sync itself).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);

/// When a write to a store's log is made durable against power loss (the
/// module docs say exactly what each one guarantees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before every write is acknowledged.
    Always,
    /// Acknowledged after `write(2)`; synced within [`SYNC_INTERVAL`].
    #[default]
    Periodic,
}

impl SyncPolicy {
    /// The name used in the configuration and in log headers.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPolicy::Always => "always",
            SyncPolicy::Periodic => "periodic",
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sync policy name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sync policy: use \"periodic\" (the default: acknowledged once written, survives a crash of podnetd, synced to disk within 50 ms) or \"always\" (synced to disk before each write is acknowledged: survives power loss, costs one fdatasync per write)")]
pub struct ParseSyncPolicyError(pub String);

impl FromStr for SyncPolicy {
    type Err = ParseSyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "periodic" => Ok(SyncPolicy::Periodic),
            other => Err(ParseSyncPolicyError(other.chars().take(64).collect())),
        }
    }
}

/// Carries out a [`SyncPolicy`] for one store's log. The store calls
/// [`LogSync::written`] after each record it writes, and
/// [`LogSync::replaced`] when a compaction put a new, fully synced log in
/// place. Dropping it syncs what is still unsynced.
pub struct LogSync {
    policy: SyncPolicy,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// What the thread's log lines name.
    what: String,
}

#[derive(Default)]
struct State {
    /// The log being written.
    file: Option<Arc<File>>,
    /// When the oldest write not yet synced was made.
    dirty_since: Option<Instant>,
    /// A background sync failed: writes acknowledged before it may not be on
    /// the disk, and the page cache may no longer hold them as dirty.
    failed: bool,
    stop: bool,
}

impl LogSync {
    /// Starts carrying out `policy`; `what` names the log in messages.
    /// [`SyncPolicy::Periodic`] starts a thread for the background syncs.
    pub fn new(policy: SyncPolicy, what: &str) -> io::Result<LogSync> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            what: what.to_string(),
        });
        let flusher = match policy {
            SyncPolicy::Always => None,
            SyncPolicy::Periodic => {
                let shared = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("podnet-store-sync".into())
                        .spawn(move || shared.run())?,
                )
            }
        };
        Ok(LogSync {
            policy,
            shared,
            flusher,
        })
    }

    /// The policy carried out.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Whether a background sync failed since the last
    /// [`LogSync::replaced`]. The store must then rewrite its state (a
    /// compaction) before acknowledging another write: after a failed
    /// `fdatasync` the kernel may have dropped the dirty pages, so another
    /// sync of the same log would succeed without writing them.
    pub fn failed(&self) -> bool {
        self.shared.state.lock().failed
    }

    /// A record was written to `file` (the current log). Under
    /// [`SyncPolicy::Always`], syncs it; under [`SyncPolicy::Periodic`],
    /// schedules a sync.
    pub fn written(&self, file: &Arc<File>) -> io::Result<()> {
        match self.policy {
            SyncPolicy::Always => file.sync_data(),
            SyncPolicy::Periodic => {
                let mut state = self.shared.state.lock();
                if state.dirty_since.is_none() {
                    state.dirty_since = Some(Instant::now());
                    self.shared.wake.notify_one();
                }
                Ok(())
            }
        }
    }

    /// Writes `record` to `file` (the current log) at `offset`, moves
    /// `offset` past it and carries out the policy ([`LogSync::written`]).
    /// On an error `offset` is unchanged, and the log must not be trusted
    /// again: the record may be half written.
    pub fn append(&self, file: &Arc<File>, offset: &mut u64, record: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.write_all_at(record, *offset)?;
        self.written(file)?;
        *offset += record.len() as u64;
        Ok(())
    }

    /// A new log, already synced with everything before it, replaced the
    /// old one.
    pub fn replaced(&self, file: Arc<File>) {
        let mut state = self.shared.state.lock();
        state.file = Some(file);
        state.dirty_since = None;
        state.failed = false;
    }

    /// Syncs the log now if anything is unsynced.
    pub fn sync_now(&self) -> io::Result<()> {
        let file = {
            let mut state = self.shared.state.lock();
            if state.dirty_since.take().is_none() {
                return Ok(());
            }
            state.file.clone()
        };
        match file.map_or(Ok(()), |f| f.sync_data()) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.state.lock().failed = true;
                Err(e)
            }
        }
    }
}

impl fmt::Debug for LogSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSync")
            .field("policy", &self.policy)
            .field("log", &self.shared.what)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The background thread of [`SyncPolicy::Periodic`].
    fn run(&self) {
        let mut state = self.state.lock();
        while !state.stop {
            let Some(since) = state.dirty_since else {
                self.wake.wait(&mut state);
                continue;
            };
            let due = since + SYNC_INTERVAL;
            if Instant::now() < due {
                self.wake.wait_until(&mut state, due);
                continue;
            }
            // Taken before the sync starts: a write that lands during it
            // marks the log dirty again and gets the next round.
            state.dirty_since = None;
            let Some(file) = state.file.clone() else {
                continue;
            };
            let synced = parking_lot::MutexGuard::unlocked(&mut state, || file.sync_data());
            if let Err(e) = synced {
                tracing::error!(
                    log = %self.what,
                    "fdatasync failed ({e}): writes of the last {} ms may not survive a power loss; the next write rewrites the store",
                    SYNC_INTERVAL.as_millis()
                );
                state.failed = true;
            }
        }
    }
}

impl Drop for LogSync {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Err(e) = self.sync_now() {
            tracing::error!(log = %self.shared.what, "fdatasync at close failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_their_names() {
        for policy in [SyncPolicy::Always, SyncPolicy::Periodic] {
            assert_eq!(policy.as_str().parse::<SyncPolicy>(), Ok(policy));
            assert_eq!(policy.to_string(), policy.as_str());
        }
        assert_eq!(SyncPolicy::default(), SyncPolicy::Periodic);
    }

    #[test]
    fn unknown_policies_are_refused_with_the_choices() {
        for bad in ["", "Always", "never", "periodic ", "50ms"] {
            let err = bad.parse::<SyncPolicy>().unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("\"always\"") && text.contains("\"periodic\""),
                "{text}"
            );
        }
    }

    #[test]
    fn written_records_reach_the_file_under_both_policies() {
        use std::io::Read;
        use std::os::unix::fs::FileExt;
        for policy in [SyncPolicy::Always, SyncPolicy::Periodic] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let file = Arc::new(File::create(&path).unwrap());
            let sync = LogSync::new(policy, "test log").unwrap();
            sync.replaced(file.clone());
            file.write_all_at(b"abc", 0).unwrap();
            sync.written(&file).unwrap();
            sync.sync_now().unwrap();
            assert!(!sync.failed());
            drop(sync);
            let mut read = String::new();
            File::open(&path)
                .unwrap()
                .read_to_string(&mut read)
                .unwrap();
            assert_eq!(read, "abc", "{policy}");
        }
    }
}
