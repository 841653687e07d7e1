//! The ceiling forwarder of `scripts/bench-e2e.sh`: the simplest program
//! that moves packets between two TUN devices, as a reference for podnetd's
//! end-to-end figures. One thread per direction, one blocking read and one
//! write per packet (a super-packet with offloads on), no parsing, no NAT,
//! no routing: what a userspace hop costs before any work is done on it.
//!
//! Usage (root): `ceiling_forwarder NS_A IP_A NS_B IP_B [--no-offload]`.
//! Creates a TUN device `fwd0` in each (existing) namespace with the /32
//! address and a default route through it, prints `ready`, and forwards
//! until killed; the devices go away with it. Without arguments (as
//! `cargo test --benches` runs it) it does nothing.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use podnet::sys::link;
use podnet::sys::netns::NetNs;
use podnet::sys::tun::{Tun, TunOptions, VNET_HDR_LEN};

fn device(ns: &str, ip: Ipv4Addr, offload: bool) -> Tun {
    let ns = NetNs::open(ns).unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
    ns.run(
        move || -> Result<Tun, Box<dyn std::error::Error + Send + Sync>> {
            let tun = Tun::open(
                "fwd0",
                TunOptions {
                    persistent: false,
                    offload,
                },
            )?;
            link::set_up("lo")?;
            link::set_mtu("fwd0", 1500)?;
            link::add_address("fwd0", format!("{ip}/32").parse()?)?;
            link::set_up("fwd0")?;
            link::add_route("0.0.0.0/0".parse()?, "fwd0")?;
            Ok(tun)
        },
    )
    .expect("entering the namespace")
    .unwrap_or_else(|e| panic!("fwd0 in the namespace: {e}"))
}

/// Moves every packet read from `from` to `to`, header and all.
fn forward(from: &Tun, to: &Tun) {
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut buf = vec![0u8; 65_536 + 1024];
    loop {
        match from.read_offload(&mut hdr, &mut buf) {
            Ok(n) => {
                let _ = to.write_offload(&hdr, &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read from {}: {e}", from.name()),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let offload = !args.iter().any(|a| a == "--no-offload");
    let args: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [ns_a, ip_a, ns_b, ip_b] = args[..] else {
        eprintln!("usage: ceiling_forwarder NS_A IP_A NS_B IP_B [--no-offload] (root)");
        return;
    };
    let a = Arc::new(device(ns_a, ip_a.parse().expect("IP_A"), offload));
    let b = Arc::new(device(ns_b, ip_b.parse().expect("IP_B"), offload));
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let (a2, b2) = (a.clone(), b.clone());
    let back = std::thread::spawn(move || forward(&b2, &a2));
    forward(&a, &b);
    let _ = back.join();
}
