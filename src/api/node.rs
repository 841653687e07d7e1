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

use serde::{Deserialize, Serialize};

/// The service NAT table.
pub const NAT_PATH: &str = "/podnet/v1/nat";
/// The tracked flows.
pub const CONNTRACK_PATH: &str = "/podnet/v1/conntrack";
/// Packet and drop counters.
pub const STATS_PATH: &str = "/podnet/v1/stats";
/// Stops every pod, removes what podnet made, and stops the daemon.
pub const RESET_PATH: &str = "/podnet/v1/reset";

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
}
