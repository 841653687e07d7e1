//! Admission under pressure: per-source shares, early drop, near-full
//! eviction (see `admission.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn src(s: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 244, 0, s))
}

/// Client `s`:`port` -> 10.96.0.10:80 translated to 10.244.1.9:8080, in
/// `state`.
fn flow(s: u8, port: u16, state: FlowState) -> NewEntry {
    let original = FlowKey {
        src: src(s),
        dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        src_port: port,
        dst_port: 80,
        protocol: proto::TCP,
        kind: EntryKind::Flow,
    };
    NewEntry {
        original,
        reply: FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 9)),
            dst: src(s),
            src_port: 8080,
            dst_port: port,
            protocol: proto::TCP,
            kind: EntryKind::Flow,
        },
        hook_reply: true,
        state,
        record_timeout: Duration::ZERO,
        tag: 0,
    }
}

fn fair(max: usize, percent: u8) -> ConnTrack {
    ConnTrack::with_seed(
        ConnTrackConfig {
            max_entries: max,
            timeouts: Timeouts::default(),
            source_share_percent: percent,
        },
        0x5eed,
    )
}

const T0: Timestamp = Timestamp::from_secs(1000);

#[test]
fn a_flood_from_one_source_cannot_starve_another() {
    let ct = fair(1000, 25);
    assert_eq!(ct.max_per_source(), 250);
    let g = epoch::pin();
    let mut admitted = 0;
    for port in 1..=1000 {
        match ct.insert(flow(66, port, FlowState::SynSent), T0, &g) {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(e, InsertError::SourceShareExceeded { limit: 250 }),
        }
    }
    assert_eq!(admitted, 250, "the flooding source holds exactly its share");
    assert_eq!(
        ct.source_entries(&flow(66, 1, FlowState::SynSent).original),
        250
    );
    // Three other sources still get their whole share each.
    for s in [5, 6, 7] {
        for port in 1..=250 {
            ct.insert(flow(s, port, FlowState::SynSent), T0, &g)
                .unwrap_or_else(|e| panic!("source {s} port {port}: {e}"));
        }
    }
    assert_eq!(ct.len(), 1000);
    ct.assert_shares_match_count();
    // Removing the flood's entries gives its share back.
    let gone = ct.remove_where(|f| f.original().src == src(66)).len();
    assert_eq!(gone, 250);
    assert_eq!(
        ct.source_entries(&flow(66, 1, FlowState::SynSent).original),
        0
    );
    ct.assert_shares_match_count();
    ct.insert(flow(66, 5000, FlowState::SynSent), T0, &g)
        .unwrap();
}

#[test]
fn share_defaults_to_a_quarter_of_the_table() {
    let c = ConnTrackConfig::default();
    assert_eq!(c.max_per_source(), 65_536);
    let c = ConnTrackConfig {
        max_entries: 10,
        source_share_percent: 0,
        ..c
    };
    assert_eq!(c.max_per_source(), 1, "at least one entry, at least 1%");
}

/// A full table: `established` established flows and `unanswered`
/// flows in SYN_SENT (all from source 1), so only the latter may be
/// dropped early.
fn full_table(established: u16, unanswered: u16) -> ConnTrack {
    let ct = fair(usize::from(established + unanswered), 100);
    let g = epoch::pin();
    for port in 0..established + unanswered {
        let st = if port < established {
            FlowState::Established
        } else {
            FlowState::SynSent
        };
        ct.insert(flow(1, port, st), T0, &g).unwrap();
    }
    ct
}

#[test]
fn early_drop_takes_the_place_of_an_unanswered_flow_never_an_established_one() {
    let ct = full_table(64, 64);
    let g = epoch::pin();
    let mut admitted = 0u64;
    for port in 10_000..10_032 {
        match ct.insert(flow(2, port, FlowState::SynSent), T0, &g) {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(e, InsertError::TableFull { max: 128 }),
        }
        assert_eq!(ct.len(), 128, "a new flow takes a dropped one's place");
    }
    assert!(admitted >= 24, "only {admitted} of 32 found a victim");
    assert_eq!(ct.evictions()[EvictReason::EarlyDrop as usize], admitted);
    for port in 0..64 {
        let f = ct.lookup(&flow(1, port, FlowState::Established).original, &g);
        assert!(f.is_some(), "established flow {port} was dropped");
    }
    // The victims are gone for lookups and listings at once, and unlinked
    // by the control thread's next reclaim.
    let unanswered_left = (64..128)
        .filter(|&p| {
            ct.lookup(&flow(1, p, FlowState::SynSent).original, &g)
                .is_some()
        })
        .count() as u64
        + (10_000..10_032)
            .filter(|&p| {
                ct.lookup(&flow(2, p, FlowState::SynSent).original, &g)
                    .is_some()
            })
            .count() as u64;
    assert_eq!(
        unanswered_left, 64,
        "each admission replaced one unanswered flow"
    );
    assert_eq!(ct.entries().len(), 128);
    drop(g);
    ct.reclaim();
    ct.assert_summaries_cover_chains();
    ct.assert_shares_match_count();
    assert_eq!(ct.entries().len(), 128);
    ct.sweep(T0);
    let g = epoch::pin();
    for port in 0..64 {
        let f = ct.lookup(&flow(1, port, FlowState::Established).original, &g);
        assert!(f.is_some(), "established flow {port} was swept");
    }
}

#[test]
fn a_table_full_of_answered_flows_refuses_and_drops_nothing() {
    let ct = full_table(64, 0);
    let g = epoch::pin();
    // Replied UDP and records are not dropped early either.
    assert_eq!(
        ct.insert(flow(2, 1, FlowState::SynSent), T0, &g).err(),
        Some(InsertError::TableFull { max: 64 })
    );
    assert_eq!(ct.evictions(), [0, 0]);
    assert_eq!(
        ct.sweep(T0),
        0,
        "a sweep under pressure spares answered flows"
    );
    assert_eq!(ct.len(), 64);
}

#[test]
fn which_states_may_be_dropped_early() {
    let droppable = |st: FlowState| early_droppable(st as u8);
    for st in [
        FlowState::SynSent,
        FlowState::SynRecv,
        FlowState::Unreplied,
        FlowState::Close,
        FlowState::TimeWait,
    ] {
        assert!(droppable(st), "{st:?}");
    }
    for st in [
        FlowState::Established,
        FlowState::FinWait,
        FlowState::LastAck,
        FlowState::Replied,
        FlowState::Record,
    ] {
        assert!(!droppable(st), "{st:?}");
    }
    assert!(!early_droppable(FlowState::SynSent as u8 | DEAD));
}

#[test]
fn after_a_refusal_the_sweep_evicts_unanswered_flows_down_to_95_percent() {
    let ct = full_table(100, 0);
    let g = epoch::pin();
    assert!(ct.insert(flow(2, 1, FlowState::SynSent), T0, &g).is_err());
    // Ten flows are reset since (closing states may be dropped early).
    for port in 0..10 {
        let f = ct
            .lookup(&flow(1, port, FlowState::Established).original, &g)
            .unwrap();
        f.flow.track_tcp(Direction::Original, TcpFlags::RST, 0, 0);
    }
    drop(g);
    assert_eq!(ct.sweep(T0), 6, "100 -> 94: evicted while at or above 95");
    assert_eq!(ct.evictions()[EvictReason::NearFull as usize], 6);
    assert_eq!(ct.len(), 94);
    assert_eq!(ct.sweep(T0), 0, "pressure is over until the next refusal");
    ct.assert_shares_match_count();
}

#[test]
fn a_dead_flow_stays_dead_whatever_its_packets_say() {
    let ct = fair(16, 100);
    let g = epoch::pin();
    let f = ct
        .insert(flow(1, 1, FlowState::SynSent), T0, &g)
        .unwrap()
        .flow;
    assert!(f.claim_for_early_drop());
    assert!(!f.claim(), "claimed once only");
    f.track_tcp(Direction::Reply, TcpFlags::SYN | TcpFlags::ACK, 0, 1);
    f.track_datagram(Direction::Reply);
    assert!(f.is_dead());
    assert_eq!(f.state(), FlowState::SynSent);
    // An answered flow cannot be claimed for an early drop.
    let e = ct
        .insert(flow(1, 2, FlowState::Established), T0, &g)
        .unwrap()
        .flow;
    assert!(!e.claim_for_early_drop());
}

#[test]
fn racing_floods_early_drops_and_sweeps_keep_the_books() {
    // Four workers insert from their own sources into a small table kept
    // full, so every admission is an early drop, while the control thread
    // sweeps and reclaims. Afterwards the count, the share sketch, the
    // chains and the listing agree.
    let ct = Arc::new(fair(512, 30));
    let workers: Vec<_> = (0..4u8)
        .map(|w| {
            let ct = ct.clone();
            std::thread::spawn(move || {
                for round in 0..20u16 {
                    let g = epoch::pin();
                    for port in 0..200u16 {
                        let st = if port % 5 == 0 {
                            FlowState::Established
                        } else {
                            FlowState::SynSent
                        };
                        let _ = ct.insert(flow(10 + w, round * 200 + port, st), T0, &g);
                    }
                }
            })
        })
        .collect();
    let mut later = T0;
    while workers.iter().any(|w| !w.is_finished()) {
        ct.reclaim();
        later = Timestamp::from_millis(later.as_millis() + 1);
        ct.sweep(later);
    }
    for w in workers {
        w.join().unwrap();
    }
    ct.reclaim();
    ct.sweep(later);
    ct.assert_summaries_cover_chains();
    ct.assert_shares_match_count();
    assert_eq!(ct.entries().len(), ct.len());
    assert!(ct.len() <= 512);
    for w in 0..4u8 {
        let held = ct
            .entries()
            .iter()
            .filter(|e| e.original.src == src(10 + w))
            .count();
        assert!(held <= ct.max_per_source() + 4, "source {w} holds {held}");
    }
    assert!(ct.evictions()[EvictReason::EarlyDrop as usize] > 0);
}

proptest! {
    /// Whatever the mix of sources, inserts and removals: no source holds
    /// more than its share, a source under its share is admitted while
    /// the table has room, and the sketch always sums to the count.
    #[test]
    fn shares_hold_under_any_mix(
        ops in proptest::collection::vec((0u8..6, any::<u16>(), 0u8..4), 1..400),
        percent in 10u8..=100,
    ) {
        let ct = fair(200, percent);
        let limit = ct.max_per_source();
        let g = epoch::pin();
        let mut held = [0usize; 6];
        for (s, port, op) in ops {
            let e = flow(s + 1, port, FlowState::Established);
            if op == 0 {
                if ct.remove(&e.original).is_some() {
                    held[s as usize] -= 1;
                }
                continue;
            }
            let existed = ct.lookup(&e.original, &g).is_some();
            let full = ct.len() >= 200;
            match ct.insert(e, T0, &g) {
                Ok(_) if !existed => held[s as usize] += 1,
                Ok(_) => {}
                Err(InsertError::SourceShareExceeded { .. }) => {
                    prop_assert!(held[s as usize] >= limit);
                }
                Err(InsertError::TableFull { .. }) => prop_assert!(full),
                Err(InsertError::ReplyClash) => prop_assert!(false, "no clashes here"),
            }
            prop_assert!(held[s as usize] <= limit);
            ct.assert_shares_match_count();
        }
    }
}
