//! Executions and their node runs: the history of what ran, when, and with what result.

use chrono::{DateTime, Utc};
use quantumflow_domain::{ExecutionStatus, NodeRunStatus};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{Result, StorageError};

/// The SQL of [`latest_for_workflow`], for tests that inspect its plan.
pub const LATEST_FOR_WORKFLOW_SQL: &str =
    include_str!("../queries/executions_latest_for_workflow.sql");

/// One execution of a workflow, without its (large) snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Execution {
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
    /// Where it failed.
    pub error_stack: Option<String>,
    /// When the first node started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// How long it ran.
    pub duration_ms: Option<i32>,
    /// The user whose token triggered it.
    pub triggered_by: Option<Uuid>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// The W3C `traceparent` its node runs join; none when it was started on no trace.
    pub traceparent: Option<String>,
}

/// An execution to create.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    /// The workflow executed.
    pub workflow_id: Uuid,
    /// Its name now.
    pub workflow_name: &'a str,
    /// Its version now.
    pub workflow_version: i32,
    /// `manual`, `webhook`, `schedule` or `api`.
    pub trigger_type: &'a str,
    /// Request metadata.
    pub trigger_data: &'a Value,
    /// The workflow, nodes, edges and settings as they are now.
    pub workflow_snapshot: &'a Value,
    /// The trigger's payload.
    pub input_data: &'a Value,
    /// Who triggered it.
    pub triggered_by: Option<Uuid>,
}

struct ExecutionRow {
    id: Uuid,
    workflow_id: Uuid,
    workflow_name: Option<String>,
    workflow_version: Option<i32>,
    status: String,
    trigger_type: Option<String>,
    trigger_data: Value,
    input_data: Value,
    output_data: Value,
    error_message: Option<String>,
    error_stack: Option<String>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    duration_ms: Option<i32>,
    triggered_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    traceparent: Option<String>,
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = StorageError;

    fn try_from(r: ExecutionRow) -> Result<Self> {
        Ok(Self {
            status: r
                .status
                .parse()
                .map_err(|e| StorageError::corrupt("executions.status", &e))?,
            id: r.id,
            workflow_id: r.workflow_id,
            workflow_name: r.workflow_name,
            workflow_version: r.workflow_version,
            trigger_type: r.trigger_type,
            trigger_data: r.trigger_data,
            input_data: r.input_data,
            output_data: r.output_data,
            error_message: r.error_message,
            error_stack: r.error_stack,
            started_at: r.started_at,
            completed_at: r.completed_at,
            duration_ms: r.duration_ms,
            triggered_by: r.triggered_by,
            created_at: r.created_at,
            traceparent: r.traceparent,
        })
    }
}

/// Records a new, pending execution.
pub async fn insert(db: impl PgExecutor<'_>, new: &NewExecution<'_>) -> Result<Execution> {
    let row = sqlx::query_as!(
        ExecutionRow,
        r#"
        INSERT INTO executions
            (workflow_id, workflow_name, workflow_version, trigger_type, trigger_data,
             workflow_snapshot, input_data, triggered_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING id, workflow_id, workflow_name, workflow_version, status, trigger_type,
                  trigger_data, input_data, output_data, error_message, error_stack,
                  started_at, completed_at, duration_ms, triggered_by, created_at, traceparent
        "#,
        new.workflow_id,
        new.workflow_name,
        new.workflow_version,
        new.trigger_type,
        new.trigger_data,
        new.workflow_snapshot,
        new.input_data,
        new.triggered_by,
    )
    .fetch_one(db)
    .await?;
    Execution::try_from(row)
}

/// Looks an execution up by id.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Execution> {
    let row = sqlx::query_as!(
        ExecutionRow,
        r#"
        SELECT id, workflow_id, workflow_name, workflow_version, status, trigger_type,
               trigger_data, input_data, output_data, error_message, error_stack, started_at,
               completed_at, duration_ms, triggered_by, created_at, traceparent
        FROM executions
        WHERE id = $1
        "#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound {
        entity: "execution",
    })?;
    Execution::try_from(row)
}

/// The owner of the workflow an execution ran, which is who may see the execution.
pub async fn owner(db: impl PgExecutor<'_>, id: Uuid) -> Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        SELECT w.owner_id
        FROM executions AS e
        JOIN workflows AS w ON w.id = e.workflow_id
        WHERE e.id = $1
        "#,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound {
        entity: "execution",
    })
}

/// What a worker needs of an execution besides its node runs; none of it ever changes.
#[derive(Debug, Clone)]
pub struct RunSource {
    /// The snapshot the execution runs from.
    pub workflow_snapshot: Value,
    /// The W3C `traceparent` its node runs join, when it was started on a trace.
    pub traceparent: Option<String>,
    /// The `tracestate` that goes with it.
    pub tracestate: Option<String>,
}

/// The snapshot an execution runs from, with the trace it runs under.
pub async fn run_source(db: impl PgExecutor<'_>, id: Uuid) -> Result<RunSource> {
    sqlx::query_as!(
        RunSource,
        "SELECT workflow_snapshot, traceparent, tracestate FROM executions WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?
    .ok_or(StorageError::NotFound {
        entity: "execution",
    })
}

/// A page position in a newest-first list: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last row seen.
    pub created_at: DateTime<Utc>,
    /// `id` of the last row seen, breaking ties between equal timestamps.
    pub id: Uuid,
}

/// The newest executions of a workflow, after `cursor` when given, only those in `status`
/// when given.
pub async fn latest_for_workflow(
    db: impl PgExecutor<'_>,
    workflow_id: Uuid,
    status: Option<ExecutionStatus>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Execution>> {
    let rows = sqlx::query_file_as!(
        ExecutionRow,
        "queries/executions_latest_for_workflow.sql",
        workflow_id,
        cursor.map(|c| c.created_at),
        cursor.map(|c| c.id),
        limit,
        status.map(ExecutionStatus::as_str),
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Execution::try_from).collect()
}

/// One node's run within one execution.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeRun {
    /// Primary key.
    pub id: Uuid,
    /// The execution it belongs to.
    pub execution_id: Uuid,
    /// The node run.
    pub node_id: Uuid,
    /// The node's name when the execution began.
    pub node_name: Option<String>,
    /// The node's type when the execution began.
    pub node_type: Option<String>,
    /// Lifecycle status.
    pub status: NodeRunStatus,
    /// What the node received.
    pub input_data: Value,
    /// What the node produced.
    pub output_data: Value,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Where it failed.
    pub error_stack: Option<String>,
    /// Retries so far.
    pub retry_count: i32,
    /// Retries allowed.
    pub max_retries: i32,
    /// When the current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// How long the final attempt ran.
    pub duration_ms: Option<i32>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
}

/// A node run to create, pending.
#[derive(Debug, Clone)]
pub struct NewNodeRun<'a> {
    /// The execution it belongs to.
    pub execution_id: Uuid,
    /// The node to run.
    pub node_id: Uuid,
    /// The node's name.
    pub node_name: &'a str,
    /// The node's type.
    pub node_type: &'a str,
    /// Retries allowed.
    pub max_retries: i32,
}

struct NodeRunRow {
    id: Uuid,
    execution_id: Uuid,
    node_id: Uuid,
    node_name: Option<String>,
    node_type: Option<String>,
    status: String,
    input_data: Value,
    output_data: Value,
    error_message: Option<String>,
    error_stack: Option<String>,
    retry_count: i32,
    max_retries: i32,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    duration_ms: Option<i32>,
    created_at: DateTime<Utc>,
}

impl TryFrom<NodeRunRow> for NodeRun {
    type Error = StorageError;

    fn try_from(r: NodeRunRow) -> Result<Self> {
        Ok(Self {
            status: r
                .status
                .parse()
                .map_err(|e| StorageError::corrupt("node_runs.status", &e))?,
            id: r.id,
            execution_id: r.execution_id,
            node_id: r.node_id,
            node_name: r.node_name,
            node_type: r.node_type,
            input_data: r.input_data,
            output_data: r.output_data,
            error_message: r.error_message,
            error_stack: r.error_stack,
            retry_count: r.retry_count,
            max_retries: r.max_retries,
            started_at: r.started_at,
            completed_at: r.completed_at,
            duration_ms: r.duration_ms,
            created_at: r.created_at,
        })
    }
}

/// Records a pending node run.
pub async fn insert_node_run(db: impl PgExecutor<'_>, new: &NewNodeRun<'_>) -> Result<NodeRun> {
    let row = sqlx::query_as!(
        NodeRunRow,
        r#"
        INSERT INTO node_runs (execution_id, node_id, node_name, node_type, max_retries)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id, execution_id, node_id, node_name, node_type, status, input_data,
                  output_data, error_message, error_stack, retry_count, max_retries,
                  started_at, completed_at, duration_ms, created_at
        "#,
        new.execution_id,
        new.node_id,
        new.node_name,
        new.node_type,
        new.max_retries,
    )
    .fetch_one(db)
    .await?;
    NodeRun::try_from(row)
}

/// The node runs of an execution, in the order they were created.
pub async fn node_runs(db: impl PgExecutor<'_>, execution_id: Uuid) -> Result<Vec<NodeRun>> {
    let rows = sqlx::query_as!(
        NodeRunRow,
        r#"
        SELECT id, execution_id, node_id, node_name, node_type, status, input_data, output_data,
               error_message, error_stack, retry_count, max_retries, started_at, completed_at,
               duration_ms, created_at
        FROM node_runs
        WHERE execution_id = $1
        ORDER BY created_at, id
        "#,
        execution_id,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(NodeRun::try_from).collect()
}
