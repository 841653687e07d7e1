//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=`
//! carry them.
//!
//! Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! joined by commas (all must hold). Fields: `path=v`, `path==v`,
//! `path!=v` for `metadata.name`, `metadata.namespace` and the kind's own
//! fields (`status.phase`, `spec.nodeName`, ...), read from the object's
//! JSON.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parse error, for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement {text:?}: {reason}")]
pub struct SelectorError {
    text: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// A field selector; the empty one matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas that are not inside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn bad(text: &str, reason: &'static str) -> SelectorError {
    SelectorError {
        text: text.to_string(),
        reason,
    }
}

fn set_values(text: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(text, "expected a value set in parentheses"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(text: &str, key: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(bad(
            text,
            "a label key must be non-empty and without spaces",
        ));
    }
    Ok(key.to_string())
}

impl LabelSelector {
    /// Parses the query form.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(part, key)?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(check_key(part, k)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(check_key(part, k)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(check_key(part, k)?, v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(part, k)?, set_values(part, rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(check_key(part, k)?, set_values(part, rest)?)
            } else {
                Requirement::Exists(check_key(part, part)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// The selector of a `matchLabels` map: every pair must match.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        Self(
            labels
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Whether it holds no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// False when the object's serialized JSON cannot satisfy the selector:
    /// a label `k=v` (or `k in (..)`, `k`) the selector needs leaves the
    /// JSON strings of its key and value in the bytes. A cheap test before
    /// decoding an object; true says only "decode and look".
    /// Valid only for JSON serde_json wrote (one encoding per string).
    pub fn could_match_json(&self, raw: &[u8]) -> bool {
        let holds = |s: &str| {
            serde_json::to_string(s)
                .map(|quoted| memchr::memmem::find(raw, quoted.as_bytes()).is_some())
                .unwrap_or(true)
        };
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => holds(k) && holds(v),
            Requirement::In(k, vs) => holds(k) && vs.iter().any(|v| holds(v)),
            Requirement::Exists(k) => holds(k),
            Requirement::NotEquals(..) | Requirement::NotIn(..) | Requirement::DoesNotExist(_) => {
                true
            }
        })
    }

    /// Whether an object's JSON `metadata.labels` satisfy it.
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = object
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        self.matches(&labels)
    }
}

impl FieldSelector {
    /// Whether it holds no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the query form; `fields` are the paths the kind allows beside
    /// `metadata.name` and `metadata.namespace`.
    pub fn parse(text: &str, fields: &[&str]) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(bad(part, "a field selector is path=value or path!=value"));
            };
            let path = path.trim();
            if !(path == "metadata.name" || path == "metadata.namespace" || fields.contains(&path))
            {
                return Err(bad(part, "field label not supported"));
            }
            reqs.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    /// Whether the object's fields satisfy every requirement (a missing
    /// field reads as the empty string, as in Kubernetes).
    pub fn matches_object(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            // `source` of an Event means its source component.
            let path = if path == "source" {
                "source.component"
            } else {
                path.as_str()
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_byte_test_never_rules_out_a_match() {
        let objects = [
            json!({"metadata": {"name": "a", "labels": {"app": "web", "kubernetes.io/service-name": "web"}}}),
            json!({"metadata": {"name": "b", "labels": {"app": "db", "tier": "back"}}}),
            json!({"metadata": {"name": "c"}}),
            json!({"metadata": {"name": "web", "labels": {"x": "y"}}, "spec": {"app": "web"}}),
        ];
        let selectors = [
            "app=web",
            "app==db",
            "app!=web",
            "kubernetes.io/service-name=web",
            "app in (db, web)",
            "app notin (web)",
            "tier",
            "!tier",
            "app=web,tier=back",
            "app=nothing",
            "",
        ];
        for text in selectors {
            let sel = LabelSelector::parse(text).unwrap();
            for o in &objects {
                let raw = serde_json::to_vec(o).unwrap();
                if sel.matches_object(o) {
                    assert!(sel.could_match_json(&raw), "{text} ruled out {o}");
                }
            }
        }
        // And it does rule out what cannot match.
        let raw = serde_json::to_vec(&objects[1]).unwrap();
        assert!(!LabelSelector::parse("app=web")
            .unwrap()
            .could_match_json(&raw));
        assert!(!LabelSelector::parse("kubernetes.io/service-name")
            .unwrap()
            .could_match_json(&raw));
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app=db", false),
            ("app!=db", true),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing,app in (web),tier notin (back)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "status": {"phase": "Running"}, "spec": {}});
        let f = |s: &str| FieldSelector::parse(s, &["status.phase", "spec.nodeName"]).unwrap();
        assert!(f("metadata.name=p").matches_object(&pod));
        assert!(f("status.phase!=Pending,metadata.namespace=default").matches_object(&pod));
        assert!(!f("metadata.name=q").matches_object(&pod));
        assert!(f("spec.nodeName=").matches_object(&pod));
        assert!(FieldSelector::parse("spec.foo=1", &[]).is_err());
    }
}
