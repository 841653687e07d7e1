//! Encryption at rest for Secrets, as the API server's
//! `EncryptionConfiguration` does it.
//!
//! [`super::FileStore`] passes every value it writes to its log or snapshot
//! through [`Encryption::seal`] and every value it loads through
//! [`Encryption::open`]; memory (and so watches and reads) holds plaintext.
//! Only keys under [`ENCRYPTED_PREFIX`] (Secrets) are sealed.
//!
//! A sealed value is `k8s:enc:xchacha20poly1305:v1:<key name>:` then a
//! 24-byte random nonce then the ciphertext with its tag. The store key is
//! the authenticated data, so a sealed value moved to another key does not
//! open. A value without the `k8s:enc:` prefix is plaintext written before
//! encryption was on; it is read as is and sealed when the store next
//! compacts, which it does at every open.
//!
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): an AEAD whose
//! 192-bit nonces can be drawn at random for every write without a counter
//! to keep, and fast without AES instructions.
//!
//! The key file holds one line `<name>:<64 hex digits>`; it is created with
//! mode 0600 on first start.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Store keys whose values are encrypted: every Secret.
pub const ENCRYPTED_PREFIX: &str = "/registry/core/secrets/";
/// What every sealed value starts with (any scheme).
pub const SEALED_MARK: &str = "k8s:enc:";
const SCHEME: &str = "xchacha20poly1305:v1";
const NONCE_LEN: usize = 24;
/// The name given to a key made on first start.
pub const DEFAULT_KEY_NAME: &str = "key1";

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// A file system call failed.
    #[error("could not {op} the encryption key file {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The key file.
        path: PathBuf,
        /// The error of the system call.
        #[source]
        source: io::Error,
    },
    /// The file is not a key file.
    #[error("encryption key file {} is not `<name>:<64 hex digits>`: {reason}; restore it from a backup (the Secrets in the store cannot be read without it)", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Group or others may read the key.
    #[error("encryption key file {} has mode {mode:o}; it must be readable by its owner only: chmod 600 it", path.display())]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Why a stored value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenValueError {
    /// Sealed, but no key is configured.
    #[error("{key} is encrypted ({scheme}) but no encryption key is configured")]
    NoKey {
        /// The store key.
        key: String,
        /// The scheme and key name it names.
        scheme: String,
    },
    /// Sealed with another scheme or key name.
    #[error("{key} is encrypted as {scheme}, not with this key ({ours}); give podnetd the key file it was written with")]
    OtherKey {
        /// The store key.
        key: String,
        /// The scheme and key name it names.
        scheme: String,
        /// Ours.
        ours: String,
    },
    /// The tag does not check: another key of the same name, or damage.
    #[error("{key} does not decrypt with key {name} (a different key file of the same name, or a damaged value)")]
    Undecryptable {
        /// The store key.
        key: String,
        /// Our key name.
        name: String,
    },
}

/// One AEAD key and its name.
pub struct Encryption {
    name: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Encryption {
    /// A key from its 32 bytes.
    pub fn new(name: &str, key: &[u8; 32]) -> Encryption {
        Encryption {
            name: name.to_string(),
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A fresh random key.
    pub fn generate(name: &str) -> (Encryption, [u8; 32]) {
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        (Encryption::new(name, &key), key)
    }

    /// Reads `path`; when it does not exist, creates it (mode 0600) with a
    /// new key. The flag says whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Encryption, bool), KeyFileError> {
        let err = |op| {
            move |source| KeyFileError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path)
                    .map_err(err("stat"))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyFileError::TooOpen {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                Ok((Self::parse(path, &text)?, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(err("create the directory of"))?;
                }
                let (enc, key) = Self::generate(DEFAULT_KEY_NAME);
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err("create"))?;
                file.write_all(format!("{DEFAULT_KEY_NAME}:{hex}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(err("write"))?;
                Ok((enc, true))
            }
            Err(e) => Err(err("read")(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Encryption, KeyFileError> {
        let bad = |reason: &str| KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let (name, hex) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("no `:` between name and key"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("the name must be letters, digits and `-`"));
        }
        if hex.len() != 64 {
            return Err(bad(&format!("the key has {} hex digits", hex.len())));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("the key is not hexadecimal"))?;
        }
        Ok(Encryption::new(name, &key))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> String {
        format!("{SEALED_MARK}{SCHEME}:{}:", self.name)
    }

    /// Whether values at `key` are sealed.
    pub fn applies_to(key: &str) -> bool {
        key.starts_with(ENCRYPTED_PREFIX)
    }

    /// `value` sealed for `key` (the prefix, a fresh nonce, the ciphertext).
    pub fn seal(&self, key: &str, value: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: key.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut out = self.prefix().into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of a stored value: sealed values are opened, plaintext
    /// (no `k8s:enc:` prefix) is returned as is.
    pub fn open(
        this: Option<&Encryption>,
        key: &str,
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, OpenValueError> {
        if !value.starts_with(SEALED_MARK.as_bytes()) {
            return Ok(None);
        }
        let scheme = scheme_of(value);
        let Some(enc) = this else {
            return Err(OpenValueError::NoKey {
                key: key.to_string(),
                scheme,
            });
        };
        let prefix = enc.prefix();
        let Some(rest) = value.strip_prefix(prefix.as_bytes()) else {
            return Err(OpenValueError::OtherKey {
                key: key.to_string(),
                scheme,
                ours: prefix.trim_end_matches(':').to_string(),
            });
        };
        let undecryptable = || OpenValueError::Undecryptable {
            key: key.to_string(),
            name: enc.name.clone(),
        };
        if rest.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        enc.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .map(Some)
            .map_err(|_| undecryptable())
    }
}

/// `k8s:enc:<scheme>:<version>:<key name>` of a sealed value, for messages.
fn scheme_of(value: &[u8]) -> String {
    let head = &value[..value.len().min(96)];
    let text = String::from_utf8_lossy(head);
    text.splitn(6, ':').take(5).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/registry/core/secrets/default/db";

    #[test]
    fn sealed_values_open_with_the_same_key_only_at_the_same_store_key() {
        let (enc, _) = Encryption::generate("key1");
        let sealed = enc.seal(KEY, b"hunter2");
        assert!(sealed.starts_with(b"k8s:enc:xchacha20poly1305:v1:key1:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            Encryption::open(Some(&enc), KEY, &sealed).unwrap(),
            Some(b"hunter2".to_vec())
        );
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, enc.seal(KEY, b"hunter2"));
        // Moved to another key: refused.
        assert!(matches!(
            Encryption::open(Some(&enc), "/registry/core/secrets/default/other", &sealed),
            Err(OpenValueError::Undecryptable { .. })
        ));
        // Another key of the same name: refused.
        let (other, _) = Encryption::generate("key1");
        assert!(matches!(
            Encryption::open(Some(&other), KEY, &sealed),
            Err(OpenValueError::Undecryptable { .. })
        ));
        // Another name, or none: refused, naming the scheme.
        let (named, _) = Encryption::generate("key2");
        let e = Encryption::open(Some(&named), KEY, &sealed).unwrap_err();
        assert!(
            e.to_string().contains("k8s:enc:xchacha20poly1305:v1:key1"),
            "{e}"
        );
        let e = Encryption::open(None, KEY, &sealed).unwrap_err();
        assert!(matches!(e, OpenValueError::NoKey { .. }), "{e}");
        // Plaintext passes.
        assert_eq!(Encryption::open(None, KEY, b"{}").unwrap(), None);
        // Cut short: refused, not a panic.
        assert!(Encryption::open(Some(&enc), KEY, &sealed[..40]).is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/encryption.key");
        let (made, created) = Encryption::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (read, created) = Encryption::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(read.name(), "key1");
        let sealed = made.seal(KEY, b"v");
        assert_eq!(
            Encryption::open(Some(&read), KEY, &sealed).unwrap(),
            Some(b"v".to_vec())
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Encryption::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::write(&path, "key1:zz").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Encryption::load_or_create(&path).unwrap_err();
        assert!(matches!(e, KeyFileError::Malformed { .. }), "{e}");
    }
}
