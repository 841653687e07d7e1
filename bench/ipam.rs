//! Durable pod address allocations per second, for `scripts/bench-ipam.sh`.
//!
//! `cargo bench --bench ipam -- --dir DIR --n N` allocates N IPv4 addresses
//! (each one on disk before the call returns) in a fresh state directory DIR and
//! prints `ipam.alloc_us: <median microseconds per allocation>`. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does a quick smoke run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use podnet::control::ipam::{AllocateRequest, Families, FileStore, Ipam, IpamConfig};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut n = 5usize;
    let mut bench = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--dir" => dir = args.next().map(PathBuf::from),
            "--n" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => n = v,
                None => return usage("--n needs a number"),
            },
            _ => {} // cargo's own flags
        }
    }
    if !bench {
        n = n.min(5);
    }
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = match tempfile::tempdir() {
                Ok(t) => t,
                Err(e) => return usage(&format!("no temp dir: {e}")),
            };
            tmp.path().to_path_buf()
        }
    };
    let config = IpamConfig {
        subnet_v4: "10.244.0.0/16".parse().ok(),
        subnet_v6: None,
        quarantine: Duration::from_secs(30),
    };
    let store = match FileStore::open(&dir) {
        Ok(s) => s,
        Err(e) => return usage(&e.to_string()),
    };
    let mut ipam = match Ipam::open(Box::new(store), config) {
        Ok(i) => i,
        Err(e) => return usage(&e.to_string()),
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let request = AllocateRequest::new(format!("bench-{i}")).families(Families::V4);
        let start = Instant::now();
        let result = ipam.allocate(request, SystemTime::now());
        times.push(start.elapsed());
        if let Err(e) = result {
            return usage(&e.to_string());
        }
    }
    times.sort();
    let median = times.get(n / 2).copied().unwrap_or_default();
    println!("ipam.alloc_us: {:.1}", median.as_secs_f64() * 1e6);
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("bench ipam: {problem}\nusage: cargo bench --bench ipam -- [--dir DIR] [--n N]");
    ExitCode::FAILURE
}
