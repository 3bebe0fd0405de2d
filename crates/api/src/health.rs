//! Liveness and readiness probes.
//!
//! `/healthz` answers as long as the process serves HTTP; it never touches the database, so a
//! database outage does not make an orchestrator restart healthy processes. `/readyz` answers
//! 200 only when the database is reachable and has every migration this binary needs.
//!
//! Migrations newer than the binary do not make it unready: migrations are written
//! expand-then-contract, so during a rolling deploy the old processes keep serving on the
//! new schema until they are replaced.

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
    Ok(Json(json!({"status": "ready", "schema": versions})))
}
