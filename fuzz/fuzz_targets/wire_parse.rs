//! The wire parsers and what the contract of `podnet::packet::wire` says may
//! follow a successful parse (rewrites, replies, virtio-net header checks,
//! software segmentation), on arbitrary bytes with arbitrary headers.
//!
//! Input: `[vnet: 10][packet]` (a shorter input is a packet with no header).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| podnet_fuzz::wire(data));
