//! The execution engine's bookkeeping: starting executions, claiming and finishing node runs,
//! deciding edges and finishing executions.
//!
//! Every write that follows a claim names the attempt it belongs to (`attempt = $n`), and every
//! status change is conditional on the current status, so a duplicate or late delivery of a job
//! changes nothing and a final status is never overwritten.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::Result;

/// A node run to create when an execution starts.
#[derive(Debug, Clone)]
pub struct PlannedRun<'a> {
    /// Its id, chosen by the caller.
    pub id: Uuid,
    /// The node, by id.
    pub node_id: Uuid,
    /// Its name.
    pub node_name: &'a str,
    /// Its type.
    pub node_type: &'a str,
    /// `pending`, or `success`/`failed`/`skipped` for nodes decided before any worker runs.
    pub status: &'a str,
    /// Output, for nodes that already succeeded (the trigger).
    pub output: &'a Value,
    /// Why a node decided at the start did not run.
    pub error: Option<&'a str>,
    /// Retries the node may use.
    pub max_retries: i32,
    /// Incoming edges still undecided.
    pub undecided_edges: i32,
    /// Incoming edges that fired.
    pub fired_edges: i32,
}

/// An execution to create: running, or already ended when its trigger decided everything.
#[derive(Debug, Clone)]
pub struct StartedExecution<'a> {
    /// Its id, chosen by the caller.
    pub id: Uuid,
    /// The workflow.
    pub workflow_id: Uuid,
    /// Its name now.
    pub workflow_name: &'a str,
    /// Its version now.
    pub workflow_version: i32,
    /// `running`, or the final status of an execution its trigger finished.
    pub status: &'a str,
    /// `manual`, `webhook`, `schedule` or `api`.
    pub trigger_type: &'a str,
    /// Request metadata.
    pub trigger_data: &'a Value,
    /// The workflow as it is now.
    pub workflow_snapshot: &'a Value,
    /// The trigger's payload.
    pub input_data: &'a Value,
    /// The result of an execution that ended at its start.
    pub output_data: &'a Value,
    /// Why an execution that ended at its start failed.
    pub error: Option<&'a str>,
    /// Who triggered it.
    pub triggered_by: Option<Uuid>,
    /// Seconds until the execution times out.
    pub timeout_seconds: Option<f64>,
    /// The W3C `traceparent` of the span that started it, for its node runs to join.
    pub traceparent: Option<&'a str>,
    /// The `tracestate` that goes with it.
    pub tracestate: Option<&'a str>,
    /// Its node runs, one per node.
    pub runs: &'a [PlannedRun<'a>],
}

/// Creates executions with all their node runs, in the caller's transaction: two statements
/// however many there are, so that a control plane accepting triggers in batches pays for a
/// batch what it used to pay for one.
///
/// The workflow's row is touched only for executions that are already over, which are counted
/// on it here; every start of a workflow would otherwise queue on its lock. A running
/// execution is counted when it ends ([`count_finished`]).
pub async fn start(conn: &mut PgConnection, executions: &[StartedExecution<'_>]) -> Result<()> {
    if executions.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&StartedExecution<'_>) -> Value| -> Vec<Value> {
        executions.iter().map(f).collect()
    };
    let ids: Vec<Uuid> = executions.iter().map(|e| e.id).collect();
    let workflow_ids: Vec<Uuid> = executions.iter().map(|e| e.workflow_id).collect();
    let names: Vec<&str> = executions.iter().map(|e| e.workflow_name).collect();
    let versions: Vec<i32> = executions.iter().map(|e| e.workflow_version).collect();
    let statuses: Vec<&str> = executions.iter().map(|e| e.status).collect();
    let trigger_types: Vec<&str> = executions.iter().map(|e| e.trigger_type).collect();
    let trigger_data = column(|e| e.trigger_data.clone());
    let snapshots = column(|e| e.workflow_snapshot.clone());
    let inputs = column(|e| e.input_data.clone());
    let outputs = column(|e| e.output_data.clone());
    let errors: Vec<Option<&str>> = executions.iter().map(|e| e.error).collect();
    let triggered_by: Vec<Option<Uuid>> = executions.iter().map(|e| e.triggered_by).collect();
    let timeouts: Vec<Option<f64>> = executions.iter().map(|e| e.timeout_seconds).collect();
    let traceparents: Vec<Option<&str>> = executions.iter().map(|e| e.traceparent).collect();
    let tracestates: Vec<Option<&str>> = executions.iter().map(|e| e.tracestate).collect();
    let remaining: Vec<i32> = executions
        .iter()
        .map(|e| e.runs.iter().filter(|r| r.status == "pending").count() as i32)
        .collect();
    let ended = sqlx::query!(
        r#"
        INSERT INTO executions
            (id, workflow_id, workflow_name, workflow_version, status, trigger_type,
             trigger_data, workflow_snapshot, input_data, output_data, error_message,
             triggered_by, started_at, completed_at, duration_ms, remaining_nodes, deadline_at,
             traceparent, tracestate)
        SELECT id, workflow_id, name, version, status, trigger_type, trigger_data, snapshot,
               input, output, error, triggered_by, now(),
               CASE WHEN status = 'running' THEN NULL ELSE now() END,
               CASE WHEN status = 'running' THEN NULL ELSE 0 END,
               remaining, now() + make_interval(secs => timeout), traceparent, tracestate
        FROM UNNEST($1::uuid[], $2::uuid[], $3::varchar[], $4::int4[], $5::varchar[],
                    $6::varchar[], $7::jsonb[], $8::jsonb[], $9::jsonb[], $10::jsonb[],
                    $11::text[], $12::uuid[], $13::int4[], $14::float8[], $15::varchar[],
                    $16::varchar[])
             AS t(id, workflow_id, name, version, status, trigger_type, trigger_data, snapshot,
                  input, output, error, triggered_by, remaining, timeout, traceparent,
                  tracestate)
        RETURNING workflow_id, status, created_at
        "#,
        &ids,
        &workflow_ids,
        &names as &[&str],
        &versions,
        &statuses as &[&str],
        &trigger_types as &[&str],
        &trigger_data,
        &snapshots,
        &inputs,
        &outputs,
        &errors as &[Option<&str>],
        &triggered_by as &[Option<Uuid>],
        &remaining,
        &timeouts as &[Option<f64>],
        &traceparents as &[Option<&str>],
        &tracestates as &[Option<&str>],
    )
    .fetch_all(&mut *conn)
    .await?;

    let runs = executions
        .iter()
        .flat_map(|e| e.runs.iter().map(move |r| (e.id, r)));
    let mut run_ids = Vec::new();
    let mut execution_ids = Vec::new();
    let mut node_ids = Vec::new();
    let mut node_names = Vec::new();
    let mut node_types = Vec::new();
    let mut run_statuses = Vec::new();
    let mut run_outputs = Vec::new();
    let mut run_errors = Vec::new();
    let mut max_retries = Vec::new();
    let mut undecided = Vec::new();
    let mut fired = Vec::new();
    for (execution_id, run) in runs {
        run_ids.push(run.id);
        execution_ids.push(execution_id);
        node_ids.push(run.node_id);
        node_names.push(run.node_name);
        node_types.push(run.node_type);
        run_statuses.push(run.status);
        run_outputs.push(run.output.clone());
        run_errors.push(run.error);
        max_retries.push(run.max_retries);
        undecided.push(run.undecided_edges);
        fired.push(run.fired_edges);
    }
    sqlx::query!(
        r#"
        INSERT INTO node_runs
            (id, execution_id, node_id, node_name, node_type, status, output_data,
             error_message, max_retries, undecided_edges, fired_edges, started_at,
             completed_at, duration_ms)
        SELECT id, execution_id, node_id, name, type, status, output, error, max_retries,
               undecided, fired,
               CASE WHEN status IN ('pending', 'skipped') THEN NULL ELSE now() END,
               CASE WHEN status = 'pending' THEN NULL ELSE now() END,
               CASE WHEN status IN ('pending', 'skipped') THEN NULL ELSE 0 END
        FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::varchar[], $5::varchar[],
                    $6::varchar[], $7::jsonb[], $8::text[], $9::int4[], $10::int4[],
                    $11::int4[])
             AS t(id, execution_id, node_id, name, type, status, output, error, max_retries,
                  undecided, fired)
        "#,
        &run_ids,
        &execution_ids,
        &node_ids,
        &node_names as &[&str],
        &node_types as &[&str],
        &run_statuses as &[&str],
        &run_outputs,
        &run_errors as &[Option<&str>],
        &max_retries,
        &undecided,
        &fired,
    )
    .execute(&mut *conn)
    .await?;

    // Count what ended here once per workflow, in id order so that two batches touching the
    // same workflows lock their rows in the same order.
    let mut counts: std::collections::BTreeMap<Uuid, Finished> = Default::default();
    for row in ended.iter().filter(|row| row.status != "running") {
        let finished = Finished::one(&row.status, row.created_at);
        counts.entry(row.workflow_id).or_default().add(&finished);
    }
    for (workflow_id, finished) in &counts {
        count_finished(&mut *conn, *workflow_id, finished).await?;
    }
    Ok(())
}

/// A node run claimed by a worker.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The node run.
    pub id: Uuid,
    /// Its execution.
    pub execution_id: Uuid,
    /// The node.
    pub node_id: Uuid,
    /// The node's name.
    pub node_name: String,
    /// This claim's attempt number, from 1.
    pub attempt: i32,
    /// Retries the node may use.
    pub max_retries: i32,
    /// When this attempt started.
    pub started_at: DateTime<Utc>,
    /// Seconds until the execution's deadline (negative once it has passed); none without a
    /// deadline.
    pub seconds_left: Option<f64>,
    /// How the execution was triggered: method, path, query and headers of a webhook.
    pub trigger_data: Value,
}

/// Claims the node run that the queue job for `job_run_id` carries, for a new attempt: the run
/// itself, or the unfinished run of the chain it started (see [`complete`]). `None` when there
/// is nothing to do: the runs ended, or their execution did.
pub async fn claim(db: impl PgExecutor<'_>, job_run_id: Uuid) -> Result<Option<Claim>> {
    let claim = sqlx::query_as!(
        Claim,
        r#"
        UPDATE node_runs AS r
        SET status = 'running', attempt = r.attempt + 1, started_at = now(), carrier_id = $1
        FROM executions AS e
        WHERE r.id = (
                SELECT c.id FROM node_runs AS c
                WHERE (c.id = $1 OR c.carrier_id = $1) AND c.status IN ('pending', 'running')
                LIMIT 1
              )
          AND e.id = r.execution_id
          AND r.status IN ('pending', 'running')
          AND e.status = 'running'
        RETURNING r.id, r.execution_id, r.node_id, r.node_name AS "node_name!", r.attempt,
                  r.max_retries, r.started_at AS "started_at!",
                  extract(epoch FROM e.deadline_at - now())::float8 AS seconds_left,
                  e.trigger_data
        "#,
        job_run_id,
    )
    .fetch_optional(db)
    .await?;
    Ok(claim)
}

/// What a finished attempt recorded.
#[derive(Debug, Clone)]
pub struct AttemptResult<'a> {
    /// `success` or `failed`.
    pub status: &'a str,
    /// What the node received.
    pub input: &'a Value,
    /// What it produced.
    pub output: &'a Value,
    /// Why it failed.
    pub error: Option<&'a str>,
}

/// Records the final result of attempt `attempt`. `false` when that attempt is no longer the
/// current one or the run already ended, in which case nothing was written.
pub async fn finish(
    db: impl PgExecutor<'_>,
    node_run_id: Uuid,
    attempt: i32,
    result: &AttemptResult<'_>,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"
        UPDATE node_runs
        SET status = $3, input_data = $4, output_data = $5, error_message = $6,
            retry_count = attempt - 1, completed_at = now(),
            duration_ms = (extract(epoch FROM now() - started_at) * 1000)::int
        WHERE id = $1 AND attempt = $2 AND status = 'running'
        "#,
        node_run_id,
        attempt,
        result.status,
        result.input,
        result.output,
        result.error,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hands attempt `attempt` back to the queue for a retry. `false` when that attempt is no
/// longer current.
pub async fn release_for_retry(
    db: impl PgExecutor<'_>,
    node_run_id: Uuid,
    attempt: i32,
    error: &str,
) -> Result<bool> {
    let done = sqlx::query!(
        r#"
        UPDATE node_runs
        SET status = 'pending', retry_count = attempt, error_message = $3, carrier_id = NULL
        WHERE id = $1 AND attempt = $2 AND status = 'running'
        "#,
        node_run_id,
        attempt,
        error,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The result of deciding some incoming edges of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The node run.
    pub id: Uuid,
    /// The node.
    pub node_id: Uuid,
    /// Incoming edges still undecided.
    pub undecided_edges: i32,
    /// Incoming edges that fired.
    pub fired_edges: i32,
    /// The run's status (edges into an already skipped or cancelled run change nothing).
    pub status: String,
}

/// Counts decided edges on their target runs: `decided[i]` edges into `node_ids[i]`, of which
/// `fired[i]` fired. Returns the targets' new counters.
pub async fn decide_edges(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    node_ids: &[Uuid],
    decided: &[i32],
    fired: &[i32],
) -> Result<Vec<Decided>> {
    let rows = sqlx::query_as!(
        Decided,
        r#"
        UPDATE node_runs AS r
        SET undecided_edges = r.undecided_edges - d.decided, fired_edges = r.fired_edges + d.fired
        FROM UNNEST($2::uuid[], $3::int4[], $4::int4[]) AS d(node_id, decided, fired)
        WHERE r.execution_id = $1 AND r.node_id = d.node_id
        RETURNING r.id, r.node_id, r.undecided_edges, r.fired_edges, r.status
        "#,
        execution_id,
        node_ids,
        decided,
        fired,
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Marks pending runs of an execution as skipped, with `reason` when given. Returns the node
/// ids actually skipped.
pub async fn skip(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    node_ids: &[Uuid],
    reason: Option<&str>,
) -> Result<Vec<Uuid>> {
    let skipped = sqlx::query_scalar!(
        r#"
        UPDATE node_runs
        SET status = 'skipped', error_message = $3, completed_at = now()
        WHERE execution_id = $1 AND node_id = ANY($2) AND status = 'pending'
        RETURNING node_id
        "#,
        execution_id,
        node_ids,
        reason,
    )
    .fetch_all(db)
    .await?;
    Ok(skipped)
}

/// Marks every run of an execution that has not started as skipped, because the execution
/// stopped. Returns the node ids of the runs skipped.
pub async fn cancel_unstarted(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>> {
    let skipped = sqlx::query_scalar!(
        r#"
        UPDATE node_runs
        SET status = 'skipped', error_message = $2, completed_at = now()
        WHERE execution_id = $1 AND status = 'pending'
        RETURNING node_id
        "#,
        execution_id,
        reason,
    )
    .fetch_all(db)
    .await?;
    Ok(skipped)
}

/// A predecessor's result, as a successor's input sees it.
#[derive(Debug, Clone)]
pub struct PriorResult {
    /// The node.
    pub node_id: Uuid,
    /// Its final status.
    pub status: String,
    /// Its output.
    pub output_data: Value,
    /// Its error, if it failed.
    pub error_message: Option<String>,
}

/// The results of some nodes of an execution.
pub async fn results(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    node_ids: &[Uuid],
) -> Result<Vec<PriorResult>> {
    let rows = sqlx::query_as!(
        PriorResult,
        r#"
        SELECT node_id, status, output_data, error_message
        FROM node_runs
        WHERE execution_id = $1 AND node_id = ANY($2)
        "#,
        execution_id,
        node_ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Counts `finished` more node runs of an execution as final; returns how many remain and
/// whether some failure went unhandled.
pub async fn settle(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    finished: i32,
    unhandled_failure: bool,
) -> Result<(i32, bool)> {
    let row = sqlx::query!(
        r#"
        UPDATE executions
        SET remaining_nodes = remaining_nodes - $2,
            unhandled_failure = unhandled_failure OR $3
        WHERE id = $1
        RETURNING remaining_nodes, unhandled_failure
        "#,
        execution_id,
        finished,
        unhandled_failure,
    )
    .fetch_one(db)
    .await?;
    Ok((row.remaining_nodes, row.unhandled_failure))
}

/// Ends a running execution with `status` and counts it on its workflow. `false` when it had
/// already ended.
pub async fn finish_execution(
    conn: &mut PgConnection,
    execution_id: Uuid,
    status: &str,
    output: &Value,
    error: Option<&str>,
) -> Result<bool> {
    let Some(ended) = end_execution(&mut *conn, execution_id, status, output, error).await? else {
        return Ok(false);
    };
    count_finished(conn, ended.workflow_id, &ended.finished).await?;
    Ok(true)
}

/// An execution that [`end_execution`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Its workflow.
    pub workflow_id: Uuid,
    /// What to add to the workflow's counters.
    pub finished: Finished,
}

/// Ends a running execution with `status` without counting it on its workflow; the caller
/// counts it with [`count_finished`] in the same transaction. `None` when the execution had
/// already ended.
pub async fn end_execution(
    db: impl PgExecutor<'_>,
    execution_id: Uuid,
    status: &str,
    output: &Value,
    error: Option<&str>,
) -> Result<Option<Ended>> {
    let ending = Ending {
        id: execution_id,
        status,
        output,
        error,
    };
    Ok(end_executions(db, &[ending]).await?.pop())
}

/// Executions of one workflow that ended, by final status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    /// Ended `success`.
    pub success: i32,
    /// Ended `failed`.
    pub failed: i32,
    /// Ended `cancelled`.
    pub cancelled: i32,
    /// When the latest of them started.
    pub latest_start: Option<DateTime<Utc>>,
}

impl Finished {
    /// One execution that ended with `status`, started at `started`.
    pub fn one(status: &str, started: DateTime<Utc>) -> Self {
        let is = |s: &str| i32::from(status == s);
        Self {
            success: is("success"),
            failed: is("failed"),
            cancelled: is("cancelled"),
            latest_start: Some(started),
        }
    }

    /// Adds `other`'s executions to these.
    pub fn add(&mut self, other: &Self) {
        self.success += other.success;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.latest_start = self.latest_start.max(other.latest_start);
    }
}

/// Counts ended executions on their workflow: the totals and when the latest of them started.
///
/// The counts are recorded beside the workflow's row, not on it, so that executions ending at
/// the same time do not queue on one row lock; [`fold_counts`] moves them onto the row later,
/// and the `workflow_counters` view reads both.
pub async fn count_finished(
    db: impl PgExecutor<'_>,
    workflow_id: Uuid,
    finished: &Finished,
) -> Result<()> {
    sqlx::query!(
        r#"
        INSERT INTO workflow_counter_deltas
            (workflow_id, successful_executions, failed_executions, cancelled_executions,
             last_execution_at)
        VALUES ($1, $2, $3, $4, $5)
        "#,
        workflow_id,
        finished.success,
        finished.failed,
        finished.cancelled,
        finished.latest_start,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Key of the advisory lock that lets one process fold counts at a time.
const FOLD_LOCK: i64 = 0x5146_666f_6c64; // "QFfold"

/// Moves the counts recorded by [`count_finished`] onto their workflows' rows, deleting them
/// in the same statement. Returns the number of workflows updated, or `None` when another
/// process was folding: two folds updating the same rows in different orders could deadlock,
/// so they take turns, and the one that finds the lock taken skips its turn.
pub async fn fold_counts(conn: &mut PgConnection) -> Result<Option<u64>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let locked = sqlx::query_scalar!("SELECT pg_try_advisory_xact_lock($1)", FOLD_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if locked != Some(true) {
        return Ok(None);
    }
    let folded = sqlx::query!(
        r#"
        WITH taken AS (
            DELETE FROM workflow_counter_deltas
            RETURNING workflow_id, successful_executions, failed_executions,
                      cancelled_executions, last_execution_at
        ), sums AS (
            SELECT workflow_id,
                   sum(successful_executions)::int AS successful,
                   sum(failed_executions)::int AS failed,
                   sum(cancelled_executions)::int AS cancelled,
                   max(last_execution_at) AS latest_start
            FROM taken
            GROUP BY workflow_id
        )
        UPDATE workflows AS w
        SET total_executions = w.total_executions + s.successful + s.failed + s.cancelled,
            successful_executions = w.successful_executions + s.successful,
            failed_executions = w.failed_executions + s.failed,
            cancelled_executions = w.cancelled_executions + s.cancelled,
            last_execution_at = greatest(w.last_execution_at, s.latest_start)
        FROM sums AS s
        WHERE w.id = s.workflow_id
        "#,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(folded.rows_affected()))
}

/// Outputs of an execution's successful runs by node name, in the order they finished.
pub async fn outputs(db: impl PgExecutor<'_>, execution_id: Uuid) -> Result<Vec<(String, Value)>> {
    let rows = sqlx::query!(
        r#"
        SELECT node_name AS "node_name!", output_data
        FROM node_runs
        WHERE execution_id = $1 AND status = 'success'
        ORDER BY completed_at, node_name
        "#,
        execution_id,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.node_name, r.output_data))
        .collect())
}

/// Outputs of the successful runs of several executions, by execution, each in the order its
/// runs finished: [`outputs`] for a batch, in one statement.
pub async fn outputs_of(
    db: impl PgExecutor<'_>,
    execution_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<(String, Value)>>> {
    let rows = sqlx::query!(
        r#"
        SELECT execution_id, node_name AS "node_name!", output_data
        FROM node_runs
        WHERE execution_id = ANY($1) AND status = 'success'
        ORDER BY execution_id, completed_at, node_name
        "#,
        execution_ids,
    )
    .fetch_all(db)
    .await?;
    let mut outputs: HashMap<Uuid, Vec<(String, Value)>> = HashMap::new();
    for row in rows {
        outputs
            .entry(row.execution_id)
            .or_default()
            .push((row.node_name, row.output_data));
    }
    Ok(outputs)
}

/// An execution for [`end_executions`] to end.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    /// The execution.
    pub id: Uuid,
    /// `success` or `failed`.
    pub status: &'a str,
    /// Its result.
    pub output: &'a Value,
    /// Why it failed.
    pub error: Option<&'a str>,
}

/// Ends several running executions in one statement ([`end_execution`] is the case of one);
/// returns those it ended, leaving out any that had already ended.
pub async fn end_executions(db: impl PgExecutor<'_>, endings: &[Ending<'_>]) -> Result<Vec<Ended>> {
    if endings.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = endings.iter().map(|e| e.id).collect();
    let statuses: Vec<&str> = endings.iter().map(|e| e.status).collect();
    let outputs: Vec<Value> = endings.iter().map(|e| e.output.clone()).collect();
    let errors: Vec<Option<&str>> = endings.iter().map(|e| e.error).collect();
    let rows = sqlx::query!(
        r#"
        UPDATE executions AS e
        SET status = t.status, output_data = t.output, error_message = t.error,
            completed_at = now(),
            duration_ms = (extract(epoch FROM now() - coalesce(e.started_at, e.created_at))
                           * 1000)::int
        FROM UNNEST($1::uuid[], $2::varchar[], $3::jsonb[], $4::text[])
             AS t(id, status, output, error)
        WHERE e.id = t.id AND e.status IN ('pending', 'running')
        RETURNING e.workflow_id, e.status, e.created_at
        "#,
        &ids,
        &statuses as &[&str],
        &outputs,
        &errors as &[Option<&str>],
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Ended {
            workflow_id: row.workflow_id,
            finished: Finished::one(&row.status, row.created_at),
        })
        .collect())
}

/// A successful attempt to record in [`complete`].
#[derive(Debug, Clone)]
pub struct Success<'a> {
    /// The node run.
    pub id: Uuid,
    /// The attempt that succeeded.
    pub attempt: i32,
    /// What the node received.
    pub input: &'a Value,
    /// What it produced.
    pub output: &'a Value,
}

/// Edges from a succeeded run into one target, decided in [`complete`].
#[derive(Debug, Clone)]
pub struct EdgeDecision {
    /// The run whose success decided the edges.
    pub source: Uuid,
    /// The execution both belong to.
    pub execution_id: Uuid,
    /// The target node.
    pub node_id: Uuid,
    /// How many edges into the target were decided.
    pub decided: i32,
    /// How many of them fired.
    pub fired: i32,
    /// The queue job the source runs under, when the source's worker will run the target
    /// itself should it become ready; `None` to leave the target to the queue.
    pub carrier: Option<Uuid>,
}

/// What [`complete`] changed.
#[derive(Debug, Clone, Default)]
pub struct Completed {
    /// The runs recorded; the others were stale (a newer attempt owns them, or they ended).
    pub recorded: Vec<Uuid>,
    /// The targets' new counters. A target that became ready and was taken by a carrier is
    /// `running` here, with the new attempt.
    pub targets: Vec<Target>,
    /// The executions touched: how many of their runs remain, and whether a failure went
    /// unhandled.
    pub executions: Vec<(Uuid, i32, bool)>,
}

/// A successor's state after [`complete`] decided edges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node run.
    pub id: Uuid,
    /// Its execution.
    pub execution_id: Uuid,
    /// The node.
    pub node_id: Uuid,
    /// Incoming edges still undecided.
    pub undecided_edges: i32,
    /// Incoming edges that fired.
    pub fired_edges: i32,
    /// `running` when a carrier took it, else its status before.
    pub status: String,
    /// The attempt a carrier took it for.
    pub attempt: i32,
    /// The queue job it now runs under, when a carrier took it.
    pub carrier_id: Option<Uuid>,
    /// When the carrier took it.
    pub started_at: Option<DateTime<Utc>>,
}

/// Records successful attempts of any number of executions in one statement: each run's
/// result, the edges it decided on its successors, and the executions' remaining counts. A
/// target that becomes ready with fired edges and a carrier is started in the same statement,
/// so the worker that finished its predecessor runs it next without a queue job.
///
/// Decisions of stale attempts are ignored with them. Decisions into one target from several
/// sources are summed, so joins count right whatever the batch holds.
pub async fn complete(
    db: impl PgExecutor<'_>,
    successes: &[Success<'_>],
    decisions: &[EdgeDecision],
) -> Result<Completed> {
    let ids: Vec<Uuid> = successes.iter().map(|s| s.id).collect();
    let attempts: Vec<i32> = successes.iter().map(|s| s.attempt).collect();
    let inputs: Vec<&Value> = successes.iter().map(|s| s.input).collect();
    let outputs: Vec<&Value> = successes.iter().map(|s| s.output).collect();
    let sources: Vec<Uuid> = decisions.iter().map(|d| d.source).collect();
    let executions: Vec<Uuid> = decisions.iter().map(|d| d.execution_id).collect();
    let targets: Vec<Uuid> = decisions.iter().map(|d| d.node_id).collect();
    let decided: Vec<i32> = decisions.iter().map(|d| d.decided).collect();
    let fired: Vec<i32> = decisions.iter().map(|d| d.fired).collect();
    let carriers: Vec<Option<Uuid>> = decisions.iter().map(|d| d.carrier).collect();

    // `go` is spelled out in each assignment because an UPDATE cannot name an expression over
    // the row it is changing. Everything in the statement sees the rows as they were before
    // it, which is why the three tables' changes are independent of each other.
    let rows = sqlx::query!(
        r#"
        WITH done AS (
            UPDATE node_runs AS r
            SET status = 'success', input_data = s.input, output_data = s.output,
                error_message = NULL, retry_count = r.attempt - 1, completed_at = now(),
                duration_ms = (extract(epoch FROM now() - r.started_at) * 1000)::int
            FROM UNNEST($1::uuid[], $2::int4[], $3::jsonb[], $4::jsonb[])
                 AS s(id, attempt, input, output)
            WHERE r.id = s.id AND r.attempt = s.attempt AND r.status = 'running'
            RETURNING r.id, r.execution_id
        ),
        wanted AS (
            SELECT d.execution_id, d.node_id, sum(d.decided)::int4 AS decided,
                   sum(d.fired)::int4 AS fired,
                   (array_agg(d.carrier ORDER BY d.carrier) FILTER (WHERE d.carrier IS NOT NULL))[1]
                       AS carrier
            FROM UNNEST($5::uuid[], $6::uuid[], $7::uuid[], $8::int4[], $9::int4[], $10::uuid[])
                 AS d(source, execution_id, node_id, decided, fired, carrier)
            WHERE d.source IN (SELECT id FROM done)
            GROUP BY d.execution_id, d.node_id
        ),
        decided AS (
            UPDATE node_runs AS r
            SET undecided_edges = r.undecided_edges - w.decided,
                fired_edges = r.fired_edges + w.fired,
                status = CASE WHEN w.carrier IS NOT NULL AND r.status = 'pending'
                                   AND r.undecided_edges = w.decided
                                   AND r.fired_edges + w.fired > 0 AND e.status = 'running'
                              THEN 'running' ELSE r.status END,
                attempt = CASE WHEN w.carrier IS NOT NULL AND r.status = 'pending'
                                    AND r.undecided_edges = w.decided
                                    AND r.fired_edges + w.fired > 0 AND e.status = 'running'
                               THEN r.attempt + 1 ELSE r.attempt END,
                started_at = CASE WHEN w.carrier IS NOT NULL AND r.status = 'pending'
                                       AND r.undecided_edges = w.decided
                                       AND r.fired_edges + w.fired > 0 AND e.status = 'running'
                                  THEN now() ELSE r.started_at END,
                carrier_id = CASE WHEN w.carrier IS NOT NULL AND r.status = 'pending'
                                       AND r.undecided_edges = w.decided
                                       AND r.fired_edges + w.fired > 0 AND e.status = 'running'
                                  THEN w.carrier ELSE r.carrier_id END
            FROM wanted AS w
            JOIN executions AS e ON e.id = w.execution_id
            WHERE r.execution_id = w.execution_id AND r.node_id = w.node_id
            RETURNING r.id, r.execution_id, r.node_id, r.undecided_edges, r.fired_edges,
                      r.status, r.attempt, r.carrier_id, r.started_at
        ),
        settled AS (
            UPDATE executions AS e
            SET remaining_nodes = e.remaining_nodes - n.count
            FROM (SELECT execution_id, count(*)::int4 AS count FROM done GROUP BY execution_id)
                 AS n
            WHERE e.id = n.execution_id
            RETURNING e.id, e.remaining_nodes, e.unhandled_failure
        )
        SELECT 'done' AS "kind!", id AS "id!", execution_id AS "execution_id!",
               NULL::uuid AS node_id, NULL::int4 AS undecided_edges, NULL::int4 AS fired_edges,
               NULL::varchar AS status, NULL::int4 AS attempt, NULL::uuid AS carrier_id,
               NULL::timestamptz AS started_at, NULL::int4 AS remaining_nodes,
               NULL::bool AS unhandled_failure
        FROM done
        UNION ALL
        SELECT 'target', id, execution_id, node_id, undecided_edges, fired_edges, status,
               attempt, carrier_id, started_at, NULL, NULL
        FROM decided
        UNION ALL
        SELECT 'execution', id, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, remaining_nodes,
               unhandled_failure
        FROM settled
        "#,
        &ids,
        &attempts,
        &inputs as &[&Value],
        &outputs as &[&Value],
        &sources,
        &executions,
        &targets,
        &decided,
        &fired,
        &carriers as &[Option<Uuid>],
    )
    .fetch_all(db)
    .await?;

    let mut completed = Completed::default();
    for row in rows {
        match row.kind.as_str() {
            "done" => completed.recorded.push(row.id),
            "target" => completed.targets.push(Target {
                id: row.id,
                execution_id: row.execution_id,
                node_id: row.node_id.unwrap_or_default(),
                undecided_edges: row.undecided_edges.unwrap_or_default(),
                fired_edges: row.fired_edges.unwrap_or_default(),
                status: row.status.unwrap_or_default(),
                attempt: row.attempt.unwrap_or_default(),
                carrier_id: row.carrier_id,
                started_at: row.started_at,
            }),
            _ => completed.executions.push((
                row.id,
                row.remaining_nodes.unwrap_or_default(),
                row.unhandled_failure.unwrap_or_default(),
            )),
        }
    }
    Ok(completed)
}

/// Returns a run claimed for attempt `attempt` but not started to the queue's care: it is
/// pending again, its attempt uncounted, and no longer carried by the job that claimed it.
/// `false` when that attempt is no longer current.
pub async fn hand_back(db: impl PgExecutor<'_>, node_run_id: Uuid, attempt: i32) -> Result<bool> {
    let done = sqlx::query!(
        r#"
        UPDATE node_runs
        SET status = 'pending', attempt = attempt - 1, started_at = NULL, carrier_id = NULL
        WHERE id = $1 AND attempt = $2 AND status = 'running'
        "#,
        node_run_id,
        attempt,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
