//! End to end through the router, in process: two smoltcp TCP/IP stacks
//! (a client pod and a backend pod) hold a real TCP connection through a
//! service VIP, exchange data both ways, and the client is reset (not left
//! hanging) when the backend is removed.

use std::collections::VecDeque;
use std::net::SocketAddr;

use podnet::packet::router::FlowSelector;
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::{Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Timestamp, Verdict};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

const CLIENT: PodId = PodId(1);
const SERVER: PodId = PodId(2);
const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 244, 0, 5);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 244, 0, 6);
const VIP: Ipv4Address = Ipv4Address::new(10, 96, 0, 10);
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 244, 0, 1);

/// A pod's eth0 as two packet queues: what the stack sends, what it receives.
#[derive(Default)]
struct PodLink {
    to_pod: VecDeque<Vec<u8>>,
    from_pod: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for PodLink {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.to_pod.pop_front()?;
        Some((Rx(p), Tx(&mut self.from_pod)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.from_pod))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

struct Pod {
    link: PodLink,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
}

impl Pod {
    fn new(addr: Ipv4Address) -> Pod {
        let mut link = PodLink::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut link, Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(addr), 32)).unwrap());
        iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();
        let mut sockets = SocketSet::new(vec![]);
        let tcp = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        ));
        Pod {
            link,
            iface,
            sockets,
            tcp,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }
}

struct Node {
    router: Router,
    client: Pod,
    server: Pod,
    now_ms: u64,
}

impl Node {
    fn new() -> Node {
        let router = Router::new(RouterConfig::default());
        router
            .set_pods(&[
                (
                    CLIENT,
                    PodAddrs {
                        v4: Some(CLIENT_IP),
                        v6: None,
                    },
                ),
                (
                    SERVER,
                    PodAddrs {
                        v4: Some(SERVER_IP),
                        v6: None,
                    },
                ),
            ])
            .unwrap();
        router
            .set_services(&[PoolSpec {
                id: PoolId(1),
                frontends: vec![Frontend {
                    addr: VIP.into(),
                    port: 80,
                    protocol: 6,
                }],
                session_affinity: None,
                traffic: Default::default(),
            }])
            .unwrap();
        router.set_endpoints(PoolId(1), &[backend()]).unwrap();
        Node {
            router,
            client: Pod::new(CLIENT_IP),
            server: Pod::new(SERVER_IP),
            now_ms: 0,
        }
    }

    fn deliver(&mut self, link: Link, packet: Vec<u8>) {
        match link {
            Link::Pod(CLIENT) => self.client.link.to_pod.push_back(packet),
            Link::Pod(SERVER) => self.server.link.to_pod.push_back(packet),
            other => panic!("packet routed to {other:?}"),
        }
    }

    /// One round: both stacks run, and every packet they sent crosses the router.
    fn step(&mut self) {
        self.now_ms += 1;
        let t = Instant::from_millis(self.now_ms as i64);
        for pod in [&mut self.client, &mut self.server] {
            pod.iface.poll(t, &mut pod.link, &mut pod.sockets);
        }
        let mut buf = PacketBuf::new(PacketBuf::DEFAULT_CAPACITY);
        for (from, id) in [(0, CLIENT), (1, SERVER)] {
            loop {
                let pod = if from == 0 {
                    &mut self.client
                } else {
                    &mut self.server
                };
                let Some(p) = pod.link.from_pod.pop_front() else {
                    break;
                };
                buf.buffer_mut()[..p.len()].copy_from_slice(&p);
                buf.set_len(p.len());
                match self.router.process(
                    Timestamp::from_millis(self.now_ms),
                    &mut buf,
                    Link::Pod(id),
                ) {
                    Verdict::Forward(link) => self.deliver(link, buf.as_slice().to_vec()),
                    Verdict::Reply => self.deliver(Link::Pod(id), buf.as_slice().to_vec()),
                    Verdict::Drop(reason) => panic!("router dropped a packet: {reason:?}"),
                }
            }
        }
    }

    fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&mut Node) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }
}

fn backend() -> Backend {
    Backend {
        addr: SocketAddr::from(([10, 244, 0, 6], 8080)),
        terminating: false,
    }
}

#[test]
fn tcp_through_a_service_vip_then_reset_when_the_backend_goes() {
    let mut node = Node::new();
    node.server.socket().listen(8080).unwrap();
    let cx = node.client.iface.context();
    node.client
        .sockets
        .get_mut::<tcp::Socket>(node.client.tcp)
        .connect(cx, (IpAddress::Ipv4(VIP), 80), 49152)
        .unwrap();
    assert!(
        node.run_until(100, |n| n.client.socket().state()
            == tcp::State::Established),
        "handshake through the VIP did not complete"
    );
    // The client believes it talks to the VIP; the server sees the client.
    assert_eq!(
        node.client.socket().remote_endpoint().unwrap().addr,
        IpAddress::Ipv4(VIP)
    );
    assert!(node.run_until(10, |n| n.server.socket().state() == tcp::State::Established));
    assert_eq!(
        node.server.socket().remote_endpoint().unwrap().addr,
        IpAddress::Ipv4(CLIENT_IP)
    );

    // 200 KB each way, more than either window, so it takes many rounds.
    let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let response: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let (mut sent_req, mut sent_resp) = (0, 0);
    let (mut got_req, mut got_resp) = (Vec::new(), Vec::new());
    let finished = node.run_until(20_000, |n| {
        let c = n.client.socket();
        if sent_req < request.len() && c.can_send() {
            sent_req += c.send_slice(&request[sent_req..]).unwrap();
        }
        if c.can_recv() {
            c.recv(|b| {
                got_resp.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let s = n.server.socket();
        if s.can_recv() {
            s.recv(|b| {
                got_req.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if sent_resp < response.len() && s.can_send() {
            sent_resp += s.send_slice(&response[sent_resp..]).unwrap();
        }
        got_req.len() == request.len() && got_resp.len() == response.len()
    });
    assert!(
        finished,
        "transfer stalled: {} / {} bytes",
        got_req.len(),
        got_resp.len()
    );
    assert!(got_req == request, "request corrupted on the way");
    assert!(got_resp == response, "response corrupted on the way");
    assert_eq!(node.router.flows().len(), 1);

    // The backend pod dies: it leaves the service and its flows are reset.
    let change = node.router.set_endpoints(PoolId(1), &[]).unwrap();
    assert_eq!(change.removed, vec![backend().addr]);
    let mut resets = Vec::new();
    let report = node
        .router
        .reset_flows(FlowSelector::Backends(&change.removed), &mut |link, p| {
            resets.push((link, p.to_vec()))
        });
    assert_eq!(report.resets_sent, 1);
    for (link, p) in resets {
        node.deliver(link, p);
    }
    // Within a round, not after a timeout, the client learns the connection is gone.
    assert!(
        node.run_until(2, |n| n.client.socket().state() == tcp::State::Closed),
        "client left hanging in {:?}",
        node.client.socket().state()
    );

    // A new connection to the now empty service is refused at once.
    let cx = node.client.iface.context();
    node.client
        .sockets
        .get_mut::<tcp::Socket>(node.client.tcp)
        .connect(cx, (IpAddress::Ipv4(VIP), 80), 49153)
        .unwrap();
    assert!(
        node.run_until(5, |n| n.client.socket().state() == tcp::State::Closed),
        "connection to a service without endpoints not refused"
    );
    assert_eq!(node.router.stats().replies, 1);
}
