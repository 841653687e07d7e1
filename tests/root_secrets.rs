//! Root test: Secrets are encrypted at rest. Values created with the real
//! kubectl (`create secret generic --from-literal`/`--from-file`, `create
//! secret tls` with a certificate made here) reach a pod and come back
//! base64-encoded from `kubectl get -o yaml`, but appear nowhere under the
//! state directory in clear (nor base64-encoded); they survive a restart; a
//! start with a missing key file fails with a clear message and changes
//! nothing.
//!
//! Needs root; the harness is `kube_node`.

mod daemon_support;
mod kube_node;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_support::{text, wait_for, PODNET, POD_START};
use kube_node::KubeNode;

fn state_dir(node: &KubeNode) -> PathBuf {
    node._tmp.path().join("state")
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn base64(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    let out = Command::new("base64")
        .arg("-w0")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    text(&out.stdout).trim().to_string()
}

fn jsonpath(node: &KubeNode, what: &str, path: &str) -> String {
    node.k(&["get", what, "-o", &format!("jsonpath={path}")])
}

#[test]
fn root_secret_values_are_never_in_clear_under_the_state_dir() {
    let mut node = KubeNode::start();
    let work = node._tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let pid = std::process::id();
    let literal = format!("literal-Zq7-{pid}-value");
    let file_value = format!("file-Kx9-{pid}-value");
    let file = work.join("token");
    std::fs::write(&file, &file_value).unwrap();
    let (cert, key) = (work.join("tls.crt"), work.join("tls.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=secret.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));

    node.k(&[
        "create",
        "secret",
        "generic",
        "lit",
        &format!("--from-literal=password={literal}"),
    ]);
    node.k(&[
        "create",
        "secret",
        "generic",
        "fromfile",
        &format!("--from-file=token={}", file.display()),
    ]);
    node.k(&[
        "create",
        "secret",
        "tls",
        "tls",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]);

    // The values reach a pod (decrypted on the way)...
    let mnt = node._tmp.path().join("mnt").display().to_string();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: sec
    secret: {{secretName: lit}}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - {{name: sec, mountPath: "{mnt}/sec", readOnly: true}}
"#
    ));
    let running = wait_for(POD_START, || {
        (jsonpath(&node, "pod/reader", "{.status.phase}") == "Running").then_some(())
    });
    assert!(running.is_some(), "reader not Running:\n{}", node.log());
    let mut exec = Command::new(PODNET);
    exec.arg("--socket")
        .arg(node._tmp.path().join("podnet.sock"))
        .args(["-n", &node.namespace, "pod", "exec", "reader", "--"])
        .args(["cat", &format!("{mnt}/sec/password")]);
    let out = daemon_support::run_timeout(exec, std::time::Duration::from_secs(30)).0;
    assert_eq!(text(&out.stdout), literal, "{}", text(&out.stderr));

    // ... and come back base64-encoded, as from a cluster.
    let needles: Vec<(String, Vec<u8>)> = vec![
        ("literal".into(), literal.clone().into_bytes()),
        ("file".into(), file_value.clone().into_bytes()),
        ("tls key".into(), std::fs::read(&key).unwrap()),
    ];
    assert_eq!(
        jsonpath(&node, "secret/lit", "{.data.password}"),
        base64(literal.as_bytes())
    );
    assert_eq!(
        jsonpath(&node, "secret/fromfile", "{.data.token}"),
        base64(file_value.as_bytes())
    );
    assert_eq!(
        jsonpath(&node, "secret/tls", "{.data.tls\\.key}"),
        base64(&needles[2].1)
    );
    let yaml = node.k(&["get", "secret", "lit", "-o", "yaml"]);
    assert!(yaml.contains(&base64(literal.as_bytes())), "{yaml}");

    let check_state = |node: &KubeNode| {
        for (what, value) in &needles {
            let encoded = base64(value);
            // A whole PEM is long: its middle is as telling as all of it.
            let pem_line: Vec<u8> = if value.len() > 200 {
                value[100..160].to_vec()
            } else {
                value.clone()
            };
            for needle in [pem_line, encoded.into_bytes()] {
                let found = files_containing(&state_dir(node), &needle);
                assert!(
                    found.is_empty(),
                    "the {what} secret value is in clear under the state dir: {found:?}"
                );
            }
        }
    };
    check_state(&node);
    let key_file = state_dir(&node).join("encryption.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key_file.display());
    assert!(!files_containing(
        &state_dir(&node).join("store"),
        b"k8s:enc:xchacha20poly1305:v1:key1:"
    )
    .is_empty());

    // A restart reads them back (and writes nothing in clear).
    node.stop_daemon();
    node.start_daemon();
    assert_eq!(
        jsonpath(&node, "secret/lit", "{.data.password}"),
        base64(literal.as_bytes())
    );
    check_state(&node);

    // A missing key file: the start fails, saying why, and changes nothing.
    node.stop_daemon();
    let store = state_dir(&node).join("store");
    let snapshot = |p: &Path| {
        ["snapshot", "log"]
            .map(|f| std::fs::read(p.join(f)).unwrap_or_default())
            .to_vec()
    };
    let before = snapshot(&store);
    let elsewhere = node._tmp.path().join("no-such.key");
    node.extra_args = vec![
        "--encryption-key-file".into(),
        elsewhere.display().to_string(),
    ];
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.start_daemon()));
    assert!(started.is_err(), "podnetd started without its key");
    node.daemon = None;
    let log = node.log();
    assert!(
        log.contains("does not decrypt") && log.contains("no-such.key"),
        "no clear message:\n{log}"
    );
    assert!(!elsewhere.exists(), "a key made for nothing was left");
    assert!(
        snapshot(&store) == before,
        "a refused start changed the store"
    );

    // With the right key again, everything is there.
    node.extra_args.clear();
    node.start_daemon();
    assert_eq!(
        jsonpath(&node, "secret/fromfile", "{.data.token}"),
        base64(file_value.as_bytes())
    );
    node.k(&["delete", "pod", "reader", "--wait=true", "--timeout=90s"]);
}
