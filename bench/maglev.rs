//! Maglev table build time (`maglev.build_ms`) and lookup cost.
//!
//! `cargo bench --bench maglev -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion};
use podnet::packet::maglev::{MaglevTable, DEFAULT_MIN_RATIO};

/// `n` pods spread over a /16, on the service's target port.
fn pods(n: u32) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from((Ipv4Addr::from(0x0af4_0000 + i), 8080)))
        .collect()
}

fn maglev(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev");

    let backends = pods(1_000);
    let size = MaglevTable::size_for(backends.len(), DEFAULT_MIN_RATIO).expect("1,000 fit");
    group.bench_function("build_1000", |b| {
        b.iter(|| MaglevTable::build(black_box(&backends), black_box(size)))
    });

    let table = MaglevTable::build(&backends, size).expect("valid size");
    let mut hash = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function("lookup", |b| {
        b.iter(|| {
            hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
            table.lookup(black_box(hash))
        })
    });
    group.finish();
}

criterion_group!(benches, maglev);
criterion_main!(benches);
