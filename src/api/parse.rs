//! Validation of names and labels, and the parsers behind the CLI's
//! `--label`, `--selector` and `--port` flags.
//!
//! Every error says what was wrong and what form is expected, because it is
//! shown to a person as is (by clap for the CLI, in a 400 body by the server).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Labels or a label selector: key to value, ordered so output is stable.
pub type Labels = BTreeMap<String, String>;

/// A value that does not have the expected form; the message names the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    /// The message, for a person.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The longest DNS label (RFC 1123), which is also the longest object name.
pub const MAX_NAME_LEN: usize = 63;

const NAME_RULE: &str = "a name is a DNS label: 1 to 63 lowercase letters, digits and '-', \
                         starting and ending with a letter or digit";

/// Checks that `name` is a valid object name (an RFC 1123 DNS label, as
/// Kubernetes requires): 1..=63 of `[a-z0-9-]`, starting and ending with an
/// alphanumeric. `kind` ("pod", "service", ...) goes into the message.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ParseError> {
    let problem = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} characters long", name.len()))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        Some(format!("it contains {c:?}"))
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("it starts or ends with '-'".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(ParseError(format!(
            "invalid {kind} name {}: {problem}; {NAME_RULE}",
            quote(name)
        ))),
    }
}

/// Quotes user input for a message, cutting it short so a huge value cannot
/// flood the output.
fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}...")
    }
}

/// `[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters: the
/// shape of a label value and of the name part of a label key.
fn is_label_word(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
}

/// A DNS subdomain: dot-separated DNS labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|label| validate_name("", label).is_ok())
}

const LABEL_RULE: &str = "a label key is NAME or PREFIX/NAME and a value is empty or NAME, \
                          where NAME is 1 to 63 letters, digits, '-', '_' or '.', starting \
                          and ending with a letter or digit, and PREFIX is a DNS domain";

/// Checks one label key and value against the Kubernetes rules.
pub fn validate_label(key: &str, value: &str) -> Result<(), ParseError> {
    let key_ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_word(name),
        None => is_label_word(key),
    };
    if !key_ok {
        return Err(ParseError(format!(
            "invalid label key {}: {LABEL_RULE}",
            quote(key)
        )));
    }
    if !value.is_empty() && !is_label_word(value) {
        return Err(ParseError(format!(
            "invalid value {} for label {}: {LABEL_RULE}",
            quote(value),
            quote(key)
        )));
    }
    Ok(())
}

/// Checks every label of a map.
pub fn validate_labels(labels: &Labels) -> Result<(), ParseError> {
    labels.iter().try_for_each(|(k, v)| validate_label(k, v))
}

/// Parses one `KEY=VALUE` label (the CLI's `--label`).
pub fn parse_label(s: &str) -> Result<(String, String), ParseError> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(ParseError(format!(
            "invalid label {}: expected KEY=VALUE, e.g. app=web",
            quote(s)
        )));
    };
    validate_label(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// Parses a selector `K=V[,K=V]...` (the CLI's `--selector`).
pub fn parse_selector(s: &str) -> Result<Labels, ParseError> {
    let mut selector = Labels::new();
    for part in s.split(',') {
        let (key, value) = parse_label(part.trim()).map_err(|e| {
            ParseError(format!(
                "invalid selector {}: {e}; expected K=V[,K=V]..., e.g. app=web,tier=front",
                quote(s)
            ))
        })?;
        if selector.insert(key.clone(), value).is_some() {
            return Err(ParseError(format!(
                "invalid selector {}: key {} appears twice",
                quote(s),
                quote(&key)
            )));
        }
    }
    Ok(selector)
}

/// Parses a service port `PORT[:TARGET][/tcp|/udp]` (the CLI's `--port`):
/// the target defaults to the port and the protocol to TCP.
pub fn parse_port_spec(s: &str) -> Result<ServicePort, ParseError> {
    let bad = |why: String| {
        ParseError(format!(
            "invalid port {}: {why}; expected PORT[:TARGET][/tcp|/udp] with ports 1-65535, \
             e.g. 80, 80:8080 or 53/udp",
            quote(s)
        ))
    };
    let (ports, protocol) = match s.split_once('/') {
        None => (s, "TCP"),
        Some((ports, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => "TCP",
                "udp" => "UDP",
                _ => return Err(bad(format!("unknown protocol {}", quote(proto)))),
            };
            (ports, protocol)
        }
    };
    let number = |p: &str| -> Result<u16, ParseError> {
        match p.parse::<u16>() {
            Ok(0) => Err(bad("port 0 is not a port".into())),
            Ok(n) => Ok(n),
            Err(_) => Err(bad(format!("{} is not a port number", quote(p)))),
        }
    };
    let (port, target_port) = match ports.split_once(':') {
        None => {
            let port = number(ports)?;
            (port, port)
        }
        Some((port, target)) => (number(port)?, number(target)?),
    };
    Ok(ServicePort {
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(target_port))),
        protocol: Some(protocol.to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["a", "web", "web-1", "0abc", &"a".repeat(63)] {
            validate_name("pod", ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("Web", "'W'"),
            ("-web", "starts or ends"),
            ("web-", "starts or ends"),
            ("web_1", "'_'"),
            ("a.b", "'.'"),
            ("../x", "'.'"),
            (&"a".repeat(64), "64 characters"),
        ] {
            let err = validate_name("pod", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains("invalid pod name"), "{err}");
            assert!(err.contains("DNS label"), "{err}");
        }
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        let err = validate_name("pod", &"X".repeat(10_000)).unwrap_err();
        assert!(err.message().len() < 400, "{}", err.message().len());
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("app=web").unwrap(),
            ("app".into(), "web".into())
        );
        assert_eq!(parse_label("app=").unwrap(), ("app".into(), "".into()));
        assert_eq!(
            parse_label("example.com/tier=front_1").unwrap(),
            ("example.com/tier".into(), "front_1".into())
        );
        let err = parse_label("app").unwrap_err().to_string();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
        let err = parse_label("=web").unwrap_err().to_string();
        assert!(err.contains("invalid label key"), "{err}");
        let err = parse_label("app=a b").unwrap_err().to_string();
        assert!(err.contains("invalid value \"a b\""), "{err}");
        assert!(parse_label("a/b/c=x").is_err());
        assert!(parse_label("app=-x").is_err());
    }

    #[test]
    fn selectors() {
        let sel = parse_selector("app=web,tier=front").unwrap();
        assert_eq!(sel.len(), 2);
        assert_eq!(sel["tier"], "front");
        for bad in ["", "app", "app=web,", "app=web,app=db", "app=web;x=y"] {
            let err = parse_selector(bad).unwrap_err().to_string();
            assert!(err.contains("invalid selector"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn port_specs() {
        let short = |p: ServicePort| (p.port, p.target_port, p.protocol.unwrap_or_default());
        let p = parse_port_spec("80").unwrap();
        assert_eq!(short(p), (80, Some(IntOrString::Int(80)), "TCP".into()));
        let p = parse_port_spec("80:8080/tcp").unwrap();
        assert_eq!(short(p), (80, Some(IntOrString::Int(8080)), "TCP".into()));
        let p = parse_port_spec("53/UDP").unwrap();
        assert_eq!(short(p), (53, Some(IntOrString::Int(53)), "UDP".into()));
        for bad in [
            "",
            "0",
            "http",
            "80:",
            ":80",
            "80/sctp",
            "70000",
            "80:8080:1",
            "-1",
        ] {
            let err = parse_port_spec(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected PORT[:TARGET][/tcp|/udp]"),
                "{bad:?}: {err}"
            );
        }
    }
}
