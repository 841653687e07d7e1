//! Behaviour tests of the allocator, in-process, on memory and temp-dir stores.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4_config(subnet: &str) -> IpamConfig {
    IpamConfig {
        subnet_v4: Some(subnet.parse().unwrap()),
        subnet_v6: None,
        quarantine: Duration::from_secs(30),
    }
}

fn mem(config: IpamConfig) -> (Ipam, MemoryStore) {
    let store = MemoryStore::default();
    (Ipam::open(Box::new(store.clone()), config).unwrap(), store)
}

fn v4(ipam: &mut Ipam, owner: &str, now: SystemTime) -> IpAddr {
    let a = ipam.allocate(AllocateRequest::new(owner), now).unwrap();
    IpAddr::V4(a.v4.unwrap())
}

#[test]
fn round_robin_skips_quarantine_and_wraps() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/28"));
    assert_eq!(v4(&mut ipam, "a", t(0)), ip("10.0.0.2"));
    assert_eq!(v4(&mut ipam, "b", t(0)), ip("10.0.0.3"));
    ipam.release(&"a".into(), t(0)).unwrap();
    // Not the address just released: round robin goes forward.
    assert_eq!(v4(&mut ipam, "c", t(1)), ip("10.0.0.4"));
    for (i, last) in (5..=14).enumerate() {
        assert_eq!(
            v4(&mut ipam, &format!("d{i}"), t(1)),
            ip(&format!("10.0.0.{last}"))
        );
    }
    // Wrapped: .2 is still resting and everything else is held. A full
    // subnet does not stall: the resting address is handed out.
    assert_eq!(v4(&mut ipam, "e", t(29)), ip("10.0.0.2"));
    let err = ipam.allocate(AllocateRequest::new("f"), t(29)).unwrap_err();
    assert!(
        matches!(err, AllocateError::Exhausted { usage } if usage.quarantined == 0 && usage.in_use == 13),
        "{err}"
    );
}

#[test]
fn a_full_subnet_reuses_the_address_resting_longest() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/29")); // usable .2 .. .6
    for o in ["a", "b", "c", "d", "e"] {
        v4(&mut ipam, o, t(0));
    }
    ipam.release(&"d".into(), t(1)).unwrap(); // .5, resting until 31
    ipam.release(&"b".into(), t(2)).unwrap(); // .3, resting until 32
    ipam.release(&"c".into(), t(3)).unwrap(); // .4, resting until 33
    assert_eq!(v4(&mut ipam, "f", t(4)), ip("10.0.0.5"));
    assert_eq!(v4(&mut ipam, "g", t(4)), ip("10.0.0.3"));
    assert_eq!(v4(&mut ipam, "h", t(4)), ip("10.0.0.4"));
    assert!(matches!(
        ipam.allocate(AllocateRequest::new("i"), t(4)),
        Err(AllocateError::Exhausted { .. })
    ));
}

#[test]
fn quarantine_survives_restart_and_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = v4_config("10.0.0.0/29"); // usable .2 .. .6
    config.quarantine = Duration::from_secs(5);
    let mut ipam = Ipam::open(
        Box::new(FileStore::open(dir.path()).unwrap()),
        config.clone(),
    )
    .unwrap();
    for o in ["a", "b", "c", "d"] {
        v4(&mut ipam, o, t(0));
    }
    ipam.release(&"c".into(), t(0)).unwrap();
    drop(ipam);
    let mut ipam = Ipam::open(Box::new(FileStore::open(dir.path()).unwrap()), config).unwrap();
    // .4 still rests after the restart: the free .6 is taken instead.
    assert_eq!(v4(&mut ipam, "f", t(4)), ip("10.0.0.6"));
    assert_eq!(v4(&mut ipam, "g", t(5)), ip("10.0.0.4"));
}

#[test]
fn sticky_identity_gets_its_address_back() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/24"));
    let req = |owner: &str| AllocateRequest::new(owner).identity("default/db-0");
    let first = ipam.allocate(req("pod-1"), t(0)).unwrap();
    assert_eq!(first.identity.as_deref(), Some("default/db-0"));
    // While pod-1 still runs, a second pod of the identity is refused, naming pod-1.
    let err = ipam.allocate(req("pod-2"), t(1)).unwrap_err();
    assert!(matches!(&err, AllocateError::IdentityHeld { owner, .. } if owner.0 == "pod-1"));
    assert!(err.to_string().contains("pod-1"), "{err}");
    ipam.release(&"pod-1".into(), t(1)).unwrap();
    // Within the quarantine, the identity reclaims its address.
    let second = ipam.allocate(req("pod-2"), t(2)).unwrap();
    assert_eq!(second.v4, first.v4);
    ipam.release(&"pod-2".into(), t(2)).unwrap();
    // Nobody else gets it, even long after the quarantine.
    for i in 0..300 {
        let other = ipam.allocate(AllocateRequest::new(format!("o{i}")), t(100));
        match other {
            Ok(a) => assert_ne!(a.v4, first.v4),
            Err(AllocateError::Exhausted { usage }) => {
                assert_eq!(usage.reserved, 1);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let kept = IpAddr::V4(first.v4.unwrap());
    let err = ipam
        .allocate(AllocateRequest::new("x").address(kept), t(100))
        .unwrap_err();
    assert!(
        matches!(err, AllocateError::AddressReserved { .. }),
        "{err}"
    );
    assert_eq!(
        ipam.identities(),
        vec![("default/db-0".to_string(), vec![kept])]
    );
    assert!(ipam.release_identity("default/db-0").unwrap());
    assert!(!ipam.release_identity("default/db-0").unwrap());
    assert_eq!(v4(&mut ipam, "x", t(100)), kept);
}

#[test]
fn exhausting_a_slash_28_reports_counts() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/28"));
    for i in 0..13 {
        v4(&mut ipam, &format!("p{i}"), t(0));
    }
    let err = ipam
        .allocate(AllocateRequest::new("p13"), t(0))
        .unwrap_err();
    let AllocateError::Exhausted { usage } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (
            usage.usable,
            usage.in_use,
            usage.quarantined,
            usage.reserved
        ),
        (13, 13, 0, 0)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("10.0.0.0/28") && msg.contains("13 usable") && msg.contains("13 in use"),
        "{msg}"
    );
}

#[test]
fn idempotent_allocate_and_release() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/24"));
    let a = ipam.allocate(AllocateRequest::new("a"), t(0)).unwrap();
    let again = ipam.allocate(AllocateRequest::new("a"), t(1)).unwrap();
    assert_eq!(a, again);
    assert_eq!(ipam.list().len(), 1);
    let err = ipam
        .allocate(AllocateRequest::new("a").identity("other"), t(1))
        .unwrap_err();
    assert!(matches!(err, AllocateError::OwnerConflict { .. }), "{err}");
    assert_eq!(ipam.release(&"a".into(), t(2)).unwrap(), Some(a));
    assert_eq!(ipam.release(&"a".into(), t(2)).unwrap(), None);
    assert_eq!(ipam.release(&"never-seen".into(), t(2)).unwrap(), None);
    assert!(ipam.list().is_empty());
}

#[test]
fn explicit_addresses() {
    let (mut ipam, _) = mem(v4_config("10.0.0.0/24"));
    let want = ip("10.0.0.77");
    let a = ipam
        .allocate(AllocateRequest::new("web").address(want), t(0))
        .unwrap();
    assert_eq!(a.v4.map(IpAddr::V4), Some(want));
    // Explicit picks do not move the cursor.
    assert_eq!(v4(&mut ipam, "n", t(0)), ip("10.0.0.2"));
    let err = ipam
        .allocate(AllocateRequest::new("api").address(want), t(0))
        .unwrap_err();
    assert!(matches!(&err, AllocateError::AddressTaken { owner, .. } if owner.0 == "web"));
    assert!(err.to_string().contains("web"), "{err}");
    for (addr, role) in [
        ("10.0.0.0", ReservedRole::Network),
        ("10.0.0.1", ReservedRole::Gateway),
        ("10.0.0.255", ReservedRole::Broadcast),
    ] {
        let err = ipam
            .allocate(AllocateRequest::new("x").address(ip(addr)), t(0))
            .unwrap_err();
        assert!(
            matches!(err, AllocateError::NotUsable { role: r, .. } if r == role),
            "{err}"
        );
    }
    let err = ipam
        .allocate(AllocateRequest::new("x").address(ip("10.0.1.5")), t(0))
        .unwrap_err();
    assert!(matches!(err, AllocateError::OutsideSubnet { .. }), "{err}");
    let err = ipam
        .allocate(AllocateRequest::new("x").address(ip("fd00::5")), t(0))
        .unwrap_err();
    assert!(matches!(err, AllocateError::FamilyMismatch { .. }), "{err}");
    ipam.release(&"web".into(), t(0)).unwrap();
    let err = ipam
        .allocate(AllocateRequest::new("x").address(want), t(10))
        .unwrap_err();
    assert!(
        matches!(err, AllocateError::AddressQuarantined { .. }),
        "{err}"
    );
    assert!(ipam
        .allocate(AllocateRequest::new("x").address(want), t(30))
        .is_ok());
    assert!(ipam.list().iter().all(|a| a.owner.0 != "api"));
}

#[test]
fn dual_stack() {
    let (mut ipam, _) = mem(IpamConfig::default());
    let a = ipam.allocate(AllocateRequest::new("a"), t(0)).unwrap();
    assert_eq!(a.v4, Some("10.244.0.2".parse().unwrap()));
    assert_eq!(a.v6, Some("fd00:10:244::2".parse().unwrap()));
    assert_eq!(ipam.gateway(Family::V6), Some(ip("fd00:10:244::1")));
    let b = ipam
        .allocate(AllocateRequest::new("b").families(Families::V6), t(0))
        .unwrap();
    assert_eq!(
        (b.v4, b.v6),
        (None, Some("fd00:10:244::3".parse().unwrap()))
    );
    // Asking again for both adds the missing family and keeps the other.
    let b2 = ipam
        .allocate(
            AllocateRequest::new("b").families(Families::DualStack),
            t(0),
        )
        .unwrap();
    assert_eq!((b2.v4, b2.v6), (Some("10.244.0.3".parse().unwrap()), b.v6));
    let c = ipam
        .allocate(
            AllocateRequest::new("c").address(ip("fd00:10:244::99")),
            t(0),
        )
        .unwrap();
    assert_eq!(c.v6, Some("fd00:10:244::99".parse().unwrap()));
    assert!(c.v4.is_some());

    let (mut only4, _) = mem(v4_config("10.0.0.0/24"));
    let err = only4
        .allocate(
            AllocateRequest::new("a").families(Families::DualStack),
            t(0),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            AllocateError::NoSubnet {
                family: Family::V6,
                ..
            }
        ),
        "{err}"
    );
    assert!(only4.list().is_empty());
}

#[test]
fn ipv6_slash_64_is_never_scanned() {
    let config = IpamConfig {
        subnet_v4: None,
        subnet_v6: Some("fd00::/64".parse().unwrap()),
        quarantine: Duration::from_secs(30),
    };
    let (mut ipam, _) = mem(config);
    for i in 0..2000 {
        let _ = ipam
            .allocate(AllocateRequest::new(format!("p{i}")), t(0))
            .unwrap();
    }
    for i in 0..1000 {
        ipam.release(&format!("p{i}").into(), t(0)).unwrap();
    }
    let a = ipam.allocate(AllocateRequest::new("next"), t(0)).unwrap();
    assert_eq!(a.v6, Some("fd00::7d2".parse().unwrap()));
    let usage = ipam.usage(Family::V6, t(0)).unwrap();
    assert_eq!(usage.usable, (1u128 << 64) - 2);
    assert_eq!((usage.in_use, usage.quarantined), (1001, 1000));
}

#[test]
fn gc_releases_dead_owners_and_forgets_ended_quarantine() {
    let (mut ipam, store) = mem(v4_config("10.0.0.0/24"));
    for o in ["a", "b", "c", "d"] {
        v4(&mut ipam, o, t(0));
    }
    let alive: HashSet<OwnerKey> = ["b".into(), "d".into()].into_iter().collect();
    let released = ipam.gc(|o| alive.contains(o), t(1)).unwrap();
    let names: Vec<&str> = released.iter().map(|r| r.owner.0.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(ipam.list().len(), 2);
    assert_eq!(ipam.usage(Family::V4, t(1)).unwrap().quarantined, 2);
    assert!(ipam.gc(|o| alive.contains(o), t(2)).unwrap().is_empty());
    // Past the quarantine, a GC also drops the ended entries from the state.
    ipam.gc(|o| alive.contains(o), t(100)).unwrap();
    let mut probe = store.clone();
    assert!(probe.load().unwrap().unwrap().quarantine.is_empty());
}

#[test]
fn file_store_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = IpamConfig::default();
    let open = || {
        Ipam::open(
            Box::new(FileStore::open(dir.path()).unwrap()),
            config.clone(),
        )
    };
    let mut ipam = open().unwrap();
    let a = ipam
        .allocate(AllocateRequest::new("a").identity("s-0"), t(0))
        .unwrap();
    let b = ipam.allocate(AllocateRequest::new("b"), t(0)).unwrap();
    ipam.release(&"a".into(), t(1)).unwrap();
    let before = (ipam.list(), ipam.identities());
    drop(ipam);
    let mut ipam = open().unwrap();
    assert_eq!((ipam.list(), ipam.identities()), before);
    // The cursor survived: the next pick continues after b.
    let c = ipam.allocate(AllocateRequest::new("c"), t(2)).unwrap();
    assert_eq!(c.v4, Some("10.244.0.4".parse().unwrap()));
    assert_eq!(b.v4, Some("10.244.0.3".parse().unwrap()));
    let a2 = ipam
        .allocate(AllocateRequest::new("a2").identity("s-0"), t(2))
        .unwrap();
    assert_eq!((a2.v4, a2.v6), (a.v4, a.v6));
}

#[test]
fn file_store_compacts_when_the_log_fills() {
    let dir = tempfile::tempdir().unwrap();
    let config = v4_config("10.0.0.0/22");
    let open = || {
        let store = FileStore::open(dir.path())
            .unwrap()
            .with_log_capacity(16 << 10);
        Ipam::open(Box::new(store), config.clone())
    };
    let mut ipam = open().unwrap();
    // ~130 bytes a record: 600 records fill the 16 KiB log several times.
    for i in 0..400 {
        // Container-ID-like names make the GC below too big for one log record.
        let owner = format!("{i}-0123456789abcdef0123456789abcdef");
        v4(&mut ipam, &owner, t(i));
        if i % 2 == 0 {
            ipam.release(&owner.into(), t(i)).unwrap();
        }
    }
    // A GC too big for one record goes through a compaction.
    let released = ipam.gc(|o| o.0.starts_with('7'), t(5000)).unwrap();
    assert!(released.len() > 100);
    let before = ipam.list();
    drop(ipam);
    assert_eq!(open().unwrap().list(), before);
}

#[test]
fn garbage_state_file_is_a_corruption_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = v4_config("10.0.0.0/24");
    let open = || {
        Ipam::open(
            Box::new(FileStore::open(dir.path()).unwrap()),
            config.clone(),
        )
    };
    let mut ipam = open().unwrap();
    v4(&mut ipam, "a", t(0));
    drop(ipam);
    let path = dir.path().join("ipam").join("state.json");
    let good = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot a state file at all".to_vec()),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("empty", Vec::new()),
        ("flipped", {
            let mut b = good.clone();
            let last = b.len() - 3;
            b[last] ^= 0x20;
            b
        }),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = open().unwrap_err();
        assert!(
            matches!(err, OpenError::Store(StoreError::Corrupt { ref path, .. }) if path.ends_with("ipam/state.json")),
            "{what}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        // Left untouched for the operator, never replaced by an empty state.
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}");
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(open().unwrap().list().len(), 1);
}

/// Writes a, b, c through a store under `policy` and returns the state
/// file and log as a crash right after would leave them.
fn crashed_after_three(dir: &std::path::Path, policy: SyncPolicy) -> (Vec<u8>, Vec<u8>) {
    let store = FileStore::open_with_sync(dir, policy).unwrap();
    assert_eq!(store.sync_policy(), policy);
    let mut ipam = Ipam::open(Box::new(store), v4_config("10.0.0.0/24")).unwrap();
    for o in ["a", "b", "c"] {
        v4(&mut ipam, o, t(0));
    }
    let state = std::fs::read(dir.join("ipam/state.json")).unwrap();
    let log = std::fs::read(dir.join("ipam/changes.log")).unwrap();
    (state, log)
}

/// Under the periodic policy a power cut can leave the unsynced tail of the
/// log with any of its pages written back: the state is what the changes
/// before the first damaged record made, never a gap.
#[test]
fn damage_in_a_periodic_log_is_where_the_power_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (state, bytes) = crashed_after_three(dir.path(), SyncPolicy::Periodic);
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert!(bytes[..header_end].ends_with(b" periodic\n"));
    let log = dir.path().join("ipam/changes.log");
    // The first record's bytes damaged, the second's and third's intact.
    let mut torn = bytes.clone();
    torn[header_end + 20] ^= 1;
    // The first record's header never written back.
    let mut lost = bytes.clone();
    lost[header_end..header_end + 16].fill(0);
    for (what, damaged) in [("torn", torn), ("lost", lost)] {
        for reader in [SyncPolicy::Always, SyncPolicy::Periodic] {
            std::fs::write(dir.path().join("ipam/state.json"), &state).unwrap();
            std::fs::write(&log, &damaged).unwrap();
            let ipam = Ipam::open(
                Box::new(FileStore::open_with_sync(dir.path(), reader).unwrap()),
                v4_config("10.0.0.0/24"),
            )
            .unwrap_or_else(|e| panic!("{what}, read under {reader}: {e}"));
            assert!(ipam.list().is_empty(), "{what}: nothing after the gap");
        }
    }
}

#[test]
fn damaged_log_is_corruption_but_a_torn_last_record_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = v4_config("10.0.0.0/24");
    // The strict rule holds for logs synced per write, whoever reads them.
    let open = || {
        Ipam::open(
            Box::new(FileStore::open(dir.path()).unwrap()),
            config.clone(),
        )
    };
    let log = dir.path().join("ipam").join("changes.log");
    // Simulate a crash: the files as they were while the store was open.
    let (state, bytes) = crashed_after_three(dir.path(), SyncPolicy::Always);
    let used = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let restore = |log_bytes: &[u8]| {
        std::fs::write(dir.path().join("ipam/state.json"), &state).unwrap();
        std::fs::write(&log, log_bytes).unwrap();
    };

    // The last record cut in half: that write was never acknowledged; a and b stay.
    let mut torn = bytes.clone();
    torn[used - 20..used].fill(0);
    restore(&torn);
    let owners: Vec<String> = open()
        .unwrap()
        .list()
        .into_iter()
        .map(|a| a.owner.0)
        .collect();
    assert_eq!(owners, ["a", "b"]);

    // A damaged byte in the first record, with records after it: corruption.
    let mut damaged = bytes.clone();
    let first_record = bytes.iter().position(|&b| b == b'\n').unwrap() + 1 + 20;
    damaged[first_record] ^= 1;
    restore(&damaged);
    let err = open().unwrap_err();
    assert!(err.to_string().contains("changes.log"), "{err}");

    restore(&bytes);
    assert_eq!(open().unwrap().list().len(), 3);
}

#[test]
fn config_checks() {
    let store = || Box::new(MemoryStore::default());
    let mut c = v4_config("10.0.0.0/31");
    assert!(matches!(
        Ipam::open(store(), c.clone()),
        Err(OpenError::SubnetTooSmall { .. })
    ));
    c.subnet_v4 = Some("10.0.0.5/24".parse().unwrap());
    assert!(matches!(
        Ipam::open(store(), c.clone()),
        Err(OpenError::HostBitsSet { .. })
    ));
    c.subnet_v4 = None;
    assert!(matches!(Ipam::open(store(), c), Err(OpenError::NoSubnet)));

    // Moving to another subnet is refused while pods hold addresses of the old one.
    let (mut ipam, shared) = mem(v4_config("10.0.0.0/24"));
    v4(&mut ipam, "a", t(0));
    v4(&mut ipam, "b", t(0));
    ipam.release(&"b".into(), t(0)).unwrap();
    drop(ipam);
    let err = Ipam::open(Box::new(shared.clone()), v4_config("10.1.0.0/24")).unwrap_err();
    assert!(
        matches!(err, OpenError::SubnetChanged { count: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("held by a"), "{err}");
    let mut ipam = Ipam::open(Box::new(shared.clone()), v4_config("10.0.0.0/24")).unwrap();
    ipam.release(&"a".into(), t(0)).unwrap();
    drop(ipam);
    let mut ipam = Ipam::open(Box::new(shared), v4_config("10.1.0.0/24")).unwrap();
    assert_eq!(v4(&mut ipam, "c", t(0)), ip("10.1.0.2"));
    assert_eq!(ipam.usage(Family::V4, t(0)).unwrap().quarantined, 0);
}

/// A store whose writes fail on demand.
struct FlakyStore {
    inner: MemoryStore,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl IpamStore for FlakyStore {
    fn load(&mut self) -> Result<Option<IpamState>, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, state: &IpamState, change: &IpamChange) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Io {
                op: "append to",
                path: "test".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.commit(state, change)
    }
}

#[test]
fn failed_store_write_changes_nothing() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FlakyStore {
        inner: MemoryStore::default(),
        fail: fail.clone(),
    };
    let mut ipam = Ipam::open(Box::new(store), v4_config("10.0.0.0/24")).unwrap();
    v4(&mut ipam, "a", t(0));
    fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = ipam.allocate(AllocateRequest::new("b"), t(0)).unwrap_err();
    assert!(matches!(err, AllocateError::Store(_)), "{err}");
    assert!(ipam.release(&"a".into(), t(0)).is_err());
    assert_eq!(ipam.list().len(), 1);
    fail.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(v4(&mut ipam, "b", t(0)), ip("10.0.0.3"));
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        owner: u8,
        identity: Option<u8>,
        families: Families,
        explicit: Option<u8>,
    },
    Release(u8),
    ReleaseIdentity(u8),
    Gc(u16),
    Sleep(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let families = prop_oneof![
        Just(Families::Configured),
        Just(Families::V4),
        Just(Families::V6),
        Just(Families::DualStack)
    ];
    prop_oneof![
        6 => (0..20u8, proptest::option::weighted(0.3, 0..4u8), families, proptest::option::weighted(0.15, 0..16u8))
            .prop_map(|(owner, identity, families, explicit)| Op::Allocate { owner, identity, families, explicit }),
        4 => (0..20u8).prop_map(Op::Release),
        1 => (0..4u8).prop_map(Op::ReleaseIdentity),
        1 => any::<u16>().prop_map(Op::Gc),
        2 => (0..3000u64).prop_map(Op::Sleep),
        1 => Just(Op::Restart),
    ]
}

fn check_invariants(ipam: &Ipam, pools: &[Pool]) {
    let ends: std::collections::BTreeSet<(u64, IpAddr)> = ipam
        .state
        .quarantine
        .iter()
        .map(|(a, until)| (*until, *a))
        .collect();
    assert_eq!(
        ipam.state.quarantine_ends, ends,
        "the index of quarantine ends follows the quarantine"
    );
    let mut seen = HashSet::new();
    for a in ipam.list() {
        for addr in a.addrs() {
            assert!(seen.insert(addr), "{addr} handed out twice");
            let pool = pools
                .iter()
                .find(|p| p.contains(addr))
                .expect("in a subnet");
            assert!(
                pool.is_usable(addr),
                "{addr} is network, gateway or broadcast"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any interleaving of allocations, releases, GCs, clock steps and restarts
    /// keeps live addresses unique and usable, and keeps what was acknowledged.
    #[test]
    fn interleavings_keep_addresses_unique(ops in proptest::collection::vec(op(), 1..60), on_disk in proptest::bool::weighted(0.25)) {
        let config = IpamConfig {
            subnet_v4: Some("10.0.0.0/28".parse().unwrap()),
            subnet_v6: Some("fd00::/125".parse().unwrap()),
            quarantine: Duration::from_millis(1500),
        };
        let pools = [Pool::new("10.0.0.0/28".parse().unwrap()).unwrap(), Pool::new("fd00::/125".parse().unwrap()).unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let memory = MemoryStore::default();
        let store = || -> Box<dyn IpamStore> {
            if on_disk { Box::new(FileStore::open(dir.path()).unwrap()) } else { Box::new(memory.clone()) }
        };
        let mut ipam = Ipam::open(store(), config.clone()).unwrap();
        let mut now = t(0);
        // What the model says each owner holds.
        let mut model: HashMap<OwnerKey, Allocation> = HashMap::new();
        for op in ops {
            match op {
                Op::Allocate { owner, identity, families, explicit } => {
                    let owner = OwnerKey(format!("o{owner}"));
                    let mut req = AllocateRequest::new(owner.clone()).families(families);
                    if let Some(i) = identity { req = req.identity(format!("id{i}")); }
                    if let Some(x) = explicit { req = req.address(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, x))); }
                    match ipam.allocate(req, now) {
                        Ok(a) => {
                            if let Some(prev) = model.get(&owner) {
                                // Idempotent: what was held is still held.
                                prop_assert!(prev.v4.is_none() || prev.v4 == a.v4);
                                prop_assert!(prev.v6.is_none() || prev.v6 == a.v6);
                            }
                            model.insert(owner, a);
                        }
                        Err(AllocateError::Store(e)) => panic!("{e}"),
                        Err(_) => {}
                    }
                }
                Op::Release(o) => {
                    let owner = OwnerKey(format!("o{o}"));
                    let r = ipam.release(&owner, now).unwrap();
                    prop_assert_eq!(r, model.remove(&owner));
                }
                Op::ReleaseIdentity(i) => { ipam.release_identity(&format!("id{i}")).unwrap(); }
                Op::Gc(mask) => {
                    let alive = |o: &OwnerKey| o.0[1..].parse::<u32>().is_ok_and(|n| mask & (1 << (n % 16)) != 0);
                    for r in ipam.gc(alive, now).unwrap() { prop_assert!(model.remove(&r.owner).is_some()); }
                    model.retain(|o, _| alive(o));
                }
                Op::Sleep(ms) => now += Duration::from_millis(ms),
                Op::Restart => {
                    drop(ipam);
                    ipam = Ipam::open(store(), config.clone()).unwrap();
                }
            }
            check_invariants(&ipam, &pools);
            let mut expected: Vec<Allocation> = model.values().cloned().collect();
            expected.sort_by(|a, b| a.owner.cmp(&b.owner));
            prop_assert_eq!(ipam.list(), expected);
        }
    }
}
