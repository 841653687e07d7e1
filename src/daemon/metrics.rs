//! `/metrics`: the node's counters in the Prometheus text format, with
//! kube-proxy-like names where kube-proxy has one.
//!
//! | metric | what |
//! |---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | time to publish one service's pools and endpoints to the fast path (histogram) |
//! | `podnet_packets_forwarded_total{to}` | packets forwarded to a pod or to the host side |
//! | `podnet_packets_dropped_total{reason}` | packets dropped, by reason |
//! | `podnet_replies_total` | replies the router made (TCP RST, ICMP errors) |
//! | `podnet_dataplane_events_total{event}` | write and read errors, software segmentation, checksums finished, offload errors |
//! | `podnet_conntrack_entries` | connection tracking entries |
//! | `podnet_nat_rules` | service frontends (cluster IP:port/protocol) in the fast path |
//! | `podnet_pods{phase}` | pods of this node, by phase |
//! | `podnet_ipam_addresses_in_use` | pod addresses handed out |

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::dataplane::Dataplane;
use crate::api::kube::MetricsSource;
use crate::control::objects::{LabelSelector, Objects};
use crate::packet::router::DropReason;

/// The buckets of the sync duration, in seconds (as kube-proxy's).
pub fn sync_histogram() -> Histogram {
    Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
}

/// What `/metrics` reads.
pub struct NodeMetrics {
    /// The data plane and its router.
    pub dataplane: Arc<Dataplane>,
    /// The object store.
    pub objects: Objects,
    /// Publish durations, recorded by the fast-path publisher.
    pub sync: Histogram,
    /// Node name (pods of this node are counted).
    pub node: String,
}

type Labels = Vec<(String, String)>;

impl MetricsSource for NodeMetrics {
    fn render(&self) -> String {
        let mut reg = Registry::default();
        reg.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "Time to publish a service to the fast path",
            self.sync.clone(),
        );

        let router = self.dataplane.router();
        let stats = router.stats();
        let forwarded = Family::<Labels, Counter>::default();
        forwarded
            .get_or_create(&vec![("to".into(), "pod".into())])
            .inc_by(stats.forwarded_to_pod);
        forwarded
            .get_or_create(&vec![("to".into(), "host".into())])
            .inc_by(stats.forwarded_to_host);
        reg.register("podnet_packets_forwarded", "Packets forwarded", forwarded);
        let dropped = Family::<Labels, Counter>::default();
        for reason in DropReason::ALL {
            dropped
                .get_or_create(&vec![("reason".into(), reason.name().into())])
                .inc_by(stats.dropped(reason));
        }
        reg.register(
            "podnet_packets_dropped",
            "Packets dropped, by reason",
            dropped,
        );
        let replies = Counter::<u64>::default();
        replies.inc_by(stats.replies);
        reg.register(
            "podnet_replies",
            "Replies made by the router (TCP RST, ICMP errors)",
            replies,
        );

        let dp = self.dataplane.stats();
        let events = Family::<Labels, Counter>::default();
        for (name, v) in [
            ("write_error", &dp.write_errors),
            ("read_error", &dp.read_errors),
            ("segmented", &dp.segmented),
            ("checksum_finished", &dp.checksums_finished),
            ("offload_error", &dp.offload_errors),
            ("host_unsteered", &dp.host_unsteered),
        ] {
            events
                .get_or_create(&vec![("event".into(), name.into())])
                .inc_by(v.load(Ordering::Relaxed));
        }
        reg.register("podnet_dataplane_events", "Data plane events", events);

        let conntrack = Gauge::<i64>::default();
        conntrack.set(router.conntrack().len() as i64);
        reg.register(
            "podnet_conntrack_entries",
            "Connection tracking entries",
            conntrack,
        );
        let rules = Gauge::<i64>::default();
        rules.set(router.frontend_count() as i64);
        reg.register(
            "podnet_nat_rules",
            "Service frontends in the fast path",
            rules,
        );

        let pods = Family::<Labels, Gauge>::default();
        let mut addresses = 0i64;
        for p in self.objects.list_as::<Pod>(None, &LabelSelector::default()) {
            if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(self.node.as_str()) {
                continue;
            }
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into());
            pods.get_or_create(&vec![("phase".into(), phase)]).inc();
            if p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() {
                addresses += 1;
            }
        }
        reg.register("podnet_pods", "Pods of this node, by phase", pods);
        let ipam = Gauge::<i64>::default();
        ipam.set(addresses);
        reg.register(
            "podnet_ipam_addresses_in_use",
            "Pod addresses handed out",
            ipam,
        );

        let mut out = String::new();
        let _ = encode(&mut out, &reg);
        out
    }
}
