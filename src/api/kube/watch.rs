//! `?watch=true` streams: one JSON watch event per line (`ADDED`,
//! `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`), as the API server sends them.
//!
//! * Without a `resourceVersion` (or with `0`) the stream starts with an
//!   `ADDED` event per existing object, then follows changes; with one, it
//!   sends every change after it, or a 410 `Expired` `ERROR` event when the
//!   store's history no longer reaches back that far (the client lists
//!   again).
//! * With selectors, an object that starts matching arrives as `ADDED` and
//!   one that stops matching as `DELETED` (with its content as it last
//!   matched, at the revision of the change), as in Kubernetes.
//! * `allowWatchBookmarks=true` adds `BOOKMARK` events with the last
//!   revision sent; `sendInitialEvents=true` ends the initial events with a
//!   bookmark annotated `k8s.io/initial-events-end`.
//! * A watcher that falls too far behind has its stream ended; it resumes
//!   from the last revision it saw.
//! * A watch from a revision the store has not reached yet is a 504
//!   `ResourceVersionTooLarge` (the client lists again), not a wait.

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::table::{self, IncludeObject};
use super::{failure, status, Body, Query};
use crate::control::kinds::Kind;
use crate::control::objects::{FieldSelector, LabelSelector, ObjectError, Objects};
use crate::control::store::{Event, EventKind};

/// Time between bookmarks.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// Longest a watch stays open without `timeoutSeconds` (clients re-watch).
pub const MAX_WATCH: Duration = Duration::from_secs(30 * 60);

/// A response body fed line by line from a channel.
/// A response body fed chunk by chunk from a channel (watch streams,
/// followed logs).
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

struct Stream {
    kind: &'static Kind,
    labels: LabelSelector,
    fields: FieldSelector,
    table: Option<IncludeObject>,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }

    async fn send(&self, kind: &str, obj: &Value) -> bool {
        // `{"type":KIND,"object":OBJ}` written straight from the object
        // (a copy of it in a new JSON value was a second pass over every
        // event), in the API server's field order.
        let mut line = Vec::with_capacity(1024);
        line.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut line, kind).expect("JSON strings serialize");
        line.extend_from_slice(b",\"object\":");
        match self.table {
            Some(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let table = table::table(
                    self.kind,
                    std::slice::from_ref(obj),
                    None,
                    include,
                    SystemTime::now(),
                );
                serde_json::to_writer(&mut line, &table)
            }
            _ => serde_json::to_writer(&mut line, obj),
        }
        .expect("JSON values serialize");
        line.extend_from_slice(b"}\n");
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn bookmark(&self, revision: u64, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": meta});
        self.send("BOOKMARK", &obj).await
    }

    /// The watch event a store event makes for this stream, if any. The
    /// object is the event's own parsed value (parsed once for every
    /// watcher); the one before the change is parsed only when selectors
    /// need it.
    fn translate<'e>(&self, event: &'e Event) -> Option<(&'static str, Cow<'e, Value>)> {
        let selective = !(self.labels.is_empty() && self.fields.is_empty());
        let prev_matched = event.prev.is_some()
            && (!selective || Objects::event_prev_value(event).is_some_and(|p| self.matches(p)));
        let obj = Objects::event_value(event);
        match event.kind {
            EventKind::Delete => prev_matched.then_some(("DELETED", Cow::Borrowed(obj))),
            EventKind::Put => match (prev_matched, !selective || self.matches(obj)) {
                (true, true) => Some(("MODIFIED", Cow::Borrowed(obj))),
                (false, true) => Some(("ADDED", Cow::Borrowed(obj))),
                // As the API server's watch cache: the object as this
                // stream last matched it, at the revision it left.
                (true, false) => {
                    let mut before = Objects::event_prev_value(event)?.clone();
                    before["metadata"]["resourceVersion"] = event.revision().to_string().into();
                    Some(("DELETED", Cow::Owned(before)))
                }
                (false, false) => None,
            },
        }
    }
}

/// The answer to a watch from a revision the store has not reached: the
/// API server's 504 `ResourceVersionTooLarge`, on which clients list again.
/// Silently waiting for that revision would leave a client that resumes
/// against a store started afresh (`podnet reset`) without events.
fn too_large_resource_version(requested: u64, current: u64) -> Response<Body> {
    let mut s = status::failure(
        504,
        "Timeout",
        &format!("Timeout: Too large resource version: {requested}, current: {current}"),
    );
    s["details"] = json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    });
    let mut answer = super::json_response(504, &s);
    answer
        .headers_mut()
        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    answer
}

/// Starts a watch and answers with its stream.
pub fn serve(
    objects: Objects,
    kind: &'static Kind,
    ns: Option<&str>,
    query: &Query,
    table: bool,
) -> Response<Body> {
    let labels = match LabelSelector::parse(query.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return failure(400, "BadRequest", &e.to_string()),
    };
    let fields = match FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), kind.fields) {
        Ok(f) => f,
        Err(e) => return failure(400, "BadRequest", &e.to_string()),
    };
    let from: Option<u64> = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return failure(
                    400,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                )
            }
        },
    };
    if let Some(rv) = from {
        let current = objects.kv().revision();
        if rv > current {
            return too_large_resource_version(rv, current);
        }
    }
    let send_initial = query.get("sendInitialEvents") == Some("true");
    let bookmarks = matches!(query.get("allowWatchBookmarks"), Some("true" | "1"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    // Start the store watch first, so nothing falls between the initial
    // list and the stream.
    let (initial, start) = if from.is_none() || send_initial {
        let (items, revision) = objects.list(kind, ns, &labels, &fields);
        (items, revision)
    } else {
        (Vec::new(), from.unwrap_or(0))
    };
    let store_watch = objects.watch(kind, ns, start);
    let (tx, rx) = mpsc::channel(64);
    let stream = Stream {
        kind,
        labels,
        fields,
        table: table.then(|| IncludeObject::parse(query.get("includeObject"))),
        tx,
    };
    tokio::spawn(async move {
        let mut events = match store_watch {
            Ok(w) => w,
            Err(e @ ObjectError::Gone { .. }) => {
                let _ = stream
                    .send("ERROR", &status::failure(410, "Expired", &e.to_string()))
                    .await;
                return;
            }
            Err(e) => {
                let _ = stream
                    .send("ERROR", &status::from_error(&e, kind.group, kind.kind))
                    .await;
                return;
            }
        };
        for obj in &initial {
            if !stream.send("ADDED", obj).await {
                return;
            }
        }
        if send_initial && !stream.bookmark(start, true).await {
            return;
        }
        let mut last = start;
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    last = event.revision();
                    if let Some((kind, obj)) = stream.translate(&event) {
                        if !stream.send(kind, &obj).await {
                            return;
                        }
                    }
                }
                _ = ticker.tick(), if bookmarks => {
                    if !stream.bookmark(last, false).await {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = stream.tx.closed() => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(ChannelBody(rx).boxed())
        .expect("a valid response")
}
