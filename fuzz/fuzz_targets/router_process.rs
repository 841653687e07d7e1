//! `Router::process` on arbitrary packets with arbitrary virtio-net headers,
//! two packets per input through one router so conntrack state matters.
//!
//! Input: `[link][vnet: 10][len: 2, big-endian][packet 1: len][link][vnet: 10][packet 2]`.
//! The link byte chooses the ingress (`% 5`: the host or pod 1..4, pod 4
//! unknown); packet 2 arrives `link >> 3` times 10 s after packet 1. Bit
//! 0x80 of the first link byte replaces packet 2 by the reply to packet 1
//! as forwarded (addresses and ports swapped, which keeps every checksum),
//! entering where packet 1 left: the reverse NAT path. A missing part is
//! left out (an input shorter than a header is a short packet 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podnet::packet::{PacketBuf, Timestamp, Verdict};
use podnet_fuzz::{link, reply_of, router, split_two, NOW};

fuzz_target!(|data: &[u8]| {
    let (first, second) = split_two(data);
    let r = router();
    let p1 = first.packet.unwrap_or_default();
    let mut pkt = PacketBuf::new(PacketBuf::DEFAULT_CAPACITY);
    pkt.buffer_mut()[..p1.len()].copy_from_slice(p1);
    pkt.set_len(p1.len());
    pkt.set_vnet(first.vnet);
    let v1 = r.process(NOW, &mut pkt, link(first.link));
    if v1 == Verdict::Reply {
        assert!(
            pkt.vnet().is_plain(),
            "a generated reply carries offload state"
        );
    }
    let now2 = Timestamp::from_millis(NOW.as_millis() + u64::from(second.link >> 3) * 10_000);
    if first.link & 0x80 != 0 {
        if let (Verdict::Forward(out), Some(mut reply)) = (v1, reply_of(&pkt)) {
            let _ = r.process(now2, &mut reply, out);
        }
    } else if let Some(p2) = second.packet {
        let mut pkt2 = PacketBuf::from_bytes(p2);
        pkt2.set_vnet(second.vnet);
        let _ = r.process(now2, &mut pkt2, link(second.link));
    }
    r.sweep(Timestamp::from_millis(now2.as_millis() + 3_600_000));
    r.reclaim();
});
