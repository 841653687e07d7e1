//! Root tests of `sys::netns`: create, list, run inside, remove; error paths.

mod sys_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use podnet::sys::netns::{self, NetNs, NetnsError};
use sys_support::{require_root, unique_name, NsGuard};

fn own_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat /proc/thread-self/ns/net")
        .ino()
}

#[test]
fn create_list_run_remove() {
    let guard = NsGuard::new("ns");
    let name = guard.name().to_owned();
    let path = Path::new("/var/run/netns").join(&name);
    assert_eq!(guard.ns.path(), path);
    assert!(path.exists(), "{} should exist", path.display());
    assert!(netns::list().unwrap().contains(&name));

    let outside = own_netns_inode();
    let inside = guard.ns.run(own_netns_inode).unwrap();
    assert_ne!(inside, outside, "run() must execute in another namespace");
    assert_eq!(own_netns_inode(), outside, "the caller must not move");
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inside);

    // Reopening by name and by path reaches the same namespace.
    let by_name = NetNs::open(&name).unwrap();
    assert_eq!(by_name.run(own_netns_inode).unwrap(), inside);
    let by_path = NetNs::open_path(&path).unwrap();
    assert_eq!(by_path.run(own_netns_inode).unwrap(), inside);

    match NetNs::create(&name) {
        Err(NetnsError::AlreadyExists { .. }) => {}
        other => panic!("second create should be AlreadyExists, got {other:?}"),
    }

    netns::remove(&name).unwrap();
    assert!(!path.exists());
    assert!(!netns::list().unwrap().contains(&name));
    netns::remove(&name).expect("removing an absent namespace is Ok");
    // The open handle keeps the namespace itself alive after its name is gone.
    assert_eq!(guard.ns.run(own_netns_inode).unwrap(), inside);
}

#[test]
fn run_propagates_values_and_panics() {
    let guard = NsGuard::new("pn");
    let borrowed = String::from("borrowed from the caller");
    let len = guard.ns.run(|| borrowed.len()).unwrap();
    assert_eq!(len, borrowed.len());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        guard.ns.run(|| panic!("inside")).unwrap();
    }));
    assert!(caught.is_err(), "a panic inside run reaches the caller");
}

#[test]
fn open_proc_pid_path() {
    require_root();
    let ns = NetNs::open_path(Path::new("/proc/self/ns/net")).unwrap();
    assert_eq!(ns.name(), "/proc/self/ns/net");
}

#[test]
fn missing_namespace_error_names_the_path() {
    require_root();
    let name = unique_name("missing");
    let err = NetNs::open(&name).unwrap_err();
    assert!(matches!(err, NetnsError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("/var/run/netns/{name}")),
        "message should name the path: {msg}"
    );
    let err = NetNs::open_path(Path::new("/proc/self/status")).unwrap_err();
    assert!(matches!(err, NetnsError::NotANamespace { .. }), "{err:?}");
    assert!(err.to_string().contains("/proc/self/status"));
}

#[test]
fn bad_names_are_rejected() {
    let long = "x".repeat(65);
    for bad in ["", "a/b", "..", ".", long.as_str(), "nul\0"] {
        for result in [
            NetNs::create(bad).map(drop),
            NetNs::open(bad).map(drop),
            netns::remove(bad),
        ] {
            match result {
                Err(NetnsError::InvalidName { .. }) => {}
                other => panic!("name {bad:?} should be rejected, got {other:?}"),
            }
        }
    }
}
