//! API tokens: the credentials API clients present as `Authorization: Bearer …`.
//!
//! Only a token's SHA-256 digest is stored; the caller hashes before looking anything up, so a
//! token in clear never reaches the database or its logs.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{Result, StorageError};

/// A token as its owner may see it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Token {
    /// Primary key; also what revoking names.
    pub id: Uuid,
    /// Whose token it is.
    pub user_id: Uuid,
    /// What the owner called it, e.g. `ci-deploy`.
    pub name: String,
    /// The token's first characters, to tell tokens apart in a listing.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working by itself, if ever.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last presented, to the minute.
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What it takes to create a token.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Whose token it is.
    pub user_id: Uuid,
    /// Not blank, at most 100 characters.
    pub name: &'a str,
    /// SHA-256 of the token.
    pub hash: &'a [u8; 32],
    /// The token's first characters.
    pub prefix: &'a str,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The user a presented token stands for, when the token is valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// The token's id.
    pub token_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Whether the owner sees and changes everything.
    pub is_superuser: bool,
}

/// Creates a token.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewToken<'_>) -> Result<Token> {
    let token = sqlx::query_as!(
        Token,
        r#"
        INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, user_id, name, prefix, created_at, expires_at, last_used_at, revoked_at
        "#,
        new.user_id,
        new.name,
        new.hash.as_slice(),
        new.prefix,
        new.expires_at,
    )
    .fetch_one(db)
    .await?;
    Ok(token)
}

/// The user behind the token with this digest, if the token is neither revoked nor expired
/// and its owner is active.
///
/// Records the use, at most once a minute per token: an API client sends many requests, and
/// writing a row for each would turn every read into a write.
pub async fn authenticate(db: impl PgExecutor<'_>, hash: &[u8; 32]) -> Result<Option<Bearer>> {
    let bearer = sqlx::query_as!(
        Bearer,
        r#"
        WITH valid AS (
            SELECT t.id, t.user_id, u.is_superuser, t.last_used_at
            FROM api_tokens AS t
            JOIN users AS u ON u.id = t.user_id
            WHERE t.token_hash = $1
              AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > now())
              AND u.is_active
        ), touched AS (
            UPDATE api_tokens AS t
            SET last_used_at = now()
            FROM valid
            WHERE t.id = valid.id
              AND (valid.last_used_at IS NULL
                   OR valid.last_used_at < now() - interval '1 minute')
        )
        SELECT id AS "token_id!", user_id AS "user_id!", is_superuser AS "is_superuser!"
        FROM valid
        "#,
        hash.as_slice(),
    )
    .fetch_optional(db)
    .await?;
    Ok(bearer)
}

/// A user's tokens, newest first, revoked ones included.
pub async fn list_for_user(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<Token>> {
    let tokens = sqlx::query_as!(
        Token,
        r#"
        SELECT id, user_id, name, prefix, created_at, expires_at, last_used_at, revoked_at
        FROM api_tokens
        WHERE user_id = $1
        ORDER BY created_at DESC, id DESC
        "#,
        user_id,
    )
    .fetch_all(db)
    .await?;
    Ok(tokens)
}

/// Revokes a token of `owner` (any user's when `owner` is `None`). Revoking a revoked token
/// changes nothing and succeeds, so a retried request gets the same answer.
pub async fn revoke(db: impl PgExecutor<'_>, id: Uuid, owner: Option<Uuid>) -> Result<Token> {
    sqlx::query_as!(
        Token,
        r#"
        UPDATE api_tokens
        SET revoked_at = coalesce(revoked_at, now())
        WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)
        RETURNING id, user_id, name, prefix, created_at, expires_at, last_used_at, revoked_at
        "#,
        id,
        owner,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "token" })
}
