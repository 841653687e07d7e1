//! Durability of the object store under SIGKILL: a child process writes
//! (creates, compare-and-swap updates, deletes) as fast as it can and is
//! killed at random moments; after each kill the reopened store must hold
//! exactly what was acknowledged, plus at most the one write in flight.
//! Both sync policies must pass: the periodic one (the default) leaves its
//! syncs to a background thread, which SIGKILL takes with the process.
//!
//! The child is this test binary run again with `--exact crash_child` and
//! `PODNET_STORE_CRASH_DIR` and `PODNET_STORE_CRASH_SYNC` set; it prints a
//! line for each write only after the call returned, so a printed line is
//! an acknowledgement.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use podnet::control::store::{FileStore, KvStore, Precondition, StoreOptions, SyncPolicy};

const DIR_VAR: &str = "PODNET_STORE_CRASH_DIR";
const SYNC_VAR: &str = "PODNET_STORE_CRASH_SYNC";
const RUNS: u32 = 60;
/// A small log, so that kills also land in compactions.
const LOG_BYTES: u64 = 64 << 10;

fn open(dir: &std::path::Path, sync: SyncPolicy) -> Result<FileStore, String> {
    let options = StoreOptions {
        sync,
        log_capacity: LOG_BYTES,
        history: 100,
        encryption: None,
    };
    FileStore::open_with_options(dir, options).map_err(|e| e.to_string())
}

/// Child mode: does nothing unless the parent test started this process.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let sync: SyncPolicy = std::env::var(SYNC_VAR).unwrap().parse().unwrap();
    let mut out = std::io::stdout().lock();
    let store = open(dir.as_ref(), sync).unwrap();
    // libtest has already printed "test crash_child ... " without a newline.
    writeln!(out, "\nopened {}", store.revision()).unwrap();
    out.flush().unwrap();
    loop {
        let key = format!("/k{}", fastrand::u8(..40));
        let line = match store.get(&key) {
            None => {
                let value = format!("{}", fastrand::u64(..));
                let kv = store
                    .put(&key, Arc::from(value.as_bytes()), Precondition::Absent)
                    .unwrap();
                format!("put {key} {value} {}", kv.mod_revision)
            }
            Some(kv) if fastrand::u8(..4) == 0 => {
                let gone = store
                    .delete(&key, Precondition::ModRevision(kv.mod_revision))
                    .unwrap();
                format!("del {key} {}", gone.mod_revision)
            }
            Some(kv) => {
                // Never the value it replaces, so a write in flight that
                // landed always shows as one differing key.
                let value = format!(
                    "{}:{}",
                    fastrand::u64(..),
                    "x".repeat(fastrand::usize(..3000))
                );
                let new = store
                    .put(
                        &key,
                        Arc::from(value.as_bytes()),
                        Precondition::ModRevision(kv.mod_revision),
                    )
                    .unwrap();
                format!("put {key} {value} {}", new.mod_revision)
            }
        };
        // One write per line: a pipe write this small is all or nothing.
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_periodic_sync() {
    if std::env::var(DIR_VAR).is_err() {
        sigkill_at_random_moments(SyncPolicy::Periodic);
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write_always_sync() {
    if std::env::var(DIR_VAR).is_err() {
        sigkill_at_random_moments(SyncPolicy::Always);
    }
}

fn sigkill_at_random_moments(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let mut revision = 0;
    let (mut acked, mut killed_after_open, mut in_flight_landed) = (0, 0, 0);
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(SYNC_VAR, sync.as_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line without its newline was cut by the kill: not an acknowledgement.
                if line.ends_with('\n') {
                    lines.push(line.trim_end().to_string());
                }
                line.clear();
            }
            lines
        });
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..150_000)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["opened", rev] => {
                    killed_after_open += 1;
                    assert_eq!(
                        rev.parse::<u64>().unwrap(),
                        revision,
                        "{sync}, run {run}: reopened at another revision"
                    );
                }
                ["put", key, value, rev] => {
                    acked += 1;
                    model.insert(key.into(), value.into());
                    revision = rev.parse().unwrap();
                }
                ["del", key, rev] => {
                    acked += 1;
                    model.remove(key);
                    revision = rev.parse().unwrap();
                }
                _ => {} // the test harness's own output
            }
        }
        // Reopened under the other policy every other run: each log says
        // how it was written.
        let reader = if run % 2 == 0 {
            sync
        } else {
            SyncPolicy::Always
        };
        let store = open(dir.path(), reader)
            .unwrap_or_else(|e| panic!("{sync}, run {run}: reopening after SIGKILL: {e}"));
        let stored: BTreeMap<String, String> = store
            .range("/")
            .0
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8(kv.value.to_vec()).unwrap()))
            .collect();
        match store.revision() {
            r if r == revision => {
                assert_eq!(stored, model, "{sync}, run {run}: acknowledged writes lost")
            }
            r if r == revision + 1 => {
                // The write in flight landed: exactly one key differs.
                in_flight_landed += 1;
                let differing = stored
                    .keys()
                    .chain(model.keys())
                    .filter(|k| stored.get(*k) != model.get(*k))
                    .collect::<std::collections::BTreeSet<_>>();
                assert_eq!(
                    differing.len(),
                    1,
                    "{sync}, run {run}: {differing:?} differ"
                );
            }
            r => panic!("{sync}, run {run}: revision {r} after {revision} acknowledged"),
        }
        model = stored;
        revision = store.revision();
    }
    eprintln!("{sync}: {RUNS} kills, {killed_after_open} after open, {acked} acknowledged writes, {in_flight_landed} unacknowledged writes landed");
    assert!(
        killed_after_open >= RUNS / 4 && acked >= 100,
        "kills came too early to test anything: {killed_after_open} after open, {acked} writes"
    );
}
