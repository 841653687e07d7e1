//! Store behaviour, the same for [`MemStore`] and [`FileStore`]; durability
//! and damaged files for [`FileStore`].

use std::fs;
use std::sync::Arc;

use super::file::OpenError;
use super::*;

fn val(s: &str) -> Arc<[u8]> {
    Arc::from(s.as_bytes())
}

fn stores(dir: &tempfile::TempDir) -> Vec<Box<dyn KvStore>> {
    vec![
        Box::new(MemStore::with_history(8)),
        Box::new(FileStore::open_with(dir.path(), 4096, 8).unwrap()),
    ]
}

const POLICIES: [SyncPolicy; 2] = [SyncPolicy::Always, SyncPolicy::Periodic];

fn open_small(dir: &std::path::Path, log_capacity: u64, sync: SyncPolicy) -> FileStore {
    FileStore::open_with_options(
        dir,
        StoreOptions {
            sync,
            log_capacity,
            history: 8,
            encryption: None,
        },
    )
    .unwrap()
}

#[test]
fn revisions_count_writes() {
    let dir = tempfile::tempdir().unwrap();
    for s in stores(&dir) {
        assert_eq!(s.revision(), 0);
        let a = s.put("/a", val("1"), Precondition::Absent).unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));
        let a2 = s.put("/a", val("2"), Precondition::ModRevision(1)).unwrap();
        assert_eq!((a2.create_revision, a2.mod_revision, a2.version), (1, 2, 2));
        s.put("/b", val("x"), Precondition::None).unwrap();
        let (items, rev) = s.range("/");
        assert_eq!(rev, 3);
        assert_eq!(items.len(), 2);
        let gone = s.delete("/a", Precondition::None).unwrap();
        assert_eq!(&*gone.value, b"2");
        assert_eq!(s.revision(), 4);
        assert!(s.get("/a").is_none());
    }
}

#[test]
fn stale_revision_and_existing_key_conflict_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for s in stores(&dir) {
        s.put("/a", val("1"), Precondition::Absent).unwrap();
        s.put("/a", val("2"), Precondition::None).unwrap();
        let err = s
            .put("/a", val("3"), Precondition::ModRevision(1))
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Conflict { current: Some(ref kv), .. } if kv.mod_revision == 2)
        );
        assert!(matches!(
            s.put("/a", val("3"), Precondition::Absent),
            Err(WriteError::Conflict { .. })
        ));
        assert!(matches!(
            s.delete("/a", Precondition::ModRevision(1)),
            Err(WriteError::Conflict { .. })
        ));
        assert!(matches!(
            s.delete("/nope", Precondition::None),
            Err(WriteError::NotFound { .. })
        ));
        assert!(matches!(
            s.put("/nope", val("1"), Precondition::ModRevision(1)),
            Err(WriteError::Conflict { current: None, .. })
        ));
        assert_eq!(s.revision(), 2);
        assert_eq!(&*s.get("/a").unwrap().value, b"2");
    }
}

#[test]
fn range_is_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    for s in stores(&dir) {
        for k in ["/pods/a/x", "/pods/b/y", "/podsx/z", "/services/a/s"] {
            s.put(k, val("v"), Precondition::None).unwrap();
        }
        let keys: Vec<String> = s.range("/pods/").0.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["/pods/a/x", "/pods/b/y"]);
    }
}

#[test]
fn watch_replays_history_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    for s in stores(&dir) {
        s.put("/pods/a", val("1"), Precondition::None).unwrap();
        s.put("/svc/a", val("1"), Precondition::None).unwrap();
        s.put("/pods/b", val("1"), Precondition::None).unwrap();
        let mut w = s.watch("/pods/", 1).unwrap();
        s.delete("/pods/a", Precondition::None).unwrap();
        s.put("/svc/b", val("1"), Precondition::None).unwrap();
        let e = w.try_recv().unwrap();
        assert_eq!(
            (e.kind.clone(), e.kv.key.as_str(), e.revision()),
            (EventKind::Put, "/pods/b", 3)
        );
        let e = w.try_recv().unwrap();
        assert_eq!(
            (e.kind.clone(), e.kv.key.as_str(), e.revision()),
            (EventKind::Delete, "/pods/a", 4)
        );
        assert_eq!(&*e.prev.unwrap().value, b"1");
        assert!(
            w.try_recv().is_err(),
            "events of other prefixes are not delivered"
        );
    }
}

#[test]
fn watch_from_before_the_history_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    for s in stores(&dir) {
        for i in 0..20 {
            s.put("/k", val(&i.to_string()), Precondition::None)
                .unwrap();
        }
        // 8 events kept: 13..=20, so a watch can start after 12.
        assert_eq!(s.oldest_watchable(), 12);
        assert_eq!(
            s.watch("/", 5).unwrap_err(),
            WatchError::Compacted {
                requested: 5,
                oldest: 12
            }
        );
        let mut w = s.watch("/", 12).unwrap();
        assert_eq!(w.try_recv().unwrap().revision(), 13);
    }
}

#[test]
fn a_slow_watcher_is_cut_off_not_the_writer() {
    let s = MemStore::new();
    let mut w = s.watch("/", 0).unwrap();
    for i in 0..engine::WATCH_QUEUE + 10 {
        s.put(&format!("/k{i}"), val("v"), Precondition::None)
            .unwrap();
    }
    let mut seen = 0;
    while let Ok(e) = w.try_recv() {
        seen += 1;
        assert_eq!(e.revision(), seen);
    }
    assert_eq!(seen as usize, engine::WATCH_QUEUE);
    // The stream ended: the watcher knows to resume from revision `seen`.
    assert!(matches!(
        w.try_recv(),
        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
    ));
    let mut resumed = s.watch("/", seen).unwrap();
    assert_eq!(resumed.try_recv().unwrap().revision(), seen + 1);
}

#[test]
fn file_store_survives_reopen_and_compaction() {
    for policy in POLICIES {
        survives_reopen_and_compaction(policy);
    }
}

/// Writes `value {i}` to `/k{i % keys}` for each `i` below `writes`.
fn put_values(s: &FileStore, writes: usize, keys: usize) {
    for i in 0..writes {
        s.put(
            &format!("/k{}", i % keys),
            val(&format!("value {i}")),
            Precondition::None,
        )
        .unwrap();
    }
}

fn survives_reopen_and_compaction(policy: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_small(dir.path(), 4096, policy);
        assert_eq!(s.sync_policy(), policy);
        // Far more than a 4 KiB log holds: several compactions.
        put_values(&s, 300, 50);
        s.delete("/k7", Precondition::None).unwrap();
        // A value larger than the whole log: the log grows past its end.
        s.put("/big", Arc::from(vec![7u8; 10_000]), Precondition::None)
            .unwrap();
    }
    let s = open_small(dir.path(), 4096, policy);
    assert_eq!(s.revision(), 302);
    assert!(s.get("/k7").is_none());
    let k3 = s.get("/k3").unwrap();
    assert_eq!(&*k3.value, b"value 253");
    assert_eq!(
        (k3.create_revision, k3.mod_revision, k3.version),
        (4, 254, 6)
    );
    assert_eq!(s.get("/big").unwrap().value.len(), 10_000);
    assert_eq!(s.range("/").0.len(), 50);
    // Revisions go on from where they were; the history starts empty.
    assert_eq!(s.oldest_watchable(), 302);
    assert_eq!(
        s.put("/k3", val("x"), Precondition::ModRevision(254))
            .unwrap()
            .mod_revision,
        303
    );
}

/// The generation in the header of `file` under the store directory, if
/// it has one (a spare log is all zeros).
fn generation_of(dir: &std::path::Path, file: &str) -> Option<u64> {
    let bytes = fs::read(dir.join("store").join(file)).ok()?;
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split(' ').nth(2)?.parse().ok()
}

#[test]
fn writes_during_a_compaction_survive_a_crash_at_each_step() {
    use super::compactor::StopAt;
    for policy in POLICIES {
        for stop in [StopAt::BeforeSnapshot, StopAt::AfterSnapshot] {
            let dir = tempfile::tempdir().unwrap();
            let s = open_small(dir.path(), 4096, policy);
            let first = generation_of(dir.path(), "snapshot").unwrap();
            s.stop_compactions_at(stop);
            // A 4 KiB log holds about 100 of these; the compaction starts
            // and stops, and the writes after it go on without waiting.
            put_values(&s, 400, 60);
            s.delete("/k5", Precondition::None).unwrap();
            drop(s);
            // The files as a crash at that step leaves them.
            let (snapshot, log, next) = (
                generation_of(dir.path(), "snapshot").unwrap(),
                generation_of(dir.path(), "log").unwrap(),
                generation_of(dir.path(), "log.next").unwrap(),
            );
            let expected = match stop {
                StopAt::BeforeSnapshot => (first, first, first + 1),
                StopAt::AfterSnapshot => (first + 1, first, first + 1),
            };
            assert_eq!((snapshot, log, next), expected, "{policy} {stop:?}");

            let s = open_small(dir.path(), 4096, policy);
            assert_eq!(s.revision(), 401, "{policy} {stop:?}");
            assert!(s.get("/k5").is_none());
            let k7 = s.get("/k7").unwrap();
            assert_eq!(&*k7.value, b"value 367", "{policy} {stop:?}");
            assert_eq!((k7.create_revision, k7.mod_revision), (8, 368));
            assert_eq!(s.range("/").0.len(), 59);
            // Opening compacted it all into a newer generation.
            assert!(generation_of(dir.path(), "snapshot").unwrap() > next);
        }
    }
}

#[test]
fn a_log_of_the_next_generation_without_its_own_before_it_is_corrupt() {
    use super::compactor::StopAt;
    let dir = tempfile::tempdir().unwrap();
    let s = open_small(dir.path(), 4096, SyncPolicy::Always);
    s.stop_compactions_at(StopAt::BeforeSnapshot);
    for i in 0..200 {
        s.put("/k", val(&format!("value {i}")), Precondition::None)
            .unwrap();
    }
    drop(s);
    // The log the snapshot needs is gone: the next one cannot follow.
    fs::remove_file(dir.path().join("store/log")).unwrap();
    let err = FileStore::open_with(dir.path(), 4096, 8)
        .err()
        .expect("a gap between the snapshot and log.next was accepted");
    assert!(err.to_string().contains("store/log.next"), "{err}");
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _s = FileStore::open(dir.path()).unwrap();
    assert!(matches!(
        FileStore::open(dir.path()),
        Err(OpenError::Locked { .. })
    ));
}

/// Writes `n` keys with a fresh store, returning the log's bytes and where
/// each record starts.
fn written_log(dir: &std::path::Path, n: usize, sync: SyncPolicy) -> (Vec<u8>, Vec<usize>) {
    let s = open_small(dir, 1 << 20, sync);
    let log = dir.join("store/log");
    let header = fs::read(&log)
        .unwrap()
        .iter()
        .position(|&b| b == b'\n')
        .unwrap()
        + 1;
    let mut starts = vec![header];
    for i in 0..n {
        s.put(&format!("/k{i}"), val(&format!("v{i}")), Precondition::None)
            .unwrap();
        let bytes = fs::read(&log).unwrap();
        let end = bytes.len() - bytes.iter().rev().position(|&b| b != 0).unwrap();
        starts.push(end);
    }
    drop(s);
    (fs::read(&log).unwrap(), starts)
}

#[test]
fn a_write_cut_short_is_dropped_at_every_length() {
    for policy in POLICIES {
        let dir = tempfile::tempdir().unwrap();
        let (log, starts) = written_log(dir.path(), 3, policy);
        let (last, end) = (starts[2], starts[3]);
        for cut in last..end {
            let mut damaged = log.clone();
            damaged[cut..end].fill(0);
            fs::write(dir.path().join("store/log"), &damaged).unwrap();
            let s = open_small(dir.path(), 1 << 20, policy);
            assert_eq!(s.revision(), 2, "{policy}: cut at {cut}");
            assert!(s.get("/k2").is_none());
            drop(s);
            // Put the full log back for the next cut (the open compacted it away).
            restore(dir.path(), &log);
        }
    }
}

fn restore(dir: &std::path::Path, log: &[u8]) {
    // The snapshot of generation 1 (empty) goes with this log.
    let snapshot = format!(
        "podnet-store-snapshot 1 1 0 0 {:08x}\n",
        crc32fast::hash(&[])
    );
    fs::write(dir.join("store/snapshot"), snapshot).unwrap();
    fs::write(dir.join("store/log"), log).unwrap();
}

#[test]
fn damage_before_acknowledged_writes_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (log, starts) = written_log(dir.path(), 3, SyncPolicy::Always);
    restore(dir.path(), &log);
    let mut damaged = log.clone();
    damaged[starts[1] + 20] ^= 0xff;
    fs::write(dir.path().join("store/log"), &damaged).unwrap();
    // Whatever the policy of the reader: the log says it was synced per write.
    let err = FileStore::open_with_options(
        dir.path(),
        StoreOptions {
            log_capacity: 1 << 20,
            ..StoreOptions::default()
        },
    )
    .err()
    .expect("corrupt");
    let text = err.to_string();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{text}");
    assert!(text.contains("store/log"), "{text}");
    assert_eq!(
        fs::read(dir.path().join("store/log")).unwrap(),
        damaged,
        "left untouched"
    );
}

/// A power cut under the periodic policy can leave the unsynced tail of the
/// log with any of its pages written back: the store reopens at the last
/// intact revision before the damage, never with a gap.
#[test]
fn damage_in_a_periodic_log_is_where_the_power_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (log, starts) = written_log(dir.path(), 4, SyncPolicy::Periodic);
    let header_end = starts[0];
    assert!(
        log[..header_end].ends_with(b" periodic\n"),
        "the header says how the log was written"
    );
    // The second record's page never reached the disk; later ones did.
    let mut lost = log.clone();
    lost[starts[1]..starts[2]].fill(0);
    // Or reached it half written.
    let mut torn = log.clone();
    torn[starts[1] + 20] ^= 0xff;
    for (what, damaged) in [("lost", lost), ("torn", torn)] {
        restore(dir.path(), &damaged);
        // Whatever the policy of the reader: the log says how it was written.
        for reader in POLICIES {
            let s = open_small(dir.path(), 1 << 20, reader);
            assert_eq!(s.revision(), 1, "{what}, read under {reader}");
            assert!(s.get("/k0").is_some() && s.get("/k1").is_none());
            assert!(s.get("/k3").is_none(), "nothing after the gap");
            // Writes go on from the revision it reopened at.
            let kv = s.put("/k1", val("again"), Precondition::Absent).unwrap();
            assert_eq!(kv.mod_revision, 2);
            drop(s);
            restore(dir.path(), &damaged);
        }
    }
}

#[test]
fn a_store_syncs_on_request_and_when_dropped() {
    for policy in POLICIES {
        let dir = tempfile::tempdir().unwrap();
        let s = open_small(dir.path(), 1 << 20, policy);
        s.put("/a", val("1"), Precondition::None).unwrap();
        s.sync().unwrap();
        s.put("/b", val("2"), Precondition::None).unwrap();
        drop(s);
        let s = open_small(dir.path(), 1 << 20, policy);
        assert_eq!(s.range("/").0.len(), 2, "{policy}");
    }
}

#[test]
fn a_lost_or_damaged_snapshot_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStore::open_with(dir.path(), 1 << 20, 8).unwrap();
        s.put("/a", val("1"), Precondition::None).unwrap();
    }
    {
        // Reopening compacted /a into the snapshot; write one more to the log.
        let s = FileStore::open_with(dir.path(), 1 << 20, 8).unwrap();
        s.put("/b", val("1"), Precondition::None).unwrap();
    }
    let snap = dir.path().join("store/snapshot");
    let good = fs::read(&snap).unwrap();
    let mut garbled = good.clone();
    let last = garbled.len() - 1;
    garbled[last] ^= 1;
    for (what, bytes) in [
        ("garbled", Some(garbled)),
        ("truncated", Some(good[..good.len() - 3].to_vec())),
        ("missing", None),
    ] {
        match &bytes {
            Some(b) => fs::write(&snap, b).unwrap(),
            None => fs::remove_file(&snap).unwrap(),
        }
        let err = FileStore::open_with(dir.path(), 1 << 20, 8)
            .err()
            .unwrap_or_else(|| panic!("{what} snapshot accepted"));
        assert!(err.to_string().contains("store/snapshot"), "{what}: {err}");
        fs::write(&snap, &good).unwrap();
    }
    let s = FileStore::open_with(dir.path(), 1 << 20, 8).unwrap();
    assert_eq!(s.range("/").0.len(), 2);
}

/// Every byte under `dir`, concatenated (what a reader of the disk sees).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.extend(fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn open_encrypted(
    dir: &std::path::Path,
    enc: Option<&Arc<encrypt::Encryption>>,
    log_capacity: u64,
) -> Result<FileStore, OpenError> {
    FileStore::open_with_options(
        dir,
        StoreOptions {
            log_capacity,
            encryption: enc.cloned(),
            ..StoreOptions::default()
        },
    )
}

#[test]
fn secrets_are_sealed_in_the_files_and_plaintext_ones_are_sealed_at_open() {
    const SECRET: &str = "/registry/core/secrets/default/db";
    const CONFIG: &str = "/registry/core/configmaps/default/cfg";
    let dir = tempfile::tempdir().unwrap();
    // Written before encryption was on: plaintext in the files.
    {
        let s = open_encrypted(dir.path(), None, 4096).unwrap();
        s.put(SECRET, val("old-s3cret-value"), Precondition::Absent)
            .unwrap();
        s.put(CONFIG, val("plain-config"), Precondition::Absent)
            .unwrap();
    }
    assert!(contains(&all_bytes(dir.path()), b"old-s3cret-value"));

    let (enc, _) = encrypt::Encryption::generate("key1");
    let enc = Arc::new(enc);
    for log_capacity in [4096, 1 << 20] {
        let s = open_encrypted(dir.path(), Some(&enc), log_capacity).unwrap();
        assert_eq!(&*s.get(SECRET).unwrap().value, b"old-s3cret-value");
        // Through the log (and, with the small log, compactions) too.
        for i in 0..40 {
            s.put(
                &format!("{SECRET}-{i}"),
                val(&format!("new-s3cret-{i:02}")),
                Precondition::None,
            )
            .unwrap();
        }
        let (listed, _) = s.range("/registry/core/secrets/");
        assert_eq!(listed.len(), 41);
        assert_eq!(
            &*s.get(&format!("{SECRET}-7")).unwrap().value,
            b"new-s3cret-07"
        );
        drop(s);
        let disk = all_bytes(dir.path());
        assert!(
            !contains(&disk, b"s3cret"),
            "a Secret value is in clear in the store files"
        );
        assert!(contains(&disk, b"k8s:enc:xchacha20poly1305:v1:key1:"));
        assert!(contains(&disk, b"plain-config"), "only Secrets are sealed");
    }

    // Without the key, or with another one: a clear error, files untouched.
    let before = all_bytes(dir.path());
    let e = open_encrypted(dir.path(), None, 4096).err().unwrap();
    assert!(matches!(e, OpenError::Encryption { .. }), "{e}");
    assert!(e.to_string().contains("no encryption key"), "{e}");
    let (other, _) = encrypt::Encryption::generate("key1");
    let e = open_encrypted(dir.path(), Some(&Arc::new(other)), 4096)
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not decrypt"), "{e}");
    // (The lock file is the only one opened; its content is empty.)
    assert_eq!(
        all_bytes(dir.path()),
        before,
        "a refused open changed the files"
    );

    // With the right key everything is still there.
    let s = open_encrypted(dir.path(), Some(&enc), 4096).unwrap();
    assert_eq!(
        &*s.get(&format!("{SECRET}-39")).unwrap().value,
        b"new-s3cret-39"
    );
    assert_eq!(&*s.get(CONFIG).unwrap().value, b"plain-config");
}
