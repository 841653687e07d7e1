//! The node's edge: external services under both traffic policies, source
//! NAT of pod traffic leaving the node, ICMP through it, and isolation of
//! pod and cluster IPs from the outside world.

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv4Repr};

use super::*;
use crate::packet::router::SNAT_PORTS;
use crate::packet::service::TrafficPolicy;

fn node() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1)
}

fn outside() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 2)
}

fn lb() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10)
}

fn edge_router(traffic: TrafficPolicy, backends: &[Backend]) -> Router {
    let r = Router::new(RouterConfig {
        edge: EdgeConfig {
            node_v4: Some(node()),
            host_addrs: vec![node().into()],
            no_masquerade: vec!["10.244.0.0/16".parse().unwrap()],
        },
        ..small_config()
    });
    r.set_pods(&[(CLIENT, pod(5)), (WEB1, pod(6)), (WEB2, pod(7))])
        .unwrap();
    let mut web = spec(1, 6, None);
    web.traffic = traffic;
    web.frontends.push(Frontend {
        addr: node().into(),
        port: 30080,
        protocol: 6,
    });
    web.frontends.push(Frontend {
        addr: lb().into(),
        port: 80,
        protocol: 6,
    });
    r.set_services(&[web, spec(2, 17, None)]).unwrap();
    r.set_endpoints(PoolId(1), backends).unwrap();
    r.set_endpoints(PoolId(2), &[backend(6), backend(7)])
        .unwrap();
    r
}

type Endpoint = (Ipv4Addr, u16);

fn in_snat_range(port: u16) -> bool {
    (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&port)
}

/// Sends a SYN from outside to `dst`, answers it from the backend and
/// returns (address:port the backend saw the client as, the answer as the
/// client got it).
fn external_round_trip(r: &Router, dst: (Ipv4Addr, u16)) -> (Endpoint, (Endpoint, Endpoint)) {
    let mut b = Tcp::syn((outside(), 50_000), dst).build();
    let v = r.process(NOW, &mut b, Link::Host);
    let Verdict::Forward(Link::Pod(to)) = v else {
        panic!("{v:?}")
    };
    let (seen_from, at_backend, ..) = tcp_of(&b);
    assert_eq!(at_backend.1, 8080);
    let mut reply = Tcp {
        src: at_backend,
        dst: seen_from,
        control: TcpControl::Syn,
        seq: 9,
        ack: Some(1001),
        payload: b"",
        ttl: 64,
    }
    .build();
    assert_eq!(
        r.process(NOW, &mut reply, Link::Pod(to)),
        Verdict::Forward(Link::Host)
    );
    let (src, dst, ..) = tcp_of(&reply);
    (seen_from, (src, dst))
}

#[test]
fn external_traffic_policy_cluster_masquerades_the_client_to_the_node_address() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6), backend(7)]);
    for frontend in [(node(), 30080), (lb(), 80)] {
        let (seen_from, answer) = external_round_trip(&r, frontend);
        assert_eq!(seen_from.0, node(), "the backend sees the node");
        assert!(in_snat_range(seen_from.1), "{seen_from:?}");
        assert_eq!(answer, (frontend, (outside(), 50_000)));
    }
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    let local = TrafficPolicy {
        external_local: true,
        internal_local: false,
    };
    let r = edge_router(local, &[backend(6), backend(7)]);
    for frontend in [(node(), 30080), (lb(), 80)] {
        let (seen_from, answer) = external_round_trip(&r, frontend);
        assert_eq!(seen_from, (outside(), 50_000));
        assert_eq!(answer, (frontend, (outside(), 50_000)));
    }
}

#[test]
fn local_policies_use_only_endpoints_of_this_node_and_drop_without_one() {
    // 10.244.1.9 is a pod of another node (outside this node's /24).
    let remote = Backend {
        addr: SocketAddr::from((Ipv4Addr::new(10, 244, 1, 9), 8080)),
        terminating: false,
    };
    let external_local = TrafficPolicy {
        external_local: true,
        internal_local: false,
    };
    let r = edge_router(external_local, &[remote]);
    let mut b = Tcp::syn((outside(), 50_000), (node(), 30080)).build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Host),
        Verdict::Drop(DropReason::NoLocalEndpoints)
    );
    // The cluster IP from a pod is internal traffic: Cluster, any endpoint.
    let mut b = Tcp::syn((ip(5), 40_000), (vip(), 80)).build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    assert_eq!(
        tcp_of(&b).1,
        (remote.addr.ip().to_string().parse().unwrap(), 8080)
    );

    let internal_local = TrafficPolicy {
        external_local: false,
        internal_local: true,
    };
    let r = edge_router(internal_local, &[remote, backend(6)]);
    for port in 0..50 {
        let mut b = Tcp::syn((ip(5), 40_000 + port), (vip(), 80)).build();
        assert_eq!(
            r.process(NOW, &mut b, Link::Pod(CLIENT)),
            Verdict::Forward(Link::Pod(WEB1)),
            "only the local endpoint"
        );
    }
    let r = edge_router(internal_local, &[remote]);
    let mut b = Tcp::syn((ip(5), 40_000), (vip(), 80)).build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::NoLocalEndpoints)
    );
    assert_eq!(r.stats().drops[DropReason::NoLocalEndpoints as usize], 1);
}

#[test]
fn pod_traffic_leaving_the_node_is_masqueraded_and_replies_come_back() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let server = (outside(), 80);
    let mut b = Tcp::syn((ip(5), 40_000), server).build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    let (src, dst, ctl, _, ttl) = tcp_of(&b);
    assert_eq!(
        (src.0, dst, ctl, ttl),
        (node(), server, TcpControl::Syn, 63)
    );
    assert!(in_snat_range(src.1), "{src:?}");
    let mut reply = Tcp {
        src: server,
        dst: src,
        control: TcpControl::Syn,
        seq: 5,
        ack: Some(1001),
        payload: b"",
        ttl: 64,
    }
    .build();
    assert_eq!(
        r.process(NOW, &mut reply, Link::Host),
        Verdict::Forward(Link::Pod(CLIENT))
    );
    let (rsrc, rdst, ..) = tcp_of(&reply);
    assert_eq!((rsrc, rdst), (server, (ip(5), 40_000)));
    // UDP the same way.
    let mut u = udp((ip(6), 5353), (outside(), 53), b"q");
    assert_eq!(
        r.process(NOW, &mut u, Link::Pod(WEB1)),
        Verdict::Forward(Link::Host)
    );
    let (usrc, udst) = udp_of(&u);
    assert_eq!((usrc.0, udst), (node(), (outside(), 53)));
    let mut ua = udp(udst, usrc, b"a");
    assert_eq!(
        r.process(NOW, &mut ua, Link::Host),
        Verdict::Forward(Link::Pod(WEB1))
    );
    assert_eq!(udp_of(&ua), ((outside(), 53), (ip(6), 5353)));
}

#[test]
fn source_ports_are_kept_when_free_and_changed_when_they_clash() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let server = (outside(), 80);
    let in_range = SNAT_PORTS.0 + 100;
    let mut a = Tcp::syn((ip(5), in_range), server).build();
    let _ = r.process(NOW, &mut a, Link::Pod(CLIENT));
    assert_eq!(
        tcp_of(&a).0,
        (node(), in_range),
        "a free port in the range is kept"
    );
    // Another pod, the same source port, the same server: another port.
    let mut b = Tcp::syn((ip(6), in_range), server).build();
    let _ = r.process(NOW, &mut b, Link::Pod(WEB1));
    let b_src = tcp_of(&b).0;
    assert_eq!(b_src.0, node());
    assert_ne!(b_src.1, in_range);
    assert!(in_snat_range(b_src.1));
    // Many pods' flows to one server all get distinct ports.
    let mut ports = std::collections::HashSet::new();
    ports.insert(in_range);
    ports.insert(b_src.1);
    for port in 0..200 {
        let mut c = Tcp::syn((ip(7), 33_000 + port), server).build();
        assert_eq!(
            r.process(NOW, &mut c, Link::Pod(WEB2)),
            Verdict::Forward(Link::Host)
        );
        let (src, ..) = tcp_of(&c);
        assert!(in_snat_range(src.1));
        assert!(ports.insert(src.1), "port {} given twice", src.1);
    }
}

#[test]
fn a_port_held_by_a_finished_connection_goes_to_a_new_one() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let server = (outside(), 80);
    let in_range = SNAT_PORTS.0 + 7;
    let mut a = Tcp::syn((ip(5), in_range), server).build();
    let _ = r.process(NOW, &mut a, Link::Pod(CLIENT));
    assert_eq!(tcp_of(&a).0, (node(), in_range));
    // While it is open, another pod's connection from the same port
    // gets another one.
    let mut b = Tcp::syn((ip(6), in_range), server).build();
    let _ = r.process(NOW, &mut b, Link::Pod(WEB1));
    assert_ne!(tcp_of(&b).0 .1, in_range);
    // The first connection ends (a reset from the pod): its port is free
    // for the next connection, as Linux's NAT reuses tuples in TIME_WAIT.
    let mut rst = Tcp {
        control: TcpControl::Rst,
        seq: 1001,
        ack: None,
        ..Tcp::syn((ip(5), in_range), server)
    }
    .build();
    let _ = r.process(NOW, &mut rst, Link::Pod(CLIENT));
    let mut c = Tcp::syn((ip(7), in_range), server).build();
    assert_eq!(
        r.process(NOW, &mut c, Link::Pod(WEB2)),
        Verdict::Forward(Link::Host)
    );
    assert_eq!(tcp_of(&c).0, (node(), in_range));
    // Replies reach the new connection's pod.
    let mut reply = Tcp {
        src: server,
        dst: (node(), in_range),
        control: TcpControl::Syn,
        seq: 5,
        ack: Some(1001),
        payload: b"",
        ttl: 64,
    }
    .build();
    assert_eq!(
        r.process(NOW, &mut reply, Link::Host),
        Verdict::Forward(Link::Pod(WEB2))
    );
    assert_eq!(r.flows().len(), 2, "the finished flow was replaced");
}

#[test]
fn traffic_to_pods_services_the_host_and_the_cluster_is_not_masqueraded() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    for (dst, link) in [
        (ip(6), Link::Pod(WEB1)),
        (Ipv4Addr::new(10, 244, 0, 1), Link::Host),
        (node(), Link::Host),
        (Ipv4Addr::new(10, 244, 7, 3), Link::Host),
    ] {
        let mut b = Tcp::syn((ip(5), 40_000), (dst, 8080)).build();
        assert_eq!(
            r.process(NOW, &mut b, Link::Pod(CLIENT)),
            Verdict::Forward(link),
            "{dst}"
        );
        assert_eq!(tcp_of(&b).0, (ip(5), 40_000), "{dst}");
    }
}

#[test]
fn an_icmp_error_from_outside_about_a_masqueraded_flow_reaches_the_pod() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let mut u = udp((ip(5), 5353), (outside(), 9), b"probe");
    let _ = r.process(NOW, &mut u, Link::Pod(CLIENT));
    let (masq, _) = udp_of(&u);
    let sent = u.as_slice().to_vec();
    // The server answers "port unreachable" about what it received.
    let mut err = PacketBuf::from_bytes(&sent);
    let info = wire::parse(err.as_slice()).unwrap();
    let n = wire::write_icmp_error(
        err.buffer_mut(),
        &info,
        outside().into(),
        IcmpErrorKind::PortUnreachable,
    )
    .unwrap();
    err.set_len(n);
    assert_eq!(
        r.process(NOW, &mut err, Link::Host),
        Verdict::Forward(Link::Pod(CLIENT))
    );
    let p = Ipv4Packet::new_checked(err.as_slice()).unwrap();
    assert!(p.verify_checksum());
    assert_eq!((p.src_addr(), p.dst_addr()), (outside(), ip(5)));
    let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let inner = Ipv4Packet::new_checked(icmp.data()).unwrap();
    assert!(inner.verify_checksum());
    assert_eq!((inner.src_addr(), inner.dst_addr()), (ip(5), outside()));
    let inner_udp = UdpPacket::new_unchecked(inner.payload());
    assert_eq!((inner_udp.src_port(), inner_udp.dst_port()), (5353, 9));
    assert_ne!(masq.1, 0);
}

pub(super) fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, ident: u16) -> PacketBuf {
    let data = b"ping";
    let repr = if request {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 1,
            data,
        }
    } else {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no: 1,
            data,
        }
    };
    let ipr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut bytes = vec![0u8; 20 + repr.buffer_len()];
    let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
    ipr.emit(&mut p, &ChecksumCapabilities::default());
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    PacketBuf::from_bytes(&bytes)
}

fn echo_of(b: &PacketBuf) -> (Ipv4Addr, Ipv4Addr, Icmpv4Message, u16) {
    let p = Ipv4Packet::new_checked(b.as_slice()).unwrap();
    assert!(p.verify_checksum());
    let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    (
        p.src_addr(),
        p.dst_addr(),
        icmp.msg_type(),
        icmp.echo_ident(),
    )
}

#[test]
fn a_pods_ping_beyond_the_node_is_masqueraded_with_its_identifier_rewritten() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let mut req = echo(ip(5), outside(), true, 7);
    assert_eq!(
        r.process(NOW, &mut req, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    let (src, dst, kind, ident) = echo_of(&req);
    assert_eq!(
        (src, dst, kind),
        (node(), outside(), Icmpv4Message::EchoRequest)
    );
    assert!(in_snat_range(ident), "{ident}");
    // Another pod with the same identifier gets another one.
    let mut other = echo(ip(6), outside(), true, 7);
    let _ = r.process(NOW, &mut other, Link::Pod(WEB1));
    assert_ne!(echo_of(&other).3, ident);
    let mut reply = echo(outside(), node(), false, ident);
    assert_eq!(
        r.process(NOW, &mut reply, Link::Host),
        Verdict::Forward(Link::Pod(CLIENT))
    );
    assert_eq!(
        echo_of(&reply),
        (outside(), ip(5), Icmpv4Message::EchoReply, 7)
    );
    // An echo reply nobody here asked for goes back to the host.
    let mut stray = echo(outside(), node(), false, 999);
    let before = stray.as_slice().to_vec();
    assert_eq!(
        r.process(NOW, &mut stray, Link::Host),
        Verdict::Forward(Link::Host)
    );
    assert_eq!(stray.as_slice(), &before[..], "handed back unchanged");
    // Pod to pod pings are not translated.
    let mut p2p = echo(ip(5), ip(6), true, 7);
    assert_eq!(
        r.process(NOW, &mut p2p, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    assert_eq!(echo_of(&p2p).0, ip(5));
}

#[test]
fn the_outside_cannot_reach_cluster_ips_or_pods_and_the_drops_are_counted() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    let mut to_vip = Tcp::syn((outside(), 50_000), (vip(), 80)).build();
    assert_eq!(
        r.process(NOW, &mut to_vip, Link::Host),
        Verdict::Drop(DropReason::FromOutside)
    );
    let mut to_pod = Tcp::syn((outside(), 50_000), (ip(6), 8080)).build();
    assert_eq!(
        r.process(NOW, &mut to_pod, Link::Host),
        Verdict::Drop(DropReason::FromOutside)
    );
    let mut ping_pod = echo(outside(), ip(6), true, 1);
    assert_eq!(
        r.process(NOW, &mut ping_pod, Link::Host),
        Verdict::Drop(DropReason::FromOutside)
    );
    let mut udp_vip = udp((outside(), 1000), (vip(), 80), b"x");
    assert_eq!(
        r.process(NOW, &mut udp_vip, Link::Host),
        Verdict::Drop(DropReason::FromOutside)
    );
    assert_eq!(r.stats().drops[DropReason::FromOutside as usize], 4);
    // The host itself (its gateway address or node address) still can.
    for src in [Ipv4Addr::new(10, 244, 0, 1), node()] {
        let mut b = Tcp::syn((src, 50_000), (vip(), 80)).build();
        assert_eq!(
            r.process(NOW, &mut b, Link::Host),
            Verdict::Forward(Link::Pod(WEB1)),
            "{src}"
        );
    }
}

#[test]
fn what_the_router_does_not_know_on_the_node_address_goes_back_to_the_host() {
    let r = edge_router(TrafficPolicy::default(), &[backend(6)]);
    // A reply to the host's own connection, steered here by port.
    let mut b = udp((outside(), 53), (node(), SNAT_PORTS.0 + 3), b"answer");
    let before = b.as_slice().to_vec();
    assert_eq!(
        r.process(NOW, &mut b, Link::Host),
        Verdict::Forward(Link::Host)
    );
    assert_eq!(b.as_slice(), &before[..]);
    // A pod reaching a host service on the node address is not refused,
    // though the address carries a node port.
    let mut p = Tcp::syn((ip(5), 40_000), (node(), 6443)).build();
    assert_eq!(
        r.process(NOW, &mut p, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    // A pod reaching the node port itself gets the service.
    let mut np = Tcp::syn((ip(5), 40_001), (node(), 30080)).build();
    assert_eq!(
        r.process(NOW, &mut np, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    assert_eq!(
        tcp_of(&np).0,
        (ip(5), 40_001),
        "pod traffic is internal: not masqueraded"
    );
}

#[test]
fn without_an_edge_nothing_is_masqueraded_or_counted_as_outside() {
    let r = router();
    let mut b = Tcp::syn((ip(5), 40_000), (outside(), 80)).build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    assert_eq!(tcp_of(&b).0, (ip(5), 40_000));
    let mut o = Tcp::syn((outside(), 50_000), (vip(), 80)).build();
    assert!(matches!(
        r.process(NOW, &mut o, Link::Host),
        Verdict::Forward(Link::Pod(_))
    ));
}
