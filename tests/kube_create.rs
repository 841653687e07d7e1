//! `kubectl create KIND ...` sends protobuf bodies; they are decoded and
//! stored as the JSON kubectl would have sent.

mod kube_support;

use kube_support::KubeServer;

#[test]
fn kubectl_create_subcommands_work() {
    let s = KubeServer::start();
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "team",
        "--from-literal=mode=fast",
    ]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "team",
        "--from-literal=pw=hunter2",
    ]);
    s.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image=python:3",
        "--replicas=2",
        "--port=8080",
    ]);
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "team",
        "--tcp=80:8080",
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "cm",
            "c",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.mode}"
        ]),
        "fast"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.pw}"
        ]),
        "aHVudGVyMg=="
    );
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "2 8080"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "web",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );
    // A kind podnet does not serve is refused by the route, not mis-stored.
    let e = s.fails(&["create", "serviceaccount", "sa"], None);
    assert!(e.contains("NotFound") || e.contains("not find"), "{e}");
}
