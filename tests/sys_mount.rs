//! Root tests of `sys::mount`: a pod's mount namespace holds none of the
//! host's pinned namespaces (network, mount, UTS), and the pins of pods made
//! later never reach it, so its size does not grow with the pods on the node.

mod sys_support;

use podnet::sys::mount::{self, PodNs};
use sys_support::{require_root, unique_name, NsGuard};

/// The mount points of the calling thread's mount namespace.
fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

fn is_pin(mount_point: &str) -> bool {
    ["/run/podnet/ns/", "/var/run/netns/", "/run/netns/"]
        .iter()
        .any(|d| mount_point.starts_with(d))
}

/// Removes the pod namespaces it names, also when the test fails.
struct PodNsGuard(Vec<String>);

impl Drop for PodNsGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            mount::remove(name);
        }
    }
}

#[test]
fn a_pods_mount_namespace_holds_no_pins_and_does_not_grow_with_the_pods() {
    require_root();
    let mut pods = PodNsGuard(Vec::new());
    let mut nets: Vec<NsGuard> = (0..10).map(|_| NsGuard::new("mnt")).collect();
    let pod = |pods: &mut PodNsGuard| {
        let name = unique_name("mntpod");
        pods.0.push(name.clone());
        PodNs::create(&name, "pod").expect("pod namespaces (root)")
    };
    let first = pod(&mut pods);
    let host_pins = mount_points().iter().filter(|m| is_pin(m)).count();
    assert!(host_pins >= 12, "the host holds the pins ({host_pins})");
    let inside = first.run(mount_points).unwrap();
    let pins: Vec<&String> = inside.iter().filter(|m| is_pin(m)).collect();
    assert!(pins.is_empty(), "pins in a pod's namespace: {pins:?}");

    // Ten more pods' worth of pins, and more pods.
    nets.extend((0..10).map(|_| NsGuard::new("mnt")));
    let later: Vec<PodNs> = (0..5).map(|_| pod(&mut pods)).collect();
    let after = first.run(mount_points).unwrap();
    assert_eq!(
        after.len(),
        inside.len(),
        "mounts propagated into a pod's namespace: {:?}",
        after
            .iter()
            .filter(|m| !inside.contains(m))
            .collect::<Vec<_>>()
    );
    let last = later.last().unwrap().run(mount_points).unwrap();
    assert_eq!(
        last.len(),
        inside.len(),
        "a later pod's namespace is as small"
    );
    // The hostname is the pod's own.
    let host = first
        .run(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap())
        .unwrap();
    assert_eq!(host.trim(), "pod");
    drop(nets);
}

#[test]
fn retired_pins_free_the_name_at_once_and_are_removed_later() {
    require_root();
    let name = unique_name("ret");
    let mut pods = PodNsGuard(vec![name.clone()]);
    PodNs::create(&name, "first").expect("a pod's namespaces");
    let pins = mount::retire(&name).expect("pins to retire");
    assert!(
        !mount::pod_ns_dir(&name).exists(),
        "the name is free once retired"
    );
    let host_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&name))
            .count()
    };
    assert_eq!(
        host_mounts(),
        2,
        "the retired mnt and uts pins stay mounted"
    );
    // A pod of the same name meanwhile (a StatefulSet's).
    let second = PodNs::create(&name, "second").expect("the name again");
    assert!(!mount::list().iter().any(|n| n.starts_with(".retired.")));
    assert!(mount::list().contains(&name));
    pins.remove();
    assert_eq!(host_mounts(), 2, "only the new pod's pins are left");
    let hostname = second
        .run(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap())
        .unwrap();
    assert_eq!(hostname.trim(), "second");
    mount::remove(&name);
    pods.0.clear();
    assert_eq!(host_mounts(), 0);
}
