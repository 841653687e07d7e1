//! podnet's node views (`/podnet/v1/...`): the NAT table as published, the
//! tracked flows, the counters by reason, and the reset of everything
//! podnet made on this host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};

use super::dataplane::Dataplane;
use super::publish::FastPathPublisher;
use super::runtime::HostRuntime;
use crate::api::node::{
    protocol_name, ConntrackEntry, Explanation, FlowQuery, FlowTuple, NatRule, NodeCounter,
    NodeSource, PolicyStep, ResetSummary,
};
use crate::control::objects::{LabelSelector, Objects};
use crate::packet::conntrack::{proto, EntryKind};
use crate::packet::policy::DirVerdict;
use crate::packet::router::{FlowOutcome, Link};

/// The views over the running daemon.
pub struct NodeViews {
    /// The workers and their router.
    pub dataplane: Arc<Dataplane>,
    /// What the fast path holds for each service.
    pub publisher: Arc<FastPathPublisher>,
    /// The object store.
    pub objects: Objects,
    /// The pods on this host.
    pub runtime: Arc<HostRuntime>,
    /// Set by a reset: the daemon stops.
    pub shutdown: Arc<AtomicBool>,
    /// Set by a reset: the daemon removes its state when it stops.
    pub reset_requested: Arc<AtomicBool>,
}

impl NodeViews {
    /// `NAMESPACE/NAME` of the pod holding `addr`.
    fn pod_at(&self, addr: std::net::IpAddr) -> Option<String> {
        let want = addr.to_string();
        self.objects
            .list_as::<Pod>(None, &LabelSelector::default())
            .into_iter()
            .find(|p| {
                let st = p.status.as_ref();
                !matches!(
                    st.and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) && (st.and_then(|s| s.pod_ip.as_deref()) == Some(&want)
                    || st
                        .and_then(|s| s.pod_ips.as_ref())
                        .is_some_and(|ips| ips.iter().any(|i| i.ip == want)))
            })
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default()
                )
            })
    }
}

/// One direction's verdict in words.
fn policy_step(pod: Option<String>, v: &DirVerdict) -> PolicyStep {
    let reason = match v {
        DirVerdict::NotIsolated => {
            "not isolated: no NetworkPolicy selects it in this direction".into()
        }
        DirVerdict::Allowed { policy, index } => format!("allowed by {policy} (rule {index})"),
        DirVerdict::Node => "allowed: traffic to and from the node is never isolated".into(),
        DirVerdict::SamePod => "allowed: a pod cannot block itself".into(),
        DirVerdict::Denied { policies } => format!(
            "denied: isolated by {}, and no rule matches",
            policies.iter().map(|p| &**p).collect::<Vec<_>>().join(", ")
        ),
    };
    PolicyStep {
        pod,
        allowed: v.allows(),
        reason,
    }
}

impl NodeSource for NodeViews {
    fn nat_rules(&self) -> Vec<NatRule> {
        self.publisher.nat_rules()
    }

    fn conntrack(&self) -> Vec<ConntrackEntry> {
        let now = self.dataplane.now();
        let tuple = |k: &crate::packet::conntrack::FlowKey| FlowTuple {
            src: SocketAddr::new(k.src, k.src_port).to_string(),
            dst: SocketAddr::new(k.dst, k.dst_port).to_string(),
        };
        self.dataplane
            .router()
            .flows()
            .iter()
            .filter(|f| f.original.kind == EntryKind::Flow)
            .map(|f| ConntrackEntry {
                protocol: match f.original.protocol {
                    proto::TCP => "tcp".to_string(),
                    proto::UDP => "udp".to_string(),
                    proto::ICMP | proto::ICMPV6 => "icmp".to_string(),
                    n => n.to_string(),
                },
                state: f.state.name().to_string(),
                original: tuple(&f.original),
                reply: tuple(&f.reply),
                idle_seconds: now.as_millis().saturating_sub(f.last_seen.as_millis()) / 1000,
            })
            .collect()
    }

    fn stats(&self) -> Vec<NodeCounter> {
        let router = self.dataplane.router();
        let stats = router.stats();
        let dp = self.dataplane.stats();
        let mut out = vec![
            ("forwarded.to_pod".to_string(), stats.forwarded_to_pod),
            ("forwarded.to_host".to_string(), stats.forwarded_to_host),
            ("replies".to_string(), stats.replies),
        ];
        out.extend(
            stats
                .by_reason()
                .into_iter()
                .map(|(name, n)| (name.to_string(), n)),
        );
        for (name, v) in [
            ("dataplane.write_errors", &dp.write_errors),
            ("dataplane.read_errors", &dp.read_errors),
            ("dataplane.segmented", &dp.segmented),
            ("dataplane.checksums_finished", &dp.checksums_finished),
            ("dataplane.offload_errors", &dp.offload_errors),
        ] {
            out.push((name.to_string(), v.load(Ordering::Relaxed)));
        }
        out.push((
            "conntrack.entries".to_string(),
            router.conntrack().len() as u64,
        ));
        let (leases, pods) = self.runtime.counts();
        out.push(("ipam.leases".to_string(), leases as u64));
        out.push(("pods.running_here".to_string(), pods as u64));
        out.into_iter()
            .map(|(name, value)| NodeCounter { name, value })
            .collect()
    }

    fn explain(&self, q: &FlowQuery) -> Explanation {
        let router = self.dataplane.router();
        let e = router.explain(q.src, q.dst, q.protocol);
        let proto = protocol_name(q.protocol);
        let src_pod = self.pod_at(q.src.ip());
        let to = e.backend.unwrap_or(q.dst);
        let dst_pod = self.pod_at(to.ip());
        let mut nat = Vec::new();
        if let Some(b) = e.backend {
            nat.push(format!("DNAT {} -> {b}", q.dst));
        }
        if let Some(m) = e.masquerade {
            nat.push(format!("SNAT {} -> {m} (masquerade)", q.src.ip()));
        }
        let verdict = match e.outcome {
            FlowOutcome::Forward(Link::Pod(_)) => match &dst_pod {
                Some(p) => format!("forward to pod {p}"),
                None => "forward to a pod".into(),
            },
            FlowOutcome::Forward(Link::Host) => "forward to the host".into(),
            FlowOutcome::Drop(r) => format!("drop ({})", r.qualified_name()),
            FlowOutcome::Reject(r) => format!(
                "reject with {} ({})",
                if q.protocol == proto::TCP {
                    "a TCP reset"
                } else {
                    "an ICMP error"
                },
                r.qualified_name()
            ),
        };
        Explanation {
            flow: format!("{} -> {}/{proto}", q.src, q.dst),
            from: match (&e.ingress, &src_pod) {
                (Link::Pod(_), Some(p)) => format!("pod {p}"),
                (Link::Pod(_), None) => "a pod".into(),
                (Link::Host, _) => "host".into(),
            },
            service: e.pool.map(|p| {
                self.publisher
                    .pool_name(p)
                    .unwrap_or_else(|| format!("pool {}", p.0))
            }),
            backend: e.backend.map(|b| b.to_string()),
            nat,
            egress: e
                .policy
                .as_ref()
                .map(|d| policy_step(src_pod.clone(), &d.egress)),
            ingress: e
                .policy
                .as_ref()
                .map(|d| policy_step(dst_pod.clone(), &d.ingress)),
            verdict,
        }
    }

    fn reset(&self) -> ResetSummary {
        let all = LabelSelector::default();
        let mut summary = ResetSummary {
            pods: self.objects.list_as::<Pod>(None, &all).len() as u32,
            deployments: self.objects.list_as::<Deployment>(None, &all).len() as u32,
            statefulsets: self.objects.list_as::<StatefulSet>(None, &all).len() as u32,
            // The user's services: not the cluster DNS service podnetd
            // made itself.
            services: self
                .objects
                .list_as::<Service>(None, &all)
                .iter()
                .filter(|s| {
                    (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
                        != (Some(super::dns::SERVICE.0), Some(super::dns::SERVICE.1))
                })
                .count() as u32,
            warnings: Vec::new(),
        };
        tracing::warn!("reset: stopping every pod and removing what podnet made");
        summary.warnings = self.runtime.remove_all();
        self.reset_requested.store(true, Ordering::SeqCst);
        self.shutdown.store(true, Ordering::SeqCst);
        summary
    }
}
