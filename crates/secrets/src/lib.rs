//! Connector credentials encrypted at rest.
//!
//! A [`Keyring`] holds the keys named by `QUANTUMFLOW_CREDENTIAL_KEYS`: comma-separated
//! `kid:base64(32 bytes)` entries, the first of which seals new credentials while the others
//! only open what they sealed before, so keys can be rotated without downtime.
//!
//! Credentials are stored as an envelope, a JSON object in the same column that used to hold
//! them in clear:
//!
//! ```json
//! {"alg": "xchacha20poly1305", "kid": "k1", "nonce": "<base64>", "ciphertext": "<base64>"}
//! ```
//!
//! The ciphertext is XChaCha20-Poly1305 over the credentials' JSON text, with a random 24-byte
//! nonce (large enough that random nonces never repeat in practice) and the connector's id as
//! associated data: an envelope copied onto another connector's row does not open.
//!
//! Rows written before encryption hold clear JSON; [`reveal`] still reads them, and
//! `quantumflow keys rotate` seals them. Values that leave through [`reveal`] are meant for a
//! node's config only; a [`Redactor`] built from them scrubs them from whatever is recorded.
//!
//! # Layout
//!
//! - this module: the keyring, sealing and opening, telling stored forms apart.
//! - [`redact`]: replacing revealed values in outputs, messages and log fields.

pub mod redact;

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use uuid::Uuid;
use zeroize::Zeroizing;

pub use redact::Redactor;

/// The environment variable every process reads its keys from.
pub const KEYS_VAR: &str = "QUANTUMFLOW_CREDENTIAL_KEYS";

/// The envelope's `alg`, the only algorithm there is.
pub const ALGORITHM: &str = "xchacha20poly1305";

/// Bytes in a key.
pub const KEY_BYTES: usize = 32;

/// Bytes in a nonce.
const NONCE_BYTES: usize = 24;

/// Longest key id, in characters.
pub const KID_MAX_CHARS: usize = 64;

/// Why a key specification cannot be used. No message quotes key material: a key id that
/// breaks the rules is not quoted either, since a reversed entry would put the key there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySpecError {
    /// Nothing but blanks.
    #[error(
        "{KEYS_VAR} is empty; set it to one or more `kid:base64-key` entries separated by \
         commas (`quantumflow keys generate` prints one)"
    )]
    Empty,
    /// Two commas in a row, or one at either end.
    #[error("entry {entry} of {KEYS_VAR} is empty; remove the stray comma")]
    EmptyEntry {
        /// 1-based position of the entry.
        entry: usize,
    },
    /// No `:` between the key id and the key.
    #[error("entry {entry} of {KEYS_VAR} has no `:`; write each entry as `kid:base64-key`")]
    MissingSeparator {
        /// 1-based position of the entry.
        entry: usize,
    },
    /// A key id that is empty, too long or has characters outside the allowed set.
    #[error(
        "entry {entry} of {KEYS_VAR}: the key id before `:` must be 1 to {KID_MAX_CHARS} \
         characters of A-Z, a-z, 0-9, `.`, `_` and `-` (is the entry written key first?)"
    )]
    BadKid {
        /// 1-based position of the entry.
        entry: usize,
    },
    /// The key is not standard base64.
    #[error(
        "entry {entry} of {KEYS_VAR} (key id {kid:?}): the key is not valid base64; use the \
         standard alphabet with `=` padding"
    )]
    BadBase64 {
        /// 1-based position of the entry.
        entry: usize,
        /// The entry's key id.
        kid: String,
    },
    /// The key decodes to the wrong number of bytes.
    #[error(
        "entry {entry} of {KEYS_VAR} (key id {kid:?}): the key decodes to {bytes} bytes; it \
         must be exactly {KEY_BYTES}"
    )]
    WrongLength {
        /// 1-based position of the entry.
        entry: usize,
        /// The entry's key id.
        kid: String,
        /// How many bytes it decodes to.
        bytes: usize,
    },
    /// Two entries with one key id.
    #[error(
        "entries {first} and {entry} of {KEYS_VAR} both use the key id {kid:?}; ids are unique"
    )]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
        /// 1-based position of its first use.
        first: usize,
        /// 1-based position of the repetition.
        entry: usize,
    },
}

/// Why credentials cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The envelope names a key that is not in the keyring.
    #[error(
        "the credentials are sealed with key {kid:?}, which is not in {KEYS_VAR}; add that key \
         back (after the active one)"
    )]
    UnknownKid {
        /// The key id the envelope names.
        kid: String,
    },
    /// The ciphertext does not authenticate under the key and connector id.
    #[error(
        "the credentials do not open with key {kid:?}: they were altered, copied from another \
         connector, or a different key was given that id"
    )]
    Authentication {
        /// The key id the envelope names.
        kid: String,
    },
    /// Something that claims to be an envelope but is not a valid one.
    #[error("the stored credentials are not a valid envelope: {0}")]
    Malformed(String),
    /// The credentials are sealed, but this process has no keys at all.
    #[error("the credentials are encrypted but no keys are configured; set {KEYS_VAR}")]
    NoKeyring,
}

/// Shorthand for results of sealing and opening.
pub type Result<T, E = SecretsError> = std::result::Result<T, E>;

/// One key and its id.
struct Key {
    kid: String,
    secret: Zeroizing<[u8; KEY_BYTES]>,
}

impl Key {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.secret.as_slice().into())
    }
}

/// The keys credentials are sealed and opened with; the first is the active one.
///
/// Key bytes are wiped from memory when the keyring is dropped, and `Debug` shows key ids
/// only.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

impl std::str::FromStr for Keyring {
    type Err = KeySpecError;

    fn from_str(spec: &str) -> Result<Self, KeySpecError> {
        Self::parse(spec)
    }
}

/// How credentials are stored in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredForm<'a> {
    /// Clear JSON, as written before encryption (or `{}`, which is never sealed).
    Clear,
    /// An envelope sealed with the key `kid`.
    Sealed {
        /// The key id the envelope names.
        kid: &'a str,
    },
}

/// Tells an envelope from clear JSON. An object with both `alg` and `ciphertext` is taken for
/// an envelope; [`Keyring::open`] then checks the rest.
pub fn stored_form(stored: &Value) -> StoredForm<'_> {
    match stored {
        Value::Object(map) if map.contains_key("alg") && map.contains_key("ciphertext") => {
            StoredForm::Sealed {
                kid: map.get("kid").and_then(Value::as_str).unwrap_or_default(),
            }
        }
        _ => StoredForm::Clear,
    }
}

/// Whether credentials hold nothing worth sealing: `{}` or `null`.
pub fn is_empty(credentials: &Value) -> bool {
    match credentials {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Credentials in clear, as a node uses them. `Debug` shows their names, never their values.
#[derive(Clone, Default, PartialEq)]
pub struct Revealed(Value);

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .0
            .as_object()
            .map(|map| map.keys().map(String::as_str).collect())
            .unwrap_or_default();
        f.debug_tuple("Revealed").field(&names).finish()
    }
}

impl Revealed {
    /// Wraps credentials just opened.
    pub fn new(credentials: Value) -> Self {
        Self(credentials)
    }

    /// The credential `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// All of them, for a template scope.
    pub fn as_value(&self) -> &Value {
        &self.0
    }

    /// A redactor for these values.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(&self.0)
    }
}

/// The credentials of `connector_id` in clear: an envelope opened with `keyring`, clear JSON
/// as it is. This is the one entry point for code that uses credentials.
pub fn reveal(keyring: Option<&Keyring>, connector_id: Uuid, stored: &Value) -> Result<Value> {
    match (stored_form(stored), keyring) {
        (StoredForm::Clear, _) => Ok(stored.clone()),
        (StoredForm::Sealed { .. }, Some(keyring)) => keyring.open(connector_id, stored),
        (StoredForm::Sealed { .. }, None) => Err(SecretsError::NoKeyring),
    }
}

impl Keyring {
    /// Parses `kid:base64-key[,kid:base64-key…]`; blanks around entries are ignored.
    pub fn parse(spec: &str) -> Result<Self, KeySpecError> {
        if spec.trim().is_empty() {
            return Err(KeySpecError::Empty);
        }
        let mut keys: Vec<Key> = Vec::new();
        for (i, entry) in spec.split(',').enumerate() {
            let entry_no = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(KeySpecError::EmptyEntry { entry: entry_no });
            }
            let (kid, encoded) = entry
                .split_once(':')
                .ok_or(KeySpecError::MissingSeparator { entry: entry_no })?;
            let (kid, encoded) = (kid.trim(), encoded.trim());
            if !valid_kid(kid) {
                return Err(KeySpecError::BadKid { entry: entry_no });
            }
            let decoded =
                Zeroizing::new(
                    BASE64
                        .decode(encoded)
                        .map_err(|_| KeySpecError::BadBase64 {
                            entry: entry_no,
                            kid: kid.to_owned(),
                        })?,
                );
            let mut secret = Zeroizing::new([0_u8; KEY_BYTES]);
            if decoded.len() != KEY_BYTES {
                return Err(KeySpecError::WrongLength {
                    entry: entry_no,
                    kid: kid.to_owned(),
                    bytes: decoded.len(),
                });
            }
            secret.copy_from_slice(&decoded);
            if let Some(first) = keys.iter().position(|k| k.kid == kid) {
                return Err(KeySpecError::DuplicateKid {
                    kid: kid.to_owned(),
                    first: first + 1,
                    entry: entry_no,
                });
            }
            keys.push(Key {
                kid: kid.to_owned(),
                secret,
            });
        }
        Ok(Self { keys })
    }

    /// A fresh `kid:base64-key` entry with a random key, to put in front of the variable.
    pub fn generate_entry() -> String {
        let mut secret = Zeroizing::new([0_u8; KEY_BYTES]);
        let mut tag = [0_u8; 4];
        let mut rng = rand::rng();
        rng.fill_bytes(secret.as_mut_slice());
        rng.fill_bytes(&mut tag);
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("key-{tag}:{}", BASE64.encode(secret.as_slice()))
    }

    /// The id of the key that seals.
    pub fn active_kid(&self) -> &str {
        // `parse` refuses an empty specification, so there is always a first key.
        self.keys
            .first()
            .map(|k| k.kid.as_str())
            .unwrap_or_default()
    }

    /// Every key id, the active one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    /// Whether `kid` is in the keyring.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// Whether `stored` is an envelope sealed with the active key: nothing for rotation to do.
    pub fn is_current(&self, stored: &Value) -> bool {
        stored_form(stored)
            == StoredForm::Sealed {
                kid: self.active_kid(),
            }
    }

    /// Seals `credentials` for the connector `connector_id` with the active key.
    pub fn seal(&self, connector_id: Uuid, credentials: &Value) -> Result<Value> {
        let key = self.keys.first().ok_or(SecretsError::NoKeyring)?;
        let plaintext = Zeroizing::new(
            serde_json::to_vec(credentials).map_err(|e| SecretsError::Malformed(e.to_string()))?,
        );
        let mut nonce = [0_u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: connector_id.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Malformed("the credentials are too large".into()))?;
        let mut envelope = Map::new();
        envelope.insert("alg".into(), ALGORITHM.into());
        envelope.insert("kid".into(), key.kid.clone().into());
        envelope.insert("nonce".into(), BASE64.encode(nonce).into());
        envelope.insert("ciphertext".into(), BASE64.encode(ciphertext).into());
        Ok(Value::Object(envelope))
    }

    /// Opens an envelope sealed for `connector_id` with any key of the keyring.
    pub fn open(&self, connector_id: Uuid, envelope: &Value) -> Result<Value> {
        let map = envelope
            .as_object()
            .ok_or_else(|| SecretsError::Malformed("not a JSON object".into()))?;
        let known: HashSet<&str> = ["alg", "kid", "nonce", "ciphertext"].into();
        if let Some(extra) = map.keys().find(|k| !known.contains(k.as_str())) {
            return Err(SecretsError::Malformed(format!(
                "unexpected member {extra:?}"
            )));
        }
        let text = |name: &str| {
            map.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| SecretsError::Malformed(format!("`{name}` must be a string")))
        };
        let alg = text("alg")?;
        if alg != ALGORITHM {
            return Err(SecretsError::Malformed(format!(
                "unknown algorithm {alg:?}; expected {ALGORITHM:?}"
            )));
        }
        let kid = text("kid")?;
        let nonce = BASE64
            .decode(text("nonce")?)
            .ok()
            .filter(|n| n.len() == NONCE_BYTES)
            .ok_or_else(|| {
                SecretsError::Malformed(format!("`nonce` must be {NONCE_BYTES} bytes in base64"))
            })?;
        let ciphertext = BASE64
            .decode(text("ciphertext")?)
            .map_err(|_| SecretsError::Malformed("`ciphertext` is not base64".into()))?;
        let key =
            self.keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| SecretsError::UnknownKid {
                    kid: kid.to_owned(),
                })?;
        let plaintext = Zeroizing::new(
            key.cipher()
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: connector_id.as_bytes(),
                    },
                )
                .map_err(|_| SecretsError::Authentication {
                    kid: kid.to_owned(),
                })?,
        );
        serde_json::from_slice(&plaintext)
            .map_err(|_| SecretsError::Malformed("the opened credentials are not JSON".into()))
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=KID_MAX_CHARS).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(byte: u8) -> String {
        BASE64.encode([byte; KEY_BYTES])
    }

    fn keyring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    #[test]
    fn sealed_credentials_open_to_what_was_sealed() {
        let ring = keyring(&format!("a:{}", key(1)));
        let id = Uuid::now_v7();
        let credentials = json!({"token": "hunter2-but-longer", "n": 3});

        let sealed = ring.seal(id, &credentials).unwrap();

        assert_eq!(sealed["alg"], ALGORITHM);
        assert_eq!(sealed["kid"], "a");
        assert!(!sealed.to_string().contains("hunter2"), "{sealed}");
        assert_eq!(stored_form(&sealed), StoredForm::Sealed { kid: "a" });
        assert_eq!(ring.open(id, &sealed).unwrap(), credentials);
        assert_eq!(reveal(Some(&ring), id, &sealed).unwrap(), credentials);
    }

    #[test]
    fn every_seal_draws_a_new_nonce() {
        let ring = keyring(&format!("a:{}", key(1)));
        let id = Uuid::now_v7();
        let one = ring.seal(id, &json!({"k": "v"})).unwrap();
        let two = ring.seal(id, &json!({"k": "v"})).unwrap();
        assert_ne!(one["nonce"], two["nonce"]);
        assert_ne!(one["ciphertext"], two["ciphertext"]);
    }

    #[test]
    fn an_envelope_does_not_open_for_another_connector() {
        let ring = keyring(&format!("a:{}", key(1)));
        let sealed = ring.seal(Uuid::now_v7(), &json!({"k": "v"})).unwrap();

        let err = ring.open(Uuid::now_v7(), &sealed).unwrap_err();

        assert_eq!(err, SecretsError::Authentication { kid: "a".into() });
    }

    #[test]
    fn one_changed_byte_of_ciphertext_fails_authentication() {
        let ring = keyring(&format!("a:{}", key(1)));
        let id = Uuid::now_v7();
        let mut sealed = ring.seal(id, &json!({"k": "v"})).unwrap();
        let mut bytes = BASE64
            .decode(sealed["ciphertext"].as_str().unwrap())
            .unwrap();
        bytes[0] ^= 0x01;
        sealed["ciphertext"] = BASE64.encode(bytes).into();

        let err = ring.open(id, &sealed).unwrap_err();

        assert_eq!(err, SecretsError::Authentication { kid: "a".into() });
    }

    #[test]
    fn an_envelope_of_a_key_not_in_the_keyring_names_that_key() {
        let old = keyring(&format!("old:{}", key(1)));
        let new = keyring(&format!("new:{}", key(2)));
        let id = Uuid::now_v7();
        let sealed = old.seal(id, &json!({"k": "v"})).unwrap();

        let err = new.open(id, &sealed).unwrap_err();

        assert_eq!(err, SecretsError::UnknownKid { kid: "old".into() });
        assert!(err.to_string().contains("\"old\""), "{err}");
    }

    #[test]
    fn the_first_key_seals_and_the_others_still_open() {
        let old = keyring(&format!("old:{}", key(1)));
        let both = keyring(&format!("new:{}, old:{}", key(2), key(1)));
        let id = Uuid::now_v7();
        let by_old = old.seal(id, &json!({"k": "v"})).unwrap();

        assert_eq!(both.active_kid(), "new");
        assert_eq!(both.kids().collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(both.open(id, &by_old).unwrap(), json!({"k": "v"}));
        assert!(!both.is_current(&by_old));
        let by_both = both.seal(id, &json!({"k": "v"})).unwrap();
        assert_eq!(by_both["kid"], "new");
        assert!(both.is_current(&by_both));
    }

    #[test]
    fn clear_credentials_are_revealed_as_they_are_and_need_no_keys() {
        let id = Uuid::now_v7();
        let clear = json!({"alg": "mine", "token": "t"});
        assert_eq!(stored_form(&clear), StoredForm::Clear);
        assert_eq!(reveal(None, id, &clear).unwrap(), clear);

        let sealed = keyring(&format!("a:{}", key(1))).seal(id, &clear).unwrap();
        assert_eq!(reveal(None, id, &sealed), Err(SecretsError::NoKeyring));
    }

    #[test]
    fn malformed_envelopes_are_named_as_such() {
        let ring = keyring(&format!("a:{}", key(1)));
        let id = Uuid::now_v7();
        let good = ring.seal(id, &json!({"k": "v"})).unwrap();
        let cases = [
            ("alg", json!("aes")),
            ("nonce", json!("AAAA")),
            ("ciphertext", json!("not base64!")),
            ("kid", json!(7)),
            ("extra", json!(1)),
        ];
        for (member, value) in cases {
            let mut bad = good.clone();
            bad[member] = value;
            assert!(
                matches!(ring.open(id, &bad), Err(SecretsError::Malformed(_))),
                "{member}"
            );
        }
    }

    #[test]
    fn every_mistake_in_a_key_specification_is_named_without_key_material() {
        let good = key(7);
        let short = BASE64.encode([7_u8; 16]);
        let cases = [
            ("  ".to_owned(), KeySpecError::Empty),
            (format!("a:{good},"), KeySpecError::EmptyEntry { entry: 2 }),
            (
                format!("a:{good},{good}"),
                KeySpecError::MissingSeparator { entry: 2 },
            ),
            (format!(":{good}"), KeySpecError::BadKid { entry: 1 }),
            (format!("{good}:a"), KeySpecError::BadKid { entry: 1 }),
            (
                format!("{}:{good}", "k".repeat(KID_MAX_CHARS + 1)),
                KeySpecError::BadKid { entry: 1 },
            ),
            (
                format!("a:{good},b:{short}"),
                KeySpecError::WrongLength {
                    entry: 2,
                    kid: "b".into(),
                    bytes: 16,
                },
            ),
            (
                "a:%%%%".to_owned(),
                KeySpecError::BadBase64 {
                    entry: 1,
                    kid: "a".into(),
                },
            ),
            (
                format!("a:{good},b:{good},a:{good}"),
                KeySpecError::DuplicateKid {
                    kid: "a".into(),
                    first: 1,
                    entry: 3,
                },
            ),
        ];
        for (spec, expected) in cases {
            let err = Keyring::parse(&spec).unwrap_err();
            assert_eq!(err, expected, "{spec}");
            let message = err.to_string();
            assert!(!message.contains(&good), "{message}");
            assert!(!message.contains(&short), "{message}");
            assert!(message.contains(KEYS_VAR), "{message}");
        }
    }

    #[test]
    fn generated_entries_parse_and_differ() {
        let one = Keyring::generate_entry();
        let two = Keyring::generate_entry();
        assert_ne!(one, two);
        let ring = Keyring::parse(&format!("{one},{two}")).unwrap();
        assert_eq!(ring.kids().count(), 2);
        assert_eq!(Some(ring.active_kid()), one.split(':').next());
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let material = key(9);
        let ring = keyring(&format!("shown:{material}"));
        let debug = format!("{ring:?}");
        assert!(debug.contains("shown"), "{debug}");
        assert!(!debug.contains(&material), "{debug}");
    }
}
