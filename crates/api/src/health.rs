//! Liveness and readiness probes.
//!
//! `/healthz` answers as long as the process serves HTTP; it never touches the database, so a
//! database outage does not make an orchestrator restart healthy processes. `/readyz` answers
//! 200 only when the database is reachable and has every migration this binary needs, and the
//! process is not shutting down: from the moment it begins to drain, `/readyz` answers 503 so
//! load balancers stop sending it traffic while it still serves what they send meanwhile.
//!
//! Migrations newer than the binary do not make it unready: migrations are written
//! expand-then-contract, so during a rolling deploy the old processes keep serving on the
//! new schema until they are replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use quantumflow_storage::{StorageError, probes, schema};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction};

use crate::error::POOL_EXHAUSTED;
use crate::openapi::DatabaseErrors;
use crate::{ApiError, AppState};

/// Whether the process is shutting down; shared by every clone of the state.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Marks the process as shutting down; `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Draining::begin`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The body of `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// For each migration set (`quantumflow`, `apalis`), the newest version applied; and, under
    /// `<set>_newer_than_binary`, the versions applied that this binary does not know.
    #[schema(value_type = Object, example = json!({"quantumflow": 20250101000000_i64}))]
    pub schema: Map<String, Value>,
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getLiveness",
    tag = "health",
    responses((status = OK, description = "The process serves HTTP.", body = Liveness)),
)]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// `GET /readyz`: the database is reachable and fully migrated; 503 when it is unreachable
/// or lacks a migration, or when the process is shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "health",
    responses(
        (status = OK, description = "Ready to serve.", body = Readiness),
        DatabaseErrors,
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if state.draining.is_draining() {
        return Err(ApiError::Unavailable(
            "draining: this process is shutting down and takes no new traffic".to_owned(),
        ));
    }
    let mut probe = begin_probe(&state.pool).await?;
    Ok(Json(Readiness {
        status: "ready",
        schema: schema_versions(&mut probe).await?,
    }))
}

/// The longest a probe's statement runs before the database cancels it: under the 3 s that
/// probes give the database, so that a probe stuck behind a lock frees its connection soon
/// after it gave up, and repeated probes cannot take the whole pool.
pub const PROBE_STATEMENT_LIMIT: Duration = Duration::from_millis(2500);

/// How long a probe tries to open a connection of its own, to tell a busy pool from a database
/// that refuses connections.
const PROBE_CONNECT_LIMIT: Duration = Duration::from_secs(1);

/// The detail of a 503 when the pool is at its limit but the database accepts connections.
pub const AT_CONNECTION_LIMIT: &str = "no database connection became free in time: this server \
     is at its connection limit, while the database accepts connections; retry shortly";

/// A transaction for a probe's reads on `pool`, whose statements the database cancels after
/// [`PROBE_STATEMENT_LIMIT`].
///
/// When the pool hands out nothing in time, the probe opens one connection outside it: a
/// database that accepts it means the pool is at its limit; one that refuses it is an outage,
/// which over TCP looks the same to the pool (it retries refused connections until it gives
/// up).
pub async fn begin_probe(pool: &PgPool) -> Result<Transaction<'static, Postgres>, ApiError> {
    match probes::begin(pool, PROBE_STATEMENT_LIMIT).await {
        Ok(probe) => Ok(probe),
        Err(err) if err.is_pool_exhausted() => {
            let options = pool.connect_options();
            let opened =
                tokio::time::timeout(PROBE_CONNECT_LIMIT, PgConnection::connect_with(&options));
            Err(match opened.await {
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    ApiError::Unavailable(AT_CONNECTION_LIMIT.to_owned())
                }
                Ok(Err(err)) => unready(&StorageError::from(err)),
                Err(_) => ApiError::Unavailable(format!(
                    "the database is unreachable: no connection opened within {} ms",
                    PROBE_CONNECT_LIMIT.as_millis()
                )),
            })
        }
        Err(err) => Err(unready(&err)),
    }
}

/// Why a probe's read failed, as the detail of its 503: a busy pool, a database too slow to
/// answer (a lock, say) and one that cannot be reached call for different remedies.
pub fn unready(err: &StorageError) -> ApiError {
    if err.is_pool_exhausted() {
        return ApiError::Unavailable(POOL_EXHAUSTED.to_owned());
    }
    if err.is_statement_timeout() {
        return ApiError::Unavailable(format!(
            "the database did not answer within {} ms; a lock or a slow statement holds it up",
            PROBE_STATEMENT_LIMIT.as_millis()
        ));
    }
    ApiError::Unavailable(format!("the database is unreachable: {err}"))
}

/// For each migration set, the newest version applied, as [`Readiness::schema`] shows them;
/// an error when the database is unreachable or lacks a migration this binary needs. Every
/// role's readiness check starts here, on a transaction of [`begin_probe`].
pub async fn schema_versions(probe: &mut PgConnection) -> Result<Map<String, Value>, ApiError> {
    let mut versions = Map::new();
    for set in quantumflow_queue::migration_sets() {
        // Whatever keeps the schema from being read makes the process unready, not broken.
        let report = schema::inspect_on(&mut *probe, set)
            .await
            .map_err(|err| unready(&err))?;
        if let Some(pending) = report.pending().next() {
            return Err(ApiError::Unavailable(format!(
                "the database lacks {} migration {} ({}); run `quantumflow migrate up`",
                set.name, pending.version, pending.description
            )));
        }
        versions.insert(set.name.to_owned(), report.version().into());
        if !report.unknown.is_empty() {
            versions.insert(
                format!("{}_newer_than_binary", set.name),
                report.unknown.into(),
            );
        }
    }
    Ok(versions)
}
