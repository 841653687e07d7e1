//! When each byte of a container's log was first seen: the times behind
//! `kubectl logs --timestamps`, `--since` and `--since-time`.
//!
//! A container writes its log file itself (the file is its stdout and
//! stderr), so nothing of the daemon stands between a pod and its output:
//! a daemon that stops or crashes never breaks or blocks a pod's writes,
//! and a pod costs no process and no thread. The daemon learns of writes
//! through one inotify watch on the log directory (`IN_MODIFY` of any file
//! in it). A thread blocked on it wakes only when a log grows and appends a
//! record (length, time) to that log's time index, `times/NAME` beside the
//! logs: the bytes before `length` that the previous record did not cover
//! were first seen at `time`. A line's time is the time of its first byte.
//!
//! * Size: after a batch of events the thread waits [`RECORD_INTERVAL`]
//!   before reading the next, so a log that keeps growing gets at most one
//!   16-byte record per interval, and its lines are timed at most that
//!   late; output after a quiet spell is timed on the wake-up.
//! * Idle cost: none. No timer runs and no file is polled; an idle log
//!   makes no event.
//! * A restart: bytes written while the daemon was down are timed when it
//!   starts and finds them ([`LogClock::start`] looks at every log).
//! * Readers ([`LogClock::observe`]) record growth the thread has not
//!   recorded yet before they read, so every byte they show has a time,
//!   and later reads show the same time.
//! * The indexes live in a directory of their own so that writing them
//!   does not wake the watch on the logs.
//!
//! An index file is a 16-byte header ([`MAGIC`]), then 16-byte records: the
//! log's length (u64) and the time in nanoseconds since the Unix epoch
//! (i64), both little-endian. A damaged index is read for what it still
//! says: a record cut short at the end is dropped, a bad header reads as no
//! index (the next record starts a new one, timing the log's bytes then),
//! and a log shorter than its index says (replaced) starts a new index.
//! Readers skip records whose lengths do not increase and raise times that
//! go back ([`crate::api::kube::logs::ByteTimes`]).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use parking_lot::Mutex;

/// The first bytes of an index file (and its format's version).
pub const MAGIC: &[u8; 16] = b"podnet logtimes1";
/// The length of the header and of a record.
const RECORD: u64 = 16;
/// The least time between two records of a log that keeps growing.
pub const RECORD_INTERVAL: Duration = Duration::from_millis(50);
/// The directory of the indexes, under the log directory.
const TIMES_DIR: &str = "times";

const STOP: mio::Token = mio::Token(0);
const EVENTS: mio::Token = mio::Token(1);

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The time indexes of the logs in one directory, kept up to date while
/// [`LogClock::start`]'s thread runs.
pub struct LogClock {
    shared: Arc<Shared>,
    stop: Option<Arc<mio::Waker>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// The logs.
    dir: PathBuf,
    /// Their indexes.
    times: PathBuf,
    /// The length last recorded, by log file name. Held while an index is
    /// written or read, and while a log and its index are renamed or
    /// removed together.
    recorded: Mutex<HashMap<String, u64>>,
}

impl LogClock {
    /// The clock of the logs in `dir`, without a watch: times are recorded
    /// only when asked for ([`LogClock::observe`]).
    pub fn new(dir: &Path) -> LogClock {
        let times = dir.join(TIMES_DIR);
        if let Err(e) = std::fs::create_dir_all(&times) {
            // Lines are still shown, timed when read.
            tracing::warn!(dir = %times.display(), "cannot make the directory of the log times: {e}");
        }
        LogClock {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                times,
                recorded: Mutex::new(HashMap::new()),
            }),
            stop: None,
            thread: None,
        }
    }

    /// The clock of the logs in `dir`, watching them: bytes already there
    /// and not yet in an index (written while no daemon ran) are timed now,
    /// and every later write as it is seen. Without inotify (a limit
    /// reached), times are recorded only when asked for, which is logged.
    pub fn start(dir: &Path) -> LogClock {
        let mut clock = LogClock::new(dir);
        match watch(&clock.shared) {
            Ok((stop, thread)) => {
                clock.stop = Some(stop);
                clock.thread = Some(thread);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "cannot watch the container logs ({e}): a line is timed when it is first read"
            ),
        }
        // After the watch is in place, so no write falls between.
        for name in clock.shared.log_names() {
            clock.shared.observe(&name, now_nanos());
        }
        clock
    }

    /// Records any growth of log `name` not yet recorded, timed now.
    /// Returns its length, every byte of which then has a time (`None`: no
    /// such log).
    pub fn observe(&self, name: &str) -> Option<u64> {
        self.shared.observe(name, now_nanos())
    }

    /// The records of log `name` covering its bytes from `from` to `to`
    /// (the first record whose length is past `from`, through the first
    /// one at or past `to`), as stored: see [`crate::api::kube::logs::ByteTimes`].
    pub fn records(&self, name: &str, from: u64, to: u64) -> Vec<(u64, i64)> {
        let _held = self.shared.recorded.lock();
        Index::open(&self.shared.index_path(name)).map_or_else(Vec::new, |i| i.records(from, to))
    }

    /// The offset in log `name` before which every byte was first seen
    /// before `since` (nanoseconds since the Unix epoch): where a reader
    /// of what came at or after `since` starts.
    pub fn offset_since(&self, name: &str, since: i64) -> u64 {
        let _held = self.shared.recorded.lock();
        Index::open(&self.shared.index_path(name)).map_or(0, |i| i.offset_since(since))
    }

    /// Renames log `from` to `to` (replacing it), with its index.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut recorded = self.shared.recorded.lock();
        recorded.remove(from);
        recorded.remove(to);
        std::fs::rename(self.shared.dir.join(from), self.shared.dir.join(to))?;
        if std::fs::rename(self.shared.index_path(from), self.shared.index_path(to)).is_err() {
            // `to`'s old index must not describe the bytes renamed there.
            let _ = std::fs::remove_file(self.shared.index_path(to));
        }
        Ok(())
    }

    /// Removes log `name` and its index.
    pub fn remove(&self, name: &str) {
        let mut recorded = self.shared.recorded.lock();
        recorded.remove(name);
        let _ = std::fs::remove_file(self.shared.dir.join(name));
        let _ = std::fs::remove_file(self.shared.index_path(name));
    }

    #[cfg(test)]
    fn observe_at(&self, name: &str, now: i64) -> Option<u64> {
        self.shared.observe(name, now)
    }
}

impl Drop for LogClock {
    fn drop(&mut self) {
        // The waker lives until the thread has seen it: closing it would
        // take its event off the poll.
        if let Some(stop) = &self.stop {
            let _ = stop.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `name` is a container log (and not an index or a stray file).
fn is_log(name: &str) -> bool {
    name.ends_with(".log") && !name.contains('/')
}

impl Shared {
    fn index_path(&self, name: &str) -> PathBuf {
        self.times.join(name)
    }

    fn log_names(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_log(n))
            .collect()
    }

    fn observe(&self, name: &str, now: i64) -> Option<u64> {
        let mut recorded = self.recorded.lock();
        let len = match std::fs::metadata(self.dir.join(name)) {
            Ok(m) if m.is_file() => m.len(),
            _ => {
                recorded.remove(name);
                return None;
            }
        };
        let path = self.index_path(name);
        let known = match recorded.get(name) {
            Some(&l) => Some(l),
            None => Index::last_length(&path),
        };
        let written = match known {
            Some(k) if k == len => Ok(()),
            Some(k) if k < len => append(&path, len, now),
            // No usable index, or the log is shorter than its index says
            // (replaced): a new index.
            _ => start_index(&path, len, now),
        };
        match written {
            Ok(()) => {
                recorded.insert(name.to_string(), len);
            }
            Err(e) => {
                // Read again from the file next time. The bytes are still
                // shown; past the index they are timed when read.
                recorded.remove(name);
                tracing::debug!(log = name, "cannot write the log's time index: {e}");
            }
        }
        Some(len)
    }
}

fn record_bytes(len: u64, time: i64) -> [u8; RECORD as usize] {
    let mut r = [0u8; RECORD as usize];
    r[..8].copy_from_slice(&len.to_le_bytes());
    r[8..].copy_from_slice(&time.to_le_bytes());
    r
}

fn append(path: &Path, len: u64, time: i64) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(&record_bytes(len, time))
}

fn start_index(path: &Path, len: u64, time: i64) -> io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    if len > 0 {
        bytes.extend_from_slice(&record_bytes(len, time));
    }
    std::fs::write(path, bytes)
}

/// An index file open for reading.
struct Index {
    file: File,
    count: u64,
}

impl Index {
    /// The index at `path`, if its header is right.
    fn open(path: &Path) -> Option<Index> {
        let file = File::open(path).ok()?;
        Index::from_file(file)
    }

    fn from_file(file: File) -> Option<Index> {
        let mut header = [0u8; RECORD as usize];
        file.read_exact_at(&mut header, 0).ok()?;
        if &header != MAGIC {
            return None;
        }
        let len = file.metadata().ok()?.len();
        Some(Index {
            file,
            count: (len - RECORD) / RECORD,
        })
    }

    /// The length the last record of the index at `path` names (0 for an
    /// index without records), after cutting off a record cut short (a
    /// crash while it was written); `None` without a usable index.
    fn last_length(path: &Path) -> Option<u64> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        let index = Index::from_file(file)?;
        let whole = RECORD * (index.count + 1);
        if index.file.metadata().ok()?.len() != whole {
            index.file.set_len(whole).ok()?;
        }
        match index.count {
            0 => Some(0),
            n => index.get(n - 1).map(|(len, _)| len),
        }
    }

    fn get(&self, i: u64) -> Option<(u64, i64)> {
        let mut r = [0u8; RECORD as usize];
        self.file.read_exact_at(&mut r, RECORD * (i + 1)).ok()?;
        let len = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
        let time = i64::from_le_bytes(r[8..].try_into().expect("8 bytes"));
        Some((len, time))
    }

    /// The first record for which `past` holds, by bisection (records
    /// that are out of order give some answer, never a panic); `count`
    /// when none does.
    fn first(&self, past: impl Fn((u64, i64)) -> bool) -> u64 {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(r) if !past(r) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    fn records(&self, from: u64, to: u64) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        let mut i = self.first(|(len, _)| len > from);
        // Read in blocks of records, not one read per record.
        let mut block = vec![0u8; 4096];
        while i < self.count {
            let n = (self.count - i).min(block.len() as u64 / RECORD);
            let bytes = &mut block[..(n * RECORD) as usize];
            if self.file.read_exact_at(bytes, RECORD * (i + 1)).is_err() {
                break;
            }
            for r in bytes.chunks_exact(RECORD as usize) {
                let len = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
                let time = i64::from_le_bytes(r[8..].try_into().expect("8 bytes"));
                out.push((len, time));
                if len >= to {
                    return out;
                }
            }
            i += n;
        }
        out
    }

    fn offset_since(&self, since: i64) -> u64 {
        match self.first(|(_, time)| time >= since) {
            0 => 0,
            i => self.get(i - 1).map_or(0, |(len, _)| len),
        }
    }
}

/// Starts the thread that records the growth of the logs in `shared.dir`
/// as inotify reports it.
fn watch(shared: &Arc<Shared>) -> io::Result<(Arc<mio::Waker>, JoinHandle<()>)> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(&shared.dir, AddWatchFlags::IN_MODIFY)?;
    let mut poll = mio::Poll::new()?;
    let stop = Arc::new(mio::Waker::new(poll.registry(), STOP)?);
    poll.registry().register(
        &mut mio::unix::SourceFd(&inotify.as_fd().as_raw_fd()),
        EVENTS,
        mio::Interest::READABLE,
    )?;
    let shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("podnet-logtimes".into())
        .spawn(move || {
            let mut events = mio::Events::with_capacity(4);
            loop {
                if let Err(e) = poll.poll(&mut events, None) {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    tracing::error!("cannot watch the container logs: {e}");
                    return;
                }
                if events.iter().any(|e| e.token() == STOP) {
                    return;
                }
                for name in grown(&inotify, &shared) {
                    shared.observe(&name, now_nanos());
                }
                // Writes meanwhile are read after the interval, together:
                // one record per interval for a log that keeps growing.
                std::thread::sleep(RECORD_INTERVAL);
            }
        })?;
    Ok((stop, thread))
}

/// The logs inotify reports written to, read until its queue is empty (the
/// poll is edge-triggered); every log when the queue overflowed.
fn grown(inotify: &Inotify, shared: &Shared) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut overflow = false;
    loop {
        match inotify.read_events() {
            Ok(events) => {
                for e in events {
                    overflow |= e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
                    if let Some(name) = e.name.and_then(|n| n.into_string().ok()) {
                        if is_log(&name) {
                            names.insert(name);
                        }
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => break,
            Err(e) => {
                tracing::warn!("cannot read the container logs' events: {e}");
                break;
            }
        }
    }
    if overflow {
        names.extend(shared.log_names());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, name: &str, text: &str) {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn growth_is_recorded_once_with_the_time_it_was_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = LogClock::new(tmp.path());
        assert_eq!(clock.observe_at("a.log", 1), None, "no log yet");
        write_log(tmp.path(), "a.log", "one\n");
        assert_eq!(clock.observe_at("a.log", 100), Some(4));
        assert_eq!(clock.observe_at("a.log", 150), Some(4), "nothing new");
        write_log(tmp.path(), "a.log", "two\nthree\n");
        assert_eq!(clock.observe_at("a.log", 200), Some(14));
        assert_eq!(clock.records("a.log", 0, 14), vec![(4, 100), (14, 200)]);
        assert_eq!(clock.records("a.log", 4, 14), vec![(14, 200)]);
        assert_eq!(clock.records("a.log", 0, 2), vec![(4, 100)]);
        assert_eq!(clock.offset_since("a.log", 101), 4);
        assert_eq!(clock.offset_since("a.log", 100), 0);
        assert_eq!(clock.offset_since("a.log", 201), 14);
        // A new clock (a restarted daemon) goes on from the file.
        drop(clock);
        let clock = LogClock::new(tmp.path());
        assert_eq!(clock.observe_at("a.log", 300), Some(14));
        write_log(tmp.path(), "a.log", "four\n");
        clock.observe_at("a.log", 400);
        assert_eq!(
            clock.records("a.log", 0, u64::MAX),
            vec![(4, 100), (14, 200), (19, 400)]
        );
    }

    #[test]
    fn a_restart_times_what_was_written_meanwhile_when_it_finds_it() {
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), "a.log", "before any daemon\n");
        let before = now_nanos();
        let clock = LogClock::start(tmp.path());
        let records = clock.records("a.log", 0, u64::MAX);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, 18);
        assert!(records[0].1 >= before);
    }

    #[test]
    fn the_watch_records_writes_without_being_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = LogClock::start(tmp.path());
        write_log(tmp.path(), "w.log", "seen\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while clock.records("w.log", 0, u64::MAX).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never recorded");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(clock.records("w.log", 0, u64::MAX)[0].0, 5);
    }

    #[test]
    fn damaged_indexes_read_for_what_they_still_say() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = LogClock::new(tmp.path());
        let index = tmp.path().join(TIMES_DIR).join("a.log");
        write_log(tmp.path(), "a.log", "one\ntwo\n");
        clock.observe_at("a.log", 10);
        // A record cut short by a crash: dropped, and the next one aligned.
        drop(clock);
        let mut f = OpenOptions::new().append(true).open(&index).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let clock = LogClock::new(tmp.path());
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![(8, 10)]);
        write_log(tmp.path(), "a.log", "x\n");
        clock.observe_at("a.log", 20);
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![(8, 10), (10, 20)]);
        // A bad header: no index until the next record starts a new one,
        // timing every byte then.
        drop(clock);
        std::fs::write(&index, b"garbage, not an index at all").unwrap();
        let clock = LogClock::new(tmp.path());
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![]);
        assert_eq!(clock.offset_since("a.log", 5), 0);
        clock.observe_at("a.log", 30);
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![(10, 30)]);
        // An index longer than its log (the log replaced): a new one.
        std::fs::write(tmp.path().join("a.log"), "new\n").unwrap();
        drop(clock);
        let clock = LogClock::new(tmp.path());
        clock.observe_at("a.log", 40);
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![(4, 40)]);
        // Only the header, or nothing at all.
        std::fs::write(&index, MAGIC).unwrap();
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![]);
        std::fs::write(&index, b"").unwrap();
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![]);
    }

    #[test]
    fn any_index_bytes_give_records_or_none_never_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = LogClock::new(tmp.path());
        let index = tmp.path().join(TIMES_DIR).join("a.log");
        write_log(tmp.path(), "a.log", "some text\n");
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300 {
            let mut bytes = Vec::new();
            if round % 2 == 0 {
                bytes.extend_from_slice(MAGIC);
            }
            let n = rng.usize(0..200);
            bytes.extend((0..n).map(|_| rng.u8(..)));
            std::fs::write(&index, &bytes).unwrap();
            let _ = clock.records("a.log", rng.u64(0..20), rng.u64(0..40));
            let _ = clock.offset_since("a.log", rng.i64(..));
            // A restarted daemon takes the index over or starts a new one.
            let fresh = LogClock::new(tmp.path());
            assert_eq!(fresh.observe_at("a.log", 5), Some(10));
            let records = fresh.records("a.log", 0, u64::MAX);
            assert_eq!(records.last().map(|r| r.0), Some(10), "{records:?}");
        }
    }

    #[test]
    fn renaming_and_removing_take_the_index_along() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = LogClock::new(tmp.path());
        write_log(tmp.path(), "a.log", "first instance\n");
        clock.observe_at("a.log", 10);
        // An old `previous` with its own index, replaced.
        write_log(tmp.path(), "a.previous.log", "older\n");
        clock.observe_at("a.previous.log", 5);
        clock.rename("a.log", "a.previous.log").unwrap();
        assert_eq!(clock.records("a.previous.log", 0, u64::MAX), vec![(15, 10)]);
        write_log(tmp.path(), "a.log", "2nd\n");
        clock.observe_at("a.log", 20);
        assert_eq!(clock.records("a.log", 0, u64::MAX), vec![(4, 20)]);
        // A log without an index renamed over one with: the old index goes.
        write_log(tmp.path(), "b.log", "b\n");
        clock.rename("b.log", "a.previous.log").unwrap();
        assert_eq!(clock.records("a.previous.log", 0, u64::MAX), vec![]);
        clock.remove("a.log");
        assert!(!tmp.path().join("a.log").exists());
        assert!(!tmp.path().join(TIMES_DIR).join("a.log").exists());
        assert_eq!(clock.observe_at("a.log", 30), None);
    }
}
