//! The objects of the API as they travel in JSON.
//!
//! Field names follow kubectl's JSON (camelCase, `clusterIP`), enums are
//! spelled like Kubernetes (`"Always"`, `"Running"`, `"TCP"`, `"ClientIP"`).
//! Request types (`*Spec`, [`Scale`]) reject unknown fields so that a typo in a
//! hand-written request is an error that names the field, not a silent default;
//! response types accept unknown fields so an older client can read a newer
//! daemon.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels or a label selector: key to value, ordered so output is stable.
pub type Labels = BTreeMap<String, String>;

/// What the daemon does when a pod's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart whatever the exit status (the Kubernetes default).
    #[default]
    Always,
    /// Restart only after a non-zero exit status or a signal.
    OnFailure,
    /// Never restart; the pod ends `Succeeded` or `Failed`.
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        })
    }
}

/// Where a pod is in its life, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PodPhase {
    /// Accepted; namespace, link or process not ready yet (or waiting to restart).
    #[default]
    Pending,
    /// The process runs (or, for an attached namespace, the link is up).
    Running,
    /// The process exited with status 0 and will not be restarted.
    Succeeded,
    /// The process failed and will not be restarted, or the pod could not be set up.
    Failed,
}

impl fmt::Display for PodPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        })
    }
}

/// A request to create one pod: `POST /v1/pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Pod name, a DNS label; also the namespace name under `/var/run/netns`.
    pub name: String,
    /// Labels that service selectors match.
    #[serde(default)]
    pub labels: Labels,
    /// What to do when the process exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The process to run in the pod's namespace: program and arguments.
    /// Empty only when `netns` is given.
    #[serde(default)]
    pub command: Vec<String>,
    /// Attach this existing network namespace (a path such as
    /// `/var/run/netns/x` or `/proc/PID/ns/net`) instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A pod as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Unique id of this incarnation of the name.
    pub uid: String,
    /// IPv4 address, once assigned.
    pub ip: Option<String>,
    /// IPv6 address, once assigned.
    #[serde(default)]
    pub ipv6: Option<String>,
    /// Life-cycle phase.
    pub phase: PodPhase,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// How many times the process was restarted.
    #[serde(default)]
    pub restarts: u32,
    /// What happens when the process exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// The process: program and arguments (empty for an attached namespace).
    #[serde(default)]
    pub command: Vec<String>,
    /// Path of the pod's network namespace file.
    pub netns: String,
    /// Process id of the running process, if any.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Name of the deployment or statefulset that owns the pod.
    #[serde(default)]
    pub owner: Option<String>,
    /// Why the pod is in its phase, for a person (last exit status, setup error).
    #[serde(default)]
    pub message: Option<String>,
    /// Creation time, seconds since the Unix epoch (the CLI's AGE column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// A request to create a deployment: `POST /v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Deployment name; its pods are `NAME-xxxxx`.
    pub name: String,
    /// How many pods to keep running.
    pub replicas: u32,
    /// Labels given to every pod.
    #[serde(default)]
    pub labels: Labels,
    /// The process each pod runs.
    pub command: Vec<String>,
}

/// A deployment as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Deployment name.
    pub name: String,
    /// Desired number of pods.
    pub replicas: u32,
    /// Pods that are running now.
    #[serde(default)]
    pub ready: u32,
    /// Labels given to every pod.
    #[serde(default)]
    pub labels: Labels,
    /// The process each pod runs.
    #[serde(default)]
    pub command: Vec<String>,
    /// Names of the pods it owns.
    #[serde(default)]
    pub pods: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// A request to create a statefulset: `POST /v1/statefulsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetSpec {
    /// StatefulSet name; its pods are `NAME-0`, `NAME-1`, ...
    pub name: String,
    /// How many pods to keep running.
    pub replicas: u32,
    /// Name of the service that governs the pods (a DNS label).
    pub service: String,
    /// Labels given to every pod.
    #[serde(default)]
    pub labels: Labels,
    /// The process each pod runs.
    pub command: Vec<String>,
}

/// A statefulset as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSet {
    /// StatefulSet name.
    pub name: String,
    /// Desired number of pods.
    pub replicas: u32,
    /// Pods that are running now.
    #[serde(default)]
    pub ready: u32,
    /// Name of the governing service.
    pub service: String,
    /// Labels given to every pod.
    #[serde(default)]
    pub labels: Labels,
    /// The process each pod runs.
    #[serde(default)]
    pub command: Vec<String>,
    /// Names of the pods it owns, in ordinal order.
    #[serde(default)]
    pub pods: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// A new replica count: `PUT /v1/{deployments|statefulsets}/{name}/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scale {
    /// Desired number of pods.
    pub replicas: u32,
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(alias = "tcp")]
    TCP,
    /// UDP.
    #[serde(alias = "udp")]
    UDP,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
        })
    }
}

/// How a service picks a backend for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    /// Spread flows over all endpoints (Maglev on the 5-tuple).
    #[default]
    None,
    /// One client address sticks to one endpoint.
    ClientIP,
}

impl fmt::Display for SessionAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionAffinity::None => "None",
            SessionAffinity::ClientIP => "ClientIP",
        })
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "ServicePortJson")]
pub struct ServicePort {
    /// Optional port name (needed only to tell ports apart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port on the cluster IP.
    pub port: u16,
    /// Port on the pods; in JSON it defaults to `port`.
    pub target_port: u16,
    /// Transport protocol; in JSON it defaults to TCP.
    pub protocol: Protocol,
}

/// The JSON form of [`ServicePort`], where `targetPort` and `protocol` are optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServicePortJson {
    #[serde(default)]
    name: Option<String>,
    port: u16,
    #[serde(default)]
    target_port: Option<u16>,
    #[serde(default)]
    protocol: Protocol,
}

impl From<ServicePortJson> for ServicePort {
    fn from(json: ServicePortJson) -> Self {
        ServicePort {
            name: json.name,
            port: json.port,
            target_port: json.target_port.unwrap_or(json.port),
            protocol: json.protocol,
        }
    }
}

impl fmt::Display for ServicePort {
    /// kubectl's `PORT(S)` form: `80/TCP`, or `80:8080/TCP` when the target differs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == self.target_port {
            write!(f, "{}/{}", self.port, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.port, self.target_port, self.protocol)
        }
    }
}

/// A request to create a service: `POST /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Pods whose labels contain all of these are the service's endpoints.
    #[serde(default)]
    pub selector: Labels,
    /// Ports the cluster IP serves (at least one).
    pub ports: Vec<ServicePort>,
    /// Ask for this cluster IP (inside the service CIDR); the daemon picks one otherwise.
    #[serde(rename = "clusterIP", default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// Backend choice for new flows.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
}

/// A service as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Service name.
    pub name: String,
    /// The permanent virtual IP.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    /// Ports the cluster IP serves.
    pub ports: Vec<ServicePort>,
    /// Label selector for endpoints.
    #[serde(default)]
    pub selector: Labels,
    /// Backend choice for new flows.
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    /// Ready endpoints, `"ip:port"` (IPv6 as `"[ip]:port"`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

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
    /// Name of the service the rule comes from.
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

/// What `POST /v1/reset` removed.
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

/// The body of every 4xx/5xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}
