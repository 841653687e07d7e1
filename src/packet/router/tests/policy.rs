//! NetworkPolicy at flow setup: denied flows dropped (never reset) and
//! counted by direction, replies of allowed flows let through an isolated
//! pod, service flows decided on their backend, tracked flows re-decided
//! when the policies change, and `explain` telling the same story.

use std::net::IpAddr;
use std::sync::Arc;

use super::edge::echo;
use super::*;
use crate::packet::policy::{Isolation, Peers, PodPolicy, PolicySnapshot, PortMatch, Rule};

fn a(d: u8) -> IpAddr {
    IpAddr::V4(ip(d))
}

/// A rule of policy `t/NAME` letting `peers` (pod addresses; none = all)
/// through on `ports`.
fn rule(name: &str, peers: &[u8], ports: Vec<PortMatch>) -> Rule {
    Rule {
        policy: format!("t/{name}").into(),
        index: 0,
        peers: if peers.is_empty() {
            Peers::All
        } else {
            let mut pods: Vec<IpAddr> = peers.iter().map(|d| a(*d)).collect();
            pods.sort();
            Peers::Some {
                pods,
                blocks: Vec::new(),
            }
        },
        ports,
    }
}

fn isolation(rules: Vec<Rule>) -> Option<Isolation> {
    Some(Isolation {
        policies: vec![Arc::<str>::from("t/isolate")].into(),
        rules,
    })
}

/// A pod at 10.244.0.`d` isolated as given.
fn pod_policy(
    d: u8,
    ingress: Option<Isolation>,
    egress: Option<Isolation>,
) -> (IpAddr, Arc<PodPolicy>) {
    (
        a(d),
        Arc::new(PodPolicy {
            pod: format!("t/pod-{d}").into(),
            named_ports: Vec::new(),
            ingress,
            egress,
        }),
    )
}

/// The node's own address is the gateway, 10.244.0.1.
fn snapshot(pods: Vec<(IpAddr, Arc<PodPolicy>)>) -> PolicySnapshot {
    PolicySnapshot::new(pods, vec![a(1)], 1)
}

fn syn(src: (u8, u16), dst: (Ipv4Addr, u16)) -> PacketBuf {
    Tcp::syn((ip(src.0), src.1), dst).build()
}

fn synack(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> PacketBuf {
    Tcp {
        src,
        dst,
        control: TcpControl::Syn,
        seq: 7000,
        ack: Some(1001),
        payload: b"",
        ttl: 64,
    }
    .build()
}

fn data(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> PacketBuf {
    Tcp {
        src,
        dst,
        control: TcpControl::None,
        seq: 1001,
        ack: Some(7001),
        payload: b"more",
        ttl: 64,
    }
    .build()
}

#[test]
fn an_isolated_pod_drops_what_no_rule_allows_and_counts_it_by_direction() {
    let r = router();
    // web-1 (.6) lets in the client (.5) on TCP 8080 only; the client may
    // send nowhere but web-1.
    r.set_policy(snapshot(vec![
        pod_policy(
            6,
            isolation(vec![rule(
                "web",
                &[5],
                vec![PortMatch::Range(6, 8080, 8080)],
            )]),
            None,
        ),
        pod_policy(5, None, isolation(vec![rule("client", &[6], vec![])])),
    ]));
    let mut b = syn((5, 40000), (ip(6), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    // web-2 is not among the client's egress peers.
    let mut b = syn((5, 40001), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::PolicyEgress)
    );
    // web-2 is not among web-1's ingress peers.
    let mut b = syn((7, 40000), (ip(6), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(WEB2)),
        Verdict::Drop(DropReason::PolicyIngress)
    );
    // The rule names TCP: UDP to the same port is denied.
    let mut b = udp((ip(5), 5353), (ip(6), 8080), b"q");
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::PolicyIngress)
    );
    // Another TCP port: denied, dropped (not reset).
    let mut b = syn((5, 40002), (ip(6), 9090));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::PolicyIngress)
    );
    // The node reaches isolated pods and they reach it.
    let mut b = syn((1, 40000), (ip(6), 9090));
    assert_eq!(
        r.process(NOW, &mut b, Link::Host),
        Verdict::Forward(Link::Pod(WEB1))
    );
    let mut b = udp((ip(5), 5353), (ip(1), 53), b"q");
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Host)
    );
    let s = r.stats();
    assert_eq!(s.dropped(DropReason::PolicyEgress), 1);
    assert_eq!(s.dropped(DropReason::PolicyIngress), 3);
}

#[test]
fn replies_of_an_allowed_flow_pass_an_isolated_pod() {
    let r = router();
    // web-1 may send nothing on its own (egress isolated, no rule).
    r.set_policy(snapshot(vec![pod_policy(6, None, isolation(vec![]))]));
    let mut b = syn((5, 40000), (ip(6), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    // Its answer is part of the client's flow.
    let mut b = synack((ip(6), 8080), (ip(5), 40000));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(WEB1)),
        Verdict::Forward(Link::Pod(CLIENT))
    );
    let mut b = data((ip(5), 40000), (ip(6), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    // A flow of its own is denied.
    let mut b = syn((6, 40000), (ip(5), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(WEB1)),
        Verdict::Drop(DropReason::PolicyEgress)
    );
    // So are pings it starts; the client's ping is answered.
    let mut b = echo(ip(6), ip(5), true, 7);
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(WEB1)),
        Verdict::Drop(DropReason::PolicyEgress)
    );
    let mut b = echo(ip(5), ip(6), true, 8);
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB1))
    );
    let mut b = echo(ip(6), ip(5), false, 8);
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(WEB1)),
        Verdict::Forward(Link::Pod(CLIENT))
    );
}

#[test]
fn flows_between_pods_no_policy_isolates_stay_untracked() {
    let r = router();
    r.set_policy(snapshot(vec![pod_policy(6, isolation(vec![]), None)]));
    let mut b = syn((5, 40000), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB2))
    );
    assert_eq!(r.conntrack().len(), 0);
}

#[test]
fn a_service_flow_is_decided_on_the_backend_its_hash_picks() {
    let r = router();
    // web-1 lets nobody in; web-2 is open.
    r.set_policy(snapshot(vec![pod_policy(6, isolation(vec![]), None)]));
    let (mut to_web2, mut denied) = (0, 0);
    for port in 40000..40100 {
        let mut b = syn((5, port), (vip(), 80));
        match r.process(NOW, &mut b, Link::Pod(CLIENT)) {
            Verdict::Forward(Link::Pod(WEB2)) => to_web2 += 1,
            Verdict::Drop(DropReason::PolicyIngress) => denied += 1,
            v => panic!("port {port}: {v:?}"),
        }
    }
    assert!(
        to_web2 > 0 && denied > 0,
        "{to_web2} to web-2, {denied} denied"
    );
    // A denied flow is remembered nowhere: each retry is decided again.
    assert_eq!(r.conntrack().len(), to_web2);
}

#[test]
fn a_policy_change_stops_established_flows_it_now_denies_without_a_reset() {
    let r = router();
    // A service flow and a direct one, both established with no policy.
    let (_, seq) = established(&r, 41000);
    let mut b = syn((5, 42000), (ip(7), 8080));
    let _ = r.process(NOW, &mut b, Link::Pod(CLIENT));
    assert_eq!(
        r.set_policy(snapshot(vec![])),
        0,
        "no policy: nothing re-decided"
    );
    // Now every pod but the client is closed to it.
    let removed = r.set_policy(snapshot(vec![
        pod_policy(6, isolation(vec![]), None),
        pod_policy(7, isolation(vec![]), None),
    ]));
    assert_eq!(
        removed, 1,
        "the service flow (the direct one was untracked)"
    );
    // The client's next segment of either connection is dropped, no RST.
    let mut b = Tcp {
        src: (ip(5), 41000),
        dst: (vip(), 80),
        control: TcpControl::None,
        seq: 1001,
        ack: Some(seq),
        payload: b"more",
        ttl: 64,
    }
    .build();
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::PolicyIngress)
    );
    let mut b = data((ip(5), 42000), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Drop(DropReason::PolicyIngress)
    );
    // Policies gone: flows open again.
    r.set_policy(snapshot(vec![]));
    let mut b = syn((5, 43000), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB2))
    );
}

#[test]
fn a_policy_change_keeps_the_flows_it_still_allows() {
    let r = router();
    r.set_policy(snapshot(vec![pod_policy(
        7,
        isolation(vec![rule("web", &[5], vec![])]),
        None,
    )]));
    let mut b = syn((5, 42000), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB2))
    );
    assert_eq!(r.conntrack().len(), 1, "tracked: web-2 is isolated");
    let removed = r.set_policy(snapshot(vec![
        pod_policy(7, isolation(vec![rule("web", &[5], vec![])]), None),
        pod_policy(6, isolation(vec![]), None),
    ]));
    assert_eq!(removed, 0);
    let mut b = data((ip(5), 42000), (ip(7), 8080));
    assert_eq!(
        r.process(NOW, &mut b, Link::Pod(CLIENT)),
        Verdict::Forward(Link::Pod(WEB2))
    );
}

#[test]
fn explain_tells_what_the_packet_path_does_and_changes_nothing() {
    let r = router();
    r.set_policy(snapshot(vec![pod_policy(6, isolation(vec![]), None)]));
    let client = SocketAddr::from((ip(5), 40000));
    for port in 40000..40020 {
        let src = SocketAddr::from((ip(5), port));
        let e = r.explain(src, SocketAddr::from((vip(), 80)), 6);
        assert_eq!((e.ingress, e.pool), (Link::Pod(CLIENT), Some(PoolId(1))));
        let backend = e.backend.expect("a backend");
        let mut b = syn((5, port), (vip(), 80));
        let v = r.process(NOW, &mut b, Link::Pod(CLIENT));
        match e.outcome {
            FlowOutcome::Forward(link) => {
                assert_eq!(v, Verdict::Forward(link));
                assert_eq!(
                    tcp_of(&b).1,
                    (backend.ip().to_string().parse().unwrap(), 8080)
                );
            }
            FlowOutcome::Drop(reason) => {
                assert_eq!(v, Verdict::Drop(reason));
                assert_eq!(backend.ip(), a(6));
                assert!(!e.policy.unwrap().allows());
            }
            other => panic!("{other:?}"),
        }
    }
    let before = (r.conntrack().len(), r.stats());
    let _ = r.explain(client, SocketAddr::from((ip(6), 8080)), 6);
    let _ = r.explain(client, SocketAddr::from((vip(), 81)), 6);
    assert_eq!(
        (r.conntrack().len(), r.stats()),
        before,
        "explain changes nothing"
    );
    assert_eq!(
        r.explain(client, SocketAddr::from((vip(), 81)), 6).outcome,
        FlowOutcome::Reject(DropReason::NoService)
    );
    assert_eq!(
        r.explain(client, SocketAddr::from((ip(9), 80)), 6).outcome,
        FlowOutcome::Reject(DropReason::NoRoute)
    );
    assert_eq!(
        r.explain(client, SocketAddr::from((ip(6), 80)), 6).outcome,
        FlowOutcome::Drop(DropReason::PolicyIngress)
    );
}
