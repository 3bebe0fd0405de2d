//! Connectors: configured access to third-party services (Slack, e-mail, HTTP APIs).
//!
//! The `credentials` column holds what the caller gives it; the callers seal credentials
//! before writing them (see `quantumflow-secrets`), with the connector's id as associated
//! data. That is why ids are chosen by the caller: the id must be known before the row exists.
//! Ordinary reads never return the column; [`for_node`] hands it to the worker that runs a
//! node, and [`rotate`] re-seals rows in batches.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{Result, StorageError};

/// A connector, without its credentials: those leave the database only for a worker that
/// needs them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Connector {
    /// Primary key.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The kind of service: `http`, `slack`, `email`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// Non-secret settings, such as a workspace name.
    pub config: Value,
    /// Whether nodes may use it.
    pub is_active: bool,
    /// When it was last tested.
    #[schema(required = true)]
    pub last_tested_at: Option<DateTime<Utc>>,
    /// Result of the last test: `success`, `failed` or `pending`.
    #[schema(required = true)]
    pub test_status: Option<String>,
    /// Whether any credentials are stored; their names and values are never read here.
    pub has_credentials: bool,
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
    /// Primary key, chosen by the caller (a UUIDv7) so sealed credentials can name it.
    pub id: Uuid,
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

/// A connector's new state; it replaces the old one whole, except the credentials, which are
/// kept when `credentials` is `None`.
#[derive(Debug, Clone)]
pub struct ConnectorUpdate<'a> {
    /// Display name.
    pub name: &'a str,
    /// The kind of service.
    pub kind: &'a str,
    /// Free text.
    pub description: Option<&'a str>,
    /// Non-secret settings.
    pub config: &'a Value,
    /// Secret settings as they are to be stored, or `None` to keep the stored ones.
    pub credentials: Option<&'a Value>,
    /// Whether nodes may use it.
    pub is_active: bool,
    /// Who makes the change.
    pub updated_by: Uuid,
}

/// Creates a connector.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewConnector<'_>) -> Result<Connector> {
    let connector = sqlx::query_as!(
        Connector,
        r#"
        INSERT INTO connectors
            (id, name, type, description, config, credentials, is_active, test_status,
             owner_id, created_by, updated_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9)
        RETURNING id, name, type AS kind, description, config, is_active, last_tested_at,
                  test_status, credentials <> '{}'::jsonb AS "has_credentials!", owner_id,
                  created_at, updated_at
        "#,
        new.id,
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
               test_status, credentials <> '{}'::jsonb AS "has_credentials!", owner_id,
               created_at, updated_at
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

/// Connectors newest first, of one owner (every owner for `None`), optionally of one kind.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner_id: Option<Uuid>,
    kind: Option<&str>,
) -> Result<Vec<Connector>> {
    let connectors = sqlx::query_as!(
        Connector,
        r#"
        SELECT id, name, type AS kind, description, config, is_active, last_tested_at,
               test_status, credentials <> '{}'::jsonb AS "has_credentials!", owner_id,
               created_at, updated_at
        FROM connectors
        WHERE ($1::uuid IS NULL OR owner_id = $1)
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

/// Replaces a connector's settings; see [`ConnectorUpdate`].
pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    change: &ConnectorUpdate<'_>,
) -> Result<Connector> {
    sqlx::query_as!(
        Connector,
        r#"
        UPDATE connectors
        SET name = $2, type = $3, description = $4, config = $5,
            credentials = COALESCE($6, credentials), is_active = $7, updated_by = $8,
            updated_at = CURRENT_TIMESTAMP
        WHERE id = $1
        RETURNING id, name, type AS kind, description, config, is_active, last_tested_at,
                  test_status, credentials <> '{}'::jsonb AS "has_credentials!", owner_id,
                  created_at, updated_at
        "#,
        id,
        change.name,
        change.kind,
        change.description,
        change.config,
        change.credentials,
        change.is_active,
        change.updated_by,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound {
        entity: "connector",
    })
}

/// Deletes a connector. Nodes naming it fail from then on, with a message saying so.
pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    let deleted = sqlx::query!("DELETE FROM connectors WHERE id = $1", id)
        .execute(db)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StorageError::NotFound {
            entity: "connector",
        });
    }
    Ok(())
}

/// The stored credentials of a connector.
pub async fn credentials(db: impl PgExecutor<'_>, id: Uuid) -> Result<Value> {
    sqlx::query_scalar!("SELECT credentials FROM connectors WHERE id = $1", id)
        .fetch_optional(db)
        .await?
        .ok_or(StorageError::NotFound {
            entity: "connector",
        })
}

/// A connector as a node of an execution would use it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConnector {
    /// The credentials as stored (sealed, or clear in rows not rotated yet).
    pub credentials: Value,
    /// Whether nodes may use it.
    pub is_active: bool,
    /// Whether it belongs to the owner of the execution's workflow.
    pub same_owner: bool,
}

/// The connector `id` as the execution `execution_id` would use it; `None` when it does not
/// exist.
pub async fn for_node(
    db: impl PgExecutor<'_>,
    id: Uuid,
    execution_id: Uuid,
) -> Result<Option<NodeConnector>> {
    let found = sqlx::query_as!(
        NodeConnector,
        r#"
        SELECT c.credentials, c.is_active, c.owner_id = w.owner_id AS "same_owner!"
        FROM connectors c, executions e
        JOIN workflows w ON w.id = e.workflow_id
        WHERE c.id = $1 AND e.id = $2
        "#,
        id,
        execution_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(found)
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rows written with newly sealed credentials.
    pub resealed: u64,
    /// Rows left as they were, each with the reason `reseal` gave.
    pub refused: Vec<(Uuid, String)>,
}

/// Re-seals, `batch_size` rows per transaction, every connector with credentials that are
/// not an envelope of the key `active_kid`: `reseal` gets each row's id and stored
/// credentials and returns what to store, or why the row cannot be re-sealed (it is then left
/// alone and reported).
///
/// Rows are locked with `FOR UPDATE SKIP LOCKED`, so a rotation runs beside the control plane
/// and even beside another rotation; each batch commits on its own, so an interrupted rotation
/// keeps what it did and a rerun continues.
pub async fn rotate<F>(
    pool: &PgPool,
    active_kid: &str,
    batch_size: i64,
    mut reseal: F,
) -> Result<Rotation>
where
    F: FnMut(Uuid, &Value) -> std::result::Result<Value, String>,
{
    let mut rotation = Rotation::default();
    loop {
        let skip: Vec<Uuid> = rotation.refused.iter().map(|(id, _)| *id).collect();
        let mut tx = pool.begin().await?;
        let batch = sqlx::query!(
            r#"
            SELECT id, credentials
            FROM connectors
            WHERE credentials <> '{}'::jsonb
              AND NOT (credentials ? 'ciphertext' AND credentials ->> 'kid' IS NOT DISTINCT FROM $1)
              AND NOT (id = ANY($2))
            ORDER BY id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
            "#,
            active_kid,
            &skip,
            batch_size,
        )
        .fetch_all(&mut *tx)
        .await?;
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(rotation);
        }
        for row in batch {
            match reseal(row.id, &row.credentials) {
                Ok(sealed) => {
                    sqlx::query!(
                        "UPDATE connectors SET credentials = $2, updated_at = CURRENT_TIMESTAMP \
                         WHERE id = $1",
                        row.id,
                        sealed,
                    )
                    .execute(&mut *tx)
                    .await?;
                    rotation.resealed += 1;
                }
                Err(reason) => rotation.refused.push((row.id, reason)),
            }
        }
        tx.commit().await?;
    }
}
