//! The kernel's slow part of removing a deleted pod, on a thread of its own.
//!
//! Closing a pod's TUN device unregisters it (an RCU grace period under the
//! RTNL lock), unmounting its namespace pins waits out another, reaping its
//! process prunes its `/proc` entries, and removing its directory may
//! discard the blocks of every file in it: milliseconds a pod, which the one
//! thread that reconciles every pod spent blocked (half of its time while
//! 4,000 pods were deleted at once). The pod's address, its data-plane link
//! and its object go at once; this thread follows, in the order the pods
//! went. Nothing queued here holds a name a new pod could need: pins are
//! renamed out of the way first ([`crate::sys::mount::retire`]), and a pod's
//! directory is named by its uid.
//!
//! A device is closed here only once this thread holds its last reference
//! (the worker that served it lets go when told; a published link table
//! until the next one replaces it), so the close never lands on a
//! packet-path thread; after [`RELEASE_WAIT`] it is let go of anyway.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest a release waits for the other references to go.
pub const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How often held references are looked at again.
const RECHECK: Duration = Duration::from_millis(10);

/// Something shared whose last reference should be dropped off the
/// caller's thread (a pod's TUN device).
pub type Shared = Arc<dyn Any + Send + Sync>;

/// Runs deferred removal work on one background thread.
pub struct Reclaimer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
    /// Work arrived, or stop.
    wake: Condvar,
    /// Everything queued is done.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Box<dyn FnOnce() + Send>>,
    held: Vec<(Shared, Instant)>,
    running: bool,
    stop: bool,
}

impl State {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.held.is_empty() && !self.running
    }

    /// Takes the held references that are the last ones, or waited long
    /// enough.
    fn take_releasable(&mut self, now: Instant) -> Vec<Shared> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            let (value, since) = &self.held[i];
            if Arc::strong_count(value) == 1 || now.duration_since(*since) >= RELEASE_WAIT {
                out.push(self.held.swap_remove(i).0);
            } else {
                i += 1;
            }
        }
        out
    }
}

impl Reclaimer {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Reclaimer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("podnet-reclaim".into())
            .spawn(move || run(&i))?;
        Ok(Reclaimer {
            inner,
            thread: Some(thread),
        })
    }

    /// Runs `work` on the thread, after what was queued before it.
    pub fn run(&self, work: impl FnOnce() + Send + 'static) {
        self.inner.state.lock().queue.push_back(Box::new(work));
        self.inner.wake.notify_one();
    }

    /// Drops `value` on the thread once this is its last reference (or
    /// after [`RELEASE_WAIT`]).
    pub fn release(&self, value: Shared) {
        self.inner.state.lock().held.push((value, Instant::now()));
        self.inner.wake.notify_one();
    }

    /// Waits until everything queued so far is done, at most `max`; true if
    /// it is.
    pub fn wait_idle(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut st = self.inner.state.lock();
        while !st.is_idle() {
            if self.inner.idle.wait_until(&mut st, deadline).timed_out() {
                return st.is_idle();
            }
        }
        true
    }
}

impl Drop for Reclaimer {
    /// Finishes what is queued, then stops the thread.
    fn drop(&mut self) {
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The nice value of the thread, a background one (it never preempts
/// the reconcilers' thread when it wakes; waking for each of 4,000 pods
/// deleted at once, it did). Not lowered: a stopping daemon waits for its
/// work ([`Reclaimer::wait_idle`]), and `podnet reset` of 2,000 pods took
/// three times as long at nice 10.
const NICE: i32 = 0;

fn run(inner: &Inner) {
    if let Err(e) = crate::sys::process::make_thread_background(NICE) {
        tracing::debug!("cannot lower the reclaim thread's priority: {e}");
    }
    let mut st = inner.state.lock();
    loop {
        if let Some(work) = st.queue.pop_front() {
            st.running = true;
            parking_lot::MutexGuard::unlocked(&mut st, work);
            st.running = false;
            continue;
        }
        let releasable = st.take_releasable(Instant::now());
        if !releasable.is_empty() {
            st.running = true;
            parking_lot::MutexGuard::unlocked(&mut st, || drop(releasable));
            st.running = false;
            continue;
        }
        if st.is_idle() {
            inner.idle.notify_all();
            if st.stop {
                return;
            }
            inner.wake.wait(&mut st);
        } else {
            // References still held elsewhere: look again soon.
            inner.wake.wait_for(&mut st, RECHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records the thread it was dropped on.
    struct Probe(Arc<Mutex<Option<String>>>);

    impl Drop for Probe {
        fn drop(&mut self) {
            *self.0.lock() = std::thread::current().name().map(str::to_string);
        }
    }

    #[test]
    fn work_runs_in_order_and_wait_idle_sees_it_done() {
        let r = Reclaimer::start().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..50 {
            let s = seen.clone();
            r.run(move || s.lock().push(i));
        }
        assert!(r.wait_idle(Duration::from_secs(30)));
        assert_eq!(*seen.lock(), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_released_value_is_dropped_on_the_thread_once_its_last_holder_lets_go() {
        let r = Reclaimer::start().unwrap();
        let dropped_on = Arc::new(Mutex::new(None));
        let value: Shared = Arc::new(Probe(dropped_on.clone()));
        let other_holder = value.clone();
        r.release(value);
        // Held elsewhere: not dropped, and not idle yet.
        assert!(!r.wait_idle(Duration::from_millis(50)));
        assert_eq!(*dropped_on.lock(), None);
        drop(other_holder);
        assert!(r.wait_idle(Duration::from_secs(30)));
        assert_eq!(dropped_on.lock().as_deref(), Some("podnet-reclaim"));
    }

    #[test]
    fn dropping_the_reclaimer_finishes_what_was_queued() {
        let done = Arc::new(AtomicUsize::new(0));
        {
            let r = Reclaimer::start().unwrap();
            for _ in 0..10 {
                let d = done.clone();
                r.run(move || {
                    std::thread::sleep(Duration::from_millis(2));
                    d.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
    }
}
