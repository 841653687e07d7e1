//! The Kubernetes API with real clients (kubectl, the Python `kubernetes`
//! package), in-process over a durable store; no root needed.

mod kube_support;

use kube_support::KubeServer;

#[test]
fn kubectl_sees_the_server() {
    let s = KubeServer::start();
    let v = s.ok(&["version", "-o", "json"]);
    assert!(v.contains("\"serverVersion\""), "{v}");
    assert!(v.contains("\"minor\": \"37\""), "{v}");
    let r = s.ok(&["api-resources"]);
    for kind in [
        "pods",
        "services",
        "deployments",
        "statefulsets",
        "replicasets",
        "endpointslices",
        "configmaps",
        "secrets",
        "events",
        "namespaces",
        "nodes",
        "endpoints",
    ] {
        assert!(
            r.lines().any(|l| l.starts_with(kind)),
            "{kind} missing:\n{r}"
        );
    }
    let ns = s.ok(&["get", "namespaces"]);
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: python:3
        command: ["python3", "-m", "http.server", "8080"]
        ports:
        - containerPort: 8080
        readinessProbe:
          tcpSocket: {port: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"#;

#[test]
fn kubectl_apply_get_patch_scale_delete() {
    let s = KubeServer::start();
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(MANIFEST));
    let stdout = kube_support::text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        kube_support::text(&out.stderr)
    );
    assert!(
        stdout.contains("deployment.apps/web created") && stdout.contains("service/web created"),
        "{stdout}"
    );
    // A second apply changes nothing and says so.
    let again = s.kubectl_stdin(&["apply", "-f", "-"], Some(MANIFEST));
    assert!(
        kube_support::text(&again.stdout).contains("deployment.apps/web unchanged"),
        "{}{}",
        kube_support::text(&again.stdout),
        kube_support::text(&again.stderr)
    );
    let deploy = s.ok(&["get", "deployments"]);
    assert!(
        deploy.contains("READY") && deploy.contains("web"),
        "{deploy}"
    );
    let wide = s.ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.contains("python:3") && wide.contains("app=web"),
        "{wide}"
    );
    let svc = s.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    ]);
    assert_eq!(svc, "8080");
    s.ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    s.ok(&["set", "env", "deployment/web", "X=1"]);
    let env = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ]);
    assert!(
        env.contains("\"name\":\"X\"") && env.contains("\"value\":\"1\""),
        "{env}"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "3"
    );
    s.ok(&["label", "configmap", "settings", "tier=back"]);
    assert!(s.ok(&["get", "cm", "-l", "tier=back"]).contains("settings"));
    s.ok(&["annotate", "configmap", "settings", "note=hi"]);
    s.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    s.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/extra","value":"1"}]"#,
    ]);
    let cm = s.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]);
    assert!(cm.contains("slow") && cm.contains("extra"), "{cm}");
    // `kubectl create KIND` sends protobuf, which is not decoded yet; `create -f` sends JSON.
    let team = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\n  namespace: team\ndata:\n  a: b\n";
    assert!(s
        .kubectl_stdin(&["create", "-f", "-"], Some(team))
        .status
        .success());
    assert!(s.ok(&["get", "cm", "-A"]).contains("team"));
    let out = s.kubectl_stdin(&["delete", "-f", "-"], Some(MANIFEST));
    assert!(out.status.success(), "{}", kube_support::text(&out.stderr));
    let left = s.ok(&["get", "deploy,svc,cm", "-o", "name"]);
    assert!(
        !left.contains("web") && !left.contains("settings"),
        "{left}"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let s = KubeServer::start();
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndatta:\n  a: b\n";
    let e = s.fails(&["apply", "-f", "-"], Some(unknown));
    assert!(e.contains("unknown field \"datta\""), "{e}");
    let bad_name = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let e = s.fails(&["apply", "-f", "-"], Some(bad_name));
    assert!(e.contains("metadata.name") && e.contains("RFC 1123"), "{e}");
    let bad_port =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n";
    let e = s.fails(&["apply", "-f", "-"], Some(bad_port));
    assert!(
        e.contains("spec.ports[0].port") && e.contains("70000"),
        "{e}"
    );
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n";
    assert!(s
        .kubectl_stdin(&["create", "-f", "-"], Some(cm))
        .status
        .success());
    let rv = s.ok(&[
        "get",
        "cm",
        "c",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    s.ok(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    let stale = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  resourceVersion: \"{rv}\"\ndata:\n  a: \"3\"\n");
    let e = s.fails(&["replace", "-f", "-"], Some(&stale));
    assert!(e.contains("the object has been modified"), "{e}");
    let names = s.ok(&["get", "cm,svc", "-o", "name"]);
    assert_eq!(names.trim(), "configmap/c", "{names}");
    assert_eq!(s.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "2");
}
