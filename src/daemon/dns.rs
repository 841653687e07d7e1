//! The cluster DNS server: the IO around [`crate::dns`].
//!
//! How pods reach it, the way a cluster does: the Service
//! `kube-system/kube-dns` holds the cluster DNS address (`cluster-dns`,
//! 10.96.0.10) with ports `dns` 53/UDP and `dns-tcp` 53/TCP, and its
//! EndpointSlice `kube-dns-podnetd` names the node gateway (the address
//! podnetd owns on `podnet0`) at port 53. A pod's query to 10.96.0.10:53 is
//! a service flow like any other: the fast path translates it to the
//! gateway and writes it into `podnet0`, the daemon's namespace delivers it
//! to the sockets below, and the answer goes back through the fast path,
//! which translates its source back to 10.96.0.10. The allocator keeps the
//! address for this service ([`crate::control::alloc::ClusterIps`]).
//!
//! The zone is rebuilt by [`DnsZone`], a reconciler following Services and
//! EndpointSlices (the same store events the fast-path publisher follows),
//! and swapped in atomically; queries never wait for it. Pods' addresses
//! are set one pod at a time in an index the zone shares.
//! Names outside the cluster go to the upstream resolvers (`dns-upstream`;
//! by default the host's `/etc/resolv.conf`), through a small TTL cache.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;

use super::DaemonConfig;
use crate::control::kinds;
use crate::control::objects::{MetadataOnly, ObjectError, Objects};
use crate::control::reconcile::{event_kind, fields_changed, key_of, Key, Next, Reconciler};
use crate::control::store::Event;
use crate::dns::cache::AnswerCache;
use crate::dns::{self, Answer, PodAddresses, Zone, ZoneSource};

/// The namespace and name of the cluster DNS service.
pub const SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// The EndpointSlice podnetd keeps for it.
pub const SLICE: &str = "kube-dns-podnetd";
/// The DNS port.
pub const PORT: u16 = 53;

/// Queries forwarded at once at most; beyond, SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// TCP connections served at once at most.
const MAX_TCP: usize = 128;
/// How long an upstream has to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP client is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error(
        "cluster DNS: cannot listen on {addr}/{proto}: {source} (is another DNS server bound to the node gateway's port 53?)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// UDP or TCP.
        proto: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The threads could not be started.
    #[error("cluster DNS: cannot start its threads: {0}")]
    Threads(std::io::Error),
}

/// The upstream resolvers of a `resolv.conf` text (`nameserver` lines),
/// port 53; IPv6 link-local ones with a zone are skipped.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, PORT))
        .collect()
}

/// Shared by the server's threads.
struct Shared {
    zone: Arc<ArcSwap<Zone>>,
    upstreams: Vec<SocketAddr>,
    cache: Mutex<AnswerCache>,
    forwards: AtomicUsize,
    tcp_clients: AtomicUsize,
    stop: AtomicBool,
}

/// The running server.
pub struct DnsServer {
    shared: Arc<Shared>,
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Listens on `addr` (UDP and TCP) and answers from `zone`, forwarding
    /// other names to `upstreams` (none: SERVFAIL).
    pub fn start(
        addr: SocketAddr,
        zone: Arc<ArcSwap<Zone>>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsServer, DnsError> {
        let udp = bind_retrying(addr, "UDP", UdpSocket::bind)?;
        let tcp = bind_retrying(addr, "TCP", TcpListener::bind)?;
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(DnsError::Threads)?;
        let shared = Arc::new(Shared {
            zone,
            upstreams,
            cache: Mutex::new(AnswerCache::default()),
            forwards: AtomicUsize::new(0),
            tcp_clients: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let udp = Arc::new(udp);
        let mut threads = Vec::new();
        {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("podnet-dns-udp".into())
                    .spawn(move || serve_udp(&shared, &udp))
                    .map_err(DnsError::Threads)?,
            );
        }
        {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("podnet-dns-tcp".into())
                    .spawn(move || serve_tcp(&shared, tcp))
                    .map_err(DnsError::Threads)?,
            );
        }
        Ok(DnsServer {
            shared,
            addr,
            threads,
        })
    }

    /// Stops serving and waits for the listeners (also done on drop).
    pub fn stop(self) {}
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds, retrying for up to two seconds while the address is not (yet)
/// usable: it was put on `podnet0` a moment ago.
fn bind_retrying<S>(
    addr: SocketAddr,
    proto: &'static str,
    bind: impl Fn(SocketAddr) -> std::io::Result<S>,
) -> Result<S, DnsError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match bind(addr) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr,
                    proto,
                    source,
                })
            }
        }
    }
}

fn serve_udp(shared: &Arc<Shared>, socket: &Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_535];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("cluster DNS: UDP receive failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let limit = dns::udp_limit(&query);
        match resolve_local(shared, &query) {
            Some(m) => {
                if let Some(bytes) = dns::encode_for_udp(&m, limit) {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
            None => {
                let socket = socket.clone();
                spawn_forward(shared, query.clone(), move |m| {
                    let m = m.unwrap_or_else(|| dns::response_to(&query, ResponseCode::ServFail));
                    if let Some(bytes) = dns::encode_for_udp(&m, limit) {
                        let _ = socket.send_to(&bytes, peer);
                    }
                });
            }
        }
    }
}

/// The answer from the zone or the cache; `None`: ask upstream.
fn resolve_local(shared: &Shared, query: &Message) -> Option<Message> {
    match dns::answer(&shared.zone.load(), query) {
        Answer::Reply(m) => Some(m),
        Answer::Forward if shared.upstreams.is_empty() => {
            Some(dns::response_to(query, ResponseCode::ServFail))
        }
        Answer::Forward => shared.cache.lock().get(query, Instant::now()),
    }
}

/// Forwards `query` on a thread of its own and calls `done` with the
/// answer (`None`: no upstream answered, or too many are in flight).
fn spawn_forward(
    shared: &Arc<Shared>,
    query: Message,
    done: impl FnOnce(Option<Message>) + Send + 'static,
) {
    if shared.forwards.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
        shared.forwards.fetch_sub(1, Ordering::SeqCst);
        done(None);
        return;
    }
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("podnet-dns-fwd".into())
        .spawn(move || {
            let answer = forward(&s, &query, false);
            s.forwards.fetch_sub(1, Ordering::SeqCst);
            done(answer);
        });
    if let Err(e) = spawned {
        shared.forwards.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("cluster DNS: cannot start a forwarding thread: {e}");
    }
}

/// Asks the upstreams in turn (UDP, then TCP when the answer is
/// truncated, or TCP only when `tcp`), caches and returns the first answer.
fn forward(shared: &Shared, query: &Message, tcp: bool) -> Option<Message> {
    let mut q = query.clone();
    // A fresh id upstream: a client's id is not trusted to be random.
    let id = fastrand::u16(..);
    q.set_id(id);
    let bytes = q.to_vec().ok()?;
    for up in &shared.upstreams {
        let got = if tcp {
            ask_tcp(*up, &bytes)
        } else {
            match ask_udp(*up, &bytes) {
                Some(m) if m.truncated() => ask_tcp(*up, &bytes),
                other => other,
            }
        };
        match got {
            Some(mut m) if m.id() == id => {
                shared.cache.lock().put(&m, Instant::now());
                m.set_id(query.id());
                return Some(m);
            }
            _ => continue,
        }
    }
    None
}

fn ask_udp(up: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let any: SocketAddr = match up {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(up).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.send(bytes).ok()?;
    let mut buf = vec![0u8; 65_535];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn ask_tcp(up: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect_timeout(&up, UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    write_frame(&mut s, bytes).ok()?;
    let m = read_frame(&mut s).ok()??;
    Message::from_vec(&m).ok()
}

/// One length-prefixed message (RFC 1035 4.2.2); `None` at a clean end.
fn read_frame(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("a DNS message over 65535 bytes"))?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out)
}

fn serve_tcp(shared: &Arc<Shared>, listener: TcpListener) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if shared.tcp_clients.fetch_add(1, Ordering::SeqCst) >= MAX_TCP {
            shared.tcp_clients.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("podnet-dns-tcpc".into())
            .spawn(move || {
                serve_tcp_client(&s, conn);
                s.tcp_clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.tcp_clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_tcp_client(shared: &Shared, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(TCP_IDLE));
    let _ = conn.set_write_timeout(Some(TCP_IDLE));
    while let Ok(Some(bytes)) = read_frame(&mut conn) {
        let Ok(query) = Message::from_vec(&bytes) else {
            return;
        };
        let m = match resolve_local(shared, &query) {
            Some(m) => m,
            None => forward(shared, &query, true)
                .unwrap_or_else(|| dns::response_to(&query, ResponseCode::ServFail)),
        };
        let Ok(out) = m.to_vec() else { return };
        if write_frame(&mut conn, &out).is_err() {
            return;
        }
    }
}

/// Keeps the zone in line with Services, EndpointSlices and Pods.
///
/// Services and EndpointSlices: the reconciler only marks the zone out of
/// date (one key for the whole zone); a thread of its own rebuilds it, so
/// the control loop never waits for a rebuild, and changes arriving during
/// one share the next. A rebuild reads every service and slice, so rebuilds
/// are spaced as [`super::rebuild`] says (on a big node, at most a fifth of
/// a core goes to DNS). Pods: one key per pod, whose addresses are set in
/// the zone's [`PodAddresses`] in place, at the cost of that one pod.
pub struct DnsZone {
    rebuild: super::rebuild::Rebuilder,
    pods: Arc<PodAddresses>,
}

const TAG: &str = "DnsZone";

/// What a rebuild needs.
struct Builder {
    objects: Objects,
    zone: Arc<ArcSwap<Zone>>,
    pods: Arc<PodAddresses>,
    domain: String,
    reverse: Vec<IpNet>,
}

impl Builder {
    fn build(&self) {
        let all = Default::default();
        let services = self.objects.list_as::<Service>(None, &all);
        let slices = self.objects.list_as::<EndpointSlice>(None, &all);
        let serial = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let zone = Zone::build(&ZoneSource {
            domain: &self.domain,
            reverse: &self.reverse,
            services: &services,
            slices: &slices,
            pods: self.pods.clone(),
            serial,
        });
        self.zone.store(Arc::new(zone));
    }
}

impl DnsZone {
    /// A reconciler publishing `objects`' names into `zone` for `config`'s
    /// ranges, with its rebuilding thread started.
    pub fn start(
        objects: Objects,
        zone: Arc<ArcSwap<Zone>>,
        config: &DaemonConfig,
    ) -> Result<Self, DnsError> {
        let mut reverse = vec![
            IpNet::V4(config.service_cidr),
            IpNet::V4(config.node_subnet),
        ];
        if let Some(v6) = config.node_subnet_v6 {
            reverse.push(IpNet::V6(v6));
        }
        let pods = Arc::new(PodAddresses::default());
        let builder = Builder {
            objects,
            zone,
            pods: pods.clone(),
            domain: super::identity::CLUSTER_DOMAIN.into(),
            reverse,
        };
        let rebuild = super::rebuild::Rebuilder::start("podnet-dns-zone", move || builder.build())
            .map_err(DnsError::Threads)?;
        Ok(DnsZone { rebuild, pods })
    }

    /// The key of the zone (pods' keys are their names under [`TAG`]).
    fn zone_key() -> Key {
        Key {
            kind: TAG,
            namespace: String::new(),
            name: "zone".into(),
        }
    }
}

/// What of a pod DNS depends on: its addresses and phase.
const POD_FIELDS: [&str; 3] = ["/status/podIP", "/status/podIPs", "/status/phase"];

impl Reconciler for DnsZone {
    fn kind(&self) -> &'static str {
        TAG
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("Service" | "EndpointSlice", _)) => vec![Self::zone_key()],
            Some(("Pod", obj)) if fields_changed(event, obj, &POD_FIELDS) => {
                vec![key_of(TAG, obj)]
            }
            _ => Vec::new(),
        }
    }

    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        let pods = objects.scan::<MetadataOnly>(kinds::of::<Pod>(), None);
        let mut keys: Vec<Key> = pods
            .into_iter()
            .map(|p| Key {
                kind: TAG,
                namespace: p.metadata.namespace.unwrap_or_default(),
                name: p.metadata.name.unwrap_or_default(),
            })
            .collect();
        keys.push(Self::zone_key());
        keys
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        _now: SystemTime,
    ) -> Result<Next, ObjectError> {
        // The zone's key has no namespace; a pod's always has one.
        if key.namespace.is_empty() {
            self.rebuild.mark();
            return Ok(Next::Done);
        }
        let ips = match objects.get(kinds::of::<Pod>(), Some(&key.namespace), &key.name) {
            Ok(pod) => PodAddresses::addresses_of(&pod),
            Err(ObjectError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        self.pods.set(&key.namespace, &key.name, ips);
        Ok(Next::Done)
    }
}

/// Creates `kube-system/kube-dns` at the cluster DNS address and its
/// EndpointSlice at the node gateway, or brings the slice back in line.
/// A kube-dns service at another address (the `cluster-dns` key changed)
/// is left as it is, with a warning: deleting it is the admin's choice.
pub fn ensure_kube_dns(
    objects: &Objects,
    config: &DaemonConfig,
    now: SystemTime,
) -> Result<(), ObjectError> {
    let (ns, name) = SERVICE;
    let labels = |extra: Option<(&str, &str)>| {
        let mut l = Objects::made_by_podnetd();
        l.insert("k8s-app".into(), "kube-dns".into());
        if let Some((k, v)) = extra {
            l.insert(k.into(), v.into());
        }
        l
    };
    let port = |name: &str, proto: &str| ServicePort {
        name: Some(name.into()),
        port: PORT.into(),
        protocol: Some(proto.into()),
        target_port: Some(
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(PORT.into()),
        ),
        ..Default::default()
    };
    let ip = config.cluster_dns.to_string();
    match objects.get_as::<Service>(Some(ns), name) {
        Ok(svc) => {
            let have = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            if have != ip {
                tracing::warn!(
                    "the service {ns}/{name} has the address {have}, not cluster-dns {ip}: pods ask {ip}; delete the service and restart podnetd to move it"
                );
            }
        }
        Err(ObjectError::NotFound { .. }) => {
            let svc = Service {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(labels(None)),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: Some(ip.clone()),
                    cluster_ips: Some(vec![ip.clone()]),
                    ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
                    type_: Some("ClusterIP".into()),
                    ..Default::default()
                }),
                status: None,
            };
            match objects.create_as(Some(ns), &svc, now) {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let gateway = config.gateway().to_string();
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(SLICE.into()),
            namespace: Some(ns.into()),
            labels: Some({
                let mut l = labels(Some(("kubernetes.io/service-name", name)));
                // As Kubernetes asks of slices its controller does not manage.
                l.insert(
                    "endpointslice.kubernetes.io/managed-by".into(),
                    "podnetd".into(),
                );
                l
            }),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![gateway],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }]),
        ports: Some(
            [("dns", "UDP"), ("dns-tcp", "TCP")]
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some((*n).into()),
                    port: Some(PORT.into()),
                    protocol: Some((*p).into()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    match objects.get_as::<EndpointSlice>(Some(ns), SLICE) {
        Ok(old) if old.endpoints == slice.endpoints && old.ports == slice.ports => Ok(()),
        Ok(old) => {
            let mut new = slice;
            new.metadata.resource_version = old.metadata.resource_version;
            objects.update_as(&new, None).map(|_| ())
        }
        Err(ObjectError::NotFound { .. }) => match objects.create_as(Some(ns), &slice, now) {
            Ok(_) | Err(ObjectError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn query(name: &str, id: u16) -> Message {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    /// An upstream on loopback answering every A question with 192.0.2.1
    /// (TTL 60), counting the questions.
    fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                let q = Message::from_vec(&buf[..n]).unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let mut m = dns::response_to(&q, ResponseCode::NoError);
                m.add_answer(Record::from_rdata(
                    q.queries()[0].name().clone(),
                    60,
                    RData::A(A("192.0.2.1".parse().unwrap())),
                ));
                let _ = s.send_to(&m.to_vec().unwrap(), peer);
            }
        });
        (addr, asked)
    }

    /// A server on a loopback port free for both UDP and TCP.
    fn server(zone: Zone, upstreams: Vec<SocketAddr>) -> DnsServer {
        let zone = Arc::new(ArcSwap::from_pointee(zone));
        for _ in 0..20 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(s) = DnsServer::start(addr, zone.clone(), upstreams.clone()) {
                return s;
            }
        }
        panic!("no free loopback port for UDP and TCP");
    }

    fn ask_server_udp(server: &DnsServer, q: &Message) -> Message {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.send_to(&q.to_vec().unwrap(), server.addr).unwrap();
        let mut buf = [0u8; 65_535];
        let n = c.recv(&mut buf).unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    fn ask_server_tcp(server: &DnsServer, q: &Message) -> Message {
        let mut c = TcpStream::connect(server.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write_frame(&mut c, &q.to_vec().unwrap()).unwrap();
        Message::from_vec(&read_frame(&mut c).unwrap().unwrap()).unwrap()
    }

    fn cluster_zone() -> Zone {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20"}
        }))
        .unwrap();
        Zone::build(&ZoneSource {
            domain: "cluster.local",
            services: &[svc],
            ..Default::default()
        })
    }

    #[test]
    fn the_server_answers_cluster_names_and_forwards_the_rest_once_over_udp_and_tcp() {
        let (up, asked) = upstream();
        let s = server(cluster_zone(), vec![up]);
        for ask in [ask_server_udp, ask_server_tcp] {
            let m = ask(&s, &query("web.shop.svc.cluster.local.", 7));
            assert_eq!(m.id(), 7);
            assert_eq!(m.answers()[0].data().to_string(), "10.96.0.20");
            let m = ask(&s, &query("nope.shop.svc.cluster.local.", 8));
            assert_eq!(m.response_code(), ResponseCode::NXDomain);
        }
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        let m = ask_server_udp(&s, &query("ext.example.", 9));
        assert_eq!(m.id(), 9);
        assert_eq!(m.answers()[0].data().to_string(), "192.0.2.1");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Cached: over UDP and TCP, with the asker's id.
        let m = ask_server_tcp(&s, &query("EXT.example.", 10));
        assert_eq!(m.id(), 10);
        assert_eq!(m.answers()[0].data().to_string(), "192.0.2.1");
        let m = ask_server_udp(&s, &query("ext.example.", 11));
        assert_eq!(m.answers()[0].data().to_string(), "192.0.2.1");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        s.stop();
    }

    #[test]
    fn without_upstreams_other_names_fail_at_once() {
        let s = server(cluster_zone(), Vec::new());
        let m = ask_server_udp(&s, &query("ext.example.", 3));
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        let m = ask_server_tcp(&s, &query("ext.example.", 4));
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }

    #[test]
    fn upstreams_are_the_nameservers_of_resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver  2001:db8::53\nnameserver fe80::1%eth0\noptions ndots:2\nnameserver\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn pods_reach_the_zone_one_at_a_time_and_leave_it_when_deleted() {
        use crate::control::objects::WriteOptions;
        use crate::control::reconcile::Manager;
        use crate::control::store::MemStore;

        let now = SystemTime::now();
        let objects = Objects::new(Arc::new(MemStore::new()), now).unwrap();
        let zone = Arc::new(ArcSwap::from_pointee(Zone::default()));
        let config = DaemonConfig::default();
        let dns = DnsZone::start(objects.clone(), zone.clone(), &config).unwrap();
        let pods = dns.pods.clone();
        let mut manager = Manager::new(objects.clone(), vec![Box::new(dns)]);
        let pod = kinds::of::<Pod>();
        let make = |name: &str, ip: &str| {
            let created = objects
                .create(
                    pod,
                    Some("default"),
                    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name},
                        "spec": {"containers": [{"name": "c", "image": "x"}]}}),
                    WriteOptions::default(),
                    now,
                )
                .unwrap();
            let mut with_ip = created;
            with_ip["status"] = serde_json::json!({"phase": "Running", "podIP": ip});
            objects
                .update(
                    pod,
                    Some("default"),
                    name,
                    with_ip,
                    Some("status"),
                    WriteOptions::default(),
                )
                .unwrap();
        };
        make("a", "10.244.0.11");
        make("b", "10.244.0.12");
        manager.run_until_idle(now);
        assert_eq!(pods.len(), 2);
        // The zone in place answers for them (the first zone is published
        // by the rebuilding thread; pods need none).
        let ask_a = |name: &str| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let z = zone.load();
                if let Answer::Reply(m) = dns::answer(&z, &query(name, 1)) {
                    if !m.answers().is_empty() || Instant::now() > deadline {
                        return m;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let m = ask_a("10-244-0-11.default.pod.cluster.local.");
        assert_eq!(m.answers()[0].data().to_string(), "10.244.0.11");

        objects
            .delete(pod, Some("default"), "a", Default::default(), now)
            .unwrap();
        manager.run_until_idle(now);
        assert_eq!(pods.len(), 1);
        let z = zone.load();
        let Answer::Reply(m) = dns::answer(&z, &query("10-244-0-11.default.pod.cluster.local.", 2))
        else {
            panic!("a cluster name is answered")
        };
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
    }
}
