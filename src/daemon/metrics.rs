//! `/metrics`: the node's counters in the Prometheus text format, with
//! kube-proxy-like names where kube-proxy has one.
//!
//! | metric | what |
//! |---|---|
//! | `kubeproxy_sync_proxy_rules_duration_seconds` | time to publish one service's pools and endpoints to the fast path (histogram) |
//! | `podnet_packets_forwarded_total{to}` | packets forwarded to a pod or to the host side |
//! | `podnet_packets_dropped_total{reason}` | packets dropped, by reason (every [`DropReason`], zeros included) |
//! | `podnet_conntrack_evictions_total{reason}` | connection tracking entries evicted before their timeout to make room, by reason (`early_drop`, `near_full`) |
//! | `podnet_replies_total` | replies the router made (TCP RST, ICMP errors) |
//! | `podnet_dataplane_events_total{event}` | write and read errors, software segmentation, checksums finished, offload errors |
//! | `podnet_conntrack_entries` | connection tracking entries |
//! | `podnet_conntrack_max` | connection tracking table size (`nf_conntrack_max`) |
//! | `podnet_conntrack_max_per_source` | entries one source address may hold |
//! | `podnet_nat_rules` | service frontends (cluster IP:port/protocol) in the fast path |
//! | `podnet_pods{phase}` | pods of this node, by phase |
//! | `podnet_ipam_addresses_in_use` | pod addresses handed out |
//!
//! [`DropLog`] turns the same counters into a rate-limited log line per
//! reason, from the control loop (never the packet path).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::packet::router::{DropReason, EvictReason, RouterStats};
use crate::packet::Router;

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
        register_router(&mut reg, router);

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

/// Registers the router's counters: verdicts, drops and evictions by
/// reason (every reason, zeros included, so a dashboard sees the series
/// before the first drop), and the connection tracking table's fill.
fn register_router(reg: &mut Registry, router: &Router) {
    let stats = router.stats();
    register_stats(reg, &stats);
    let ct = router.conntrack();
    for (name, help, v) in [
        (
            "podnet_conntrack_entries",
            "Connection tracking entries",
            ct.len(),
        ),
        (
            "podnet_conntrack_max",
            "Connection tracking table size",
            ct.config().max_entries,
        ),
        (
            "podnet_conntrack_max_per_source",
            "Connection tracking entries one source address may hold",
            ct.max_per_source(),
        ),
    ] {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        reg.register(name, help, g);
    }
}

fn register_stats(reg: &mut Registry, stats: &RouterStats) {
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
    let evicted = Family::<Labels, Counter>::default();
    for reason in EvictReason::ALL {
        evicted
            .get_or_create(&vec![("reason".into(), reason.name().into())])
            .inc_by(stats.evicted(reason));
    }
    reg.register(
        "podnet_conntrack_evictions",
        "Connection tracking entries evicted before their timeout, by reason",
        evicted,
    );
    let replies = Counter::<u64>::default();
    replies.inc_by(stats.replies);
    reg.register(
        "podnet_replies",
        "Replies made by the router (TCP RST, ICMP errors)",
        replies,
    );
}

/// A rate-limited warning per drop (or eviction) reason, from counters
/// diffed on the control side: the packet path only counts.
///
/// The first time a reason counts, it is logged at once; after that at
/// most once per `every` per reason, with how many since the last line.
/// A reason that stops counting logs nothing more.
///
/// Call [`DropLog::tick`] about once a second from the daemon's control
/// loop, e.g. `drop_log.tick(Instant::now(), &router.stats().by_reason())`.
pub struct DropLog {
    every: Duration,
    reasons: HashMap<&'static str, Logged>,
}

/// What was last logged for one reason.
struct Logged {
    count: u64,
    at: Instant,
}

/// One line [`DropLog::tick`] logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropLine {
    /// `dropped.<reason>` or `evicted.<reason>`.
    pub reason: &'static str,
    /// Counted since the reason's previous line (or since start).
    pub since_last: u64,
    /// Counted since start.
    pub total: u64,
}

impl DropLog {
    /// The default: a line per reason at most every 10 seconds.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A log that writes a reason at most once per `every`.
    pub fn new(every: Duration) -> DropLog {
        DropLog {
            every,
            reasons: HashMap::new(),
        }
    }

    /// Compares `counts` (as [`RouterStats::by_reason`] gives them) with
    /// what was logged, writes a `tracing::warn!` line for each reason due,
    /// and returns those lines.
    pub fn tick(&mut self, now: Instant, counts: &[(&'static str, u64)]) -> Vec<DropLine> {
        let mut lines = Vec::new();
        for &(reason, total) in counts {
            let (last, due) = match self.reasons.get(reason) {
                None => (0, true),
                Some(l) => (l.count, now.saturating_duration_since(l.at) >= self.every),
            };
            if total <= last || !due {
                continue;
            }
            let line = DropLine {
                reason,
                since_last: total - last,
                total,
            };
            if last == 0 {
                tracing::warn!(
                    reason,
                    count = line.since_last,
                    "packets dropped for a new reason (podnet_packets_dropped_total and \
                     podnet_conntrack_evictions_total count them)"
                );
            } else {
                tracing::warn!(
                    reason,
                    count = line.since_last,
                    total,
                    seconds = now
                        .saturating_duration_since(self.reasons[reason].at)
                        .as_secs(),
                    "packets still dropped"
                );
            }
            self.reasons.insert(
                reason,
                Logged {
                    count: total,
                    at: now,
                },
            );
            lines.push(line);
        }
        lines
    }

    /// [`DropLog::tick`] with `router`'s counters.
    pub fn tick_router(&mut self, now: Instant, router: &Router) -> Vec<DropLine> {
        self.tick(now, &router.stats().by_reason())
    }
}

impl Default for DropLog {
    fn default() -> Self {
        DropLog::new(DropLog::EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::RouterConfig;

    #[test]
    fn metrics_name_every_drop_and_eviction_reason() {
        let router = Router::new(RouterConfig::default());
        let mut reg = Registry::default();
        register_router(&mut reg, &router);
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        for reason in DropReason::ALL {
            let series = format!(
                "podnet_packets_dropped_total{{reason=\"{}\"}} 0",
                reason.name()
            );
            assert!(out.contains(&series), "{series} missing:\n{out}");
        }
        for reason in EvictReason::ALL {
            let series = format!(
                "podnet_conntrack_evictions_total{{reason=\"{}\"}} 0",
                reason.name()
            );
            assert!(out.contains(&series), "{series} missing:\n{out}");
        }
        assert!(out.contains("podnet_conntrack_max 262144"), "{out}");
        assert!(
            out.contains("podnet_conntrack_max_per_source 65536"),
            "{out}"
        );
    }

    #[test]
    fn drop_log_writes_a_reason_when_it_starts_then_at_most_every_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = DropLog::new(s(10));
        let counts = |full: u64, share: u64| {
            vec![
                ("dropped.conntrack_full", full),
                ("dropped.conntrack_source_share", share),
            ]
        };
        assert!(
            log.tick(t0, &counts(0, 0)).is_empty(),
            "nothing counted yet"
        );
        // The first drops of a reason: logged at once.
        let lines = log.tick(t0 + s(1), &counts(0, 5));
        assert_eq!(
            lines,
            vec![DropLine {
                reason: "dropped.conntrack_source_share",
                since_last: 5,
                total: 5
            }]
        );
        // More within the period: nothing; another reason starting: logged.
        let lines = log.tick(t0 + s(2), &counts(1, 900));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].reason, "dropped.conntrack_full");
        for t in 3..11 {
            assert!(log.tick(t0 + s(t), &counts(1, 1000 * t)).is_empty());
        }
        // The period over: one line with the count since the last one.
        let lines = log.tick(t0 + s(11), &counts(1, 11_000));
        assert_eq!(
            lines,
            vec![DropLine {
                reason: "dropped.conntrack_source_share",
                since_last: 10_995,
                total: 11_000
            }]
        );
        // A reason that stopped counting stays quiet.
        assert!(log.tick(t0 + s(60), &counts(1, 11_000)).is_empty());
    }
}
