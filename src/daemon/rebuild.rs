//! A thread that rebuilds something whole (the DNS zone, the policy
//! snapshot) when it is marked out of date, so the control loop only marks
//! and never waits for a rebuild. Marks arriving during a rebuild share
//! the next one; rebuilds are spaced by at least [`MIN_REBUILD_GAP`] and
//! four times the last rebuild's time, so on a big node a rebuild takes at
//! most a fifth of a core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The shortest time between two rebuilds (the fast path's publisher waits
/// as long between two service tables).
pub const MIN_REBUILD_GAP: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Pending {
    dirty: bool,
    stop: bool,
}

/// The rebuilding thread; stopped and joined on drop.
pub struct Rebuilder {
    signal: Arc<(Mutex<Pending>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Rebuilder {
    /// Starts the thread `name`, which runs `build` once marked.
    pub fn start(
        name: &str,
        mut build: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Rebuilder> {
        let signal: Arc<(Mutex<Pending>, Condvar)> = Arc::default();
        let s = signal.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                {
                    let mut p = s.0.lock();
                    while !p.dirty && !p.stop {
                        s.1.wait(&mut p);
                    }
                    if p.stop {
                        return;
                    }
                    p.dirty = false;
                }
                let t0 = Instant::now();
                build();
                std::thread::sleep(MIN_REBUILD_GAP.max(t0.elapsed() * 4));
            })?;
        Ok(Rebuilder {
            signal,
            thread: Some(thread),
        })
    }

    /// Marks what the thread builds out of date: it is rebuilt soon.
    pub fn mark(&self) {
        self.signal.0.lock().dirty = true;
        self.signal.1.notify_one();
    }
}

impl Drop for Rebuilder {
    fn drop(&mut self) {
        self.signal.0.lock().stop = true;
        self.signal.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn marks_during_a_build_share_the_next_one() {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let r = Rebuilder::start("podnet-test-rebuild", move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        })
        .unwrap();
        let wait = Duration::from_secs(60);
        assert!(
            started.recv_timeout(Duration::from_millis(50)).is_err(),
            "nothing is built before a mark"
        );
        r.mark();
        started.recv_timeout(wait).expect("a mark is built");
        for _ in 0..100 {
            r.mark();
        }
        go.send(()).unwrap();
        started
            .recv_timeout(wait)
            .expect("marks during a build make one more");
        go.send(()).unwrap();
        drop(r); // joins the thread
        assert!(started.try_recv().is_err(), "100 marks shared one build");
    }
}
