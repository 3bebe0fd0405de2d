//! Webhook signatures: proving that a delivery comes from the service that holds the secret.
//!
//! A workflow opts in with `trigger_config.config.signature`, naming a scheme and the
//! connector whose credentials hold the signing secrets (`{"secrets": [...]}`; more than one
//! while a secret is being rotated, and any of them may match). The check runs over the raw
//! body, before it is parsed, so a forged request costs no parsing and writes nothing.
//!
//! [`verify`] is a pure function of the scheme, the secrets, the request and the clock, so
//! every case is testable without a server; [`signing_secrets`] is the one place that reads
//! the secrets from the database.
//!
//! Two schemes are understood:
//!
//! - `github`: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the body keyed with the
//!   secret's bytes. `X-GitHub-Delivery`, when present, names the delivery.
//! - `standard-webhooks`: `webhook-id`, `webhook-timestamp` (unix seconds) and
//!   `webhook-signature` (space-separated `v1,<base64>` entries), each an HMAC-SHA256 of
//!   `{id}.{timestamp}.{body}` keyed with the base64 after a secret's `whsec_` prefix. The
//!   timestamp must lie within the tolerance of the server's clock, either way, so that a
//!   captured delivery cannot be replayed later.
//!
//! Comparisons go through [`Mac::verify_slice`], which takes the same time wherever the
//! first differing byte is.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use quantumflow_secrets::Keyring;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How far a `webhook-timestamp` may be from the server's clock when the workflow does not
/// say: five minutes, as the Standard Webhooks specification recommends.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// The longest tolerance a workflow may choose. Deliveries are remembered for replay
/// detection for [`crate::starter::DELIVERY_RETENTION`], which must stay well past it.
pub const MAX_TOLERANCE_SECONDS: u64 = 3600;

/// The longest delivery id recorded, as `webhook_deliveries.delivery_id` allows.
const MAX_DELIVERY_ID_CHARS: usize = 255;

/// The names of the schemes, as written in `trigger_config.config.signature.scheme`.
pub const SCHEMES: &[&str] = &["github", "standard-webhooks"];

/// A workflow's `trigger_config.config.signature`, as validated when the workflow was created.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignatureConfig {
    /// `github` or `standard-webhooks`.
    pub scheme: String,
    /// The connector whose credentials hold the secrets.
    pub connector_id: Uuid,
    /// For `standard-webhooks`: how far the timestamp may be from now, in seconds.
    pub tolerance_seconds: Option<u64>,
}

impl SignatureConfig {
    /// The signature settings in a stored `trigger_config`, if it has any.
    ///
    /// Stored settings were checked on creation, so unreadable ones mean the row was changed
    /// behind the API's back; they are reported rather than silently skipped, which would
    /// accept unsigned deliveries.
    pub fn of(trigger_config: &Value) -> Result<Option<Self>, serde_json::Error> {
        match trigger_config.pointer("/config/signature") {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Self::deserialize(value).map(Some),
        }
    }

    /// The scheme to check deliveries with, or `None` for an unknown scheme name.
    pub fn scheme(&self) -> Option<Scheme> {
        match self.scheme.as_str() {
            "github" => Some(Scheme::GitHub),
            "standard-webhooks" => Some(Scheme::StandardWebhooks {
                tolerance_seconds: self.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS),
            }),
            _ => None,
        }
    }
}

/// How deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// GitHub's `X-Hub-Signature-256`.
    GitHub,
    /// The Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    StandardWebhooks {
        /// How far the timestamp may be from now, either way.
        tolerance_seconds: u64,
    },
}

/// A delivery whose signature matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id for the delivery, if it sent one; a repeat of it is a replay.
    pub delivery_id: Option<String>,
}

/// Why a delivery's signature was refused. The messages name the failed check and never a
/// secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme requires is absent.
    #[error("the signature header {0} is missing")]
    MissingHeader(&'static str),
    /// A header is present but cannot be read.
    #[error("the signature header {header} is malformed: {reason}")]
    MalformedHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The timestamp is too old or too far in the future.
    #[error(
        "the webhook-timestamp is {skew} seconds {direction} the server's clock, outside the \
         {tolerance} seconds allowed"
    )]
    OutsideWindow {
        /// How far off it is, in seconds.
        skew: u64,
        /// `behind` or `ahead of`.
        direction: &'static str,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// The request is well-formed but no signature was made with any of the secrets.
    #[error("no signature matches the body with any of the workflow's signing secrets")]
    NoMatch,
}

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitHub's older SHA-1 signature, sent beside the SHA-256 one.
const GITHUB_SIGNATURE_SHA1: &str = "x-hub-signature";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The headers that carry a request's signature under some scheme. They prove this one request
/// and nothing else, so they are not kept with the execution: a reader of it could replay them.
pub(crate) const SIGNATURE_HEADERS: [&str; 3] =
    [GITHUB_SIGNATURE, GITHUB_SIGNATURE_SHA1, WEBHOOK_SIGNATURE];

/// Checks a delivery's signature against each of `secrets`, with `now` in unix seconds.
pub fn verify(
    scheme: Scheme,
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, SignatureError> {
    match scheme {
        Scheme::GitHub => verify_github(secrets, headers, body),
        Scheme::StandardWebhooks { tolerance_seconds } => {
            verify_standard(secrets, headers, body, now, tolerance_seconds)
        }
    }
}

fn verify_github(
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, SignatureError> {
    let header = required(headers, GITHUB_SIGNATURE)?;
    let malformed = |reason| SignatureError::MalformedHeader {
        header: GITHUB_SIGNATURE,
        reason,
    };
    let hex = header
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed("it must start with sha256="))?;
    let signature = hex::decode(hex).map_err(|_| malformed("the digest is not hexadecimal"))?;
    let matches = secrets.iter().any(|secret| {
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    });
    if !matches {
        return Err(SignatureError::NoMatch);
    }
    let delivery_id = optional_str(headers, GITHUB_DELIVERY)?
        .map(|id| delivery_id(GITHUB_DELIVERY, id))
        .transpose()?;
    Ok(Verified { delivery_id })
}

fn verify_standard(
    secrets: &[String],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<Verified, SignatureError> {
    let id = required(headers, WEBHOOK_ID)?;
    let timestamp = required(headers, WEBHOOK_TIMESTAMP)?;
    let signatures = required(headers, WEBHOOK_SIGNATURE)?;

    let sent: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::MalformedHeader {
            header: WEBHOOK_TIMESTAMP,
            reason: "it must be an integer number of seconds since 1970",
        })?;
    let skew = now.abs_diff(sent);
    if skew > tolerance {
        let direction = if sent < now { "behind" } else { "ahead of" };
        return Err(SignatureError::OutsideWindow {
            skew,
            direction,
            tolerance,
        });
    }

    // Entries of other versions (a future `v1a`, say) are skipped, as the specification asks;
    // a header with no readable `v1` entry at all is malformed.
    let mut offered = Vec::new();
    for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
        if let Some(encoded) = entry.strip_prefix("v1,") {
            let signature =
                BASE64
                    .decode(encoded)
                    .map_err(|_| SignatureError::MalformedHeader {
                        header: WEBHOOK_SIGNATURE,
                        reason: "a v1 signature is not base64",
                    })?;
            offered.push(signature);
        }
    }
    if offered.is_empty() {
        return Err(SignatureError::MalformedHeader {
            header: WEBHOOK_SIGNATURE,
            reason: "it has no v1,<base64> entry",
        });
    }

    let matches = secrets.iter().filter_map(|s| standard_key(s)).any(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
            return false;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        offered
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
    });
    if !matches {
        return Err(SignatureError::NoMatch);
    }
    Ok(Verified {
        delivery_id: Some(delivery_id(WEBHOOK_ID, id)?),
    })
}

/// A delivery id as it is recorded for replay detection, which keeps at most
/// [`MAX_DELIVERY_ID_CHARS`] characters.
fn delivery_id(header: &'static str, id: &str) -> Result<String, SignatureError> {
    if id.is_empty() || id.chars().count() > MAX_DELIVERY_ID_CHARS {
        return Err(SignatureError::MalformedHeader {
            header,
            reason: "a delivery id must have between 1 and 255 characters",
        });
    }
    Ok(id.to_owned())
}

/// The key of a `whsec_<base64>` secret. A secret without the prefix is taken as base64
/// all the same, since some senders show it bare.
fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(encoded).ok()
}

fn required<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SignatureError> {
    optional_str(headers, name)?.ok_or(SignatureError::MissingHeader(name))
}

fn optional_str<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, SignatureError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| SignatureError::MalformedHeader {
            header: name,
            reason: "it is not visible ASCII",
        })?;
    Ok(Some(text.trim()))
}

/// Why a connector's signing secrets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The connector could not be read.
    #[error(transparent)]
    Storage(#[from] quantumflow_storage::StorageError),
    /// Its credentials are sealed and cannot be opened with this process's keys.
    #[error("the connector's credentials cannot be opened: {0}")]
    Sealed(#[from] quantumflow_secrets::SecretsError),
    /// Its credentials have no non-empty `secrets` array of strings.
    #[error("the connector's credentials have no \"secrets\" array of strings")]
    Missing,
}

/// The signing secrets stored in a connector's credentials as `{"secrets": ["...", ...]}`,
/// opened with `keyring` (rows still in clear are read as they are).
///
/// This is the only place the API reads connector credentials.
pub async fn signing_secrets(
    pool: &PgPool,
    keyring: Option<&Keyring>,
    connector_id: Uuid,
) -> Result<Vec<String>, SecretsError> {
    let stored = quantumflow_storage::connectors::credentials(pool, connector_id).await?;
    let credentials = quantumflow_secrets::reveal(keyring, connector_id, &stored)?;
    let secrets: Vec<String> = credentials
        .get("secrets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if secrets.is_empty() {
        return Err(SecretsError::Missing);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NOW: i64 = 1_700_000_000;

    fn github_signature(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = standard_key(secret).unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const STANDARD: Scheme = Scheme::StandardWebhooks {
        tolerance_seconds: 300,
    };

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn github_signatures_are_checked_against_every_secret() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let signed = headers(&[
            (GITHUB_SIGNATURE, &github_signature("new", body)),
            (GITHUB_DELIVERY, "d-1"),
        ]);

        let verified = verify(
            Scheme::GitHub,
            &secrets(&["old", "new"]),
            &signed,
            body,
            NOW,
        );
        let wrong_key = verify(Scheme::GitHub, &secrets(&["old"]), &signed, body, NOW);
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        let tampered = verify(Scheme::GitHub, &secrets(&["new"]), &signed, &changed, NOW);

        assert_eq!(
            verified,
            Ok(Verified {
                delivery_id: Some("d-1".to_owned())
            })
        );
        assert_eq!(wrong_key, Err(SignatureError::NoMatch));
        assert_eq!(tampered, Err(SignatureError::NoMatch));
    }

    #[test]
    fn github_headers_must_be_present_and_well_formed() {
        let keys = secrets(&["s"]);
        let missing = verify(Scheme::GitHub, &keys, &HeaderMap::new(), b"", NOW);
        let no_prefix = headers(&[(GITHUB_SIGNATURE, "abcdef")]);
        let not_hex = headers(&[(GITHUB_SIGNATURE, "sha256=zz")]);

        assert_eq!(
            missing,
            Err(SignatureError::MissingHeader(GITHUB_SIGNATURE))
        );
        for malformed in [no_prefix, not_hex] {
            assert!(matches!(
                verify(Scheme::GitHub, &keys, &malformed, b"", NOW),
                Err(SignatureError::MalformedHeader {
                    header: GITHUB_SIGNATURE,
                    ..
                })
            ));
        }
    }

    #[test]
    fn standard_webhooks_sign_id_timestamp_and_body() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"type":"user.created"}"#;
        let signature = standard_signature(secret, "msg_1", NOW, body);
        // Several signatures, of unknown versions too, may be offered; one match suffices.
        let offered = format!("v1a,AAAA v1,AAAA {signature}");
        let signed = headers(&[
            (WEBHOOK_ID, "msg_1"),
            (WEBHOOK_TIMESTAMP, &NOW.to_string()),
            (WEBHOOK_SIGNATURE, &offered),
        ]);

        let verified = verify(STANDARD, &secrets(&[secret]), &signed, body, NOW + 10);
        let other_id = headers(&[
            (WEBHOOK_ID, "msg_2"),
            (WEBHOOK_TIMESTAMP, &NOW.to_string()),
            (WEBHOOK_SIGNATURE, &signature),
        ]);

        assert_eq!(
            verified,
            Ok(Verified {
                delivery_id: Some("msg_1".to_owned())
            })
        );
        assert_eq!(
            verify(STANDARD, &secrets(&[secret]), &other_id, body, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn standard_webhooks_refuse_timestamps_outside_the_window() {
        let secret = "whsec_c2VjcmV0";
        let sent = NOW - 301;
        let signed = headers(&[
            (WEBHOOK_ID, "msg_1"),
            (WEBHOOK_TIMESTAMP, &sent.to_string()),
            (
                WEBHOOK_SIGNATURE,
                &standard_signature(secret, "msg_1", sent, b"x"),
            ),
        ]);

        let stale = verify(STANDARD, &secrets(&[secret]), &signed, b"x", NOW);
        let future = verify(STANDARD, &secrets(&[secret]), &signed, b"x", sent - 301);
        let inside = verify(STANDARD, &secrets(&[secret]), &signed, b"x", sent + 300);

        assert!(matches!(
            stale,
            Err(SignatureError::OutsideWindow {
                skew: 301,
                direction: "behind",
                ..
            })
        ));
        assert!(matches!(
            future,
            Err(SignatureError::OutsideWindow {
                skew: 301,
                direction: "ahead of",
                ..
            })
        ));
        assert!(inside.is_ok());
    }

    #[test]
    fn standard_webhooks_headers_must_be_present_and_well_formed() {
        let keys = secrets(&["whsec_c2VjcmV0"]);
        let now = NOW.to_string();
        let cases = [
            (
                vec![(WEBHOOK_TIMESTAMP, &*now), (WEBHOOK_SIGNATURE, "v1,AA==")],
                "missing",
            ),
            (
                vec![(WEBHOOK_ID, "m"), (WEBHOOK_SIGNATURE, "v1,AA==")],
                "missing",
            ),
            (
                vec![(WEBHOOK_ID, "m"), (WEBHOOK_TIMESTAMP, &*now)],
                "missing",
            ),
            (
                vec![
                    (WEBHOOK_ID, "m"),
                    (WEBHOOK_TIMESTAMP, "soon"),
                    (WEBHOOK_SIGNATURE, "v1,AA=="),
                ],
                "malformed",
            ),
            (
                vec![
                    (WEBHOOK_ID, "m"),
                    (WEBHOOK_TIMESTAMP, &*now),
                    (WEBHOOK_SIGNATURE, "v1,%%"),
                ],
                "malformed",
            ),
            (
                vec![
                    (WEBHOOK_ID, "m"),
                    (WEBHOOK_TIMESTAMP, &*now),
                    (WEBHOOK_SIGNATURE, "AA=="),
                ],
                "malformed",
            ),
        ];

        for (pairs, expected) in cases {
            let result = verify(STANDARD, &keys, &headers(&pairs), b"", NOW);
            let kind = match result {
                Err(SignatureError::MissingHeader(_)) => "missing",
                Err(SignatureError::MalformedHeader { .. }) => "malformed",
                other => panic!("{pairs:?}: {other:?}"),
            };
            assert_eq!(kind, expected, "{pairs:?}");
        }
    }

    #[test]
    fn refusals_never_show_a_secret_or_the_expected_signature() {
        let secret = "whsec_c2VjcmV0";
        let expected = standard_signature(secret, "m", NOW, b"body");
        let forged = headers(&[
            (WEBHOOK_ID, "m"),
            (WEBHOOK_TIMESTAMP, &NOW.to_string()),
            (WEBHOOK_SIGNATURE, "v1,AAAA"),
        ]);

        let message = verify(STANDARD, &secrets(&[secret]), &forged, b"body", NOW)
            .unwrap_err()
            .to_string();

        assert!(!message.contains("c2VjcmV0"), "{message}");
        assert!(!message.contains(&expected[3..]), "{message}");
    }
}
