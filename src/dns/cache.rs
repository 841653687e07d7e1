//! A small cache of forwarded answers, honoring their TTLs: an answer is
//! kept for its smallest record TTL (a negative answer for its SOA's
//! minimum, RFC 2308), handed out with the TTLs counted down, and dropped
//! when it expires. Time is an argument, so it is tested without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

/// Entries kept at most; when full, expired entries go first, then all.
pub const CAPACITY: usize = 10_000;

/// The longest an answer is kept, whatever its TTL says (CoreDNS's cache
/// plugin caps at an hour too).
pub const MAX_TTL: u32 = 3600;

type Key = (String, RecordType, DNSClass);

/// Forwarded answers by question.
#[derive(Debug, Default)]
pub struct AnswerCache {
    entries: HashMap<Key, (Instant, Instant, Message)>,
}

fn key_of(m: &Message) -> Option<Key> {
    let q = m.queries().first()?;
    Some((
        q.name().to_lowercase().to_ascii(),
        q.query_type(),
        q.query_class(),
    ))
}

/// How long `m` may be kept: the smallest TTL of its answers, or of the
/// SOA of a negative answer; `None` for what is not cached (errors other
/// than NXDOMAIN, truncated answers, a negative answer without SOA).
fn lifetime(m: &Message) -> Option<u32> {
    if m.truncated() {
        return None;
    }
    let ttl = match m.response_code() {
        ResponseCode::NoError if !m.answers().is_empty() => {
            m.answers().iter().map(|r| r.ttl()).min()?
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            m.name_servers().iter().find_map(|r| match r.data() {
                RData::SOA(soa) => Some(soa.minimum().min(r.ttl())),
                _ => None,
            })?
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

impl AnswerCache {
    /// The cached answer to `query` at `now`, with the query's id and the
    /// TTLs counted down.
    pub fn get(&mut self, query: &Message, now: Instant) -> Option<Message> {
        let key = key_of(query)?;
        let (stored, expires, m) = self.entries.get(&key)?;
        if now >= *expires {
            self.entries.remove(&key);
            return None;
        }
        let age = now.duration_since(*stored).as_secs() as u32;
        let mut m = m.clone();
        m.set_id(query.id());
        let count_down = |records: &mut Vec<hickory_proto::rr::Record>| {
            for r in records {
                r.set_ttl(r.ttl().saturating_sub(age));
            }
        };
        count_down(m.answers_mut());
        count_down(m.name_servers_mut());
        count_down(m.additionals_mut());
        Some(m)
    }

    /// Keeps `answer` (received at `now`) if it may be cached.
    pub fn put(&mut self, answer: &Message, now: Instant) {
        let (Some(key), Some(ttl)) = (key_of(answer), lifetime(answer)) else {
            return;
        };
        if self.entries.len() >= CAPACITY {
            self.entries.retain(|_, (_, expires, _)| *expires > now);
            if self.entries.len() >= CAPACITY {
                self.entries.clear();
            }
        }
        let expires = now + Duration::from_secs(ttl.into());
        self.entries.insert(key, (now, expires, answer.clone()));
    }

    /// Entries held (expired ones included until looked up or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
