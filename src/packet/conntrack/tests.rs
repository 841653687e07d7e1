use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 244, 0, d))
}

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))
}

/// Client `c`:`port` -> VIP:80, translated to backend `b`:8080.
fn entry(c: u8, port: u16, b: u8) -> NewEntry {
    let original = FlowKey {
        src: v4(c),
        dst: vip(),
        src_port: port,
        dst_port: 80,
        protocol: proto::TCP,
        kind: EntryKind::Flow,
    };
    NewEntry {
        original,
        reply: FlowKey {
            src: v4(b),
            dst: v4(c),
            src_port: 8080,
            dst_port: port,
            protocol: proto::TCP,
            kind: EntryKind::Flow,
        },
        hook_reply: true,
        state: FlowState::SynSent,
        record_timeout: Duration::ZERO,
        tag: 7,
    }
}

/// A table without a per-source limit (most tests use one client).
/// [`entry`] with its handshake done.
fn established(c: u8, port: u16, b: u8) -> NewEntry {
    NewEntry {
        state: FlowState::Established,
        ..entry(c, port, b)
    }
}

fn table(max: usize) -> ConnTrack {
    ConnTrack::new(ConnTrackConfig {
        max_entries: max,
        timeouts: Timeouts::default(),
        source_share_percent: 100,
    })
}

const T0: Timestamp = Timestamp::from_secs(1000);

#[test]
fn finds_a_flow_from_both_directions() {
    let ct = table(1024);
    let g = epoch::pin();
    let e = entry(5, 40000, 9);
    ct.insert(e, T0, &g).unwrap();
    let f = ct.lookup(&e.original, &g).unwrap();
    assert_eq!(f.direction, Direction::Original);
    assert_eq!(f.flow.tag(), 7);
    let r = ct.lookup(&e.reply, &g).unwrap();
    assert_eq!(r.direction, Direction::Reply);
    assert!(std::ptr::eq(f.flow, r.flow));
    assert!(ct.lookup(&e.original.reversed(), &g).is_none());
    assert_eq!(ct.len(), 1);
}

#[test]
fn inserting_the_same_flow_twice_returns_the_first() {
    let ct = table(1024);
    let g = epoch::pin();
    let e = entry(5, 40000, 9);
    let a = ct.insert(e, T0, &g).unwrap().flow as *const Flow;
    let mut again = e;
    again.tag = 99;
    let b = ct.insert(again, T0, &g).unwrap().flow as *const Flow;
    assert_eq!(a, b);
    assert_eq!(ct.len(), 1);
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_old_ones() {
    let ct = table(16);
    let g = epoch::pin();
    // Established: unanswered flows would make room (early drop).
    for p in 0..16 {
        ct.insert(established(5, 1000 + p, 9), T0, &g).unwrap();
    }
    assert_eq!(
        ct.insert(entry(5, 2000, 9), T0, &g).err(),
        Some(InsertError::TableFull { max: 16 })
    );
    for p in 0..16 {
        assert!(ct.lookup(&entry(5, 1000 + p, 9).original, &g).is_some());
    }
    assert_eq!(ct.len(), 16);
}

#[test]
fn a_second_flow_with_the_same_reply_tuple_is_refused() {
    let ct = table(64);
    let g = epoch::pin();
    let e = entry(5, 40000, 9);
    ct.insert(e, T0, &g).unwrap();
    let mut other = e;
    other.original.dst = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 11));
    assert_eq!(
        ct.insert(other, T0, &g).err(),
        Some(InsertError::ReplyClash)
    );
}

#[test]
fn sweep_expires_by_state_with_linux_default_timeouts() {
    let ct = table(64);
    let g = epoch::pin();
    let syn = ct.insert(entry(1, 1, 9), T0, &g).unwrap().flow;
    let est = ct.insert(entry(2, 2, 9), T0, &g).unwrap().flow;
    est.track_tcp(
        Direction::Reply,
        TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0),
        0,
        1,
    );
    est.track_tcp(Direction::Original, TcpFlags::ACK, 1, 0);
    assert_eq!(syn.state(), FlowState::SynSent);
    assert_eq!(est.state(), FlowState::Established);
    drop(g);
    // SYN_SENT lives 120 s.
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(120))), 0);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(121))), 1);
    // ESTABLISHED lives five days.
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(431_999))), 0);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(432_001))), 1);
    assert!(ct.is_empty());
}

#[test]
fn touching_a_flow_keeps_it_alive() {
    let ct = table(64);
    let g = epoch::pin();
    let f = ct.insert(entry(1, 1, 9), T0, &g).unwrap().flow;
    f.touch(T0.after(Duration::from_secs(100)));
    drop(g);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(200))), 0);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(221))), 1);
}

#[test]
fn tcp_state_machine_follows_a_whole_connection() {
    let ct = table(64);
    let g = epoch::pin();
    let f = ct.insert(entry(1, 1, 9), T0, &g).unwrap().flow;
    let fl = |bits: &[TcpFlags]| TcpFlags(bits.iter().fold(0, |a, b| a | b.0));
    use Direction::*;
    f.track_tcp(Original, TcpFlags::SYN, 100, 1);
    assert_eq!(f.state(), FlowState::SynSent);
    f.track_tcp(Reply, fl(&[TcpFlags::SYN, TcpFlags::ACK]), 5000, 1);
    assert_eq!(f.state(), FlowState::SynRecv);
    f.track_tcp(Original, TcpFlags::ACK, 101, 0);
    assert_eq!(f.state(), FlowState::Established);
    f.track_tcp(Reply, fl(&[TcpFlags::PSH, TcpFlags::ACK]), 5001, 10);
    assert_eq!(f.reply_next_seq(), 5011);
    // A retransmission does not move the sequence back.
    f.track_tcp(Reply, TcpFlags::ACK, 5001, 5);
    assert_eq!(f.reply_next_seq(), 5011);
    f.track_tcp(Original, fl(&[TcpFlags::FIN, TcpFlags::ACK]), 101, 1);
    assert_eq!(f.state(), FlowState::FinWait);
    assert_eq!(f.original_next_seq(), 102);
    f.track_tcp(Reply, fl(&[TcpFlags::FIN, TcpFlags::ACK]), 5011, 1);
    assert_eq!(f.state(), FlowState::LastAck);
    f.track_tcp(Original, TcpFlags::ACK, 102, 0);
    assert_eq!(f.state(), FlowState::TimeWait);
    // Port reuse: a new SYN reopens the tuple.
    f.track_tcp(Original, TcpFlags::SYN, 9000, 1);
    assert_eq!(f.state(), FlowState::SynSent);
    f.track_tcp(Reply, TcpFlags::RST, 0, 0);
    assert_eq!(f.state(), FlowState::Close);
}

#[test]
fn udp_flows_become_replied_and_live_longer() {
    let ct = table(64);
    let g = epoch::pin();
    let mut e = entry(1, 1, 9);
    e.original.protocol = proto::UDP;
    e.reply.protocol = proto::UDP;
    e.state = FlowState::Unreplied;
    let f = ct.insert(e, T0, &g).unwrap().flow;
    f.track_datagram(Direction::Original);
    assert_eq!(f.state(), FlowState::Unreplied);
    assert!(f.is_expired(T0.after(Duration::from_secs(31)), &Timeouts::default()));
    f.track_datagram(Direction::Reply);
    assert_eq!(f.state(), FlowState::Replied);
    assert!(!f.is_expired(T0.after(Duration::from_secs(119)), &Timeouts::default()));
    assert!(f.is_expired(T0.after(Duration::from_secs(121)), &Timeouts::default()));
}

#[test]
fn records_have_one_hook_and_their_own_timeout() {
    let ct = table(64);
    let g = epoch::pin();
    let key = FlowKey {
        src: v4(3),
        dst: vip(),
        src_port: 0,
        dst_port: 80,
        protocol: proto::TCP,
        kind: EntryKind::Affinity,
    };
    let backend = FlowKey {
        src: v4(9),
        src_port: 8080,
        ..key
    };
    ct.insert(
        NewEntry {
            original: key,
            reply: backend,
            hook_reply: false,
            state: FlowState::Record,
            record_timeout: Duration::from_secs(10_800),
            tag: 1,
        },
        T0,
        &g,
    )
    .unwrap();
    assert!(ct.lookup(&key, &g).is_some());
    assert!(ct.lookup(&backend, &g).is_none());
    drop(g);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(10_799))), 0);
    assert_eq!(ct.sweep(T0.after(Duration::from_secs(10_801))), 1);
}

#[test]
fn remove_where_unhooks_both_directions() {
    let ct = table(4096);
    let g = epoch::pin();
    for p in 0..1000u16 {
        ct.insert(entry((p % 7) as u8 + 1, p, (p % 3) as u8 + 20), T0, &g)
            .unwrap();
    }
    let removed = ct.remove_where(|f| f.reply().src == v4(20));
    assert_eq!(removed.len(), 334);
    assert_eq!(ct.len(), 666);
    for p in 0..1000u16 {
        let e = entry((p % 7) as u8 + 1, p, (p % 3) as u8 + 20);
        let gone = p % 3 == 0;
        assert_eq!(ct.lookup(&e.original, &g).is_none(), gone, "port {p}");
        assert_eq!(ct.lookup(&e.reply, &g).is_none(), gone, "port {p}");
    }
    assert_eq!(ct.entries().len(), 666);
    assert!(ct.remove(&entry(2, 1, 21).original).is_some());
    assert!(ct.remove(&entry(2, 1, 21).original).is_none());
    assert_eq!(ct.len(), 665);
    ct.assert_summaries_cover_chains();
}

/// Workers insert and look up while a control thread sweeps and removes:
/// no entry that should be there goes missing, nothing is found twice,
/// nothing crashes, and the count stays exact.
#[test]
fn concurrent_inserts_lookups_and_removals_stay_consistent() {
    let ct = Arc::new(table(1 << 16));
    let stop = Arc::new(AtomicBool::new(false));
    // Long-lived flows that must always be found.
    {
        let g = epoch::pin();
        for p in 0..500u16 {
            ct.insert(entry(200, p, 201), T0, &g).unwrap();
        }
    }
    let mut workers = Vec::new();
    for w in 0..3u8 {
        let ct = ct.clone();
        workers.push(std::thread::spawn(move || {
            for round in 0..20u16 {
                let g = epoch::pin();
                for p in 0..1000u16 {
                    // Churn: short flows the remover deletes.
                    let e = entry(w + 1, p.wrapping_add(round * 1000), 50);
                    let _ = ct.insert(e, T0, &g);
                    let stable = entry(200, p % 500, 201);
                    let f = ct.lookup(&stable.original, &g).expect("stable flow lost");
                    assert_eq!(f.flow.reply(), stable.reply);
                    assert!(ct.lookup(&stable.reply, &g).is_some(), "reply hook lost");
                }
            }
        }));
    }
    let remover = {
        let ct = ct.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut removed = 0;
            while !stop.load(Ordering::Relaxed) {
                removed += ct.remove_where(|f| f.reply().src == v4(50)).len();
            }
            removed
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    remover.join().unwrap();
    ct.remove_where(|f| f.reply().src == v4(50));
    assert_eq!(ct.len(), 500);
    assert_eq!(ct.entries().len(), 500);
    ct.assert_summaries_cover_chains();
}

/// Two workers racing to create the same flow end up sharing one entry.
#[test]
fn racing_inserts_of_one_flow_create_one_entry() {
    for _ in 0..50 {
        let ct = Arc::new(table(1024));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let ct = ct.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let g = epoch::pin();
                    barrier.wait();
                    ct.insert(entry(1, 1, 9), T0, &g).unwrap().flow as *const Flow as usize
                })
            })
            .collect();
        let a = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(a[0], a[1]);
        assert_eq!(ct.len(), 1);
    }
}

#[test]
fn flow_key_hash_spreads_ports() {
    let h = FlowHasher::fixed(1);
    let mut buckets = [0u32; 64];
    for p in 0..6400u16 {
        let e = entry(1, p, 9);
        buckets[(h.hash(&e.original) % 64) as usize] += 1;
    }
    // Roughly uniform: every bucket within 40% of the mean of 100.
    assert!(
        buckets.iter().all(|&b| (60..=140).contains(&b)),
        "{buckets:?}"
    );
}

/// Removed entries are freed by later removal passes once no reader can
/// hold them, and not before: a guard pinned before the removal keeps them.
#[test]
fn removed_entries_are_freed_once_readers_have_moved_on() {
    let ct = table(1 << 14);
    let reader = epoch::pin();
    for p in 0..10_000u16 {
        ct.insert(entry((p % 200) as u8 + 1, p, 9), T0, &reader)
            .unwrap();
    }
    let held = ct.lookup(&entry(1, 0, 9).original, &reader).unwrap().flow;
    assert_eq!(ct.remove_where(|_| true).len(), 10_000);
    assert_eq!(ct.len(), 0);
    // Removal passes cannot free what a pinned reader may still hold.
    for _ in 0..50 {
        ct.sweep(T0);
    }
    assert_eq!(ct.retired_len(), 10_000);
    assert_eq!(
        held.reply().src,
        v4(9),
        "an entry a reader holds stays intact"
    );
    drop(reader);
    // Other tests of this process pin guards too; the epoch still moves on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ct.retired_len() != 0 && std::time::Instant::now() < deadline {
        ct.sweep(T0);
        std::thread::yield_now();
    }
    assert_eq!(ct.retired_len(), 0, "retired entries were never freed");
}

/// Bucket summaries stay exact enough to answer misses without a walk:
/// after removals in the middle of chains, a bucket whose chain holds only
/// other keys' bits reports a miss, and every remaining key is found.
#[test]
fn chain_summaries_follow_removals() {
    // A small table so chains are long and removals hit their middles.
    let ct = table(64);
    let g = epoch::pin();
    for p in 0..64u16 {
        ct.insert(entry((p % 5) as u8 + 1, p, (p % 2) as u8 + 30), T0, &g)
            .unwrap();
    }
    ct.assert_summaries_cover_chains();
    assert_eq!(ct.remove_where(|f| f.reply().src == v4(30)).len(), 32);
    ct.assert_summaries_cover_chains();
    for p in 0..64u16 {
        let e = entry((p % 5) as u8 + 1, p, (p % 2) as u8 + 30);
        assert_eq!(ct.lookup(&e.original, &g).is_some(), p % 2 == 1, "port {p}");
        assert_eq!(ct.lookup(&e.reply, &g).is_some(), p % 2 == 1, "port {p}");
    }
    // With every entry gone, every summary is empty again.
    ct.remove_where(|_| true);
    for bucket in ct.buckets.iter() {
        assert_eq!(bucket.load(Ordering::Relaxed), 0);
    }
}

/// The packed reply key equals the one spelled out field by field, for
/// IPv4 and IPv6, with and without hairpin, and its port can be moved.
#[test]
fn nat_reply_key_matches_the_spelled_out_reply() {
    use std::net::{Ipv6Addr, SocketAddr};
    let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, d));
    let cases = [
        (v4(5), vip(), SocketAddr::new(v4(9), 8080)),
        (v4(9), vip(), SocketAddr::new(v4(9), 8080)),
        (v6(5), v6(0xa), SocketAddr::new(v6(9), 8443)),
        (v6(9), v6(0xa), SocketAddr::new(v6(9), 8443)),
    ];
    for (src, dst, backend) in cases {
        for protocol in [proto::TCP, proto::UDP] {
            let original = FlowKey {
                src,
                dst,
                src_port: 40_000,
                dst_port: 80,
                protocol,
                kind: EntryKind::Flow,
            };
            let client = if backend.ip() == src { dst } else { src };
            let expected = FlowKey {
                src: backend.ip(),
                dst: client,
                src_port: backend.port(),
                dst_port: 40_000,
                protocol,
                kind: EntryKind::Flow,
            };
            let reply = original.pack().nat_reply(backend);
            assert_eq!(reply, expected.pack(), "{original:?} -> {backend}");
            assert_eq!(reply.unpack(), expected);
            let moved = FlowKey {
                dst_port: 33_000,
                ..expected
            };
            assert_eq!(reply.with_dst_port(33_000), moved.pack());
        }
    }
}

/// Entries are recycled while workers keep reading: a table far smaller
/// than the flows churned through it, so every entry is reused many times.
/// A reader never sees an entry change under it (its keys always match
/// what it looked up, for as long as it holds it), and the long-lived
/// flows stay findable from both sides.
#[test]
fn recycled_entries_never_change_under_a_reader() {
    // Storage for 2,048 + 1/8 + 256 = 2,560 entries; each worker gets three
    // times that many flows in, so entries are reused.
    const PER_WORKER: u64 = 3 * 2560;
    let ct = Arc::new(table(2048));
    {
        let g = epoch::pin();
        // Established, so that early drop, making room for the churn in
        // the full table, never takes them.
        for p in 0..200u16 {
            ct.insert(established(200, p, 201), T0, &g).unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let workers: Vec<_> = (0..2u8)
        .map(|w| {
            let ct = ct.clone();
            std::thread::spawn(move || {
                let mut inserted = 0u64;
                let mut port = 0u16;
                while inserted < PER_WORKER && std::time::Instant::now() < deadline {
                    // Batches of 50 packets under one pin, as a worker's are.
                    let g = epoch::pin();
                    for _ in 0..50 {
                        port = port.wrapping_add(1);
                        let e = entry(w + 1, port, 50);
                        match ct.insert(e, T0, &g) {
                            Ok(f) => {
                                assert_eq!(f.flow.original(), e.original);
                                inserted += 1;
                            }
                            // Full of flows awaiting removal or recycling:
                            // let the remover run (this machine may have
                            // fewer cores than threads).
                            Err(InsertError::TableFull { .. }) => std::thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                        let stable = entry(200, port % 200, 201);
                        let f = ct.lookup(&stable.original, &g).expect("stable flow lost");
                        let r = ct.lookup(&stable.reply, &g).expect("reply hook lost");
                        assert!(std::ptr::eq(f.flow, r.flow));
                        if let Some(f) = ct.lookup(&e.original, &g) {
                            // Held across more work: must stay this flow.
                            let _ = ct.lookup(&entry(200, 7, 201).original, &g);
                            assert_eq!(f.flow.original(), e.original);
                            assert_eq!(f.flow.reply(), e.reply);
                        }
                    }
                }
                inserted
            })
        })
        .collect();
    let remover = {
        let ct = ct.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ct.remove_where(|f| f.reply().src == v4(50));
            }
        })
    };
    let inserted: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    remover.join().unwrap();
    assert!(
        inserted.iter().all(|&n| n >= PER_WORKER),
        "entries were not recycled within a minute: {inserted:?} flows in"
    );
    ct.remove_where(|f| f.reply().src == v4(50));
    assert_eq!(ct.len(), 200);
    ct.assert_summaries_cover_chains();
}

/// A hashed key made by another table still finds its own bucket here, so
/// its entry can be found and removed like any other.
#[test]
fn a_key_hashed_by_another_table_goes_to_this_tables_bucket() {
    let (a, b) = (table(1024), table(1024));
    let g = epoch::pin();
    for p in 0..32u16 {
        let e = entry(5, p, 9);
        let packed = PackedEntry {
            original: a.hashed(e.original.pack()),
            reply: e.reply.pack(),
            hook_reply: true,
            state: FlowState::SynSent,
            record_timeout_ms: 0,
            tag: 0,
        };
        b.insert_packed(&packed, T0, &g).unwrap();
        assert!(b.lookup_packed(&a.hashed(e.original.pack()), &g).is_some());
        assert!(b.lookup(&e.original, &g).is_some());
    }
    drop(g);
    assert_eq!(b.remove_where(|_| true).len(), 32);
    assert_eq!(b.len(), 0);
    assert!(
        b.entries().is_empty(),
        "an entry stayed linked after removal"
    );
    b.assert_summaries_cover_chains();
}

/// Inserting what is already there (a repeated first fragment, an
/// affinity record) returns the entry and takes no storage: thousands of
/// repeats leave room for every new flow the limit allows.
#[test]
fn repeated_inserts_of_existing_entries_use_no_storage() {
    // Records hook only their original side, so nothing but the original
    // key tells a repeat.
    let record = |p: u16| NewEntry {
        hook_reply: false,
        state: FlowState::Record,
        record_timeout: Duration::from_secs(30),
        ..entry(5, p, 9)
    };
    let ct = table(1024);
    let g = epoch::pin();
    for p in 0..10u16 {
        ct.insert(record(p), T0, &g).unwrap();
    }
    for n in 0..5000u16 {
        let f = ct.insert(record(n % 10), T0, &g).unwrap();
        assert_eq!(f.flow.original(), record(n % 10).original);
    }
    for p in 10..1024u16 {
        ct.insert(entry(6, p, 9), T0, &g)
            .unwrap_or_else(|e| panic!("flow {p}: {e}"));
    }
    assert_eq!(ct.len(), 1024);
}

/// After a sweep empties a full table, its entries are reusable as soon as
/// readers have moved on (`reclaim`), not a sweep later: the table takes a
/// full load of new flows again.
#[test]
fn a_full_table_emptied_by_a_sweep_takes_a_full_load_again() {
    let ct = table(1024);
    {
        let g = epoch::pin();
        for p in 0..1024u16 {
            ct.insert(entry(5, p, 9), T0, &g).unwrap();
        }
    }
    assert_eq!(ct.remove_where(|_| true).len(), 1024);
    // Other tests of this process pin guards too; the epoch still moves on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ct.retired_len() != 0 && std::time::Instant::now() < deadline {
        ct.reclaim();
        std::thread::yield_now();
    }
    assert_eq!(ct.retired_len(), 0, "removed entries were not reclaimed");
    let g = epoch::pin();
    for p in 0..1024u16 {
        ct.insert(entry(6, p, 9), T0, &g)
            .unwrap_or_else(|e| panic!("flow {p}: {e}"));
    }
    assert_eq!(ct.len(), 1024);
}

/// Reclamation waits for the default collector's guards only; a guard of
/// another collector would protect nothing, so it is refused.
#[test]
#[should_panic(expected = "crossbeam::epoch::pin")]
fn a_guard_of_another_collector_is_refused() {
    let ct = table(16);
    let collector = epoch::Collector::new();
    let handle = collector.register();
    let guard = handle.pin();
    let _ = ct.lookup(&entry(1, 1, 9).original, &guard);
}

#[test]
fn a_finished_flow_is_retired_for_a_new_connection_even_during_a_removal() {
    let ct = table(64);
    let g = epoch::pin();
    let e = entry(1, 1, 9);
    let f = ct.insert(e, T0, &g).unwrap().flow;
    // Live: not retired.
    assert!(!ct.retire_finished(f));
    f.track_tcp(Direction::Original, TcpFlags::RST, 100, 0);
    assert_eq!(f.state(), FlowState::Close);
    // A sweep or reset pass holds the removal lock: the packet path
    // retires the finished flow all the same, and the tuple is free.
    let busy = ct.removal.lock();
    assert!(ct.retire_finished(f));
    assert!(!ct.retire_finished(f), "claimed once");
    assert!(ct.lookup(&e.original, &g).is_none());
    assert_eq!(ct.len(), 0);
    let again = ct
        .insert(entry(1, 1, 10), T0, &g)
        .expect("the tuple is free");
    assert_eq!(again.flow.state(), FlowState::SynSent);
    drop(busy);
    drop(g);
    // The control thread unlinks the retired entry; the new one stays.
    ct.reclaim();
    assert_eq!(ct.len(), 1);
    let g = epoch::pin();
    assert!(ct.lookup(&e.original, &g).is_some());
}
