//! Damaged and missing state files: podnetd is SIGKILLed, one file of its
//! state directory is removed, cut short at a record boundary or garbled,
//! and podnetd is started again. Each time, either it refuses to start
//! with an error naming the file and leaves the file as it was (the object
//! store, which cannot be rebuilt), or it starts and then:
//! * every pod it knows runs with an address no other pod has, the same
//!   one its network namespace's `eth0` has;
//! * no pod namespace it made is left without a pod;
//! * IPAM holds exactly one lease per pod;
//! * a new pod gets an address nobody has;
//! * a file found missing or damaged is named in an event on the node.
//!
//! Every file of the state that names pods or addresses is tried, each
//! way: missing, cut at each record boundary (at most eight per file,
//! spread over it), and garbled in the middle of its records. Then a pod's
//! stored status is made to name another pod's address, and one outside
//! the subnet: the pod gets an address of its own.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_support::{ip_of, name_of, running, serial, terminating, text, wait_for, Node};

/// What is done to a file.
#[derive(Debug, Clone)]
enum Damage {
    Missing,
    /// Cut at this length.
    Truncated(usize),
    /// 32 bytes flipped from this offset on.
    Garbled(usize),
}

/// The offsets where the records of a podnet log or snapshot end: after
/// the header line, then after each `[u32 len][u32 !len][check][payload]`.
fn record_boundaries(bytes: &[u8], check_len: usize) -> Vec<usize> {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Vec::new();
    };
    let mut off = nl + 1;
    let mut out = vec![off];
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        let inv = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
        if len == 0 || inv != !len {
            break;
        }
        let next = off + 8 + check_len + len as usize;
        if next > bytes.len() {
            break;
        }
        off = next;
        out.push(off);
    }
    out
}

/// At most `n` of `all`, spread over it, the first and last included.
fn spread(all: &[usize], n: usize) -> Vec<usize> {
    if all.len() <= n {
        return all.to_vec();
    }
    let mut picked: Vec<usize> = (0..n).map(|i| all[i * (all.len() - 1) / (n - 1)]).collect();
    picked.dedup();
    picked
}

/// The ways to damage `file` as it is now.
fn damages_of(file: &Path, check_len: Option<usize>) -> Vec<Damage> {
    let bytes = std::fs::read(file).unwrap_or_default();
    let mut out = vec![Damage::Missing];
    let (cuts, end) = match check_len {
        Some(check) => {
            let b = record_boundaries(&bytes, check);
            let end = b.last().copied().unwrap_or(bytes.len());
            (spread(&b, 8), end)
        }
        // A JSON body after a header line: cut after the header and half-way.
        None => {
            let nl = bytes.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
            (vec![nl, (nl + bytes.len()) / 2], bytes.len())
        }
    };
    out.extend(cuts.into_iter().map(Damage::Truncated));
    // In the middle of what is written (not the zeros after it).
    out.push(Damage::Garbled(end / 2));
    out
}

fn apply(file: &Path, damage: &Damage) {
    match damage {
        Damage::Missing => std::fs::remove_file(file).unwrap(),
        Damage::Truncated(len) => std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(*len as u64)
            .unwrap(),
        Damage::Garbled(at) => {
            let mut bytes = std::fs::read(file).unwrap();
            let end = (*at + 32).min(bytes.len());
            for b in &mut bytes[*at..end] {
                *b ^= 0xa5;
            }
            std::fs::write(file, bytes).unwrap();
        }
    }
}

/// The IPv4 address of `eth0` in network namespace `ns`.
fn eth0_address(ns: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .ok()?;
    text(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
}

/// This node's pod namespaces on the host.
fn pod_namespaces(node: &Node) -> BTreeSet<String> {
    let prefix = daemon_support::pod_netns(&node.prefix);
    podnet::sys::netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn counter(node: &Node, name: &str) -> Option<u64> {
    let counters = node.json(&["stats"]);
    counters
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["value"].as_u64())
}

/// What is wrong with the node now; empty when every rule of the module
/// comment holds.
fn inconsistencies(node: &Node) -> Vec<String> {
    let mut wrong = Vec::new();
    let pods: Vec<_> = node
        .pods()
        .into_iter()
        .filter(|p| !terminating(p))
        .collect();
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &pods {
        let name = name_of(p);
        if !running(p) {
            wrong.push(format!("{name} is not running"));
            continue;
        }
        let ip = ip_of(p).unwrap_or_default();
        let on_host = eth0_address(&daemon_support::pod_netns(&name));
        if on_host.as_deref() != Some(ip.as_str()) {
            wrong.push(format!("{name}: status says {ip}, eth0 has {on_host:?}"));
        }
        by_ip.entry(ip).or_default().push(name);
    }
    for (ip, names) in &by_ip {
        if names.len() > 1 {
            wrong.push(format!("{ip} is held by {names:?}"));
        }
    }
    let names: BTreeSet<String> = node
        .pods()
        .iter()
        .map(|p| daemon_support::pod_netns(&name_of(p)))
        .collect();
    for ns in pod_namespaces(node) {
        if !names.contains(&ns) {
            wrong.push(format!("namespace {ns} has no pod"));
        }
    }
    let leases = counter(node, "ipam.leases");
    if leases != Some(node.pods().len() as u64) {
        wrong.push(format!(
            "IPAM holds {leases:?} leases for {} pods",
            node.pods().len()
        ));
    }
    wrong
}

fn wait_consistent(node: &Node, case: &str) {
    let ok = wait_for(Duration::from_secs(120), || {
        inconsistencies(node).is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "{case}: still inconsistent after 120 s: {:#?}\ndaemon log:\n{}",
        inconsistencies(node),
        node.daemon_log()
    );
}

/// Messages of the events on the node.
fn node_events(node: &Node) -> Vec<String> {
    node.api_get("/api/v1/namespaces/default/events")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "Node")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Sets a pod's `status.podIP` (and `podIPs`) in the stopped daemon's
/// object store, as a damaged or hand-edited store would have it.
fn rewrite_pod_ip(state: &Path, pod: &str, ip: &str) {
    use podnet::control::store::{FileStore, KvStore, Precondition, StoreOptions};
    let store = FileStore::open_with_options(state, StoreOptions::default()).unwrap();
    let key = format!("/registry/core/pods/default/{pod}");
    let kv = store
        .get(&key)
        .unwrap_or_else(|| panic!("no {key} in the store"));
    let mut obj: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    obj["status"]["podIP"] = ip.into();
    obj["status"]["podIPs"] = serde_json::json!([{ "ip": ip }]);
    let value = serde_json::to_vec(&obj).unwrap();
    store
        .put(
            &key,
            value.into(),
            Precondition::ModRevision(kv.mod_revision),
        )
        .unwrap();
}

fn sleeper(marker: &str) -> Vec<String> {
    vec!["sleep".into(), marker.into()]
}

#[test]
fn damaged_or_missing_state_files_never_give_an_address_twice() {
    let _s = serial();
    let mut node = Node::start();
    let marker = format!("{}", 8_000_000 + std::process::id());
    let web = node.name("web");
    node.create_deployment(&web, 3, &sleeper(&marker));
    node.deployment_pods(&web, 3);

    // (file, record check length: None for a JSON body, Some(n) for records).
    let files: [(&str, Option<usize>); 5] = [
        ("ipam/changes.log", Some(8)),
        ("ipam/state.json", None),
        ("store/log", Some(4)),
        ("store/snapshot", Some(4)),
        ("netns", None),
    ];
    let mut standalone: Vec<String> = Vec::new();
    let mut cases = 0;
    let mut refused = 0;
    for (rel, check) in files {
        let mut i = 0;
        loop {
            // Writes that land in the logs: a pod made, an older one removed.
            let pod = node.name("w");
            node.run_pod(&pod, &[], &sleeper(&marker));
            node.wait_running(&pod);
            standalone.push(pod);
            if standalone.len() > 2 {
                // Gone already if a damaged store lost it.
                let old = standalone.remove(0);
                let _ = node.podnet(&["pod", "delete", &old]);
            }
            wait_consistent(&node, &format!("before damaging {rel}"));

            node.signal_daemon("KILL", Duration::from_secs(30))
                .expect("podnetd did not die of SIGKILL");
            // `netns`: one pod's record of its namespace.
            let file: PathBuf = match rel {
                "netns" => {
                    let ns = daemon_support::pod_netns(standalone.last().unwrap());
                    node.state.join("netns").join(ns)
                }
                _ => node.state.join(rel),
            };
            let damages = match rel {
                "netns" => vec![Damage::Missing],
                _ => damages_of(&file, check),
            };
            let Some(damage) = damages.get(i).cloned() else {
                node.start_daemon();
                break;
            };
            i += 1;
            cases += 1;
            let before = std::fs::read(&file).ok();
            apply(&file, &damage);
            let after = std::fs::read(&file).ok();
            let case = format!("{} {damage:?}", file.display());
            eprintln!("case {cases}: {case}");
            match node.try_start_daemon() {
                Err(log) => {
                    refused += 1;
                    assert!(
                        rel.starts_with("store/"),
                        "{case}: podnetd refused to start, but this state can be rebuilt:\n{log}"
                    );
                    assert!(
                        log.contains(&file.display().to_string()),
                        "{case}: the error does not name the file:\n{log}"
                    );
                    assert_eq!(
                        std::fs::read(&file).ok(),
                        after,
                        "{case}: the damaged file was changed"
                    );
                    if let Some(b) = &before {
                        std::fs::write(&file, b).unwrap();
                    }
                    node.start_daemon();
                    wait_consistent(&node, &format!("{case}, restored"));
                }
                Ok(()) => {
                    wait_consistent(&node, &case);
                    // Whatever can be told from a shorter, intact file.
                    let reported =
                        matches!(damage, Damage::Missing | Damage::Garbled(_)) && rel != "netns";
                    if reported {
                        let name = file.file_name().unwrap().to_string_lossy().to_string();
                        let events = node_events(&node);
                        assert!(
                            events.iter().any(|m| m.contains(&name)),
                            "{case}: no event on the node names {name}: {events:#?}"
                        );
                    }
                }
            }
        }
    }
    // Objects that say what cannot be: a pod's stored status naming
    // another pod's address, or an address outside the node's subnet.
    let pods = node.pods();
    let (victim, other) = (name_of(&pods[0]), ip_of(&pods[1]).unwrap());
    for bad_ip in [other.as_str(), "192.0.2.77"] {
        node.signal_daemon("KILL", Duration::from_secs(30))
            .expect("podnetd did not die of SIGKILL");
        rewrite_pod_ip(&node.state, &victim, bad_ip);
        cases += 1;
        let case = format!("{victim}'s stored status says {bad_ip}");
        eprintln!("case {cases}: {case}");
        node.start_daemon();
        wait_consistent(&node, &case);
    }

    // A new pod after all of it: an address nobody has.
    let last = node.name("last");
    node.run_pod(&last, &[], &sleeper(&marker));
    node.wait_running(&last);
    wait_consistent(&node, "at the end");
    println!("state_damage.cases: {cases}");
    println!("state_damage.refused_starts: {refused}");
    println!("reliability.duplicate_ips: 0");
}
