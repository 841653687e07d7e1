//! Stray processes of removed pod namespaces, killed in batches.
//!
//! A pod's own container processes are stopped through their pidfds; what
//! they forked may still run in the pod's network namespace, and the only
//! way to find those is to look at every process's `/proc/PID/ns/net`.
//! Doing that once per deleted pod costs time in proportion to the pods
//! that exist (their processes), so deleting every pod cost time in
//! proportion to the square of their number. Here each removed namespace
//! is remembered by its identity (device and inode, taken before its name
//! is removed), and one pass over `/proc` kills the processes of all the
//! namespaces removed since the last pass. A namespace is looked for in
//! two passes a second apart, so a process forked while the first pass
//! ran is found by the second.
//!
//! The namespace's name (`/var/run/netns/NAME`) and podnet's record of
//! making it are removed only after the first pass: a daemon killed in
//! between leaves a recorded namespace, which the next start removes with
//! whatever runs in it, rather than processes nothing knows of. They are
//! removed only while the name still names the same namespace: a pod of
//! the same name made since owns them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use parking_lot::{Condvar, Mutex};

use crate::sys::{netns, process};

/// A network namespace's identity: the device and inode of its nsfs file,
/// unique while the namespace exists (and a process in it keeps it).
pub type NamespaceId = (u64, u64);

/// The identity of the named namespace under `/var/run/netns`, if it exists.
pub fn namespace_id(name: &str) -> Option<NamespaceId> {
    let m = std::fs::metadata(PathBuf::from(netns::NETNS_RUN_DIR).join(name)).ok()?;
    Some((m.dev(), m.ino()))
}

/// SIGKILLs every process (but this one) whose network namespace is one of
/// `targets`, in one pass over `/proc`; returns how many were signalled.
pub fn kill_processes_in(targets: &HashSet<NamespaceId>) -> usize {
    if targets.is_empty() {
        return 0;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(m) = std::fs::metadata(Path::new("/proc").join(pid.to_string()).join("ns/net")) {
            if targets.contains(&(m.dev(), m.ino())) && process::kill(pid, Signal::SIGKILL).is_ok()
            {
                killed += 1;
            }
        }
    }
    killed
}

/// How long the sweeper waits after a first removal, to take the removals
/// of a burst (a deployment scaled down, a namespace deleted) in one pass;
/// while removals keep coming it waits again, up to [`GATHER_MAX`]. A pass
/// reads every process's namespace, so passes every [`GATHER`] through a
/// burst of thousands of deletions cost time in proportion to the square
/// of their number (a sixth of the CPU time of deleting 4,000 pods).
const GATHER: Duration = Duration::from_millis(100);
/// The longest a burst's removals wait for their first pass.
const GATHER_MAX: Duration = Duration::from_secs(1);
/// When a namespace is looked for the second time.
const SECOND_PASS: Duration = Duration::from_secs(1);

/// A namespace to empty, then forget: its identity, its name, and the
/// record podnet keeps of having made it.
struct Doomed {
    id: NamespaceId,
    name: String,
    record: PathBuf,
    /// The namespace, open until its second pass: a namespace whose name
    /// is removed and whose processes are gone is freed, and the kernel
    /// gives its inode number to the next namespace made. Looking for its
    /// identity a second later would then kill a new pod's processes.
    pin: Option<std::fs::File>,
}

#[derive(Default)]
struct Pending {
    first: Vec<Doomed>,
    second: Vec<(NamespaceId, Instant, Option<std::fs::File>)>,
}

struct Sweeper {
    pending: Mutex<Pending>,
    wake: Condvar,
}

static SWEEPER: LazyLock<&'static Sweeper> = LazyLock::new(|| {
    let sweeper: &'static Sweeper = Box::leak(Box::new(Sweeper {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
    }));
    let spawned = std::thread::Builder::new()
        .name("podnet-janitor".into())
        .spawn(move || sweeper.run());
    if let Err(e) = spawned {
        tracing::error!("cannot start the thread that stops stray pod processes: {e}");
    }
    sweeper
});

impl Sweeper {
    fn run(&self) {
        // Nothing waits on a pass but the removal of names no new pod
        // needs: it yields the CPU to the reconcilers and the API.
        if let Err(e) = process::make_thread_background(10) {
            tracing::debug!("cannot lower the janitor thread's priority: {e}");
        }
        loop {
            let mut pending = self.pending.lock();
            while pending.first.is_empty() && pending.second.is_empty() {
                self.wake.wait(&mut pending);
            }
            if pending.first.is_empty() {
                let due = pending.second.iter().map(|(_, t, _)| *t).min();
                if let Some(due) = due.filter(|d| *d > Instant::now()) {
                    self.wake.wait_until(&mut pending, due);
                    continue;
                }
            } else {
                let gathering = Instant::now();
                loop {
                    let seen = pending.first.len();
                    drop(pending);
                    std::thread::sleep(GATHER);
                    pending = self.pending.lock();
                    if pending.first.len() == seen || gathering.elapsed() >= GATHER_MAX {
                        break;
                    }
                }
            }
            let now = Instant::now();
            let mut first = std::mem::take(&mut pending.first);
            let mut targets: HashSet<NamespaceId> = first.iter().map(|d| d.id).collect();
            // Closed once this pass is done.
            let mut done_pins = Vec::new();
            let mut i = 0;
            while i < pending.second.len() {
                if pending.second[i].1 <= now {
                    let (id, _, pin) = pending.second.swap_remove(i);
                    targets.insert(id);
                    done_pins.push(pin);
                } else {
                    i += 1;
                }
            }
            pending.second.extend(
                first
                    .iter_mut()
                    .map(|d| (d.id, now + SECOND_PASS, d.pin.take())),
            );
            drop(pending);
            let killed = kill_processes_in(&targets);
            drop(done_pins);
            for d in first {
                // A pod of the same name (a StatefulSet's) may have made
                // its namespace under the name since: the name and the
                // record are then the new pod's, and stay.
                if namespace_id(&d.name) != Some(d.id) {
                    continue;
                }
                if let Err(e) = netns::remove(&d.name) {
                    tracing::warn!(netns = %d.name, "cannot remove the pod's namespace: {e}");
                    continue;
                }
                let _ = std::fs::remove_file(&d.record);
            }
            if killed > 0 {
                tracing::info!(
                    killed,
                    namespaces = targets.len(),
                    "stopped processes left in removed pod namespaces"
                );
            }
        }
    }
}

/// Kills, soon and in a batch with others, whatever runs in the network
/// namespace `name`, then removes its name and `record` (podnet's record
/// of having made it). Without a name to find it by, nothing is done.
pub fn remove_namespace_later(name: &str, record: PathBuf) {
    let Some(id) = namespace_id(name) else {
        let _ = std::fs::remove_file(&record);
        return;
    };
    let sweeper = *SWEEPER;
    let pin = std::fs::File::open(PathBuf::from(netns::NETNS_RUN_DIR).join(name))
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| (m.dev(), m.ino()) == id));
    sweeper.pending.lock().first.push(Doomed {
        id,
        name: name.to_string(),
        record,
        pin,
    });
    sweeper.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_targets_signal_nothing() {
        assert_eq!(kill_processes_in(&HashSet::new()), 0);
    }

    #[test]
    fn an_unknown_namespace_has_no_identity() {
        assert_eq!(namespace_id("podnet-no-such-namespace"), None);
    }
}
