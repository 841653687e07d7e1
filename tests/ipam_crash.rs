//! Crash safety of the IPAM file store: a child process allocates and releases
//! as fast as it can and is killed with SIGKILL at random moments; after each
//! kill the state must hold every acknowledged allocation and no address twice.
//!
//! The child is this test binary run again with `--exact crash_child` and
//! `PODNET_IPAM_CRASH_DIR` set; it prints a line for each operation only after
//! the call returned, so a printed line is an acknowledgement.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use podnet::control::ipam::{AllocateRequest, FileStore, Ipam, IpamConfig};

const DIR_VAR: &str = "PODNET_IPAM_CRASH_DIR";
const RUN_VAR: &str = "PODNET_IPAM_CRASH_RUN";
const RUNS: u32 = 60;

fn config() -> IpamConfig {
    IpamConfig {
        subnet_v4: Some("10.244.0.0/20".parse().unwrap()),
        subnet_v6: Some("fd00:10:244::/64".parse().unwrap()),
        quarantine: Duration::from_millis(500),
    }
}

fn addrs_text(a: &podnet::control::ipam::Allocation) -> String {
    let show = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    format!(
        "{} {}",
        show(a.v4.map(|x| x.to_string())),
        show(a.v6.map(|x| x.to_string()))
    )
}

/// Child mode: does nothing unless the parent test started this process.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let run = std::env::var(RUN_VAR).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let mut ipam = Ipam::open(Box::new(FileStore::open(&dir).unwrap()), config()).unwrap();
    // libtest has already printed "test crash_child ... " without a newline.
    writeln!(out, "\nopened").unwrap();
    out.flush().unwrap();
    for i in 0.. {
        let owner = format!("r{run}-{i}");
        let a = ipam
            .allocate(AllocateRequest::new(owner.as_str()), SystemTime::now())
            .unwrap();
        // One write per line: a pipe write this small is all or nothing.
        writeln!(out, "alloc {owner} {}", addrs_text(&a)).unwrap();
        out.flush().unwrap();
        let live = ipam.list();
        if live.len() > 30 || fastrand::u8(..3) == 0 {
            let victim = live[fastrand::usize(..live.len())].owner.clone();
            writeln!(out, "releasing {victim}").unwrap();
            out.flush().unwrap();
            ipam.release(&victim, SystemTime::now()).unwrap();
            writeln!(out, "released {victim}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_allocation() {
    if std::env::var(DIR_VAR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // What the state held after the previous kill, then the acknowledged ops on top.
    let mut known: HashMap<String, String> = HashMap::new();
    let mut acked_allocs = 0;
    let mut killed_after_open = 0;
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(RUN_VAR, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line without its newline was cut by the kill: not an acknowledgement.
                if line.ends_with('\n') {
                    lines.push(line.trim_end().to_string());
                }
                line.clear();
            }
            lines
        });
        // Opening takes tens of ms in a debug build; the window covers the open
        // (a compaction) as well as a stream of appends.
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..150_000)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        let mut in_doubt: HashSet<String> = HashSet::new();
        for line in &lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["opened"] => killed_after_open += 1,
                ["alloc", owner, v4, v6] => {
                    acked_allocs += 1;
                    known.insert(owner.to_string(), format!("{v4} {v6}"));
                }
                ["releasing", owner] => {
                    in_doubt.insert(owner.to_string());
                }
                ["released", owner] => {
                    in_doubt.remove(owner);
                    known.remove(owner);
                }
                _ => {} // the test harness's own output
            }
        }

        let ipam = Ipam::open(Box::new(FileStore::open(dir.path()).unwrap()), config())
            .unwrap_or_else(|e| panic!("run {run}: reopening after SIGKILL: {e}"));
        let list = ipam.list();
        let mut seen: HashSet<IpAddr> = HashSet::new();
        for a in &list {
            for addr in a.addrs() {
                assert!(seen.insert(addr), "run {run}: {addr} held twice");
            }
        }
        let stored: HashMap<String, String> = list
            .iter()
            .map(|a| (a.owner.0.clone(), addrs_text(a)))
            .collect();
        for (owner, addrs) in &known {
            if in_doubt.contains(owner) {
                continue;
            }
            assert_eq!(
                stored.get(owner),
                Some(addrs),
                "run {run}: acknowledged allocation of {owner} lost or changed"
            );
        }
        // Besides what was known, at most the one allocation in flight may have landed.
        let unknown: Vec<&String> = stored.keys().filter(|o| !known.contains_key(*o)).collect();
        assert!(
            unknown.len() <= 1,
            "run {run}: unexpected owners {unknown:?}"
        );
        known = stored;
    }
    eprintln!(
        "{RUNS} kills, {killed_after_open} after open, {acked_allocs} acknowledged allocations"
    );
    assert!(
        killed_after_open >= RUNS / 4 && acked_allocs >= 100,
        "kills came too early to test anything: {killed_after_open} after open, {acked_allocs} allocations"
    );
}
