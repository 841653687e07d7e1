//! Connection tracking under churn keeps a bounded heap: flows created and
//! swept batch after batch, as a busy node's are, are reclaimed, so memory
//! follows the live flows and not the flows ever seen, and the entries of
//! swept flows are reused (ten times the table's live population churns
//! through storage sized for little more than its maximum).
//!
//! A counting global allocator (this test binary's own) measures live heap
//! bytes; no root needed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use podnet::packet::conntrack::{
    proto, ConnTrack, ConnTrackConfig, EntryKind, FlowKey, FlowState, NewEntry,
};
use podnet::packet::Timestamp;

mod alloc_support;

#[global_allocator]
static ALLOC: alloc_support::Counting = alloc_support::Counting;

const BATCH: u32 = 2048;
const LIVE_BATCHES: u32 = 8;

/// Flow `n` of batch `k`: client 11.0.0.0 + k, port n, to a VIP, to a backend.
fn entry(k: u32, n: u32) -> NewEntry {
    let client = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + k));
    let original = FlowKey {
        src: client,
        dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        src_port: 1024 + n as u16,
        dst_port: 80,
        protocol: proto::TCP,
        kind: EntryKind::Flow,
    };
    NewEntry {
        original,
        reply: FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 10)),
            dst: client,
            src_port: 8080,
            dst_port: original.src_port,
            protocol: proto::TCP,
            kind: EntryKind::Flow,
        },
        hook_reply: true,
        state: FlowState::SynSent,
        record_timeout: Duration::ZERO,
        tag: 0,
    }
}

#[test]
fn heap_follows_live_flows_under_churn() {
    let ct = ConnTrack::new(ConnTrackConfig {
        max_entries: (BATCH * LIVE_BATCHES * 2) as usize,
        ..ConnTrackConfig::default()
    });
    let now = Timestamp::from_secs(1);
    // One churn step: a batch of new flows under a worker's pin, then the
    // oldest batch removed as a sweep would.
    let step = |k: u32| {
        {
            let guard = crossbeam::epoch::pin();
            for n in 0..BATCH {
                ct.insert(entry(k, n), now, &guard)
                    .expect("room in the table");
            }
        }
        if k >= LIVE_BATCHES {
            let oldest = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + k - LIVE_BATCHES));
            let removed = ct.remove_where(|f| f.original().src == oldest);
            assert_eq!(removed.len(), BATCH as usize);
        }
    };
    let mut k = 0;
    while k < 2 * LIVE_BATCHES {
        step(k);
        k += 1;
    }
    let steady = alloc_support::live_bytes();
    assert_eq!(ct.len(), (BATCH * LIVE_BATCHES) as usize);
    // Eight times the live population churned through.
    while k < 10 * LIVE_BATCHES {
        step(k);
        k += 1;
    }
    let after = alloc_support::live_bytes();
    assert_eq!(ct.len(), (BATCH * LIVE_BATCHES) as usize);
    let growth = after.saturating_sub(steady);
    // Retired batches wait a removal pass or two for the epoch to move on;
    // anything near the 64 batches churned through means they leak.
    assert!(
        growth < steady / 2,
        "heap grew by {growth} bytes over a steady {steady} while the live flows stayed {}; {} retired entries not freed",
        ct.len(),
        ct.retired_len()
    );
}
