//! Root tests: what a pod sees of its configuration, driven by the real
//! kubectl: env from ConfigMaps and Secrets, its host name, `/etc/hosts`
//! and `/etc/resolv.conf`, and its volumes (configMap updated while it
//! runs, secret on tmpfs, emptyDir across a restart, hostPath types),
//! each inside the pod's own mount namespace and gone from the host after
//! the pod is deleted.
//!
//! Needs root; the harness is `kube_node` (a daemon in a node network
//! namespace made for the test, a Kubernetes namespace unique to the run).

mod daemon_support;
mod kube_node;

use std::process::{Command, Output};
use std::time::Duration;

use daemon_support::{run_timeout, text, wait_for, PODNET, POD_START, RESTART, SETTLE};
use kube_node::KubeNode;

/// `podnet pod exec POD -- ARGS` against the test's daemon.
fn exec(node: &KubeNode, pod: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(PODNET);
    cmd.arg("--socket")
        .arg(node._tmp.path().join("podnet.sock"))
        .args(["-n", &node.namespace, "pod", "exec", pod, "--"])
        .args(args);
    run_timeout(cmd, Duration::from_secs(30)).0
}

fn exec_ok(node: &KubeNode, pod: &str, args: &[&str]) -> String {
    let out = exec(node, pod, args);
    assert!(
        out.status.success(),
        "exec {args:?} in {pod} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn jsonpath(node: &KubeNode, what: &str, path: &str) -> String {
    let out = node.kubectl(
        &[
            "-n",
            &node.namespace,
            "get",
            what,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    );
    text(&out.stdout)
}

fn wait_running(node: &KubeNode, pod: &str) {
    let ok = wait_for(POD_START, || {
        (jsonpath(node, &format!("pod/{pod}"), "{.status.phase}") == "Running").then_some(())
    });
    assert!(
        ok.is_some(),
        "pod {pod} not Running:\n{}\n{}",
        node.k(&["get", "pod", pod, "-o", "yaml"]),
        node.log()
    );
}

/// Lines of the node's mount table (the host's: the daemon shares the
/// test's mount namespace) that mention `needle`.
fn host_mounts(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn state_dir(node: &KubeNode) -> std::path::PathBuf {
    node._tmp.path().join("state")
}

/// Deletes the pod and checks nothing of it is left: no mount on the host
/// naming it or its files, no `STATE/pods/UID`, no pinned namespaces.
fn delete_and_check_gone(node: &KubeNode, pod: &str) {
    let uid = jsonpath(node, &format!("pod/{pod}"), "{.metadata.uid}");
    assert!(!uid.is_empty());
    node.k(&["delete", "pod", pod, "--wait=true", "--timeout=90s"]);
    let pinned = std::path::Path::new("/run/podnet/ns").join(format!("{}.{pod}", node.namespace));
    let gone = wait_for(SETTLE, || {
        (!state_dir(node).join("pods").join(&uid).exists() && !pinned.exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "pod {pod}'s files or namespaces are left: {:?} {}",
        std::fs::read_dir(state_dir(node).join("pods")).map(|d| d.count()),
        pinned.display()
    );
    let left = host_mounts(&uid);
    assert!(
        left.is_empty(),
        "mounts of the pod left on the host: {left:?}"
    );
    // The network namespace's name goes once the daemon's janitor has
    // stopped what ran there (a moment after the pod object).
    let netns = format!("{}.{pod}", node.namespace);
    let _ = wait_for(SETTLE, || host_mounts(&netns).is_empty().then_some(()));
    let left = host_mounts(&netns);
    assert!(
        left.is_empty(),
        "mounts of the pod left on the host: {left:?}"
    );
}

const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

#[test]
fn root_hostname_hosts_and_resolv_conf_inside_the_pod() {
    let node = KubeNode::start();
    let before = host_mounts(&node.namespace);
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ident
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 2
  hostAliases:
  - ip: "192.0.2.9"
    hostnames: ["foo.local", "bar.local"]
  dnsConfig:
    options:
    - name: timeout
      value: "1"
  containers:
  - name: c
    image: busybox
    command: {SLEEPER}
"#
    ));
    wait_running(&node, "ident");
    let ip = jsonpath(&node, "pod/ident", "{.status.podIP}");
    assert_eq!(exec_ok(&node, "ident", &["hostname"]).trim(), "db-0");
    let hosts = exec_ok(&node, "ident", &["cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    let fqdn = format!("db-0.db.{}.svc.cluster.local", node.namespace);
    assert!(
        hosts.contains(&format!("\n{ip}\t{fqdn}\tdb-0\n")),
        "{hosts}"
    );
    assert!(
        hosts.contains("\n192.0.2.9\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    let resolv = exec_ok(&node, "ident", &["cat", "/etc/resolv.conf"]);
    let search = format!(
        "search {0}.svc.cluster.local svc.cluster.local cluster.local",
        node.namespace
    );
    assert!(resolv.starts_with(&search), "{resolv}");
    assert!(resolv.contains("\nnameserver 10.96.0.10\n"), "{resolv}");
    assert!(resolv.contains("\noptions ndots:5 timeout:1\n"), "{resolv}");
    // The host's files and name are untouched.
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!host_hosts.contains("Kubernetes-managed"));
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "db-0"
    );
    // The name resolves inside the pod, at once, from its hosts file.
    let got = exec_ok(&node, "ident", &["getent", "hosts", &fqdn]);
    assert!(got.starts_with(&ip), "{got}");
    delete_and_check_gone(&node, "ident");
    assert_eq!(host_mounts(&node.namespace), before);
}

fn pod_json(node: &KubeNode, pod: &str) -> serde_json::Value {
    serde_json::from_str(&node.k(&["get", "pod", pod, "-o", "json"])).unwrap()
}

fn waiting_of(node: &KubeNode, pod: &str) -> (String, String) {
    let p = pod_json(node, pod);
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or("").to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn root_env_and_volumes_from_config_maps_secrets_empty_dir_host_path() {
    let node = KubeNode::start();
    let before = host_mounts(&node.namespace);
    let mnt = node._tmp.path().join("mnt");
    let m = mnt.display().to_string();
    let host_dir = node._tmp.path().join("host-dir");
    node.k(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=greeting=hello",
    ]);
    node.k(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cretvalue",
    ]);
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: vol
  labels: {{app: vol}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: cfg
    configMap: {{name: cfg}}
  - name: sec
    secret: {{secretName: sec, defaultMode: 0400}}
  - name: scratch
    emptyDir: {{}}
  - name: mem
    emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
  - name: host
    hostPath: {{path: "{host}", type: DirectoryOrCreate}}
  - name: info
    downwardAPI:
      items:
      - path: labels
        fieldRef: {{fieldPath: metadata.labels}}
  containers:
  - name: c
    image: busybox
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}
    - name: LATE
      valueFrom: {{configMapKeyRef: {{name: late, key: k}}}}
    command: ["sh", "-c", "echo $$ > {m}/scratch/pid; echo start >> {m}/scratch/starts; echo \"$GREETING $PASSWORD $LATE\" > {m}/mem/env; echo from-pod > {m}/host/file; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - {{name: cfg, mountPath: "{m}/cfg"}}
    - {{name: cfg, mountPath: "{m}/greeting-once", subPath: greeting}}
    - {{name: sec, mountPath: "{m}/sec", readOnly: true}}
    - {{name: scratch, mountPath: "{m}/scratch"}}
    - {{name: mem, mountPath: "{m}/mem"}}
    - {{name: host, mountPath: "{m}/host"}}
    - {{name: info, mountPath: "{m}/info"}}
"#,
        host = host_dir.display()
    ));
    // A required key that does not exist yet: the kubelet's reason and message.
    let waited = wait_for(SETTLE, || {
        let w = waiting_of(&node, "vol");
        (w.0 == "CreateContainerConfigError").then_some(w)
    })
    .unwrap_or_else(|| panic!("no CreateContainerConfigError: {}", node.log()));
    assert_eq!(waited.1, "configmap \"late\" not found");
    let events = node.k(&["get", "events", "-o", "jsonpath={.items[*].message}"]);
    assert!(
        events.contains("Error: configmap \"late\" not found"),
        "{events}"
    );
    node.k(&["create", "configmap", "late", "--from-literal=k=arrived"]);
    wait_running(&node, "vol");

    let cat = |path: &str| exec_ok(&node, "vol", &["cat", &format!("{m}/{path}")]);
    assert_eq!(cat("mem/env").trim(), "hello s3cretvalue arrived");
    assert_eq!(cat("cfg/greeting"), "hello");
    assert_eq!(cat("greeting-once"), "hello");
    assert_eq!(cat("sec/password"), "s3cretvalue");
    assert_eq!(cat("info/labels"), "app=\"vol\"");
    let ls = exec_ok(&node, "vol", &["ls", "-la", &format!("{m}/cfg/")]);
    assert!(ls.contains("..data -> ..20"), "{ls}");
    assert!(ls.contains("greeting -> ..data/greeting"), "{ls}");
    let mode = exec_ok(
        &node,
        "vol",
        &["stat", "-L", "-c", "%a", &format!("{m}/sec/password")],
    );
    assert_eq!(mode.trim(), "400");
    // The secret and the memory emptyDir are tmpfs inside the pod; the
    // read-only mount refuses writes.
    let mounts = exec_ok(&node, "vol", &["cat", "/proc/self/mountinfo"]);
    for (dir, fs) in [("sec", "tmpfs"), ("mem", "tmpfs")] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(&format!("{m}/{dir}")))
            .unwrap_or_else(|| panic!("{dir} not mounted:\n{mounts}"));
        assert!(line.contains(&format!(" - {fs} ")), "{line}");
    }
    let mem_line = mounts
        .lines()
        .find(|l| l.contains(&format!("{m}/mem ")))
        .unwrap();
    assert!(mem_line.contains("size=16384k"), "{mem_line}");
    let ro = exec(
        &node,
        "vol",
        &["sh", "-c", &format!("echo x > {m}/sec/new")],
    );
    assert!(!ro.status.success(), "a readOnly mount took a write");
    // None of it on the host: no mounts, no secret bytes in the state dir.
    assert!(
        host_mounts(&format!("{m}/")).is_empty(),
        "{:?}",
        host_mounts(&m)
    );
    let grep = Command::new("grep")
        .args(["-r", "-l", "s3cretvalue"])
        .arg(state_dir(&node).join("pods"))
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret bytes on disk: {}",
        text(&grep.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("file")).unwrap(),
        "from-pod\n",
        "hostPath writes reach the host"
    );

    // A ConfigMap change reaches the running pod; the subPath mount and
    // the env do not change, as in Kubernetes.
    let changed = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  greeting: bye
"#;
    node.apply(changed);
    let seen = wait_for(Duration::from_secs(60), || {
        (cat("cfg/greeting") == "bye").then_some(())
    });
    assert!(
        seen.is_some(),
        "the update never reached the pod: {}",
        cat("cfg/greeting")
    );
    assert_eq!(cat("greeting-once"), "hello");
    let dirs = exec_ok(&node, "vol", &["ls", "-a", &format!("{m}/cfg/")]);
    assert_eq!(dirs.matches("..20").count(), 1, "old data dir left: {dirs}");
    // Labels too.
    node.k(&["label", "pod", "vol", "tier=web"]);
    let seen = wait_for(Duration::from_secs(60), || {
        (cat("info/labels") == "app=\"vol\"\ntier=\"web\"").then_some(())
    });
    assert!(seen.is_some(), "labels not updated: {}", cat("info/labels"));

    // emptyDir survives a container restart.
    let pid: u32 = cat("scratch/pid").trim().parse().unwrap();
    daemon_support::kill(pid, "KILL");
    let restarted = wait_for(RESTART, || {
        let p = pod_json(&node, "vol");
        (p["status"]["containerStatuses"][0]["restartCount"].as_i64() == Some(1)
            && p["status"]["phase"] == "Running")
            .then_some(())
    });
    assert!(restarted.is_some(), "not restarted: {}", node.log());
    let starts = wait_for(SETTLE, || {
        let s = cat("scratch/starts");
        (s.lines().count() == 2).then_some(s)
    });
    assert!(
        starts.is_some(),
        "emptyDir lost across the restart: {}\n{}\n{}",
        cat("scratch/starts"),
        node.k(&["get", "pod", "vol", "-o", "yaml"]),
        node.k(&["get", "events"])
    );

    delete_and_check_gone(&node, "vol");
    assert!(
        !mnt.join("cfg").exists(),
        "mount points made for the pod are left"
    );
    assert!(host_dir.join("file").exists(), "a hostPath stays");
    assert_eq!(host_mounts(&node.namespace), before);
    assert!(host_mounts(&m).is_empty());
}

#[test]
fn root_host_path_type_mismatch_keeps_the_pod_creating() {
    let node = KubeNode::start();
    let file = node._tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let m = node._tmp.path().join("mnt").display().to_string();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hp
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: h
    hostPath: {{path: "{f}", type: Directory}}
  containers:
  - name: c
    image: busybox
    command: {SLEEPER}
    volumeMounts:
    - {{name: h, mountPath: "{m}/h"}}
"#,
        f = file.display()
    ));
    let want = format!(
        "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
        file.display()
    );
    let seen = wait_for(SETTLE, || {
        let events = node.k(&["get", "events", "-o", "jsonpath={.items[*].message}"]);
        events.contains(&want).then_some(())
    });
    assert!(seen.is_some(), "no FailedMount event: {}", node.log());
    assert_eq!(waiting_of(&node, "hp").0, "ContainerCreating");
    assert_eq!(jsonpath(&node, "pod/hp", "{.status.phase}"), "Pending");
    // Fixed on the host: the pod starts.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    wait_running(&node, "hp");
    delete_and_check_gone(&node, "hp");
}

/// A reader looping on a mounted ConfigMap file inside the pod while the
/// ConfigMap is re-applied never sees a mix of old and new, a short or a
/// missing file (the AtomicWriter swap), and sees every update.
#[test]
fn root_config_map_updates_are_atomic_for_a_reader_in_the_pod() {
    const SIZE: usize = 8000;
    const UPDATES: usize = 20;
    let node = KubeNode::start();
    let mnt = node._tmp.path().join("mnt").display().to_string();
    let out = node._tmp.path().join("out");
    let cm = |c: char| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  value: \"{}\"\n",
            c.to_string().repeat(SIZE)
        )
    };
    node.apply(&cm('A'));
    // The reader: counts the changes it sees into out/changes, records any
    // read that is missing, short, or mixes both letters into out/bad.
    let script = format!(
        r#"prev=; n=0; while true; do if ! v=$(cat {mnt}/cfg/value 2>/dev/null); then echo missing >> {o}/bad; continue; fi; case "$v" in *A*B*|*B*A*) echo mixed >> {o}/bad;; esac; [ ${{#v}} -eq {SIZE} ] || echo "length ${{#v}}" >> {o}/bad; if [ "$v" != "$prev" ]; then n=$((n+1)); echo $n > {o}/changes.tmp; mv {o}/changes.tmp {o}/changes; prev=$v; fi; done"#,
        o = out.display()
    );
    let script_json = serde_json::to_string(&script).unwrap();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: cfg
    configMap: {{name: big}}
  - name: out
    hostPath: {{path: "{o}", type: DirectoryOrCreate}}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", {script_json}]
    volumeMounts:
    - {{name: cfg, mountPath: "{mnt}/cfg"}}
    - {{name: out, mountPath: "{o}"}}
"#,
        o = out.display()
    ));
    wait_running(&node, "reader");
    let changes = || -> usize {
        std::fs::read_to_string(out.join("changes"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let seen = wait_for(POD_START, || (changes() >= 1).then_some(()));
    assert!(
        seen.is_some(),
        "the reader never read the file:\n{}",
        node.log()
    );
    for i in 1..=UPDATES {
        node.apply(&cm(if i % 2 == 1 { 'B' } else { 'A' }));
        let seen = wait_for(SETTLE, || (changes() > i).then_some(()));
        assert!(
            seen.is_some(),
            "update {i} not seen in the pod (changes {})",
            changes()
        );
    }
    let bad = std::fs::read_to_string(out.join("bad")).unwrap_or_default();
    assert!(
        bad.is_empty(),
        "the reader saw torn or missing files: {bad}"
    );
    delete_and_check_gone(&node, "reader");
}

/// A StatefulSet's volumeClaimTemplates: each pod's claim is provisioned by
/// the node's local provisioner (class `podnet-local`, the default) and
/// bound; a replaced pod gets its address and its data back; a claim in
/// use stays until its pod is gone, then its volume and directory go.
#[test]
fn root_statefulset_claims_keep_data_and_go_with_the_claim() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    node.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: postgres
        command: ["sh", "-c", "echo boot >> /data/boots; exec sleep 100000"]
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#,
    );
    node.k(&["rollout", "status", "statefulset/db", "--timeout=180s"]);
    let claim = node.k(&[
        "get",
        "pvc",
        "data-db-0",
        "-o",
        "jsonpath={.status.phase} {.spec.storageClassName} {.spec.volumeName} {.status.capacity.storage}",
    ]);
    let parts: Vec<&str> = claim.split(' ').collect();
    assert_eq!(parts[0], "Bound", "{claim}");
    assert_eq!(parts[1], "podnet-local", "the default class: {claim}");
    assert_eq!(parts[3], "1Gi", "{claim}");
    let volume = parts[2].to_string();
    let pv = node.kubectl_ok(
        &[
            "get",
            "pv",
            &volume,
            "-o",
            "jsonpath={.status.phase} {.spec.claimRef.name} {.spec.hostPath.path}",
        ],
        None,
    );
    let pv_parts: Vec<&str> = pv.split(' ').collect();
    assert_eq!(pv_parts[..2], ["Bound", "data-db-0"], "{pv}");
    let dir = std::path::PathBuf::from(pv_parts[2]);
    assert_eq!(dir, state_dir(&node).join("volumes").join(&volume));
    let sc = node.kubectl_ok(&["get", "storageclass"], None);
    assert!(sc.contains("podnet-local (default)"), "{sc}");

    node.k(&["exec", "db-0", "--", "sh", "-c", "echo kept > /data/marker"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("marker")).unwrap(),
        "kept\n"
    );
    let ip0 = node.k(&["get", "pod", "db-0", "-o", "jsonpath={.status.podIP}"]);
    let uid0 = node.k(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    node.k(&["delete", "pod", "db-0", "--wait=true"]);
    let back = wait_for(Duration::from_secs(120), || {
        let out = node.kubectl(
            &[
                "get",
                "pod",
                "db-0",
                "-n",
                &node.namespace,
                "-o",
                "jsonpath={.metadata.uid} {.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        let t = text(&out.stdout);
        (out.status.success() && !t.starts_with(&uid0) && t.ends_with("True")).then_some(t)
    })
    .unwrap_or_else(|| panic!("db-0 did not come back:\n{}", node.log()));
    assert!(back.contains(&ip0), "db-0's address: {back} (was {ip0})");
    assert_eq!(
        node.k(&["exec", "db-0", "--", "cat", "/data/marker", "/data/boots"]),
        "kept\nboot\nboot\n",
        "the replaced pod has the first one's data"
    );

    // A claim in use stays (Terminating) while its pod runs.
    node.k(&["delete", "pvc", "data-db-0", "--wait=false"]);
    let phase = node.k(&[
        "get",
        "pvc",
        "data-db-0",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!phase.is_empty(), "the claim is being deleted");
    assert!(
        dir.join("marker").exists(),
        "its data stays while the pod uses it"
    );
    // The pod goes: then the claim, its volume and the directory.
    node.k(&["delete", "statefulset", "db", "--wait=true"]);
    let gone = wait_for(Duration::from_secs(120), || {
        let pvc = node.kubectl(&["get", "pvc", "data-db-0", "-n", &node.namespace], None);
        let pv = node.kubectl(&["get", "pv", &volume], None);
        (!pvc.status.success() && !pv.status.success() && !dir.exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "claim, volume and directory removed (dir exists: {}):\n{}",
        dir.exists(),
        node.log()
    );

    // A claim without access modes is refused, naming the field.
    let bad = node.kubectl(
        &["apply", "-n", &node.namespace, "-f", "-"],
        Some("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: bad\nspec:\n  resources:\n    requests:\n      storage: 1Gi\n"),
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("spec.accessModes"),
        "{}",
        text(&bad.stderr)
    );
}
