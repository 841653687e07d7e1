mod kube_support;
#[test]
#[ignore]
fn serve_for_poking() {
    let s = kube_support::KubeServer::start();
    std::fs::write(
        "/tmp/podnet-scratch-kubeconfig",
        s.kubeconfig.to_str().unwrap(),
    )
    .unwrap();
    std::fs::write("/tmp/podnet-scratch-state", s.state().to_str().unwrap()).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3600));
}
