//! Pod processes: spawning a command inside a namespace, signalling it.
//!
//! A pod's process is the leader of its own process group, so the daemon stops
//! everything the pod started (shell pipelines, workers) with one signal to the
//! group. It deliberately does *not* get `PR_SET_PDEATHSIG`: pods outlive a
//! restart of the daemon, which finds them again by pid.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::Pid;

use super::mount::PodNs;
use super::netns::NetNs;
use super::pty::{take_controlling_terminal, Terminal};

pub use nix::sys::signal::Signal;

/// Errors of process operations.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `argv` was empty.
    #[error("no command given: argv is empty")]
    EmptyCommand,
    /// Preparing the log file as stdout/stderr failed.
    #[error("preparing the log file for the pod's stdout/stderr ({stage}) failed: {source}")]
    Log {
        stage: &'static str,
        source: io::Error,
    },
    /// fork, setns in the child, or exec failed.
    #[error("spawning {program:?} in network namespace {netns} (fork, setns, execvp) failed: {source}; \
             check that the program exists in PATH and is executable, and that you are root")]
    Spawn {
        program: String,
        netns: String,
        source: io::Error,
    },
    /// A pid or process group id that must never be signalled (0, 1, or out of range:
    /// 0 would mean the daemon's own group, 1 init).
    #[error("refusing to signal pid/pgid {0}: not a pod process")]
    InvalidPid(u32),
    /// `kill`/`killpg` failed for another reason than the process being gone.
    #[error("{call}({pid}, {signal}) failed: {source}")]
    Signal {
        call: &'static str,
        pid: u32,
        signal: Signal,
        source: io::Error,
    },
}

/// Spawns `argv` (`argv[0]` looked up in PATH) in `netns`, with `env` added to
/// the inherited environment, stdin from /dev/null and stdout+stderr appended to
/// `log` (the descriptor is switched to `O_APPEND`), as the leader of a new
/// process group whose id is the child's pid.
pub fn spawn_in(
    netns: &NetNs,
    argv: &[String],
    env: &[(String, String)],
    log: File,
) -> Result<Child, SpawnError> {
    spawn_in_pod(netns, None, argv, env, log, None)
}

/// [`spawn_in`], also inside the pod's mount and UTS namespaces if given
/// (its volumes, `/etc/hosts`, host name), in `cwd` if given (else the
/// pod's `/`, or the caller's without a mount namespace).
pub fn spawn_in_pod(
    netns: &NetNs,
    pod_ns: Option<&PodNs>,
    argv: &[String],
    env: &[(String, String)],
    log: File,
    cwd: Option<&str>,
) -> Result<Child, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let log_err = |stage| {
        move |e: Errno| SpawnError::Log {
            stage,
            source: e.into(),
        }
    };
    let flags = fcntl(&log, FcntlArg::F_GETFL).map_err(log_err("fcntl(F_GETFL)"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_APPEND;
    fcntl(&log, FcntlArg::F_SETFL(flags)).map_err(log_err("fcntl(F_SETFL, O_APPEND)"))?;
    let stderr = log.try_clone().map_err(|source| SpawnError::Log {
        stage: "dup",
        source,
    })?;

    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0);
    // The command is spawned from a thread that entered `netns`: the child
    // starts in the namespace of the thread that made it. Without a
    // `pre_exec` hook std can use posix_spawn (a vfork), which does not copy
    // the daemon's memory map as fork does (milliseconds for a large
    // daemon).
    if let Some(dir) = cwd.filter(|d| !d.is_empty()) {
        command.current_dir(dir);
    }
    let spawned = netns
        .run(move || {
            if let Some(p) = pod_ns {
                p.enter_current_thread()
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            command.spawn()
        })
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r);
    spawned.map_err(|source| SpawnError::Spawn {
        program: program.clone(),
        netns: netns.name().to_owned(),
        source,
    })
}

/// A command started by [`spawn_exec`]: the process, and the controlling
/// side of its terminal if it has one.
pub type ExecSpawned = (Child, Option<Terminal>);

/// Spawns `argv` in the pod's namespaces (as [`spawn_in_pod`]) for
/// `kubectl exec`: with a new pseudo-terminal as its stdin, stdout and
/// stderr and as its controlling terminal if `tty`, else with piped stdout
/// and stderr and a piped stdin if `stdin` (/dev/null otherwise), as the
/// leader of a new process group.
pub fn spawn_exec(
    netns: &NetNs,
    pod_ns: Option<&PodNs>,
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&str>,
    tty: bool,
    stdin: bool,
) -> Result<ExecSpawned, SpawnError> {
    let (program, args) = argv.split_first().ok_or(SpawnError::EmptyCommand)?;
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = cwd.filter(|d| !d.is_empty()) {
        command.current_dir(dir);
    }
    let spawn_err = |source| SpawnError::Spawn {
        program: program.clone(),
        netns: netns.name().to_owned(),
        source,
    };
    let terminal = if tty {
        let (terminal, side) = Terminal::open().map_err(spawn_err)?;
        let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map(Stdio::from);
        command
            .stdin(dup(&side).map_err(spawn_err)?)
            .stdout(dup(&side).map_err(spawn_err)?)
            .stderr(Stdio::from(side));
        // SAFETY: the hook runs in the forked child before exec and only
        // makes async-signal-safe calls (setsid, ioctl).
        unsafe {
            command.pre_exec(take_controlling_terminal);
        }
        Some(terminal)
    } else {
        command
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        None
    };
    let child = netns
        .run(move || {
            if let Some(p) = pod_ns {
                p.enter_current_thread()
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            command.spawn()
        })
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(spawn_err)?;
    Ok((child, terminal))
}

/// Sends `sig` to every process of the process group `pgid`; `Ok` if the group
/// no longer exists.
pub fn kill_group(pgid: u32, sig: Signal) -> Result<(), SpawnError> {
    let pid = checked_pid(pgid)?;
    match nix::sys::signal::killpg(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(SpawnError::Signal {
            call: "killpg",
            pid: pgid,
            signal: sig,
            source: e.into(),
        }),
    }
}

/// Sends `sig` to the process `pid`; `Ok` if it no longer exists.
pub fn kill(pid: u32, sig: Signal) -> Result<(), SpawnError> {
    let target = checked_pid(pid)?;
    match nix::sys::signal::kill(target, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(SpawnError::Signal {
            call: "kill",
            pid,
            signal: sig,
            source: e.into(),
        }),
    }
}

/// Whether a process with this pid exists (a zombie not yet reaped by its parent
/// counts as existing: the owner of a [`Child`] must `wait` for it).
pub fn is_alive(pid: u32) -> bool {
    let Ok(target) = checked_pid(pid) else {
        return false;
    };
    match nix::sys::signal::kill(target, None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

fn checked_pid(pid: u32) -> Result<Pid, SpawnError> {
    match i32::try_from(pid) {
        Ok(raw) if raw > 1 => Ok(Pid::from_raw(raw)),
        _ => Err(SpawnError::InvalidPid(pid)),
    }
}

/// Raises the soft limit on open files to the hard one and returns it.
/// Every pod holds descriptors in the daemon (its `eth0`, a pidfd per
/// process, its namespaces), and the soft limit a service manager
/// gives (1,024 by default) runs out at a few hundred pods, while the hard
/// limit is meant for this. Processes the daemon starts inherit the raised
/// limit, as those of a container runtime that raises its own do.
pub fn raise_open_file_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// Makes the calling thread a background thread: scheduled as a batch
/// thread (`SCHED_BATCH`: waking up, it never preempts a running thread;
/// it waits for a free core or the next tick) at the nice value `nice`
/// (Linux keeps both per thread). For work that should yield the CPU to
/// the threads that reconcile and serve while thousands of pods go at once.
pub fn make_thread_background(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions and touches no memory.
    let tid = unsafe { libc::gettid() };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; `tid`
    // is this thread's id.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: setpriority touches no memory; `tid` is this thread's id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A process's start time, in clock ticks since boot (`/proc/PID/stat`,
/// field 22): with the pid it names one process for the life of the
/// system, so a pid reused by another process is never taken for it.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces
    // or parentheses itself: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A process handle that stays bound to the process (not to its pid):
/// readable once the process has exited, so an adopted process (one that
/// is not our child) can be watched without polling.
#[derive(Debug)]
pub struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid` (Linux 5.3+).
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned by the kernel and is
        // owned by nobody else.
        Ok(PidFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
        }))
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a count of 1 and no wait.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Another descriptor for the same process.
    pub fn try_clone(&self) -> io::Result<PidFd> {
        Ok(PidFd(self.0.try_clone()?))
    }

    /// Reaps the process if it is our child and has exited: its exit code
    /// (128 + the signal for one killed by a signal), `None` while it runs.
    /// An error if it is not our child or was reaped already (`ECHILD`).
    /// Reaping frees the pid: nothing may signal it by pid afterwards.
    pub fn reap(&self) -> io::Result<Option<i32>> {
        // SAFETY: all zeroes is a valid siginfo_t (a plain C struct).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pidfd, a pointer to a siginfo_t we own for the
        // call, and flags; waitid writes only into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.0.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info` for a child (WEXITED); with WNOHANG
        // and nothing to report, it left si_pid 0.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => status,
            _ => 128 + status,
        }))
    }

    /// Sends `sig` to exactly this process, never to a process that reused
    /// its pid; `Ok` if it has exited.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// TCP connections in the network namespace of process `pid` that the
/// kernel has taken but no process has accepted yet: half-open ones
/// (`SYN_RECV`) and those waiting in a listener's accept queue. Read from
/// `/proc/PID/net/tcp` and `tcp6`, which walks the kernel's whole TCP hash
/// table (milliseconds): not for every pod of a large deletion.
pub fn unaccepted_connections(pid: u32) -> io::Result<usize> {
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        match std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(text) => n += unaccepted_in(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// [`unaccepted_connections`] of one `/proc/net/tcp` table: for a
/// listener (state `0A`) the receive queue column is its accept queue.
fn unaccepted_in(table: &str) -> usize {
    const SYN_RECV: &str = "03";
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .map(|line| {
            let mut cols = line.split_whitespace().skip(3);
            let state = cols.next().unwrap_or("");
            let rx_queue = cols
                .next()
                .and_then(|q| q.split_once(':'))
                .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
            match state {
                SYN_RECV => 1,
                LISTEN => rx_queue,
                _ => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod unaccepted_tests {
    use super::unaccepted_in;

    #[test]
    fn counts_accept_queues_and_half_open_connections_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 020010AC:1F90 030010AC:D431 03 00000000:00000000 02:00000064 00000000     0        0 0 1 0000000000000000
   3: 020010AC:1F90 030010AC:D432 01 00000000:000000A0 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
";
        // Two queued on the first listener, one half open; the established
        // connection's unread bytes are not connections.
        assert_eq!(unaccepted_in(table), 3);
        assert_eq!(unaccepted_in(""), 0);
        assert_eq!(unaccepted_in("header\ngarbage line\n"), 0);
    }
}

#[cfg(test)]
mod background_tests {
    use super::make_thread_background;

    #[test]
    fn a_background_thread_is_a_batch_thread_at_its_nice_value_and_others_are_not() {
        let (policy, nice) = std::thread::spawn(|| {
            make_thread_background(7).unwrap();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            // SAFETY: plain queries of this thread's scheduling.
            unsafe {
                (
                    libc::sched_getscheduler(tid),
                    libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
                )
            }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
        assert_eq!(nice, 7);
        // SAFETY: as above, for the test's own thread.
        let here = unsafe { libc::sched_getscheduler(libc::gettid()) };
        assert_eq!(here, libc::SCHED_OTHER, "only the calling thread changed");
    }
}

#[cfg(test)]
mod reap_tests {
    use super::PidFd;
    use std::process::Command;

    fn reaped(child: &std::process::Child) -> Option<i32> {
        let fd = PidFd::open(child.id()).unwrap();
        // Waits for the exit through the descriptor, then reaps.
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a count of 1, no timeout.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        let code = fd.reap().unwrap();
        assert!(
            fd.reap().is_err(),
            "a second reap finds no child: the first freed the pid"
        );
        code
    }

    #[test]
    // The children are reaped through their pidfds, which the lint cannot see.
    #[allow(clippy::zombie_processes)]
    fn a_child_is_reaped_through_its_pidfd_with_its_exit_code_or_128_plus_its_signal() {
        let exits = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        assert_eq!(reaped(&exits), Some(3));
        let killed = Command::new("sh")
            .args(["-c", "kill -TERM $$"])
            .spawn()
            .unwrap();
        assert_eq!(reaped(&killed), Some(128 + libc::SIGTERM));

        let mut runs = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(runs.id()).unwrap();
        assert_eq!(fd.reap().unwrap(), None, "a running child is not reaped");
        runs.kill().unwrap();
        runs.wait().unwrap();
        assert!(fd.reap().is_err(), "reaped already by its Child");
    }

    #[test]
    fn a_process_that_is_not_our_child_cannot_be_reaped() {
        let fd = PidFd::open(1).unwrap();
        assert!(fd.reap().is_err());
    }
}
