//! Connectors: configured access to third-party services (Slack, e-mail, HTTP APIs).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{Result, StorageError};

/// A connector, without its credentials: those leave the database only for a worker that
/// needs them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Connector {
    /// Primary key.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The kind of service: `http`, `slack`, `email`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: Option<String>,
    /// Non-secret settings, such as a workspace name.
    pub config: Value,
    /// Whether nodes may use it.
    pub is_active: bool,
    /// When it was last tested.
    pub last_tested_at: Option<DateTime<Utc>>,
    /// Result of the last test: `success`, `failed` or `pending`.
    pub test_status: Option<String>,
    /// Who owns it.
    pub owner_id: Uuid,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// What it takes to create a connector.
#[derive(Debug, Clone)]
pub struct NewConnector<'a> {
    /// Display name.
    pub name: &'a str,
    /// The kind of service.
    pub kind: &'a str,
    /// Free text.
    pub description: Option<&'a str>,
    /// Non-secret settings.
    pub config: &'a Value,
    /// Secret settings, as they are to be stored.
    pub credentials: &'a Value,
    /// Whether nodes may use it.
    pub is_active: bool,
    /// Initial test status, if any.
    pub test_status: Option<&'a str>,
    /// Who owns it.
    pub owner_id: Uuid,
}

/// Creates a connector.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewConnector<'_>) -> Result<Connector> {
    let connector = sqlx::query_as!(
        Connector,
        r#"
        INSERT INTO connectors
            (name, type, description, config, credentials, is_active, test_status,
             owner_id, created_by, updated_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)
        RETURNING id, name, type AS kind, description, config, is_active, last_tested_at,
                  test_status, owner_id, created_at, updated_at
        "#,
        new.name,
        new.kind,
        new.description,
        new.config,
        new.credentials,
        new.is_active,
        new.test_status,
        new.owner_id,
    )
    .fetch_one(db)
    .await?;
    Ok(connector)
}

/// Looks a connector up by id.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Connector> {
    sqlx::query_as!(
        Connector,
        r#"
        SELECT id, name, type AS kind, description, config, is_active, last_tested_at,
               test_status, owner_id, created_at, updated_at
        FROM connectors
        WHERE id = $1
        "#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound {
        entity: "connector",
    })
}

/// Connectors of one owner, newest first, optionally of one kind.
pub async fn list_for_owner(
    db: impl PgExecutor<'_>,
    owner_id: Uuid,
    kind: Option<&str>,
) -> Result<Vec<Connector>> {
    let connectors = sqlx::query_as!(
        Connector,
        r#"
        SELECT id, name, type AS kind, description, config, is_active, last_tested_at,
               test_status, owner_id, created_at, updated_at
        FROM connectors
        WHERE owner_id = $1
          AND ($2::text IS NULL OR type = $2)
        ORDER BY created_at DESC, id DESC
        "#,
        owner_id,
        kind,
    )
    .fetch_all(db)
    .await?;
    Ok(connectors)
}

/// The stored credentials of a connector, for the worker that runs a node using it.
pub async fn credentials(db: impl PgExecutor<'_>, id: Uuid) -> Result<Value> {
    sqlx::query_scalar!("SELECT credentials FROM connectors WHERE id = $1", id)
        .fetch_optional(db)
        .await?
        .ok_or(StorageError::NotFound {
            entity: "connector",
        })
}
