//! TLS for the ingress: certificates from the `kubernetes.io/tls` Secrets
//! that served Ingresses name in `spec.tls`, picked per handshake by the
//! client's SNI.
//!
//! * A `spec.tls` entry's hosts (exact, or `*.example.com` for one label)
//!   map to its Secret (`tls.crt` chain, `tls.key` PKCS#8, PKCS#1 or SEC1
//!   key) in the Ingress's namespace. On a host named twice, the oldest
//!   Ingress wins.
//! * An entry without hosts, a client without SNI, or a name no entry has:
//!   the certificate of the first entry without hosts if there is one, else
//!   podnet's own self-signed certificate (`podnet-ingress-default`, made at
//!   start, as ingress-nginx serves its "fake certificate").
//! * The table is rebuilt whenever an Ingress or a Secret changes and
//!   swapped in with `arc-swap`: a handshake never waits for a rebuild and
//!   a new certificate is served from the next handshake on, without a
//!   restart.
//! * A Secret that is missing, of another type, or whose certificate and
//!   key do not parse or match is skipped with a warning naming it; its
//!   hosts get the default certificate.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::routes::{age_key, normalize_host};

/// The Secret type `spec.tls` names.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Why a TLS Secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The Secret does not exist in the Ingress's namespace.
    #[error("secret {0} not found; create it with `kubectl create secret tls NAME --cert=FILE --key=FILE`")]
    Missing(String),
    /// Wrong type, or missing `tls.crt` / `tls.key`.
    #[error("secret {0} is not a kubernetes.io/tls Secret with tls.crt and tls.key")]
    NotTls(String),
    /// The PEM data does not parse, or key and certificate do not match.
    #[error("secret {secret}: {detail}")]
    Bad {
        /// The Secret (`namespace/name`).
        secret: String,
        /// What is wrong.
        detail: String,
    },
}

/// Certificates by host, as the served Ingresses name them.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first `spec.tls` entry without hosts.
    fallback: Option<Arc<CertifiedKey>>,
}

/// The certificate chain and key of a `kubernetes.io/tls` Secret.
pub fn load_secret(
    secret: &Secret,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertError> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    );
    let data = secret.data.clone().unwrap_or_default();
    let (Some(crt), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
        return Err(CertError::NotTls(name));
    };
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(CertError::NotTls(name));
    }
    let bad = |detail: String| CertError::Bad {
        secret: name.clone(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt.0)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(bad("tls.crt holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|e| bad(format!("tls.key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| bad(format!("certificate and key: {e}")))
}

impl CertTable {
    /// The table for `ingresses` (those podnet serves) and the Secrets
    /// there are; also the problems found, one line each, for the log.
    pub fn build(
        ingresses: &[Ingress],
        secrets: &[Secret],
        provider: &CryptoProvider,
    ) -> (CertTable, Vec<String>) {
        let by_name: HashMap<(&str, &str), &Secret> = secrets
            .iter()
            .map(|s| {
                (
                    (
                        s.metadata.namespace.as_deref().unwrap_or(""),
                        s.metadata.name.as_deref().unwrap_or(""),
                    ),
                    s,
                )
            })
            .collect();
        let mut ordered: Vec<&Ingress> = ingresses.iter().collect();
        ordered.sort_by_key(|i| age_key(i));
        let mut table = CertTable::default();
        let mut problems = Vec::new();
        let mut loaded: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
        for ing in ordered {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
                let Some(secret_name) = tls.secret_name.clone().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let cert = loaded
                    .entry((ns.clone(), secret_name.clone()))
                    .or_insert_with(|| {
                        let found = by_name
                            .get(&(ns.as_str(), secret_name.as_str()))
                            .ok_or_else(|| CertError::Missing(format!("{ns}/{secret_name}")))
                            .and_then(|s| load_secret(s, provider));
                        match found {
                            Ok(c) => Some(c),
                            Err(e) => {
                                problems.push(format!(
                                    "ingress {ns}/{}: {e}",
                                    ing.metadata.name.as_deref().unwrap_or("")
                                ));
                                None
                            }
                        }
                    })
                    .clone();
                let Some(cert) = cert else { continue };
                let hosts = tls.hosts.clone().unwrap_or_default();
                if hosts.is_empty() && table.fallback.is_none() {
                    table.fallback = Some(cert.clone());
                }
                for h in hosts {
                    let h = normalize_host(&h);
                    match h.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()),
                        None => table.exact.entry(h),
                    }
                    .or_insert_with(|| cert.clone());
                }
            }
        }
        (table, problems)
    }

    /// The certificate for a client that asked for `sni`, if a served
    /// Ingress has one for it (or one without hosts).
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = sni.map(normalize_host).and_then(|h| {
            self.exact.get(&h).cloned().or_else(|| {
                let (first, rest) = h.split_once('.')?;
                (!first.is_empty())
                    .then(|| self.wildcard.get(rest).cloned())
                    .flatten()
            })
        });
        by_name.or_else(|| self.fallback.clone())
    }
}

/// Picks the certificate per handshake from the current [`CertTable`].
#[derive(Debug)]
pub struct SniResolver {
    certs: Arc<ArcSwap<CertTable>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.certs
                .load()
                .lookup(hello.server_name())
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// podnet's own self-signed certificate, for names no Secret covers.
pub fn default_certificate(provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let made = rcgen::generate_simple_self_signed(vec!["podnet-ingress-default".to_string()])
        .map_err(|e| format!("cannot make the default ingress certificate: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    CertifiedKey::from_der(vec![made.cert.der().clone()], key, provider)
        .map(Arc::new)
        .map_err(|e| format!("the default ingress certificate: {e}"))
}

/// The rustls server configuration of the HTTPS listener: certificates by
/// SNI from `certs`, ALPN `h2` then `http/1.1`.
pub fn server_config(certs: Arc<ArcSwap<CertTable>>) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = default_certificate(&provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn secret(name: &str, host: &str) -> (Secret, Vec<u8>) {
        let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let mut s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"}, "type": TLS_SECRET_TYPE
        }))
        .unwrap();
        s.data = Some(
            [
                (
                    "tls.crt".to_string(),
                    ByteString(made.cert.pem().into_bytes()),
                ),
                (
                    "tls.key".to_string(),
                    ByteString(made.signing_key.serialize_pem().into_bytes()),
                ),
            ]
            .into(),
        );
        (s, made.cert.der().to_vec())
    }

    fn ingress(name: &str, tls: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"tls": tls}
        }))
        .unwrap()
    }

    #[test]
    fn sni_picks_the_certificate_by_exact_then_wildcard_host() {
        let (a, a_der) = secret("a", "my-app.com");
        let (w, w_der) = secret("w", "*.example.com");
        let (mut bad, _) = secret("bad", "x.com");
        bad.type_ = Some("Opaque".into());
        let ing = ingress(
            "i",
            json!([
                {"hosts": ["my-app.com"], "secretName": "a"},
                {"hosts": ["*.example.com"], "secretName": "w"},
                {"hosts": ["x.com"], "secretName": "bad"},
                {"hosts": ["y.com"], "secretName": "missing"},
            ]),
        );
        let (t, problems) = CertTable::build(&[ing], &[a, w, bad], &provider());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("default/missing not found")));
        let der = |sni: &str| t.lookup(Some(sni)).map(|c| c.cert[0].to_vec());
        assert_eq!(der("my-app.com"), Some(a_der));
        assert_eq!(der("MY-APP.com"), der("my-app.com"));
        assert_eq!(der("www.example.com"), Some(w_der));
        assert_eq!(der("a.www.example.com"), None);
        assert_eq!(der("x.com"), None);
        assert_eq!(t.lookup(None).map(|c| c.cert.len()), None);
    }

    #[test]
    fn an_entry_without_hosts_is_the_fallback() {
        let (d, d_der) = secret("d", "anything");
        let (t, problems) = CertTable::build(
            &[ingress("i", json!([{"secretName": "d"}]))],
            &[d],
            &provider(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(t.lookup(Some("other.org")).unwrap().cert[0].to_vec(), d_der);
        assert_eq!(t.lookup(None).unwrap().cert[0].to_vec(), d_der);
    }

    #[test]
    fn the_default_certificate_is_made() {
        let c = default_certificate(&provider()).unwrap();
        assert!(c.keys_match().is_ok());
        let certs = Arc::new(ArcSwap::from_pointee(CertTable::default()));
        let config = server_config(certs).unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");
    }
}
