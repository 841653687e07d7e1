//! `GET .../pods/NAME/log` (`kubectl logs [-f] [-p] [-c C] [--tail N]
//! [--since D | --since-time T] [--timestamps] [--limit-bytes N]`): a
//! container's output, whole, from its last lines or from a time on, and
//! followed while the pod exists.
//!
//! A line's time is when the node first saw its first byte ([`LogSource`]
//! keeps those times; on podnetd, `daemon::log_clock`). The options
//! combine as the kubelet combines them: `tailLines` takes the last lines
//! first, lines timed before the since bound (`sinceSeconds` before now,
//! or `sinceTime`) are then left out, `timestamps` starts each line with
//! its time (RFC 3339 with nanoseconds, UTC) and a space, and `limitBytes`
//! counts those prefixes and ends a followed stream too.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use super::watch::ChannelBody;
use super::{failure, json_response, status, Body, Query};
use crate::control::kinds::FieldError;
use crate::control::objects::{ObjectError, Objects};

/// Where containers' output is, and when each of its bytes was first seen.
pub trait LogSource: Send + Sync {
    /// The file holding a container's output, if it has one; with
    /// `previous`, the output of the container's instance before its last
    /// restart.
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf>;

    /// Times any bytes of the log at `path` not timed yet (now) and returns
    /// its length: what a reader may show, every byte of it timed.
    /// `None` when the source keeps no times for it.
    fn observe(&self, path: &Path) -> Option<u64>;

    /// When the bytes of the log at `path` from offset `from` to `to` were
    /// first seen.
    fn times(&self, path: &Path, from: u64, to: u64) -> ByteTimes;

    /// The offset in the log at `path` before which every byte was first
    /// seen before `since` (nanoseconds since the Unix epoch).
    fn offset_since(&self, path: &Path, since: i64) -> u64;
}

/// When the bytes of a log were first seen, as records (length, time):
/// the bytes before `length` that the record before did not cover were
/// first seen at `time` (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ByteTimes {
    records: Vec<(u64, i64)>,
}

impl ByteTimes {
    /// Times from records as a damaged index may hold them: records whose
    /// length does not increase are skipped, times that go back (a clock
    /// set back) are raised to the time before.
    pub fn new(records: impl IntoIterator<Item = (u64, i64)>) -> ByteTimes {
        let mut kept: Vec<(u64, i64)> = Vec::new();
        for (len, time) in records {
            match kept.last() {
                Some(&(l, _)) if len <= l => {}
                Some(&(_, t)) => kept.push((len, time.max(t))),
                None => kept.push((len, time)),
            }
        }
        ByteTimes { records: kept }
    }

    /// When the byte at `offset` was first seen, if a record covers it.
    pub fn at(&self, offset: u64) -> Option<i64> {
        let i = self.records.partition_point(|&(len, _)| len <= offset);
        self.records.get(i).map(|&(_, t)| t)
    }
}

/// How often a followed log is looked at for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most read at once, as a guard.
const MAX_READ: u64 = 16 << 20;

/// Nanoseconds since the Unix epoch, now.
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `nanos` since the Unix epoch as the kubelet prefixes a line with it
/// (RFC 3339, nine fractional digits, UTC): `2026-12-04T12:00:00.123456789Z`.
pub fn rfc3339_nano(nanos: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .unwrap_or_default()
        .strftime("%Y-%m-%dT%H:%M:%S.%NZ")
        .to_string()
}

/// The last `n` lines of `text`.
fn tail(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    match body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
    {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// What a log request asks for.
#[derive(Debug, Default, PartialEq)]
struct LogOptions {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail: Option<usize>,
    limit: Option<u64>,
    /// Lines first seen before this (nanoseconds since the Unix epoch) are
    /// left out.
    since: Option<i64>,
}

impl LogOptions {
    /// The options of `query` for pod `name`, or the API server's answer
    /// to bad ones ([`options_refused`]): 400 for a value that does not
    /// parse, 422 with the invalid fields (`PodLogOptions` validation) for
    /// one out of range.
    fn parse(query: &Query, name: &str, now: i64) -> Result<LogOptions, ObjectError> {
        let int = |key: &str| -> Result<Option<i64>, ObjectError> {
            query
                .get(key)
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        ObjectError::BadRequest(format!("{key}: {v:?} is not an integer"))
                    })
                })
                .transpose()
        };
        let (tail, limit, since_seconds) =
            (int("tailLines")?, int("limitBytes")?, int("sinceSeconds")?);
        let since_time = query
            .get("sinceTime")
            .map(|v| {
                v.parse::<k8s_openapi::jiff::Timestamp>().map_err(|e| {
                    ObjectError::BadRequest(format!(
                        "sinceTime: {v:?} is not an RFC 3339 time: {e}"
                    ))
                })
            })
            .transpose()?;
        let mut causes = Vec::new();
        if let Some(t) = tail.filter(|t| *t < 0) {
            causes.push(FieldError::invalid(
                "tailLines",
                t,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = limit.filter(|l| *l < 1) {
            causes.push(FieldError::invalid(
                "limitBytes",
                l,
                "must be greater than 0",
            ));
        }
        match (since_seconds, since_time) {
            (Some(_), Some(_)) => causes.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => causes.push(FieldError::invalid(
                "sinceSeconds",
                s,
                "must be greater than 0",
            )),
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ObjectError::Invalid {
                kind: "PodLogOptions".into(),
                name: name.into(),
                causes,
            });
        }
        let since = match (since_seconds, since_time) {
            (Some(s), _) => Some(now.saturating_sub(s.saturating_mul(1_000_000_000))),
            (None, Some(t)) => Some(i64::try_from(t.as_nanosecond()).unwrap_or(i64::MIN)),
            (None, None) => None,
        };
        Ok(LogOptions {
            container: query.get("container").map(str::to_string),
            follow: query.flag("follow"),
            previous: query.flag("previous"),
            timestamps: query.flag("timestamps"),
            tail: tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
            limit: limit.map(|l| l as u64),
            since,
        })
    }
}

/// The answer to options [`LogOptions::parse`] refused.
fn options_refused(e: &ObjectError) -> Response<Body> {
    json_response(e.code(), &status::from_error(e, "", "PodLogOptions"))
}

/// Turns a log's bytes, given in order and in pieces of any size, into
/// what the client sees: lines first seen before the since bound left out,
/// each line's time in front of it, at most the byte limit.
struct LineFilter {
    since: Option<i64>,
    timestamps: bool,
    remaining: u64,
    /// The next byte starts a line.
    at_line_start: bool,
    /// The line being passed on is shown.
    showing: bool,
}

impl LineFilter {
    fn new(opts: &LogOptions) -> LineFilter {
        LineFilter {
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit.unwrap_or(u64::MAX),
            at_line_start: true,
            showing: true,
        }
    }

    /// The next bytes continue a line already left out.
    fn skip_rest_of_line(&mut self) {
        self.at_line_start = false;
        self.showing = false;
    }

    /// The byte limit is reached: nothing more is shown.
    fn exhausted(&self) -> bool {
        self.remaining == 0
    }

    /// Appends to `out` what the client sees of `text`, the log's bytes
    /// from `offset`; a byte `times` does not cover is timed `now`.
    fn push(&mut self, text: &[u8], offset: u64, times: &ByteTimes, now: i64, out: &mut Vec<u8>) {
        let mut i = 0;
        while i < text.len() && !self.exhausted() {
            if self.at_line_start {
                let time = times.at(offset + i as u64).unwrap_or(now);
                self.showing = self.since.is_none_or(|s| time >= s);
                if self.showing && self.timestamps {
                    let prefix = format!("{} ", rfc3339_nano(time));
                    self.emit(prefix.as_bytes(), out);
                }
            }
            let end = memchr::memchr(b'\n', &text[i..]).map_or(text.len(), |p| i + p + 1);
            if self.showing {
                self.emit(&text[i..end], out);
            }
            self.at_line_start = text[end - 1] == b'\n';
            i = end;
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let n = bytes
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        out.extend_from_slice(&bytes[..n]);
        self.remaining -= n as u64;
    }
}

/// The log's bytes from `from` up to `to` (fewer if it is shorter).
fn read_range(file: &File, from: u64, to: u64) -> Vec<u8> {
    let mut text = vec![0u8; to.saturating_sub(from) as usize];
    let mut got = 0;
    while got < text.len() {
        match file.read_at(&mut text[got..], from + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    text.truncate(got);
    text
}

/// The log's bytes from the first line that starts at or after `start`
/// up to `end`, and the offset of the first of them; `None` as the text
/// when no line starts there (the bytes continue a line begun before).
fn read_lines(file: &File, start: u64, end: u64) -> (Option<Vec<u8>>, u64) {
    if start == 0 {
        return (Some(read_range(file, 0, end)), 0);
    }
    // The byte before `start` says whether a line starts there.
    let mut text = read_range(file, start - 1, end);
    match memchr::memchr(b'\n', &text) {
        Some(p) => (Some(text.split_off(p + 1)), start + p as u64),
        None => (None, start - 1 + text.len() as u64),
    }
}

/// The container a request names, or the pod's only one; the API
/// server's message if there is none such.
pub fn pick_container(pod: &Pod, asked: Option<&str>) -> Result<String, String> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(format!("container {c} is not valid for pod {name}")),
        None if names.len() == 1 => Ok(names[0].clone()),
        None => Err(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        )),
    }
}

/// Answers a log request.
pub fn serve(
    objects: &Objects,
    source: Option<&Arc<dyn LogSource>>,
    ns: &str,
    name: &str,
    query: &Query,
) -> Response<Body> {
    let now = now_nanos();
    // Options first, as the API server checks them before it looks for the pod.
    let opts = match LogOptions::parse(query, name, now) {
        Ok(o) => o,
        Err(e) => return options_refused(&e),
    };
    let pod: Pod = match objects.get_as(Some(ns), name) {
        Ok(p) => p,
        Err(e @ ObjectError::NotFound { .. }) => return failure(404, "NotFound", &e.to_string()),
        Err(e) => return failure(e.code(), e.reason(), &e.to_string()),
    };
    let container = match pick_container(&pod, opts.container.as_deref()) {
        Ok(c) => c,
        Err(message) => return failure(400, "BadRequest", &message),
    };
    let previous = opts.previous;
    let found = source.and_then(|s| {
        let path = s.log_path(ns, name, &container, previous)?;
        Some((s.clone(), path))
    });
    let Some((source, path)) = found else {
        return failure(
            400,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{name}\" has no log on this node"),
        );
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(_) if previous => {
            return failure(
                400,
                "BadRequest",
                &format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ),
            )
        }
        Err(_) => {
            return failure(
                400,
                "BadRequest",
                &format!("container \"{container}\" in pod \"{name}\" is waiting to start"),
            )
        }
    };
    let len = source
        .observe(&path)
        .unwrap_or_else(|| file.metadata().map_or(0, |m| m.len()));
    // Only the end of the file can hold the last lines, and only what was
    // first seen from the bound on the lines since it.
    let mut start = match opts.tail {
        Some(_) => len.saturating_sub(MAX_READ),
        None => 0,
    };
    if let Some(since) = opts.since {
        start = start.max(source.offset_since(&path, since).min(len));
    }
    let end = len.min(start + MAX_READ);
    let mut filter = LineFilter::new(&opts);
    let mut first = Vec::new();
    match read_lines(&file, start, end) {
        (Some(text), at) => {
            let (shown, at) = match opts.tail {
                Some(n) => {
                    let t = tail(&text, n);
                    (t, at + (text.len() - t.len()) as u64)
                }
                None => (&text[..], at),
            };
            let times = source.times(&path, at, at + shown.len() as u64);
            filter.push(shown, at, &times, now, &mut first);
        }
        (None, _) => filter.skip_rest_of_line(),
    }
    drop(file);
    let first = Bytes::from(first);
    // A previous instance's output is complete: nothing to follow.
    let follow = opts.follow && !previous && !filter.exhausted();
    let builder = Response::builder().header("content-type", "text/plain");
    if !follow {
        return builder
            .body(Full::new(first).boxed())
            .expect("a valid response");
    }
    let (tx, rx) = mpsc::channel(16);
    let objects = objects.clone();
    let (ns, name, uid) = (ns.to_string(), name.to_string(), pod.metadata.uid.clone());
    let mut offset = end;
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
            let more = File::open(&path).ok().map(|f| {
                let len = source
                    .observe(&path)
                    .unwrap_or_else(|| f.metadata().map_or(0, |m| m.len()));
                read_range(&f, offset, len.min(offset + MAX_READ))
            });
            if let Some(text) = more.filter(|t| !t.is_empty()) {
                let times = source.times(&path, offset, offset + text.len() as u64);
                let mut shown = Vec::new();
                filter.push(&text, offset, &times, now_nanos(), &mut shown);
                offset += text.len() as u64;
                if !shown.is_empty() && tx.send(Bytes::from(shown)).await.is_err() {
                    return;
                }
                if filter.exhausted() {
                    return;
                }
                continue;
            }
            // The stream ends with the pod.
            match objects.get_as::<Pod>(Some(&ns), &name) {
                Ok(p) if p.metadata.uid == uid => {}
                _ => return,
            }
        }
    });
    builder
        .body(ChannelBody(rx).boxed())
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn query(q: &str) -> Query {
        Query::parse(Some(q))
    }

    fn options(q: &str) -> LogOptions {
        LogOptions::parse(&query(q), "box", 100 * SEC).unwrap_or_else(|_| panic!("{q}"))
    }

    /// The status code and body of a refused query.
    fn refused(q: &str) -> (u16, serde_json::Value) {
        let r = options_refused(&LogOptions::parse(&query(q), "box", 100 * SEC).expect_err(q));
        let code = r.status().as_u16();
        let body = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .expect("a full body")
            .expect("bytes")
            .to_bytes();
        (code, serde_json::from_slice(&body).expect("a Status"))
    }

    /// What a client sees of `log` whose bytes were first seen at `times`.
    fn shown(log: &str, times: &ByteTimes, q: &str) -> String {
        let opts = options(q);
        let text = match opts.tail {
            Some(n) => tail(log.as_bytes(), n),
            None => log.as_bytes(),
        };
        let at = (log.len() - text.len()) as u64;
        let mut out = Vec::new();
        LineFilter::new(&opts).push(text, at, times, 999 * SEC, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tails() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }

    #[test]
    fn a_byte_takes_the_time_of_the_record_covering_it() {
        let t = ByteTimes::new([(4, 10 * SEC), (10, 20 * SEC)]);
        assert_eq!(t.at(0), Some(10 * SEC));
        assert_eq!(t.at(3), Some(10 * SEC));
        assert_eq!(t.at(4), Some(20 * SEC));
        assert_eq!(t.at(9), Some(20 * SEC));
        assert_eq!(t.at(10), None, "past the records");
        assert_eq!(ByteTimes::default().at(0), None);
        // Damaged: lengths that do not increase are skipped, times that go
        // back are raised.
        let t = ByteTimes::new([(4, 10), (4, 50), (2, 60), (8, 5), (12, 30)]);
        assert_eq!(t.records, vec![(4, 10), (8, 10), (12, 30)]);
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds_in_utc() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_796_385_600_123_456_789),
            "2026-12-04T12:00:00.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(1_796_385_600 * SEC),
            "2026-12-04T12:00:00.000000000Z",
            "always nine digits, as the kubelet's RFC3339NanoFixed"
        );
    }

    #[test]
    fn lines_are_shown_from_the_since_bound_with_their_times() {
        // "one" seen at 10 s, "two" and "three" at 20 s, "four" at 30 s.
        let log = "one\ntwo\nthree\nfour\n";
        let times = ByteTimes::new([(4, 10 * SEC), (14, 20 * SEC), (19, 30 * SEC)]);
        assert_eq!(shown(log, &times, ""), log);
        assert_eq!(
            shown(log, &times, "sinceTime=1970-01-01T00:00:20Z"),
            "two\nthree\nfour\n",
            "a line at the bound is shown"
        );
        assert_eq!(
            shown(log, &times, "sinceTime=1970-01-01T00:00:20.000000001Z"),
            "four\n"
        );
        // sinceSeconds counts back from now (100 s).
        assert_eq!(shown(log, &times, "sinceSeconds=75"), "four\n");
        assert_eq!(shown(log, &times, "sinceSeconds=65"), "");
        assert_eq!(shown(log, &times, "sinceSeconds=95"), log);
        assert_eq!(
            shown(log, &times, "timestamps=true&sinceSeconds=80"),
            "1970-01-01T00:00:20.000000000Z two\n\
             1970-01-01T00:00:20.000000000Z three\n\
             1970-01-01T00:00:30.000000000Z four\n"
        );
    }

    #[test]
    fn tail_takes_the_last_lines_before_since_leaves_out_old_ones() {
        let log = "one\ntwo\nthree\nfour\n";
        let times = ByteTimes::new([(4, 10 * SEC), (14, 20 * SEC), (19, 30 * SEC)]);
        assert_eq!(shown(log, &times, "tailLines=3"), "two\nthree\nfour\n");
        assert_eq!(
            shown(log, &times, "tailLines=3&sinceSeconds=75"),
            "four\n",
            "of the last three lines, those since the bound"
        );
        assert_eq!(
            shown(log, &times, "tailLines=2&sinceTime=1970-01-01T00:00:05Z"),
            "three\nfour\n",
            "the bound before every line: the tail as it is"
        );
    }

    #[test]
    fn the_byte_limit_counts_the_time_prefixes() {
        let log = "one\ntwo\n";
        let times = ByteTimes::new([(8, 10 * SEC)]);
        let prefix = "1970-01-01T00:00:10.000000000Z ";
        assert_eq!(
            shown(log, &times, "timestamps=1&limitBytes=36"),
            format!("{prefix}one\n{}", &prefix[..1])
        );
        assert_eq!(shown(log, &times, "limitBytes=5"), "one\nt");
    }

    #[test]
    fn a_line_in_pieces_is_judged_and_prefixed_once() {
        let opts = options("timestamps=true&sinceTime=1970-01-01T00:00:15Z");
        let mut filter = LineFilter::new(&opts);
        // "old" began at 10 s and ends later; "new" began at 20 s and its
        // end is not written yet.
        let times = ByteTimes::new([(2, 10 * SEC), (12, 20 * SEC)]);
        let mut out = Vec::new();
        filter.push(b"ol", 0, &times, 0, &mut out);
        filter.push(b"d\nne", 2, &times, 0, &mut out);
        filter.push(b"w\n", 6, &times, 0, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:20.000000000Z new\n"
        );
        // Bytes no record covers are timed `now`.
        let mut filter = LineFilter::new(&options("timestamps=true"));
        let mut out = Vec::new();
        filter.push(b"x\n", 0, &ByteTimes::default(), 7 * SEC, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:07.000000000Z x\n");
    }

    #[test]
    fn reading_from_an_offset_starts_at_the_next_whole_line() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"one\ntwo\nthree").unwrap();
        assert_eq!(
            read_lines(&f, 0, 13),
            (Some(b"one\ntwo\nthree".to_vec()), 0)
        );
        assert_eq!(read_lines(&f, 4, 13), (Some(b"two\nthree".to_vec()), 4));
        assert_eq!(read_lines(&f, 5, 13), (Some(b"three".to_vec()), 8));
        assert_eq!(read_lines(&f, 9, 13), (None, 13), "inside the last line");
        assert_eq!(read_lines(&f, 8, 8), (Some(Vec::new()), 8));
        assert_eq!(read_range(&f, 10, 99), b"ree");
    }

    #[test]
    fn options_are_checked_as_the_api_server_checks_them() {
        assert_eq!(
            options("follow=true&timestamps=1&tailLines=5&limitBytes=10&container=c"),
            LogOptions {
                container: Some("c".into()),
                follow: true,
                timestamps: true,
                tail: Some(5),
                limit: Some(10),
                ..LogOptions::default()
            }
        );
        assert_eq!(options("sinceSeconds=30").since, Some(70 * SEC));
        assert_eq!(
            options("sinceTime=2026-12-04T13:00:00%2B01:00").since,
            Some(1_796_385_600 * SEC),
            "any offset, as RFC 3339 allows"
        );
        let (code, s) = refused("sinceSeconds=10&sinceTime=2026-12-04T12:00:00Z");
        assert_eq!(code, 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["message"],
            "PodLogOptions \"box\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueForbidden");
        assert_eq!(s["details"]["kind"], "PodLogOptions");
        let (code, s) = refused("sinceSeconds=0");
        assert_eq!(code, 422);
        assert_eq!(
            s["message"],
            "PodLogOptions \"box\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(refused("tailLines=-1").0, 422);
        assert_eq!(refused("limitBytes=0").0, 422);
        assert_eq!(refused("tailLines=x").0, 400);
        assert_eq!(refused("sinceTime=yesterday").0, 400);
    }
}
