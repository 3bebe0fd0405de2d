//! Executions as resources: `GET /api/v1/executions/{id}` shows one execution of a workflow
//! and the run of each of its nodes so far; `GET /api/v1/workflows/{id}/executions` lists a
//! workflow's executions, newest first, a page at a time.
//!
//! The workflow snapshot an execution runs from is left out: it can be large, and the
//! workflow's own resource shows its definition.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use quantumflow_domain::{ExecutionStatus, NodeRunStatus};
use quantumflow_storage::executions::{self, Cursor, Execution, NodeRun};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::PathId;
use crate::openapi::{BadRequest, NotFound, TokenErrors};
use crate::workflows::WorkflowId;
use crate::{ApiError, AppState, paging};

/// An execution as the API shows it, with its node runs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExecutionView {
    /// Primary key.
    pub id: Uuid,
    /// The workflow executed.
    pub workflow_id: Uuid,
    /// The workflow's name when the execution began.
    #[schema(required = true)]
    pub workflow_name: Option<String>,
    /// The workflow's version when the execution began.
    #[schema(required = true)]
    pub workflow_version: Option<i32>,
    /// Lifecycle status.
    pub status: ExecutionStatus,
    /// `manual`, `webhook`, `schedule` or `api`.
    #[schema(required = true)]
    pub trigger_type: Option<String>,
    /// Headers and query of the triggering request, or the schedule tick.
    pub trigger_data: Value,
    /// The trigger's payload.
    pub input_data: Value,
    /// The result of the execution.
    pub output_data: Value,
    /// Why it failed.
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// When the first node started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// How long it ran.
    #[schema(required = true)]
    pub duration_ms: Option<i32>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// The W3C `traceparent` of the execution's span, which its node runs join. When the
    /// control plane exported no traces, the caller's own `traceparent`, or null without one.
    #[schema(required = true)]
    pub traceparent: Option<String>,
    /// The runs of its nodes, in the order they were created; left out of listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub node_runs: Option<Vec<NodeRunView>>,
}

/// One node's run within an execution, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeRunView {
    /// Primary key.
    pub id: Uuid,
    /// The node that runs.
    pub node_id: Uuid,
    /// The node's name when the execution began.
    #[schema(required = true)]
    pub node_name: Option<String>,
    /// The node's type when the execution began.
    #[schema(required = true)]
    pub node_type: Option<String>,
    /// Lifecycle status.
    pub status: NodeRunStatus,
    /// Retries so far.
    pub retry_count: i32,
    /// Retries allowed.
    pub max_retries: i32,
    /// When the current attempt started.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// How long the final attempt ran.
    #[schema(required = true)]
    pub duration_ms: Option<i32>,
    /// What the node received.
    pub input_data: Value,
    /// What the node produced.
    pub output_data: Value,
    /// Why it failed.
    #[schema(required = true)]
    pub error_message: Option<String>,
}

impl ExecutionView {
    fn new(execution: Execution, node_runs: Option<Vec<NodeRun>>) -> Self {
        Self {
            id: execution.id,
            workflow_id: execution.workflow_id,
            workflow_name: execution.workflow_name,
            workflow_version: execution.workflow_version,
            status: execution.status,
            trigger_type: execution.trigger_type,
            trigger_data: execution.trigger_data,
            input_data: execution.input_data,
            output_data: execution.output_data,
            error_message: execution.error_message,
            started_at: execution.started_at,
            completed_at: execution.completed_at,
            duration_ms: execution.duration_ms,
            created_at: execution.created_at,
            traceparent: execution.traceparent,
            node_runs: node_runs.map(|runs| runs.into_iter().map(NodeRunView::from).collect()),
        }
    }
}

impl From<NodeRun> for NodeRunView {
    fn from(run: NodeRun) -> Self {
        Self {
            id: run.id,
            node_id: run.node_id,
            node_name: run.node_name,
            node_type: run.node_type,
            status: run.status,
            retry_count: run.retry_count,
            max_retries: run.max_retries,
            started_at: run.started_at,
            completed_at: run.completed_at,
            duration_ms: run.duration_ms,
            input_data: run.input_data,
            output_data: run.output_data,
            error_message: run.error_message,
        }
    }
}

/// `GET /api/v1/executions/{id}`: the execution and its node runs.
#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}",
    operation_id = "getExecution",
    tag = "executions",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The execution's id.")),
    responses(
        (status = OK, description = "The execution with its node runs.", body = ExecutionView),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<ExecutionView>, ApiError> {
    if !caller.owns(executions::owner(&state.pool, id).await?) {
        return Err(ApiError::NotFound("execution"));
    }
    let execution = executions::get(&state.pool, id).await?;
    let node_runs = executions::node_runs(&state.pool, id).await?;
    Ok(Json(ExecutionView::new(execution, Some(node_runs))))
}

/// The query of `GET /api/v1/workflows/{id}/executions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only executions in this status.
    #[param(value_type = Option<ExecutionStatus>)]
    pub status: Option<String>,
    /// At most this many (1 to 100, 20 when absent).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// Where the previous page ended: its `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of executions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutionPage {
    /// Newest first, without their node runs.
    pub executions: Vec<ExecutionView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/workflows/{id}/executions`: the workflow's executions, newest first, filtered
/// by `status`, a page at a time (served by the composite indexes on `executions`).
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/executions",
    operation_id = "listExecutions",
    tag = "executions",
    security(("bearer" = [])),
    params(WorkflowId, ListQuery),
    responses(
        (status = OK, description = "A page of executions, newest first.", body = ExecutionPage),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathId(workflow_id): PathId,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<ExecutionStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = paging::limit(query.limit)?;
    let tag = paging::tag(&json!([workflow_id, status.map(ExecutionStatus::as_str)]));
    let cursor = query
        .cursor
        .as_deref()
        .map(|raw| decode_cursor(raw, &tag))
        .transpose()?;

    caller.workflow(&state.pool, workflow_id).await?;
    let rows = executions::latest_for_workflow(&state.pool, workflow_id, status, cursor, limit + 1)
        .await?;
    let (rows, next_cursor) = paging::cut(rows, limit, |last| {
        encode_cursor(last.created_at, last.id, &tag)
    });
    Ok(Json(ExecutionPage {
        executions: rows
            .into_iter()
            .map(|e| ExecutionView::new(e, None))
            .collect(),
        next_cursor,
    }))
}

/// A cursor is the last row's `created_at` in microseconds, its id and the listing's tag:
/// opaque to clients, and exact, so rows created in the same microsecond are neither skipped
/// nor repeated.
fn encode_cursor(created_at: DateTime<Utc>, id: Uuid, tag: &str) -> String {
    format!("{}.{}.{tag}", created_at.timestamp_micros(), id.simple())
}

fn decode_cursor(raw: &str, tag: &str) -> Result<Cursor, ApiError> {
    let invalid = || paging::invalid_cursor(raw);
    let [micros, id, from] = raw.split('.').collect::<Vec<_>>()[..] else {
        return Err(invalid());
    };
    let created_at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::try_parse(id).map_err(|_| invalid())?;
    paging::check_tag(raw, from, tag, "workflow and status")?;
    Ok(Cursor { created_at, id })
}
