//! Users: the people and service accounts that own workflows and connectors.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{Result, StorageError};

/// A user, without the password hash (see [`password_hash`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(description = "A user, without the password hash.")]
pub struct User {
    /// Primary key.
    pub id: Uuid,
    /// Unique e-mail address.
    pub email: String,
    /// Unique login name.
    pub username: String,
    /// Display name.
    #[schema(required = true)]
    pub full_name: Option<String>,
    /// Inactive users cannot sign in.
    pub is_active: bool,
    /// Superusers see and change everything.
    pub is_superuser: bool,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// When the user last signed in.
    #[schema(required = true)]
    pub last_login_at: Option<DateTime<Utc>>,
}

/// What it takes to create a user.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Must match `users_email_check` and be unique.
    pub email: &'a str,
    /// Must be unique.
    pub username: &'a str,
    /// A PHC-format password hash; the storage layer never sees a password.
    pub hashed_password: &'a str,
    /// Display name.
    pub full_name: Option<&'a str>,
    /// Whether the user is a superuser.
    pub is_superuser: bool,
}

/// Creates a user.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewUser<'_>) -> Result<User> {
    let user = sqlx::query_as!(
        User,
        r#"
        INSERT INTO users (email, username, hashed_password, full_name, is_superuser)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, email, username, full_name, is_active, is_superuser,
                  created_at, updated_at, last_login_at
        "#,
        new.email,
        new.username,
        new.hashed_password,
        new.full_name,
        new.is_superuser,
    )
    .fetch_one(db)
    .await?;
    Ok(user)
}

/// Looks a user up by id.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<User> {
    sqlx::query_as!(
        User,
        r#"
        SELECT id, email, username, full_name, is_active, is_superuser,
               created_at, updated_at, last_login_at
        FROM users
        WHERE id = $1
        "#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound { entity: "user" })
}

/// Looks a user up by e-mail address or username.
pub async fn find_by_login(db: impl PgExecutor<'_>, login: &str) -> Result<Option<User>> {
    let user = sqlx::query_as!(
        User,
        r#"
        SELECT id, email, username, full_name, is_active, is_superuser,
               created_at, updated_at, last_login_at
        FROM users
        WHERE email = $1 OR username = $1
        "#,
        login,
    )
    .fetch_optional(db)
    .await?;
    Ok(user)
}

/// The stored password hash of a user, for verifying a sign-in.
pub async fn password_hash(db: impl PgExecutor<'_>, id: Uuid) -> Result<String> {
    sqlx::query_scalar!("SELECT hashed_password FROM users WHERE id = $1", id)
        .fetch_optional(db)
        .await?
        .ok_or(StorageError::NotFound { entity: "user" })
}

/// Deletes a user and, by cascade, everything they own.
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    let done = sqlx::query!("DELETE FROM users WHERE id = $1", id)
        .execute(db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StorageError::NotFound { entity: "user" });
    }
    Ok(())
}
