//! Liveness and readiness probes.
//!
//! `/healthz` answers as long as the process serves HTTP; it never touches the database, so a
//! database outage does not make an orchestrator restart healthy processes. `/readyz` answers
//! 200 only when the database is reachable and its schema is exactly what this binary expects.

use axum::Json;
use axum::extract::State;
use quantumflow_storage::schema;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database is reachable and fully migrated.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut versions = serde_json::Map::new();
    for set in quantumflow_queue::migration_sets() {
        let report = schema::inspect(&state.pool, set).await?;
        if !report.unknown.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "the database has {} migrations newer than this binary ({:?}); upgrade it",
                set.name, report.unknown
            )));
        }
        if let Some(pending) = report.pending().next() {
            return Err(ApiError::Unavailable(format!(
                "the database lacks {} migration {} ({}); run `quantumflow migrate up`",
                set.name, pending.version, pending.description
            )));
        }
        versions.insert(set.name.to_owned(), report.version().into());
    }
    Ok(Json(json!({"status": "ready", "schema": versions})))
}
