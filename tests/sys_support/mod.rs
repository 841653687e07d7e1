//! Shared helpers of the `sys_*` root tests: unique names and cleanup guards.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use podnet::sys::netns::{self, NetNs};

/// Fails (never skips) a test that needs root.
pub fn require_root() {
    assert!(
        podnet::sys::is_root(),
        "this test needs root (network namespaces, TUN devices, netlink); run it as root, e.g. `sudo -E cargo test`"
    );
}

/// A name unique to this process and call: `pnt-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pnt-{}-{tag}{n}", std::process::id())
}

/// A named namespace removed on drop, also when the test fails.
pub struct NsGuard {
    pub ns: NetNs,
}

impl NsGuard {
    pub fn new(tag: &str) -> NsGuard {
        require_root();
        let name = unique_name(tag);
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("creating netns {name}: {e}"));
        NsGuard { ns }
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(self.name())
            .args(args)
            .output()
            .expect("running ip (iproute2 must be installed)");
        assert!(
            out.status.success(),
            "ip -n {} {args:?} failed: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // Persistent devices inside go away with the namespace once nothing holds it.
        if let Err(e) = netns::remove(self.ns.name()) {
            eprintln!("cleanup: removing netns {}: {e}", self.ns.name());
        }
    }
}
