//! Validation helpers shared by the kinds: the API server's name, label and
//! port rules, and the field errors a 422 answer lists.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// What is wrong with a field, as the API server's `StatusCause.reason`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldReason {
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueInvalid`.
    Invalid,
    /// `FieldValueNotSupported`.
    NotSupported,
    /// `FieldValueDuplicate`.
    Duplicate,
    /// `FieldValueForbidden`.
    Forbidden,
}

impl FieldReason {
    /// The Kubernetes reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldReason::Required => "FieldValueRequired",
            FieldReason::Invalid => "FieldValueInvalid",
            FieldReason::NotSupported => "FieldValueNotSupported",
            FieldReason::Duplicate => "FieldValueDuplicate",
            FieldReason::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path (`spec.ports[0].port`).
    pub field: String,
    /// What kind of problem.
    pub reason: FieldReason,
    /// The message, in the API server's words (`Invalid value: 70000: must be between 1 and 65535, inclusive`).
    pub message: String,
}

impl FieldError {
    /// An invalid value.
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Invalid,
            message: format!("Invalid value: {value}: {why}"),
        }
    }

    /// A missing value.
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Required,
            message: "Required value".into(),
        }
    }

    /// A value not among those supported.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            field: field.into(),
            reason: FieldReason::NotSupported,
            message: format!(
                "Unsupported value: \"{value}\": supported values: {}",
                list.join(", ")
            ),
        }
    }

    /// A value given twice.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Duplicate,
            message: format!("Duplicate value: {value}"),
        }
    }

    /// A change that is not allowed.
    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Forbidden,
            message: format!("Forbidden: {why}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63); `None`
/// when valid, else the API server's message.
pub fn dns1123_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_label_char)
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc'), at most 63 characters".into()
    })
}

/// A DNS-1123 subdomain (dot-separated labels, at most 253).
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com'), at most 253 characters".into()
    })
}

/// A DNS-1035 label: a DNS-1123 label starting with a letter (service names).
pub fn dns1035_label(s: &str) -> Option<String> {
    let ok = dns1123_label(s).is_none() && s.starts_with(|c: char| c.is_ascii_lowercase());
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123'), at most 63 characters".into()
    })
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain,
/// the name at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if dns1123_subdomain(p).is_some() {
            return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
        }
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(name.chars().next())
        && alnum(name.chars().last());
    (!ok).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc'), at most 63 characters".into()
    })
}

/// A label value: empty, or like a qualified name without a prefix.
pub fn label_value(s: &str) -> Option<String> {
    if s.is_empty() || (qualified_name(s).is_none() && !s.contains('/')) {
        None
    } else {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters".into())
    }
}

/// Checks a label map at `field`.
pub fn labels(labels: Option<&BTreeMap<String, String>>, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        if let Some(why) = qualified_name(k) {
            errors.push(FieldError::invalid(field, format!("\"{k}\""), &why));
        }
        if let Some(why) = label_value(v) {
            errors.push(FieldError::invalid(
                format!("{field}[{k}]"),
                format!("\"{v}\""),
                &why,
            ));
        }
    }
    errors
}

/// The metadata rules every kind shares (names are checked by the store,
/// which knows the kind's name rule).
pub fn metadata(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = labels(meta.labels.as_ref(), "metadata.labels");
    for k in meta.annotations.iter().flat_map(|a| a.keys()) {
        if let Some(why) = qualified_name(k) {
            errors.push(FieldError::invalid(
                "metadata.annotations",
                format!("\"{k}\""),
                &why,
            ));
        }
    }
    errors
}

/// A port number at `field` (1-65535).
pub fn port(value: i32, field: &str) -> Option<FieldError> {
    (!(1..=65535).contains(&value))
        .then(|| FieldError::invalid(field, value, "must be between 1 and 65535, inclusive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("web-1.example").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_subdomain("-a").is_some());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_some());
        assert!(dns1035_label("1web").is_some());
        assert!(dns1035_label("web1").is_none());
        assert!(qualified_name("app.kubernetes.io/name").is_none());
        assert!(qualified_name("bad key").is_some());
        assert!(label_value("").is_none());
        assert!(label_value("v1.2_x").is_none());
        assert!(label_value("a/b").is_some());
        assert!(port(0, "p").is_some() && port(70000, "p").is_some() && port(80, "p").is_none());
    }
}
