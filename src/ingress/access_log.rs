//! The daemon's log writer (stderr), with batching for the ingress threads.
//!
//! The access log is one line per request; written one `write(2)` per line
//! it cost the ingress threads a system call per request. A thread that
//! calls [`batch_this_thread`] (each ingress thread) keeps its log lines in
//! a buffer of its own instead, written out whole (complete lines, one
//! `write(2)`) when it holds [`BATCH_BYTES`], and by [`flush_this_thread`],
//! which the ingress runtimes call each time they are about to wait for
//! events: a line waits at most until its thread next runs out of work.
//! Every other thread writes straight to stderr, as before.
//!
//! [`record`] writes an access log line. On a batching thread of podnetd
//! (whose subscriber writes through [`LogWriter`]) it formats the line
//! straight into the thread's buffer, in the subscriber's layout, instead
//! of going through `tracing`'s event machinery and field visitors: that
//! cost the ingress 7% of its CPU per request. Elsewhere it is a `tracing`
//! event like any other. Either way `--log` decides whether it is written
//! (target [`ACCESS_TARGET`]).

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::MakeWriter;

/// How many bytes a thread's buffer holds before it is written out.
const BATCH_BYTES: usize = 16 * 1024;

/// The `tracing` target of the access log lines.
pub const ACCESS_TARGET: &str = "podnet::ingress::access";

/// Whether the process's subscriber writes through [`LogWriter`], so that
/// a line put in a thread's buffer is where its events would have gone.
static LOG_WRITER_IN_USE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's pending lines; `None`: not batching.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// The second of the last line's timestamp and its text up to the
    /// fraction (`2026-12-04T21:12:23.`), made once a second.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// Makes this thread's log lines wait in a buffer (see the module doc).
pub fn batch_this_thread() {
    BATCH.with(|b| {
        b.borrow_mut()
            .get_or_insert_with(|| Vec::with_capacity(BATCH_BYTES));
    });
}

/// Writes out this thread's pending lines, if any.
pub fn flush_this_thread() {
    BATCH.with(|b| {
        if let Some(buf) = b.borrow_mut().as_mut() {
            write_out(buf);
        }
    });
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // A log line that cannot be written has nowhere else to go.
        let _ = io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// The [`MakeWriter`] for podnetd's log: stderr, or this thread's buffer
/// when it batches.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        if !LOG_WRITER_IN_USE.load(Ordering::Relaxed) {
            LOG_WRITER_IN_USE.store(true, Ordering::Relaxed);
        }
        LineWriter
    }
}

/// Takes one formatted log event (the subscriber writes each whole).
#[derive(Debug)]
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let batched = BATCH.with(|b| match b.try_borrow_mut() {
            Ok(mut b) => match b.as_mut() {
                Some(buf) => {
                    buf.extend_from_slice(data);
                    if buf.len() >= BATCH_BYTES {
                        write_out(buf);
                    }
                    true
                }
                None => false,
            },
            Err(_) => false,
        });
        if batched {
            Ok(())
        } else {
            io::stderr().write_all(data)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One request, as its access log line tells it.
pub(crate) struct Access<'a, U> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// Where the request went (see `proxy`).
    pub upstream: U,
    /// Until the response head.
    pub duration_ms: u64,
    pub client: IpAddr,
}

/// Writes the access log line of one request (see the module doc).
pub(crate) fn record<U: Display>(a: &Access<'_, U>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let batched = LOG_WRITER_IN_USE.load(Ordering::Relaxed)
        && BATCH.with(|b| match b.try_borrow_mut() {
            Ok(mut b) => match b.as_mut() {
                Some(buf) => {
                    // Writing to a Vec cannot fail.
                    let _ = write_line(buf, SystemTime::now(), a);
                    if buf.len() >= BATCH_BYTES {
                        write_out(buf);
                    }
                    true
                }
                None => false,
            },
            Err(_) => false,
        });
    if !batched {
        tracing::info!(
            target: ACCESS_TARGET,
            method = %a.method,
            host = %a.host,
            path = %a.path,
            status = a.status,
            upstream = %a.upstream,
            duration_ms = a.duration_ms,
            client = %a.client,
            "ingress request"
        );
    }
}

/// The line as `tracing_subscriber`'s default format (no colour) writes
/// the event [`record`] would send.
fn write_line<U: Display>(buf: &mut Vec<u8>, now: SystemTime, a: &Access<'_, U>) -> io::Result<()> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let second = k8s_openapi::jiff::Timestamp::from_second(secs as i64).unwrap_or_default();
        write!(&mut text[..], "{}", second.strftime("%Y-%m-%dT%H:%M:%S."))?;
        SECOND.set((secs, text));
    }
    buf.extend_from_slice(&text);
    writeln!(
        buf,
        "{:06}Z  INFO {ACCESS_TARGET}: ingress request method={} host={} path={} status={} upstream={} duration_ms={} client={}",
        since.subsec_micros(),
        a.method,
        a.host,
        a.path,
        a.status,
        a.upstream,
        a.duration_ms,
        a.client
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batching_thread_keeps_its_lines_until_flushed() {
        std::thread::spawn(|| {
            batch_this_thread();
            LineWriter.write_all(b"one line\n").unwrap();
            let held = BATCH.with(|b| b.borrow().as_ref().map(|v| v.clone()));
            assert_eq!(held.as_deref(), Some(&b"one line\n"[..]));
            flush_this_thread();
            let held = BATCH.with(|b| b.borrow().as_ref().map(|v| v.len()));
            assert_eq!(held, Some(0));
        })
        .join()
        .unwrap();
        // Other threads do not batch.
        assert!(BATCH.with(|b| b.borrow().is_none()));
    }

    #[test]
    fn dates_are_the_gregorian_calendar() {
        for (secs, date) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_164_800, "2024-02-29T00:00:00"),
            (1_796_418_743, "2026-12-04T21:12:23"),
            (4_102_444_799, "2099-12-31T23:59:59"),
        ] {
            let mut line = Vec::new();
            let a = Access {
                method: "GET",
                host: "h",
                path: "/",
                status: 200,
                upstream: "-",
                duration_ms: 0,
                client: [192, 0, 2, 2].into(),
            };
            let at = UNIX_EPOCH + std::time::Duration::new(secs, 5_000);
            write_line(&mut line, at, &a).unwrap();
            let line = String::from_utf8(line).unwrap();
            assert!(
                line.starts_with(&format!("{date}.000005Z  INFO ")),
                "{line}"
            );
        }
    }

    #[test]
    fn the_line_has_every_field_in_the_subscribers_layout() {
        let mut line = Vec::new();
        let a = Access {
            method: "POST",
            host: "my-app.com",
            path: "/api",
            status: 502,
            upstream: "default/web:80 10.96.0.10:80",
            duration_ms: 12,
            client: [192, 0, 2, 2].into(),
        };
        write_line(&mut line, UNIX_EPOCH, &a).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "1970-01-01T00:00:00.000000Z  INFO podnet::ingress::access: ingress request \
             method=POST host=my-app.com path=/api status=502 \
             upstream=default/web:80 10.96.0.10:80 duration_ms=12 client=192.0.2.2\n"
        );
    }
}
