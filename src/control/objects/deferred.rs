//! Writes that need not hold up the thread that asks for them: events,
//! above all. The kubelet records its events through a broadcaster that
//! writes them to the API server from a goroutine of its own; here
//! [`Objects::defer`] hands such a write to one writer thread (see
//! [`Objects::start_deferred_writer`]), so that the reconcilers' thread,
//! sending SIGTERM to thousands of pods in one pass, does not also write
//! thousands of `Killing` events before it handles the first exit.
//!
//! Nothing is dropped: when the queue is full, the write is done at once on
//! the caller's thread. Without a writer (unit tests, tools), every write is
//! done at once.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender, TrySendError};
use parking_lot::Mutex;

use super::Objects;

/// A write handed to the deferred writer.
pub type DeferredWrite = Box<dyn FnOnce(&Objects) + Send>;

/// How many writes may wait for the writer before the callers write
/// themselves.
const QUEUE: usize = 8192;

/// Where deferred writes go: the writer's queue while it runs.
pub(super) type DeferredQueue = Arc<Mutex<Option<Sender<DeferredWrite>>>>;

/// The running writer thread. Dropping it stops taking writes, lets the
/// thread finish the queued ones, and waits for it.
pub struct DeferredWriter {
    queue: DeferredQueue,
    thread: Option<JoinHandle<()>>,
}

impl Objects {
    /// Runs `write` on the deferred writer's thread if one runs, else now.
    /// Writes run in the order they were deferred.
    pub fn defer(&self, write: impl FnOnce(&Objects) + Send + 'static) {
        let write: DeferredWrite = Box::new(write);
        let refused = match &*self.deferred.lock() {
            Some(tx) => match tx.try_send(write) {
                Ok(()) => return,
                Err(TrySendError::Full(w) | TrySendError::Disconnected(w)) => w,
            },
            None => write,
        };
        refused(self);
    }

    /// Starts the thread that runs deferred writes, with `prepare` run on it
    /// first (to make it a background thread, for example). A writer that
    /// already runs is left as it is: the returned handle then stops
    /// nothing.
    pub fn start_deferred_writer(
        &self,
        prepare: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<DeferredWriter> {
        let mut slot = self.deferred.lock();
        if slot.is_some() {
            return Ok(DeferredWriter {
                queue: Arc::default(),
                thread: None,
            });
        }
        let (tx, rx) = channel::bounded::<DeferredWrite>(QUEUE);
        let objects = self.clone();
        let thread = std::thread::Builder::new()
            .name("podnet-writes".into())
            .spawn(move || {
                prepare();
                for write in rx {
                    write(&objects);
                }
            })?;
        *slot = Some(tx);
        Ok(DeferredWriter {
            queue: self.deferred.clone(),
            thread: Some(thread),
        })
    }
}

impl Drop for DeferredWriter {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // The thread's own `Objects` shares the queue: with the sender
            // gone from it, the channel ends once the queue is drained.
            self.queue.lock().take();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::store::MemStore;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    fn objects() -> Objects {
        Objects::new(Arc::new(MemStore::new()), SystemTime::UNIX_EPOCH).unwrap()
    }

    #[test]
    fn without_a_writer_a_deferred_write_is_done_at_once() {
        let objects = objects();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        objects.defer(move |_| {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_writer_runs_every_write_in_order_on_its_thread_and_drains_when_stopped() {
        let objects = objects();
        let writer = objects.start_deferred_writer(|| {}).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let caller = std::thread::current().id();
        for i in 0..(QUEUE * 2) {
            let seen = seen.clone();
            objects.clone().defer(move |_| {
                let elsewhere = std::thread::current().id() != caller;
                seen.lock().push((i, elsewhere));
            });
        }
        drop(writer);
        let seen = seen.lock();
        assert_eq!(
            seen.len(),
            QUEUE * 2,
            "no write is lost, even with the queue full"
        );
        assert!(seen.iter().any(|&(_, elsewhere)| elsewhere));
        let on_writer: Vec<usize> = seen.iter().filter(|s| s.1).map(|s| s.0).collect();
        assert!(
            on_writer.windows(2).all(|w| w[0] < w[1]),
            "the writer keeps the order of the writes it was given"
        );
        // Stopped: writes are done at once again.
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        objects.defer(move |_| {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
