//! Compactions of a [`super::FileStore`] off the writers' path.
//!
//! A compaction writes every key (tens of megabytes with thousands of pods
//! and their events) and a fresh, zero-filled log as large: 0.2-0.44 s at
//! 4,000 pods, which under the store's lock stopped every read and write
//! of the API and the reconcilers. Here the writer only switches logs under
//! the lock: it takes a *spare* log prepared in advance (`log.next`,
//! zeros), writes its header, hands the keys as they are at that revision
//! (shared values, no copy) to this thread and goes on appending to the
//! spare. The thread then writes the snapshot, makes the spare the log, and
//! prepares the next spare. The file states a crash can leave, and how
//! each is read back, are in [`super::file`]'s docs.
//!
//! One compaction runs at a time. While it runs, or while no spare is ready
//! yet, a full log grows past its preallocated end instead of making a
//! writer wait.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender};
use parking_lot::{Condvar, Mutex};

use super::encrypt::Encryption;
use super::file::{replace, snapshot_bytes};
use super::{KeyValue, Revision};

/// The file a spare log waits in, and the log of the next generation once
/// a compaction has started.
pub(super) const NEXT_LOG: &str = "log.next";

/// A zero-filled log file, synced, ready to take records.
pub(super) struct SpareLog {
    pub file: Arc<File>,
    /// Its preallocated size.
    pub capacity: u64,
}

/// What the thread is asked to do.
pub(super) enum Job {
    /// Write `keys` as the snapshot of `generation` at `revision`, make
    /// `log.next` (which writers have been appending to since `revision`)
    /// the log, then prepare a new spare.
    Snapshot {
        keys: Vec<KeyValue>,
        generation: u64,
        revision: Revision,
    },
    /// Prepare a spare of at least `capacity` bytes.
    Spare { capacity: u64 },
}

/// Where a test stops a compaction, as a crash there would.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopAt {
    /// Before the snapshot is written.
    BeforeSnapshot,
    /// After the snapshot is in place, before `log.next` becomes the log.
    AfterSnapshot,
}

#[derive(Default)]
struct State {
    /// A job is queued or running.
    busy: bool,
    spare: Option<SpareLog>,
    /// A job failed: the files may not be what the writer expects (a
    /// snapshot missing, `log.next` still the log), so the next write
    /// compacts synchronously.
    failed: bool,
    #[cfg(test)]
    stop_at: Option<StopAt>,
}

struct Shared {
    state: Mutex<State>,
    idle: Condvar,
}

/// The compaction thread of one store. Dropping it lets the job in hand
/// finish and waits for the thread.
pub(super) struct Compactor {
    jobs: Option<Sender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts the thread for the store in `dir`; `log_capacity` is the
    /// least size of a spare.
    pub fn start(
        dir: PathBuf,
        log_capacity: u64,
        encryption: Option<Arc<Encryption>>,
    ) -> io::Result<Compactor> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
        });
        let (tx, rx) = channel::unbounded::<Job>();
        let worker = Worker {
            dir,
            log_capacity,
            encryption,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("podnet-store-compact".into())
            .spawn(move || {
                for job in rx {
                    worker.run(job);
                }
            })?;
        Ok(Compactor {
            jobs: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `job`.
    pub fn submit(&self, job: Job) {
        self.shared.state.lock().busy = true;
        if let Some(jobs) = &self.jobs {
            // The thread only ends when the sender is dropped.
            let _ = jobs.send(job);
        }
    }

    /// The spare log, if one is ready and no compaction is running.
    pub fn take_spare(&self) -> Option<SpareLog> {
        let mut state = self.shared.state.lock();
        if state.busy {
            return None;
        }
        state.spare.take()
    }

    /// Whether a job failed since the last call.
    pub fn take_failure(&self) -> bool {
        std::mem::take(&mut self.shared.state.lock().failed)
    }

    /// Waits for the queued jobs to finish (before a synchronous
    /// compaction rewrites the same files), and drops the spare: the
    /// synchronous compaction's fresh log takes its place.
    pub fn wait_idle(&self) {
        self.wait_ready();
        self.shared.state.lock().spare = None;
    }

    /// Makes the next compactions stop at `at`, as a crash there would
    /// leave the files.
    #[cfg(test)]
    pub fn stop_at(&self, at: StopAt) {
        self.shared.state.lock().stop_at = Some(at);
    }

    /// Waits for the queued jobs (the spare, above all) to finish.
    pub fn wait_ready(&self) {
        let mut state = self.shared.state.lock();
        while state.busy {
            self.shared.idle.wait(&mut state);
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    dir: PathBuf,
    log_capacity: u64,
    encryption: Option<Arc<Encryption>>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(&self, job: Job) {
        let started = std::time::Instant::now();
        let done = match job {
            Job::Snapshot {
                keys,
                generation,
                revision,
            } => self.snapshot(&keys, generation, revision),
            Job::Spare { capacity } => self.spare(capacity).map(Some),
        };
        let mut state = self.shared.state.lock();
        match done {
            Ok(Some(spare)) => {
                tracing::debug!(
                    spare_bytes = spare.capacity,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "object store: compaction done"
                );
                state.spare = Some(spare);
            }
            // Stopped by a test: the files stay as a crash would leave them.
            Ok(None) => return,
            Err(e) => {
                tracing::error!(
                    dir = %self.dir.display(),
                    "object store compaction failed ({e}); the next write retries it; check the free space of the state directory"
                );
                state.failed = true;
            }
        }
        state.busy = false;
        self.shared.idle.notify_all();
    }

    /// Returns the next spare, or `None` where a test stopped it.
    fn snapshot(
        &self,
        keys: &[KeyValue],
        generation: u64,
        revision: Revision,
    ) -> io::Result<Option<SpareLog>> {
        #[cfg(test)]
        let stop_at = self.shared.state.lock().stop_at;
        #[cfg(test)]
        if stop_at == Some(StopAt::BeforeSnapshot) {
            return Ok(None);
        }
        let snapshot = snapshot_bytes(
            keys.iter(),
            generation,
            revision,
            self.encryption.as_deref(),
        );
        // Durable before `log.next` becomes the log: a log of a newer
        // generation than the snapshot beside it reads as corruption.
        replace(
            &self.dir,
            &self.dir.join("snapshot"),
            &snapshot,
            ".compacting",
        )?;
        #[cfg(test)]
        if stop_at == Some(StopAt::AfterSnapshot) {
            return Ok(None);
        }
        fs::rename(self.dir.join(NEXT_LOG), self.dir.join("log"))?;
        sync_dir(&self.dir)?;
        self.spare(snapshot.len() as u64).map(Some)
    }

    /// A zero-filled `log.next` of at least `capacity` bytes (a log as
    /// large as the snapshot keeps each write's share of compactions
    /// constant as the store grows).
    fn spare(&self, capacity: u64) -> io::Result<SpareLog> {
        let capacity = capacity.max(self.log_capacity);
        let file = replace(
            &self.dir,
            &self.dir.join(NEXT_LOG),
            &vec![0; capacity as usize],
            ".tmp",
        )?;
        Ok(SpareLog {
            file: Arc::new(file),
            capacity,
        })
    }
}

/// Makes the renames in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
