//! Request bodies: read whole, up to [`MAX_BODY`], and refused with 413 as
//! soon as they are known to be larger (by their declared length, or at
//! the first byte past the limit), so an oversized body is never held in
//! memory, nor read to its end.
//!
//! Over HTTP/2 the early answer ends the stream with a reset (RFC 9113
//! section 8.1 lets a server stop an upload once its answer is complete);
//! Go clients (kubectl, client-go) read the 413 Status, curl 7.88 reports a
//! stream error (92) instead, and reads the 413 over HTTP/1.1.
//!
//! Over HTTP/1.1 the rest of the body is read and thrown away for a while
//! after the answer (at most [`DRAIN_BYTES`] within [`DRAIN_TIME`]), as Go's
//! server does: closing a connection with unread bytes makes the kernel
//! send a reset, which can destroy the answer before the client reads it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, Version};

use super::{failure, Body, MAX_BODY};

/// Most bytes of an oversized HTTP/1.1 body thrown away after the 413.
pub const DRAIN_BYTES: usize = MAX_BODY;
/// Longest an oversized HTTP/1.1 body is read after the 413.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The whole body of a request (of HTTP `version`) whose head declared
/// `declared` bytes, or the answer that refuses it.
pub async fn read(
    mut body: Incoming,
    declared: Option<u64>,
    version: Version,
) -> Result<Bytes, Response<Body>> {
    if declared.is_some_and(|l| l > MAX_BODY as u64) {
        return Err(too_large(body, version));
    }
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                return Err(failure(
                    400,
                    "BadRequest",
                    &format!("could not read the request body: {e}"),
                ))
            }
        };
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > MAX_BODY {
                return Err(too_large(body, version));
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

fn too_large(body: Incoming, version: Version) -> Response<Body> {
    if version < Version::HTTP_2 {
        tokio::spawn(drain(body));
    }
    failure(
        413,
        "RequestEntityTooLarge",
        &format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

/// Reads and drops what is left of `body`, within the drain bounds.
async fn drain(mut body: Incoming) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n >= left {
                return;
            }
            left -= n;
        }
    })
    .await;
}
