//! Root tests of `sys::process`: a pod process spawned inside its namespace,
//! its environment and log, and killing its whole process group.

mod sys_support;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use podnet::sys::link;
use podnet::sys::process::{self, Signal, SpawnError};
use podnet::sys::tun::Tun;
use sys_support::NsGuard;

fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids whose process group is `pgid` and which are not zombies.
fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

#[test]
fn spawn_in_namespace_env_log_and_kill_group() {
    let guard = NsGuard::new("proc");
    let tun = guard
        .ns
        .run(
            || -> Result<Tun, Box<dyn std::error::Error + Send + Sync>> {
                let tun = Tun::create("eth0", true)?;
                link::set_up("eth0")?;
                Ok(tun)
            },
        )
        .unwrap()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("pod.log");
    std::fs::write(&log_path, "earlier run\n").unwrap();
    let log = std::fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap();
    let argv: Vec<String> = [
        "sh",
        "-c",
        "cat /proc/self/net/dev; readlink /proc/self/ns/net; echo POD_NAME=$POD_NAME; echo to-stderr >&2; sleep 60 & sleep 60; wait",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [("POD_NAME".to_string(), "web-1".to_string())];
    let mut child = process::spawn_in(&guard.ns, &argv, &env, log).unwrap();
    let pid = child.id();

    let text = wait_for_log(&log_path, "to-stderr");
    assert!(
        text.starts_with("earlier run\n"),
        "log must be appended to: {text}"
    );
    assert!(
        text.contains("eth0:"),
        "the child must see the namespace's eth0: {text}"
    );
    assert!(text.contains("POD_NAME=web-1"), "{text}");
    // eth0 alone could be the host's: the namespace identity proves where it ran.
    let inode = std::fs::metadata(guard.ns.path()).unwrap().ino();
    assert!(
        text.contains(&format!("net:[{inode}]")),
        "child ran outside {}: {text}",
        guard.name()
    );
    assert!(process::is_alive(pid));

    // Own process group, led by the child: the shell and both sleeps.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live_group_members(pid).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "expected sh + 2 sleeps in group {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    process::kill_group(pid, Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_group_members(pid).is_empty() {
        assert!(Instant::now() < deadline, "group {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process::is_alive(pid));
    // Gone already: Ok.
    process::kill_group(pid, Signal::SIGKILL).unwrap();
    process::kill(pid, Signal::SIGTERM).unwrap();
    drop(tun);
}

#[test]
fn spawn_errors_and_guards() {
    let guard = NsGuard::new("perr");
    let log = tempfile::tempfile().unwrap();
    let argv = vec!["podnet-no-such-program".to_string()];
    let err = process::spawn_in(&guard.ns, &argv, &[], log).unwrap_err();
    assert!(matches!(err, SpawnError::Spawn { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("podnet-no-such-program") && msg.contains(guard.name()),
        "{msg}"
    );

    let log = tempfile::tempfile().unwrap();
    assert!(matches!(
        process::spawn_in(&guard.ns, &[], &[], log),
        Err(SpawnError::EmptyCommand)
    ));
    // Never signal our own group (0), init (1) or a negative pid.
    for bad in [0u32, 1, u32::MAX] {
        assert!(matches!(
            process::kill_group(bad, Signal::SIGTERM),
            Err(SpawnError::InvalidPid(_))
        ));
        assert!(matches!(
            process::kill(bad, Signal::SIGTERM),
            Err(SpawnError::InvalidPid(_))
        ));
        assert!(!process::is_alive(bad));
    }
    assert!(process::is_alive(std::process::id()));
}

/// A process is named by pid and start time, and watched and signalled
/// through a pidfd that never reaches a process that reused its pid.
#[test]
fn start_time_and_pidfd_follow_one_process() {
    // A process that is not our child, as an adopted pod process is not
    // the restarted daemon's: a shell starts `sleep` in the background
    // and exits, so init reaps it.
    let out = std::process::Command::new("sh")
        .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
        .output()
        .expect("sh");
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let start = process::start_time(pid).expect("a start time for a live process");
    assert_eq!(process::start_time(pid), Some(start), "stable");
    // Another process (init, started at boot) has another start time.
    assert_ne!(process::start_time(1), Some(start));
    let fd = process::PidFd::open(pid).expect("pidfd_open");
    assert!(!fd.exited());
    fd.signal(Signal::SIGKILL).expect("pidfd_send_signal");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fd.exited() {
        assert!(Instant::now() < deadline, "the pidfd never became readable");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Signalling a process that is gone is not an error, and reaches no one.
    fd.signal(Signal::SIGKILL).unwrap();
    assert_eq!(process::start_time(u32::MAX), None);
}
