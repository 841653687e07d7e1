//! Root tests of `sys::tun` and `sys::link`: a pod-shaped namespace (persistent
//! TUN eth0, /32 address, default route), a packet round trip through the
//! namespace's kernel, and reattaching to the persistent device.
//!
//! Every packet stays inside the namespace the test creates (10.99.x.x).

mod sys_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use podnet::sys::link;
use podnet::sys::tun::{Tun, TunError};
use sys_support::NsGuard;

const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet PEER_IP:40000 -> POD_IP:9 (nobody listens), UDP checksum 0.
fn udp_to_pod(payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&PEER_IP.octets());
    p[16..20].copy_from_slice(&POD_IP.octets());
    let csum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Writes a UDP packet to a closed port into the TUN and waits for the
/// namespace's kernel to answer ICMP port unreachable back out of it.
fn expect_port_unreachable(tun: &Tun) {
    let sent = udp_to_pod(b"podnet sys test");
    assert_eq!(tun.write(&sent).unwrap(), sent.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    loop {
        assert!(
            Instant::now() < deadline,
            "no ICMP port unreachable came back out of the TUN"
        );
        let n = match tun.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => panic!("reading the TUN: {e}"),
        };
        let p = &buf[..n];
        // Skip anything else the kernel sends (IPv6 link-local chatter).
        if n < 28 || p[0] >> 4 != 4 || p[9] != 1 {
            continue;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        assert_eq!(p[12..16], POD_IP.octets(), "reply source");
        assert_eq!(p[16..20], PEER_IP.octets(), "reply destination");
        assert_eq!((p[ihl], p[ihl + 1]), (3, 3), "ICMP dest/port unreachable");
        // The ICMP error quotes our packet's IP header and UDP header.
        assert_eq!(&p[ihl + 8..ihl + 8 + 28], &sent[..28]);
        return;
    }
}

#[test]
fn pod_shaped_namespace_round_trip_and_reattach() {
    let guard = NsGuard::new("tun");
    let ns = &guard.ns;

    let tun = ns
        .run(
            || -> Result<Tun, Box<dyn std::error::Error + Send + Sync>> {
                let tun = Tun::create("eth0", true)?;
                link::set_up("lo")?;
                link::add_address("eth0", "10.99.0.2/32".parse().unwrap())?;
                link::set_mtu("eth0", 1400)?;
                link::set_up("eth0")?;
                link::add_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
                // Idempotent: doing it all again changes nothing and succeeds.
                link::add_address("eth0", "10.99.0.2/32".parse().unwrap())?;
                link::add_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
                Ok(tun)
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(tun.name(), "eth0");
    // The device lives in the pod namespace only.
    assert!(ns.run(|| link::index("eth0")).unwrap().is_ok());

    let addr = guard.ip(&["addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.99.0.2/32"), "{addr}");
    let link_out = guard.ip(&["link", "show", "eth0"]);
    assert!(link_out.contains("mtu 1400"), "{link_out}");
    assert!(link_out.contains(",UP"), "{link_out}");
    let lo = guard.ip(&["link", "show", "lo"]);
    assert!(lo.contains(",UP"), "{lo}");
    let routes = guard.ip(&["route", "show"]);
    assert!(routes.contains("default dev eth0"), "{routes}");

    // The fd works from this (host-namespace) thread.
    tun.set_nonblocking(true).unwrap();
    expect_port_unreachable(&tun);

    // Reattach: the persistent device and its configuration survive the fd.
    drop(tun);
    assert!(ns.run(|| link::exists("eth0")).unwrap().unwrap());
    let tun = ns.run(|| Tun::create("eth0", true)).unwrap().unwrap();
    let addr = guard.ip(&["addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet 10.99.0.2/32"), "{addr}");
    tun.set_nonblocking(true).unwrap();
    expect_port_unreachable(&tun);

    // Routes go and come back; deleting twice is Ok.
    ns.run(|| -> Result<(), link::LinkError> {
        link::delete_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
        link::delete_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
        Ok(())
    })
    .unwrap()
    .unwrap();
    assert!(!guard.ip(&["route", "show"]).contains("default"));

    // Without the persist flag the device goes away with its last fd.
    tun.set_persistent(false).unwrap();
    drop(tun);
    assert!(!ns.run(|| link::exists("eth0")).unwrap().unwrap());
}

#[test]
fn ipv6_address_and_route_and_delete_link() {
    let guard = NsGuard::new("v6");
    let ns = &guard.ns;
    ns.run(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let tun = Tun::create("eth0", true)?;
        link::set_up("eth0")?;
        link::add_address("eth0", "fd00:99::2/128".parse().unwrap())?;
        link::add_route("::/0".parse().unwrap(), "eth0")?;
        link::add_route("::/0".parse().unwrap(), "eth0")?;
        link::add_route("10.99.5.0/24".parse().unwrap(), "eth0")?;
        drop(tun);
        Ok(())
    })
    .unwrap()
    .unwrap();
    let addr = guard.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("fd00:99::2/128"), "{addr}");
    let routes = guard.ip(&["-6", "route", "show"]);
    assert!(routes.contains("default dev eth0"), "{routes}");
    let routes = guard.ip(&["route", "show"]);
    let subnet = routes
        .lines()
        .find(|l| l.starts_with("10.99.5.0/24 dev eth0"))
        .unwrap_or_else(|| panic!("no 10.99.5.0/24 route: {routes}"));
    assert!(subnet.contains("scope link"), "{subnet}");

    ns.run(|| -> Result<(), link::LinkError> {
        link::delete_route("::/0".parse().unwrap(), "eth0")?;
        link::delete_link("eth0")?;
        link::delete_link("eth0")?; // absent: Ok
        link::delete_route("::/0".parse().unwrap(), "eth0")?; // device gone: Ok
        assert!(!link::exists("eth0")?);
        Ok(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn link_errors_name_the_interface() {
    let guard = NsGuard::new("le");
    let err = guard
        .ns
        .run(|| link::set_up("nosuchdev0"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, link::LinkError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nosuchdev0"), "{err}");
    let err = guard
        .ns
        .run(|| link::index("nosuchdev0"))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, link::LinkError::NotFound { .. }), "{err:?}");
    // Non-persistent TUN: gone when dropped.
    guard
        .ns
        .run(|| {
            let tun = Tun::create("tmp0", false).unwrap();
            assert!(link::exists("tmp0").unwrap());
            drop(tun);
            // The kernel unregisters the device as the last descriptor
            // closes, but may finish that a moment after close returns.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while link::exists("tmp0").unwrap() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(
                !link::exists("tmp0").unwrap(),
                "tmp0 outlived its descriptor"
            );
        })
        .unwrap();
}

#[test]
fn bad_tun_names_are_rejected() {
    for bad in ["", "sixteen-chars-xx", "a/b", "a b"] {
        match Tun::create(bad, false) {
            Err(TunError::InvalidName { .. }) => {}
            other => panic!("{bad:?} should be rejected, got {other:?}"),
        }
    }
}
