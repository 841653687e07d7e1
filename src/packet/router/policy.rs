//! NetworkPolicy in the router: the gate every new flow passes.
//!
//! A new flow is decided once, where it is set up, on its translated
//! destination (the backend a service chose) and its real source: the
//! source pod's egress, then the destination pod's ingress
//! ([`PolicySnapshot::decide`]). A denied flow's packets are dropped and
//! counted ([`DropReason::PolicyEgress`], [`DropReason::PolicyIngress`]),
//! never answered with a reset or an ICMP error, as Kubernetes
//! implementations do. An allowed flow that touches an isolated pod is
//! tracked even when nothing is translated, so its replies pass as part
//! of it; flows between pods that no policy isolates stay untracked.
//!
//! When the policies change, [`Router::set_policy`] decides every tracked
//! flow again and removes the ones now denied: their next packet is a new
//! flow, which the gate drops. While no policy isolates any pod the gate
//! costs one relaxed atomic load per new flow.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam::epoch;

use super::{
    refused_flow, DropReason, EntryKind, Flow, FlowKey, FlowState, PackedEntry, Router, Verdict,
};
use crate::packet::conntrack::proto;
use crate::packet::policy::{Decision, PolicyDirection, PolicySnapshot};
use crate::packet::Timestamp;

/// What the gate says of a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Allowed; no isolated pod is involved, nothing to track.
    Pass,
    /// Allowed; an isolated pod is involved, so the flow is tracked and
    /// its replies pass with it.
    Track,
    /// Denied: drop.
    Deny(DropReason),
}

impl Router {
    /// Replaces the NetworkPolicy snapshot, then removes the tracked flows
    /// it denies (their next packets are dropped as new flows). Returns
    /// how many flows were removed. Runs on a control thread; cost
    /// O(conntrack table) when a policy isolates some pod.
    pub fn set_policy(&self, snapshot: PolicySnapshot) -> usize {
        let _g = self.publish.lock();
        let on = !snapshot.is_open();
        let snapshot = Arc::new(snapshot);
        self.policy.store(snapshot.clone());
        self.policy_on.store(on, Ordering::Release);
        if !on {
            return 0;
        }
        self.conntrack
            .remove_where(|f| {
                f.original().kind == EntryKind::Flow && !flow_decision(&snapshot, f).allows()
            })
            .len()
    }

    /// The NetworkPolicy snapshot in force.
    pub fn policy(&self) -> Arc<PolicySnapshot> {
        self.policy.load_full()
    }

    /// The gate for a new flow `src` -> `dst`:`port` (`dst` translated).
    #[inline]
    pub(super) fn policy_gate(&self, src: IpAddr, dst: IpAddr, protocol: u8, port: u16) -> Gate {
        if !self.policy_on.load(Ordering::Relaxed) {
            return Gate::Pass;
        }
        let snap = self.policy.load();
        let decision = snap.decide(src, dst, protocol, port);
        match decision.denied() {
            Some(PolicyDirection::Egress) => Gate::Deny(DropReason::PolicyEgress),
            Some(PolicyDirection::Ingress) => Gate::Deny(DropReason::PolicyIngress),
            None if decision.isolated_end => Gate::Track,
            None => Gate::Pass,
        }
    }

    /// Tracks an allowed flow that is not translated (pod to pod, pod to
    /// host), so its replies pass an isolated pod's gate. `None` when the
    /// table refuses it: the packet then goes untracked, and so may its
    /// replies' fate (the gate decides them as new flows).
    pub(super) fn track_untranslated<'g>(
        &'g self,
        now: Timestamp,
        key: &FlowKey,
        guard: &'g epoch::Guard,
    ) -> Result<&'g Flow, Verdict> {
        let protocol = key.protocol;
        let entry = PackedEntry {
            original: self.conntrack.hashed(key.pack()),
            reply: key.reversed().pack(),
            hook_reply: true,
            state: if protocol == proto::TCP {
                FlowState::SynSent
            } else {
                FlowState::Unreplied
            },
            record_timeout_ms: 0,
            tag: 0,
        };
        match self.conntrack.add(&entry, now, guard) {
            Ok(found) => Ok(found.flow),
            Err(e) => Err(refused_flow(&e).unwrap_or(Verdict::Drop(DropReason::ReplyClash))),
        }
    }
}

/// A tracked flow's decision: its real source, and its destination as
/// translated (the reply's source).
fn flow_decision(snap: &PolicySnapshot, f: &Flow) -> Decision {
    let (original, reply) = (f.original(), f.reply());
    snap.decide(original.src, reply.src, original.protocol, reply.src_port)
}
