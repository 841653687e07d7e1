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

use super::netns::NetNs;

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
    // `netns` is borrowed for the whole call, so this descriptor stays open until
    // the child has exec'd; it is O_CLOEXEC, so the pod does not inherit it.
    let ns_fd = netns.as_fd().as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setns(2), a raw syscall that is async-signal-safe, on a descriptor that is
    // open in the child (inherited from the parent, see above); it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| SpawnError::Spawn {
        program: program.clone(),
        netns: netns.name().to_owned(),
        source,
    })
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
