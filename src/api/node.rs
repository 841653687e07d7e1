//! podnet's node views beside the Kubernetes API, for what kubectl has no
//! verb for: the service NAT table, tracked flows, drop counters, and the
//! reset of everything podnet made on the host. Served under `/podnet/v1/`
//! on the same listeners and with the same credentials as the Kubernetes
//! API (`kubectl get --raw /podnet/v1/nat` works too).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | [`NAT_PATH`] | `[NatRule]` |
//! | GET | [`CONNTRACK_PATH`] | `[ConntrackEntry]` |
//! | GET | [`STATS_PATH`] | `[NodeCounter]` |
//! | POST | [`RESET_PATH`] | [`ResetSummary`]; the daemon then exits |
//! | GET | [`EXPLAIN_PATH`]`?src=IP[:PORT]&dst=IP&port=N&protocol=TCP` | [`Explanation`] |

use serde::{Deserialize, Serialize};

/// The service NAT table.
pub const NAT_PATH: &str = "/podnet/v1/nat";
/// The tracked flows.
pub const CONNTRACK_PATH: &str = "/podnet/v1/conntrack";
/// Packet and drop counters.
pub const STATS_PATH: &str = "/podnet/v1/stats";
/// Stops every pod, removes what podnet made, and stops the daemon.
pub const RESET_PATH: &str = "/podnet/v1/reset";
/// What the fast path would do with a new flow.
pub const EXPLAIN_PATH: &str = "/podnet/v1/explain";

/// One backend of a NAT rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatBackend {
    /// `"ip:port"` the frontend is rewritten to.
    pub address: String,
    /// `"ready"` (takes new flows) or `"terminating"` (old flows only).
    pub state: String,
}

/// One service frontend of the NAT table (`podnet nat list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatRule {
    /// `NAMESPACE/NAME` of the service the rule comes from.
    pub service: String,
    /// `"10.96.0.10:80/TCP"`.
    pub frontend: String,
    /// Where flows to the frontend go; empty means they are refused.
    #[serde(default)]
    pub backends: Vec<NatBackend>,
}

/// One direction of a tracked flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowTuple {
    /// Source, `"ip:port"` (for ICMP the port is the echo id).
    pub src: String,
    /// Destination, `"ip:port"`.
    pub dst: String,
}

/// One tracked flow (`podnet conntrack list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackEntry {
    /// `"tcp"`, `"udp"` or `"icmp"`.
    pub protocol: String,
    /// Connection state, e.g. `"ESTABLISHED"`, `"SYN_SENT"`, `"UNREPLIED"`.
    pub state: String,
    /// The flow as the client sent it.
    pub original: FlowTuple,
    /// The flow as the backend answers it (after NAT).
    pub reply: FlowTuple,
    /// Seconds since the last packet.
    pub idle_seconds: u64,
}

/// One counter of the node (`podnet stats`): packets moved, dropped by
/// reason, flows tracked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounter {
    /// `dropped.no_endpoints`, `forwarded`, ...
    pub name: String,
    /// Its value since the daemon started.
    pub value: u64,
}

/// What a reset removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetSummary {
    /// Pods stopped and removed (namespaces, links, addresses).
    #[serde(default)]
    pub pods: u32,
    /// Deployments removed.
    #[serde(default)]
    pub deployments: u32,
    /// StatefulSets removed.
    #[serde(default)]
    pub statefulsets: u32,
    /// Services removed.
    #[serde(default)]
    pub services: u32,
    /// What could not be removed, for the user to clean up by hand.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A new flow to explain (`podnet explain SRC DST PORT/PROTO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    /// Source address and port (the port picks the backend by hash).
    pub src: std::net::SocketAddr,
    /// Destination address and port (ignored for ICMP).
    pub dst: std::net::SocketAddr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP).
    pub protocol: u8,
}

/// One direction's NetworkPolicy verdict in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStep {
    /// `NAMESPACE/NAME` of the pod whose policies decide, if it is one.
    #[serde(default)]
    pub pod: Option<String>,
    /// Whether the direction lets the flow through.
    pub allowed: bool,
    /// Why, in words: `allowed by x/allow-web (rule 0)`, `not isolated`,
    /// `denied: isolated by x/default-deny, no rule matches`.
    pub reason: String,
}

/// What the fast path would do with a new flow (`podnet explain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The flow, `"SRC:PORT -> DST:PORT/PROTO"`.
    pub flow: String,
    /// Where it enters: `pod NAMESPACE/NAME` or `host`.
    pub from: String,
    /// `NAMESPACE/NAME (port P)` of the service whose frontend it hits.
    #[serde(default)]
    pub service: Option<String>,
    /// The backend `"ip:port"` destination NAT sends it to.
    #[serde(default)]
    pub backend: Option<String>,
    /// The translations, in order (`DNAT ...`, `SNAT ...`).
    #[serde(default)]
    pub nat: Vec<String>,
    /// The source pod's egress policy (absent when decided before it).
    #[serde(default)]
    pub egress: Option<PolicyStep>,
    /// The destination pod's ingress policy.
    #[serde(default)]
    pub ingress: Option<PolicyStep>,
    /// `forward to pod NAMESPACE/NAME`, `forward to host`,
    /// `drop (dropped.policy_ingress)`, `reject (dropped.no_endpoints)`.
    pub verdict: String,
}

/// What the daemon answers on `/podnet/v1/`.
pub trait NodeSource: Send + Sync {
    /// The NAT table, one rule per service frontend.
    fn nat_rules(&self) -> Vec<NatRule>;
    /// The tracked flows.
    fn conntrack(&self) -> Vec<ConntrackEntry>;
    /// The node's counters.
    fn stats(&self) -> Vec<NodeCounter>;
    /// Stops every pod and removes everything podnet made on the host;
    /// the daemon stops afterwards. Blocks until the removal is done.
    fn reset(&self) -> ResetSummary;
    /// What the fast path would do with the new flow `query`.
    fn explain(&self, query: &FlowQuery) -> Explanation;
}

/// Why a [`FlowQuery`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlowQueryError(String);

/// The source port a query without one explains (the backend a service
/// picks depends on it).
pub const DEFAULT_SOURCE_PORT: u16 = 40_000;

impl FlowQuery {
    /// From the CLI's words: `SRC` (`IP` or `IP:PORT`, `[V6]:PORT`), `DST`
    /// (an address) and `PORT/PROTO` (`80/TCP`, `53/udp`, `icmp`).
    pub fn from_args(src: &str, dst: &str, port_proto: &str) -> Result<FlowQuery, FlowQueryError> {
        let src = match src.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => std::net::SocketAddr::new(parse_ip("SRC", src)?, DEFAULT_SOURCE_PORT),
        };
        let dst_ip = parse_ip("DST", dst)?;
        let (port, proto) = match port_proto.split_once('/') {
            Some((p, proto)) => (Some(p), proto),
            None if port_proto.eq_ignore_ascii_case("icmp") => (None, port_proto),
            None => (Some(port_proto), "TCP"),
        };
        let protocol = protocol_number(proto)?;
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| {
                FlowQueryError(format!(
                    "PORT/PROTO: {port_proto:?} does not start with a port number 0-65535 (e.g. 80/TCP)"
                ))
            })?,
            None => 0,
        };
        Ok(FlowQuery {
            src,
            dst: std::net::SocketAddr::new(dst_ip, port),
            protocol,
        })
    }

    /// The query string of [`EXPLAIN_PATH`].
    pub fn to_query_string(&self) -> String {
        format!(
            "src={}&srcPort={}&dst={}&port={}&protocol={}",
            self.src.ip(),
            self.src.port(),
            self.dst.ip(),
            self.dst.port(),
            protocol_name(self.protocol)
        )
    }

    /// Reads [`FlowQuery::to_query_string`]'s form (`srcPort` and `port`
    /// optional, `protocol` TCP by default).
    pub fn from_query_string(query: &str) -> Result<FlowQuery, FlowQueryError> {
        let mut q = std::collections::HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            q.insert(k, v);
        }
        let need = |k: &str| {
            q.get(k).copied().ok_or_else(|| {
                FlowQueryError(format!(
                    "the query names no {k}: give src, dst, port and protocol (e.g. src=10.244.0.5&dst=10.96.0.10&port=80&protocol=TCP)"
                ))
            })
        };
        let port = |k: &str, default: u16| -> Result<u16, FlowQueryError> {
            match q.get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| FlowQueryError(format!("{k}={v:?} is not a port number 0-65535"))),
            }
        };
        Ok(FlowQuery {
            src: std::net::SocketAddr::new(
                parse_ip("src", need("src")?)?,
                port("srcPort", DEFAULT_SOURCE_PORT)?,
            ),
            dst: std::net::SocketAddr::new(parse_ip("dst", need("dst")?)?, port("port", 0)?),
            protocol: protocol_number(q.get("protocol").copied().unwrap_or("TCP"))?,
        })
    }
}

fn parse_ip(what: &str, s: &str) -> Result<std::net::IpAddr, FlowQueryError> {
    s.parse().map_err(|_| {
        FlowQueryError(format!(
            "{what}: {s:?} is not an IP address (e.g. 10.244.0.5 or fd00::5)"
        ))
    })
}

fn protocol_number(name: &str) -> Result<u8, FlowQueryError> {
    match name.to_ascii_uppercase().as_str() {
        "TCP" => Ok(6),
        "UDP" => Ok(17),
        "SCTP" => Ok(132),
        "ICMP" => Ok(1),
        _ => Err(FlowQueryError(format!(
            "protocol {name:?} is not one of TCP, UDP, SCTP, ICMP"
        ))),
    }
}

/// The protocol's name as Kubernetes writes it (`TCP`, `UDP`, `SCTP`,
/// `ICMP`, else the number).
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 | 58 => "ICMP".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_queries_read_the_cli_and_round_trip_through_the_query_string() {
        let q = FlowQuery::from_args("10.244.0.5", "10.96.0.10", "80/tcp").unwrap();
        assert_eq!(q.src, "10.244.0.5:40000".parse().unwrap());
        assert_eq!(q.dst, "10.96.0.10:80".parse().unwrap());
        assert_eq!(q.protocol, 6);
        assert_eq!(FlowQuery::from_query_string(&q.to_query_string()), Ok(q));
        let v6 = FlowQuery::from_args("[fd00::5]:1234", "fd00::9", "53/UDP").unwrap();
        assert_eq!(v6.src, "[fd00::5]:1234".parse().unwrap());
        assert_eq!(FlowQuery::from_query_string(&v6.to_query_string()), Ok(v6));
        let icmp = FlowQuery::from_args("10.0.0.1", "10.0.0.2", "icmp").unwrap();
        assert_eq!((icmp.protocol, icmp.dst.port()), (1, 0));
        assert_eq!(
            FlowQuery::from_args("10.0.0.1", "10.0.0.2", "8080")
                .unwrap()
                .protocol,
            6
        );
    }

    #[test]
    fn bad_flow_queries_say_what_is_wrong() {
        let e = |r: Result<FlowQuery, FlowQueryError>| r.unwrap_err().to_string();
        assert!(e(FlowQuery::from_args("pod-a", "10.0.0.2", "80/TCP")).contains("SRC"));
        assert!(e(FlowQuery::from_args("10.0.0.1", "10.0.0.2", "99999/TCP")).contains("port"));
        assert!(e(FlowQuery::from_args("10.0.0.1", "10.0.0.2", "80/GRE")).contains("GRE"));
        assert!(e(FlowQuery::from_query_string("dst=10.0.0.2")).contains("src"));
        assert!(e(FlowQuery::from_query_string("src=10.0.0.1&dst=x")).contains("dst"));
    }
}
