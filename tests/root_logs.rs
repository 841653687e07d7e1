//! `kubectl logs --timestamps`, `--since`, `--since-time`, with `--tail`,
//! `--limit-bytes` and `-f`, against podnetd with the real kubectl: a
//! line's time is when the node first saw it, lines written while the
//! daemon was down are timed when it comes back.
//!
//! The pod writes when the test lets it (a file appears), so the gaps
//! between its lines are made by the test; every bound is decided from the
//! times kubectl printed, never from a race with the wall clock.
//!
//! Needs root (network namespaces); run with `cargo test --test root_logs`.

mod daemon_support;
mod kube_node;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use daemon_support::{text, wait_for};
use k8s_openapi::jiff::Timestamp;
use kube_node::KubeNode;

/// Prints `first`, then `second` and `third` once `go1` exists, then
/// `fourth` once `go2` exists, then `fifth` once `go3` exists.
fn manifest(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: none
    command:
    - sh
    - -c
    - 'echo first; until [ -e {d}/go1 ]; do sleep 0.1; done; echo second; echo third; until [ -e {d}/go2 ]; do sleep 0.1; done; echo fourth; until [ -e {d}/go3 ]; do sleep 0.1; done; echo fifth; exec sleep 100000'
"#
    )
}

/// `kubectl logs` with `args` for the pod, in the test's namespace.
fn logs(node: &KubeNode, args: &[&str]) -> String {
    let mut a = vec!["logs", "talker"];
    a.extend_from_slice(args);
    node.k(&a)
}

/// Waits until the pod's log shows `line`.
fn wait_line(node: &KubeNode, line: &str) {
    let seen = wait_for(Duration::from_secs(60), || {
        logs(node, &[]).lines().any(|l| l == line).then_some(())
    });
    assert!(
        seen.is_some(),
        "the log never showed {line:?}:\n{}",
        node.log()
    );
}

/// The lines of `kubectl logs --timestamps` output, split into the time
/// and the text after it (checking the kubelet's format on the way).
fn timed(out: &str) -> Vec<(Timestamp, String)> {
    out.lines()
        .map(|l| {
            let (t, rest) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("no prefix: {l:?}"));
            // RFC3339Nano with all nine digits, in UTC.
            assert_eq!(t.len(), 30, "{t:?}");
            assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t:?}");
            (t.parse().expect("an RFC 3339 time"), rest.to_string())
        })
        .collect()
}

fn seconds(d: k8s_openapi::jiff::SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// A `kubectl logs -f` running beside the test, its lines read on a
/// thread; killed on drop (also when the test fails).
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(node: &KubeNode, args: &[&str]) -> Follower {
        let mut a = vec!["-n", node.namespace.as_str(), "logs", "-f", "talker"];
        a.extend_from_slice(args);
        let mut child = node
            .kubectl_command(&a)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The lines until one ends with `last` (within a generous bound).
    fn until(&self, last: &str) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(60)) {
            let done = l.ends_with(last);
            got.push(l);
            if done {
                return got;
            }
        }
        panic!("the follower never showed {last:?}; it showed {got:?}");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn root_kubectl_logs_times_lines_and_selects_them_by_time() {
    let _serial = daemon_support::serial();
    let mut node = KubeNode::start();
    let dir = node._tmp.path().to_path_buf();
    node.apply(&manifest(&dir));
    node.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/talker",
        "--timeout=180s",
    ]);
    wait_line(&node, "first");
    // A gap the test makes: "first" was seen before it, the rest after.
    std::thread::sleep(Duration::from_millis(3500));
    std::fs::write(dir.join("go1"), "").unwrap();
    wait_line(&node, "third");

    // --timestamps: every line behind its time, times in order.
    let all = logs(&node, &["--timestamps"]);
    let lines = timed(&all);
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts, ["first", "second", "third"], "{all}");
    let (t1, t2, t3) = (lines[0].0, lines[1].0, lines[2].0);
    assert!(t1 <= t2 && t2 <= t3, "{all}");
    let gap = seconds(t2.duration_since(t1));
    assert!(gap > 3.0, "the test's gap is seen: {gap} s\n{all}");
    assert_eq!(
        logs(&node, &[]),
        "first\nsecond\nthird\n",
        "no prefix without --timestamps"
    );

    // --since-time: kubectl sends whole seconds; the second after "first"
    // was seen comes before "second" (3.5 s later).
    let after_first = Timestamp::from_second(t1.as_second() + 1).unwrap();
    let since_time = after_first.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(
        logs(&node, &["--since-time", &since_time]),
        "second\nthird\n",
        "since {since_time}; times:\n{all}"
    );
    // The API itself takes the exact time: a line at the bound is shown.
    let raw = |q: &str| {
        node.kubectl(
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{}/pods/talker/log?{q}", node.namespace),
            ],
            None,
        )
    };
    let exact = t2.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string();
    let out = raw(&format!("timestamps=true&sinceTime={exact}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        timed(&text(&out.stdout))
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>(),
        ["second", "third"]
    );
    // Both bounds at once: refused as the API server refuses them.
    let out = raw(&format!("sinceSeconds=5&sinceTime={exact}"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at most one of `sinceTime` or `sinceSeconds` may be specified"),
        "{}",
        text(&out.stderr)
    );

    // --since=Ns counts back from the server's now, which lies between the
    // test's clock before and after kubectl ran: the bound falls between
    // "first" and "second" when N is long enough to reach back past
    // "second" from `after` and short enough not to reach "first" from
    // `before`. A kubectl slow enough to spoil that is run again.
    let now = || {
        let d = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        Timestamp::from_nanosecond(d.as_nanos() as i128).unwrap()
    };
    let mut checked = false;
    for _ in 0..10 {
        let before = now();
        let n = seconds(before.duration_since(t2)).ceil() as i64 + 1;
        let out = logs(&node, &["--since", &format!("{n}s")]);
        let after = now();
        if (n as f64) >= seconds(after.duration_since(t2))
            && (n as f64) < seconds(before.duration_since(t1))
        {
            assert_eq!(out, "second\nthird\n", "--since={n}s; times:\n{all}");
            checked = true;
            break;
        }
    }
    assert!(
        checked,
        "kubectl never ran quickly enough to decide --since"
    );
    assert_eq!(logs(&node, &["--since", "1h"]), "first\nsecond\nthird\n");

    // With --tail and --limit-bytes: the same times, cut as asked.
    let last = logs(&node, &["--timestamps", "--tail", "1"]);
    assert_eq!(last, all.lines().nth(2).unwrap().to_string() + "\n");
    assert_eq!(
        logs(&node, &["--tail", "2", "--since-time", &since_time]),
        "second\nthird\n"
    );
    assert_eq!(
        logs(&node, &["--tail", "3", "--since-time", &since_time]),
        "second\nthird\n",
        "of the last three lines, those since the bound"
    );
    assert_eq!(
        logs(&node, &["--timestamps", "--limit-bytes", "40"]),
        all[..40],
        "the limit counts the prefixes"
    );

    // -f --timestamps: what is there, then each new line with its time.
    let follower = Follower::start(&node, &["--timestamps"]);
    let shown = follower.until(" third");
    assert_eq!(shown.join("\n") + "\n", all);
    std::fs::write(dir.join("go2"), "").unwrap();
    let more = follower.until(" fourth");
    assert_eq!(more.len(), 1, "{more:?}");
    let (t4, line) = timed(&more[0]).remove(0);
    assert_eq!(line, "fourth");
    assert!(t4 >= t3);
    drop(follower);
    // -f --since-time: only what came since, then followed.
    let follower = Follower::start(&node, &["--since-time", &since_time]);
    assert_eq!(follower.until("fourth"), ["second", "third", "fourth"]);
    drop(follower);

    // A line written while the daemon is down is timed when the daemon
    // comes back and finds it.
    node.stop_daemon();
    std::fs::write(dir.join("go3"), "").unwrap();
    let file = dir
        .join("state")
        .join("logs")
        .join(format!("{}_talker_main.log", node.namespace));
    let written = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|l| l.contains("fifth"))
            .map(|_| ())
    });
    assert!(written.is_some(), "the pod never wrote its fifth line");
    let down = now();
    node.start_daemon();
    let lines = timed(&logs(&node, &["--timestamps"]));
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[3].0, t4, "times already taken are kept");
    assert_eq!(lines[4].1, "fifth");
    assert!(lines[4].0 >= down, "timed at the restart: {:?}", lines[4]);
}
