//! Crash consistency under churn: podnetd is SIGKILLed at random moments
//! while pods are created and deleted, and restarted at once. Afterwards
//! every pod the store knows runs with an address no other pod has, and
//! once they are deleted nothing podnet made is left: no namespace, no
//! process, no address lease.
//!
//! `PODNET_CHURN_KILLS` sets the number of kills (default 50); the test
//! prints `reliability.kills`, `reliability.leaks` and
//! `reliability.duplicate_ips` lines.

mod daemon_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use daemon_support::{ip_of, name_of, serial, wait_for, Node};

/// Pods whose status shows the same address.
fn duplicate_ips(node: &Node) -> Vec<String> {
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in node.pods() {
        if let Some(ip) = ip_of(&p) {
            by_ip.entry(ip).or_default().push(name_of(&p));
        }
    }
    by_ip
        .into_iter()
        .filter(|(_, pods)| pods.len() > 1)
        .map(|(ip, pods)| format!("{ip}: {pods:?}"))
        .collect()
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

fn counter(node: &Node, name: &str) -> u64 {
    let counters = node.json(&["stats"]);
    counters
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["value"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}: {counters}"))
}

#[test]
fn sigkill_during_pod_churn_leaks_nothing() {
    let _s = serial();
    let kills: u32 = std::env::var("PODNET_CHURN_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let mut node = Node::start();
    let prefix = node.name("ch");
    // A command line no other process has, to find leaked pod processes.
    let marker = format!("{}", 7_000_000 + std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let cli = node.cli(&[]);
        let socket: Vec<_> = cli.get_args().map(|a| a.to_owned()).collect();
        let program = cli.get_program().to_owned();
        let prefix = prefix.clone();
        let marker = marker.clone();
        std::thread::spawn(move || {
            let podnet = |args: &[&str]| {
                let _ = std::process::Command::new(&program)
                    .args(&socket)
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("{prefix}-{i}");
                podnet(&["pod", "run", &name, "--", "sleep", &marker]);
                if i >= 3 {
                    let old = format!("{prefix}-{}", i - 3);
                    podnet(&["pod", "delete", &old, "--wait=false"]);
                }
                i += 1;
            }
            i
        })
    };
    // Kill at moments spread over a pod's setup (a few to a few hundred
    // milliseconds after the daemon answers), from a seeded sequence.
    let mut seed = u64::from(std::process::id()) | 1;
    let mut duplicates = Vec::new();
    for _ in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 400));
        node.signal_daemon("KILL", Duration::from_secs(30))
            .expect("podnetd exits on SIGKILL");
        node.start_daemon();
        duplicates.extend(duplicate_ips(&node));
    }
    stop.store(true, Ordering::Relaxed);
    let created = churn.join().unwrap();
    assert!(created > kills, "the churn created only {created} pods");

    // Every pod the store has settles: Running with its own address.
    let settled = wait_for(Duration::from_secs(120), || {
        let pods = node.pods();
        pods.iter()
            .all(|p| daemon_support::running(p) || daemon_support::terminating(p))
            .then_some(pods.len())
    });
    assert!(
        settled.is_some(),
        "pods did not settle after the kills: {:?}\n{}",
        node.pods()
            .iter()
            .map(|p| (name_of(p), daemon_support::phase(p).to_string()))
            .collect::<Vec<_>>(),
        node.daemon_log()
    );
    duplicates.extend(duplicate_ips(&node));

    // Delete them all: nothing podnet made may remain.
    for p in node.pods() {
        node.podnet(&["pod", "delete", &name_of(&p), "--wait=false"]);
    }
    let emptied = wait_for(Duration::from_secs(120), || {
        node.pods().is_empty().then_some(())
    });
    assert!(emptied.is_some(), "pods still listed after deletion");
    let mut leaks = Vec::new();
    // A deleted pod's namespace is removed by the daemon's janitor after it
    // has stopped what runs there (a moment later, in a batch): wait for it.
    let ours = |node: &Node| -> Vec<String> {
        node.pod_namespaces()
            .into_iter()
            .filter(|n| n.contains(&prefix))
            .collect()
    };
    let _ = wait_for(Duration::from_secs(30), || {
        ours(&node).is_empty().then_some(())
    });
    let namespaces = ours(&node);
    leaks.extend(namespaces.iter().map(|n| format!("namespace {n}")));
    // Removal of namespaces and processes follows the deletion at once;
    // a process's exit is asynchronous, so wait for it (generously).
    let _ = wait_for(Duration::from_secs(30), || {
        processes_with(&marker).is_empty().then_some(())
    });
    leaks.extend(
        processes_with(&marker)
            .iter()
            .map(|p| format!("process {p}")),
    );
    let leases = wait_for(Duration::from_secs(30), || {
        let n = counter(&node, "ipam.leases");
        (n == 0).then_some(n)
    })
    .unwrap_or_else(|| counter(&node, "ipam.leases"));
    leaks.extend((0..leases).map(|_| "an address lease".to_string()));
    println!("reliability.kills: {kills}");
    println!("reliability.pods_created: {created}");
    println!("reliability.leaks: {}", leaks.len());
    println!("reliability.duplicate_ips: {}", duplicates.len());
    assert!(leaks.is_empty(), "leaked after churn: {leaks:?}");
    assert!(
        duplicates.is_empty(),
        "addresses held by two pods: {duplicates:?}"
    );
}
