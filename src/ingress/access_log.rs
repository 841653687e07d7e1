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

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// How many bytes a thread's buffer holds before it is written out.
const BATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// This thread's pending lines; `None`: not batching.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
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
}
