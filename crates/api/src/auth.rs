//! Who is calling: API tokens, the [`Caller`] extractor, and password hashing.
//!
//! Every `/api/v1` route takes a [`Caller`], which reads `Authorization: Bearer <token>` and
//! looks the token's digest up; a request without a valid token never reaches the handler's
//! body. Handlers then show a caller only what the caller owns (a superuser sees everything),
//! and answer 404 for anything else, so a response never tells a caller that someone else's
//! object exists.
//!
//! Tokens are `qf_` and 64 hexadecimal digits (256 random bits). The prefix makes a leaked
//! token easy to recognise for secret scanners; only the SHA-256 digest is stored.

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use quantumflow_storage::connectors::{self, Connector};
use quantumflow_storage::tokens::{self, NewToken, Token};
use quantumflow_storage::workflows::{self, Workflow};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{ApiError, AppState};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "qf_";

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Characters of a token kept in clear for listings: the prefix and four hex digits, 16 bits,
/// enough to tell a user's tokens apart and far too few to help guess one.
const SHOWN_PREFIX_CHARS: usize = TOKEN_PREFIX.len() + 4;

/// Longest token name, in characters (`VARCHAR(100)` in the schema).
pub const TOKEN_NAME_MAX_CHARS: usize = 100;

/// Shortest password accepted.
pub const PASSWORD_MIN_CHARS: usize = 8;

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The user the token belongs to.
    pub user_id: Uuid,
    /// Superusers see and change everything.
    pub is_superuser: bool,
    /// The token presented.
    pub token_id: Uuid,
}

impl Caller {
    /// Whether the caller may see and change an object owned by `owner_id`.
    pub fn owns(&self, owner_id: Uuid) -> bool {
        self.is_superuser || self.user_id == owner_id
    }

    /// The workflow `id` if the caller may see it; another user's is "not found", exactly as
    /// one that does not exist.
    pub async fn workflow(&self, db: impl PgExecutor<'_>, id: Uuid) -> Result<Workflow, ApiError> {
        let workflow = workflows::get(db, id).await?;
        if !self.owns(workflow.owner_id) {
            return Err(ApiError::NotFound("workflow"));
        }
        Ok(workflow)
    }

    /// The connector `id` if the caller may see it; another user's is "not found", exactly as
    /// one that does not exist.
    pub async fn connector(
        &self,
        db: impl PgExecutor<'_>,
        id: Uuid,
    ) -> Result<Connector, ApiError> {
        let connector = connectors::get(db, id).await?;
        if !self.owns(connector.owner_id) {
            return Err(ApiError::NotFound("connector"));
        }
        Ok(connector)
    }

    /// The owner to filter a listing by: the caller, or nobody for a superuser.
    pub fn owner_filter(&self) -> Option<Uuid> {
        (!self.is_superuser).then_some(self.user_id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(AuthProblem::Missing))?;
        let token = bearer_token(header.as_bytes())
            .ok_or(ApiError::Unauthorized(AuthProblem::Malformed))?;
        let bearer = tokens::authenticate(&state.pool, &digest(token))
            .await?
            .ok_or(ApiError::Unauthorized(AuthProblem::Rejected))?;
        tracing::Span::current().record("user.id", tracing::field::display(bearer.user_id));
        Ok(Self {
            user_id: bearer.user_id,
            is_superuser: bearer.is_superuser,
            token_id: bearer.token_id,
        })
    }
}

/// Why a request was not authenticated; each reads as the detail of the 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthProblem {
    /// No `Authorization` header.
    #[error("this endpoint needs an API token: send `Authorization: Bearer <token>`")]
    Missing,
    /// An `Authorization` header that is not a bearer token of ours.
    #[error(
        "the Authorization header must be `Bearer ` followed by a QuantumFlow token \
         (`qf_` and 64 hexadecimal digits)"
    )]
    Malformed,
    /// A well-formed token that is unknown, revoked or expired, or whose user is inactive.
    #[error("the API token is not valid: unknown, revoked or expired")]
    Rejected,
}

impl AuthProblem {
    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for this problem.
    pub fn challenge(self) -> &'static str {
        match self {
            Self::Missing => r#"Bearer realm="quantumflow""#,
            Self::Malformed => r#"Bearer realm="quantumflow", error="invalid_request""#,
            Self::Rejected => r#"Bearer realm="quantumflow", error="invalid_token""#,
        }
    }
}

/// The token in an `Authorization` header value, if it is `Bearer <one of our tokens>`.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && token.len() == TOKEN_PREFIX.len() + 2 * TOKEN_BYTES
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then_some(token)
}

/// SHA-256 of a token, as stored.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token just created: the only moment its secret is known.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token to present, shown once.
    pub secret: String,
    /// The stored row.
    pub token: Token,
}

/// Creates a token for `user_id`. The name must not be blank and has at most
/// [`TOKEN_NAME_MAX_CHARS`] characters.
pub async fn issue(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedToken, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > TOKEN_NAME_MAX_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "a token name must have 1 to {TOKEN_NAME_MAX_CHARS} characters"
        )));
    }
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::Unprocessable(
            "a token's expiry must be in the future".into(),
        ));
    }
    let mut bytes = [0_u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = bytes
        .iter()
        .fold(String::from(TOKEN_PREFIX), |mut out, byte| {
            out.push_str(&format!("{byte:02x}"));
            out
        });
    let token = tokens::insert(
        db,
        &NewToken {
            user_id,
            name,
            hash: &digest(&secret),
            prefix: &secret[..SHOWN_PREFIX_CHARS],
            expires_at,
        },
    )
    .await?;
    Ok(IssuedToken { secret, token })
}

/// Why a password cannot be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`PASSWORD_MIN_CHARS`].
    #[error("a password must have at least {PASSWORD_MIN_CHARS} characters")]
    TooShort,
    /// The hasher failed (it does not for valid parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// An Argon2id hash of `password` in PHC format, with the crate's default parameters (the
/// OWASP minimum: 19 MiB, two passes). Takes tens of milliseconds of CPU by design; call it
/// off the async threads when serving requests.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    use super::*;

    #[test]
    fn only_bearer_tokens_of_our_shape_are_read() {
        let token = format!("qf_{}", "0123456789abcdef".repeat(4));

        assert_eq!(
            bearer_token(format!("Bearer {token}").as_bytes()),
            Some(token.as_str())
        );
        assert_eq!(
            bearer_token(format!("bearer {token}").as_bytes()),
            Some(token.as_str())
        );
        assert_eq!(bearer_token(format!("Basic {token}").as_bytes()), None);
        assert_eq!(bearer_token(token.as_bytes()), None);
        assert_eq!(bearer_token(format!("Bearer {token}0").as_bytes()), None);
        assert_eq!(
            bearer_token(format!("Bearer {}", token.to_uppercase()).as_bytes()),
            None
        );
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), None);
    }

    #[test]
    fn passwords_are_hashed_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();

        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let parsed = PasswordHash::new(&hash).unwrap();
        let argon2 = argon2::Argon2::default();
        assert!(argon2.verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2.verify_password(b"wrong horse", &parsed).is_err());
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
    }
}
