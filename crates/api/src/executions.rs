//! Executions as resources: `GET /api/v1/executions/{id}` shows one execution of a workflow
//! and the run of each of its nodes so far.
//!
//! The workflow snapshot an execution runs from is left out: it can be large, and the
//! workflow's own resource shows its definition.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use quantumflow_domain::{ExecutionStatus, NodeRunStatus};
use quantumflow_storage::executions::{self, Execution, NodeRun};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::PathId;
use crate::{ApiError, AppState};

/// An execution as the API shows it, with its node runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionView {
    /// Primary key.
    pub id: Uuid,
    /// The workflow executed.
    pub workflow_id: Uuid,
    /// The workflow's name when the execution began.
    pub workflow_name: Option<String>,
    /// The workflow's version when the execution began.
    pub workflow_version: Option<i32>,
    /// Lifecycle status.
    pub status: ExecutionStatus,
    /// `manual`, `webhook`, `schedule` or `api`.
    pub trigger_type: Option<String>,
    /// Headers and query of the triggering request, or the schedule tick.
    pub trigger_data: Value,
    /// The trigger's payload.
    pub input_data: Value,
    /// The result of the execution.
    pub output_data: Value,
    /// Why it failed.
    pub error_message: Option<String>,
    /// When the first node started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// How long it ran.
    pub duration_ms: Option<i32>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// The runs of its nodes, in the order they were created.
    pub node_runs: Vec<NodeRunView>,
}

/// One node's run within an execution, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRunView {
    /// Primary key.
    pub id: Uuid,
    /// The node that runs.
    pub node_id: Uuid,
    /// The node's name when the execution began.
    pub node_name: Option<String>,
    /// The node's type when the execution began.
    pub node_type: Option<String>,
    /// Lifecycle status.
    pub status: NodeRunStatus,
    /// Retries so far.
    pub retry_count: i32,
    /// When the current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// How long the final attempt ran.
    pub duration_ms: Option<i32>,
    /// What the node produced.
    pub output_data: Value,
    /// Why it failed.
    pub error_message: Option<String>,
}

impl ExecutionView {
    fn new(execution: Execution, node_runs: Vec<NodeRun>) -> Self {
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
            node_runs: node_runs.into_iter().map(NodeRunView::from).collect(),
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
            started_at: run.started_at,
            completed_at: run.completed_at,
            duration_ms: run.duration_ms,
            output_data: run.output_data,
            error_message: run.error_message,
        }
    }
}

/// `GET /api/v1/executions/{id}`: the execution and its node runs.
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
    Ok(Json(ExecutionView::new(execution, node_runs)))
}
