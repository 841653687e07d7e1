//! `GET .../pods/NAME/log` (`kubectl logs [-f] [--tail N] [-c C]`): a
//! container's output, whole or from its last lines, and followed while
//! the pod exists.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use super::watch::ChannelBody;
use super::{failure, Body, Query};
use crate::control::objects::{ObjectError, Objects};

/// Where containers' output is.
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
}

/// How often a followed log is looked at for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most sent at once without `limitBytes`, as a guard.
const MAX_READ: u64 = 16 << 20;

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
    let pod: Pod = match objects.get_as(Some(ns), name) {
        Ok(p) => p,
        Err(e @ ObjectError::NotFound { .. }) => return failure(404, "NotFound", &e.to_string()),
        Err(e) => return failure(e.code(), e.reason(), &e.to_string()),
    };
    let container = match pick_container(&pod, query.get("container")) {
        Ok(c) => c,
        Err(message) => return failure(400, "BadRequest", &message),
    };
    let previous = matches!(query.get("previous"), Some("true" | "1"));
    let Some(path) = source.and_then(|s| s.log_path(ns, name, &container, previous)) else {
        return failure(
            400,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{name}\" has no log on this node"),
        );
    };
    let mut file = match std::fs::File::open(&path) {
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
    let limit = query
        .get("limitBytes")
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(MAX_READ)
        .min(MAX_READ);
    let len = file.metadata().map_or(0, |m| m.len());
    let start = match query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        // Only the end of the file can hold the last lines we need.
        Some(_) => len.saturating_sub(MAX_READ),
        None => 0,
    };
    let _ = file.seek(SeekFrom::Start(start));
    let mut text = Vec::new();
    let _ = (&mut file).take(MAX_READ).read_to_end(&mut text);
    let mut shown: &[u8] = &text;
    if let Some(n) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        shown = tail(shown, n);
    }
    if (shown.len() as u64) > limit {
        shown = &shown[..limit as usize];
    }
    let first = Bytes::copy_from_slice(shown);
    // A previous instance's output is complete: nothing to follow.
    let follow = matches!(query.get("follow"), Some("true" | "1")) && !previous;
    let builder = Response::builder().header("content-type", "text/plain");
    if !follow {
        return builder
            .body(Full::new(first).boxed())
            .expect("a valid response");
    }
    let (tx, rx) = mpsc::channel(16);
    let objects = objects.clone();
    let (ns, name, uid) = (ns.to_string(), name.to_string(), pod.metadata.uid.clone());
    let mut offset = start + text.len() as u64;
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(first).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
            let mut more = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = f.seek(SeekFrom::Start(offset));
                let _ = f.take(MAX_READ).read_to_end(&mut more);
            }
            if !more.is_empty() {
                offset += more.len() as u64;
                if tx.send(Bytes::from(more)).await.is_err() {
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
    use super::tail;

    #[test]
    fn tails() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }
}
