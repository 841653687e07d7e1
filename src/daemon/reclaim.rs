//! The kernel's slow part of removing a deleted pod, on a thread of its own.
//!
//! Closing a pod's TUN device unregisters it (an RCU grace period under the
//! RTNL lock), unmounting its namespace pins waits out another, reaping its
//! process prunes its `/proc` entries, and removing its directory may
//! discard the blocks of every file in it: milliseconds a pod, which the one
//! thread that reconciles every pod spent blocked (half of its time while
//! 4,000 pods were deleted at once). The pod's address, its data-plane link
//! and its object go at once; this thread follows, in the order the pods
//! went, once a burst of deletions is over ([`QUIET`]). Nothing queued here
//! holds a name a new pod could need: pins are renamed out of the way first
//! ([`crate::sys::mount::retire`]), and a pod's directory is named by its
//! uid.
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
/// Work waits until no more has come for this long: the pods of a burst
/// of deletions are gone from the API first and their kernel work follows,
/// rather than both competing for the same cores (deleting 1,000 pods at
/// once took 0.29-0.31 s instead of 0.40-0.43, 4,000 took 1.27-1.35 s
/// instead of 1.48-1.73).
const QUIET: Duration = Duration::from_millis(250);
/// ... but no piece of work waits longer than this.
const MAX_DEFER: Duration = Duration::from_secs(5);

/// How long work waits before it runs (see [`QUIET`]).
#[derive(Clone, Copy)]
struct Deferral {
    quiet: Duration,
    max: Duration,
}

/// Something shared whose last reference should be dropped off the
/// caller's thread (a pod's TUN device).
pub type Shared = Arc<dyn Any + Send + Sync>;

/// Runs deferred removal work on one background thread.
pub struct Reclaimer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    deferral: Deferral,
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
    /// When work last arrived, and when the oldest pending piece did.
    last_arrival: Option<Instant>,
    oldest_pending: Option<Instant>,
    /// Callers of [`Reclaimer::wait_idle`]: none of them waits for a
    /// quiet period.
    waiters: usize,
    running: bool,
    stop: bool,
}

impl State {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.held.is_empty() && !self.running
    }

    fn arrived(&mut self, now: Instant) {
        self.last_arrival = Some(now);
        self.oldest_pending.get_or_insert(now);
    }

    /// How much longer pending work waits (see [`QUIET`]); `None` once it
    /// runs: it was quiet long enough, or the oldest work waited long
    /// enough, or someone waits for it all to be done, or the thread stops.
    fn deferred_for(&self, deferral: Deferral, now: Instant) -> Option<Duration> {
        if self.stop || self.waiters > 0 {
            return None;
        }
        let (last, oldest) = (self.last_arrival?, self.oldest_pending?);
        let left = (deferral.quiet.checked_sub(now.duration_since(last)))?
            .min(deferral.max.checked_sub(now.duration_since(oldest))?);
        (!left.is_zero()).then_some(left)
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
        Reclaimer::start_with(Deferral {
            quiet: QUIET,
            max: MAX_DEFER,
        })
    }

    fn start_with(deferral: Deferral) -> std::io::Result<Reclaimer> {
        let inner = Arc::new(Inner {
            deferral,
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
        self.enqueue(|st, _| st.queue.push_back(Box::new(work)));
    }

    /// Drops `value` on the thread once this is its last reference (or
    /// after [`RELEASE_WAIT`]).
    pub fn release(&self, value: Shared) {
        self.enqueue(|st, now| st.held.push((value, now)));
    }

    /// Adds work with `add` (given the time), notes its arrival and wakes
    /// the thread.
    fn enqueue(&self, add: impl FnOnce(&mut State, Instant)) {
        let now = Instant::now();
        let mut st = self.inner.state.lock();
        add(&mut st, now);
        st.arrived(now);
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Waits until everything queued so far is done, at most `max`; true if
    /// it is. Queued work runs at once then, without its quiet period.
    pub fn wait_idle(&self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut st = self.inner.state.lock();
        st.waiters += 1;
        self.inner.wake.notify_one();
        let mut idle = true;
        while !st.is_idle() {
            if self.inner.idle.wait_until(&mut st, deadline).timed_out() {
                idle = st.is_idle();
                break;
            }
        }
        st.waiters -= 1;
        idle
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
        if let Some(wait) = st.deferred_for(inner.deferral, Instant::now()) {
            inner.wake.wait_for(&mut st, wait);
            continue;
        }
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
            st.oldest_pending = None;
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
    fn work_waits_for_a_quiet_period_unless_someone_waits_for_it() {
        // Quiet for an hour: nothing runs by itself within the test.
        let hour = Duration::from_secs(3600);
        let r = Reclaimer::start_with(Deferral {
            quiet: hour,
            max: hour,
        })
        .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        r.run(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "ran before its quiet period"
        );
        assert!(r.wait_idle(Duration::from_secs(30)));
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_burst_is_deferred_until_quiet_or_its_oldest_work_waited_long_enough() {
        let d = Deferral {
            quiet: Duration::from_millis(250),
            max: Duration::from_secs(5),
        };
        let t0 = Instant::now();
        let mut st = State::default();
        assert_eq!(st.deferred_for(d, t0), None, "nothing arrived");
        st.arrived(t0);
        assert_eq!(st.deferred_for(d, t0), Some(Duration::from_millis(250)));
        // Work keeps arriving every 100 ms: deferred, up to 5 s from the first.
        for i in 1..=49 {
            st.arrived(t0 + Duration::from_millis(100 * i));
        }
        let at = t0 + Duration::from_millis(4950);
        assert_eq!(st.deferred_for(d, at), Some(Duration::from_millis(50)));
        assert_eq!(st.deferred_for(d, t0 + Duration::from_secs(5)), None);
        // A pause of the quiet period ends it too.
        let mut st = State::default();
        st.arrived(t0);
        st.arrived(t0 + Duration::from_millis(200));
        assert!(st
            .deferred_for(d, t0 + Duration::from_millis(440))
            .is_some());
        assert_eq!(st.deferred_for(d, t0 + Duration::from_millis(450)), None);
        // A waiter or a stop ends it at once.
        st.waiters = 1;
        assert_eq!(st.deferred_for(d, t0 + Duration::from_millis(201)), None);
        st.waiters = 0;
        st.stop = true;
        assert_eq!(st.deferred_for(d, t0 + Duration::from_millis(201)), None);
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
