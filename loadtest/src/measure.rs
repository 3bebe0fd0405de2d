//! What a run did, read back from the database, and the statistics the report is made of.
//!
//! Durations from the database use the server's own clock on both ends (`created_at`,
//! `started_at`, `completed_at`), so they need no clock agreement with the harness. Those
//! timestamps are `now()` of the writing transaction, i.e. when it began, not when it
//! committed.

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{HarnessError, Result};

/// The queue the engine's node jobs go to (`quantumflow_queue::NODE_RUN_QUEUE`).
const NODE_RUN_QUEUE: &str = "quantumflow.node_run";

/// A histogram of microseconds from 1 µs to an hour, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    /// Values recorded.
    pub(crate) count: u64,
    /// Arithmetic mean.
    pub(crate) mean_ms: f64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 95th percentile.
    pub(crate) p95_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// 99.9th percentile.
    pub(crate) p999_ms: f64,
    /// Largest value.
    pub(crate) max_ms: f64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds.
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// Summarises microsecond values.
    pub(crate) fn from_micros(values: impl IntoIterator<Item = i64>) -> Self {
        let mut h = new_histogram();
        for v in values {
            h.saturating_record(u64::try_from(v).unwrap_or(0));
        }
        Self::from_histogram(&h)
    }
}

/// The median of `values`, the mean of the middle two for an even count; `None` if empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Which executions a query covers: all of one workflow's, or those whose ids the control
/// plane returned for the requests a measurement counts.
///
/// Selecting by id rather than by creation time keeps an overloaded run honest: when the
/// control plane answers seconds late, its executions are created late too, and a time window
/// would count them in the wrong part of the run or miss them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    /// The workflow.
    pub(crate) workflow_id: Uuid,
    /// Only these executions, if given.
    pub(crate) ids: Option<&'a [Uuid]>,
}

impl Window<'_> {
    /// Every execution of `workflow_id`.
    pub(crate) fn all(workflow_id: Uuid) -> Self {
        Self {
            workflow_id,
            ids: None,
        }
    }
}

/// The executions a window covers and what happened to them.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Outcomes {
    /// Executions created.
    pub(crate) executions: u64,
    /// Ended `success`.
    pub(crate) succeeded: u64,
    /// Ended `failed` or `cancelled`.
    pub(crate) failed: u64,
    /// Not ended yet.
    pub(crate) unfinished: u64,
    /// Node runs a worker executed: neither the trigger nor skipped.
    pub(crate) node_runs: u64,
    /// Retries among them (extra attempts).
    pub(crate) retries: u64,
    /// Node runs skipped.
    pub(crate) skipped: u64,
    /// Trigger to completion, per finished execution.
    pub(crate) completion: LatencySummary,
    /// From the first node run's start to the last execution's completion, seconds.
    pub(crate) busy_seconds: Option<f64>,
    /// When the last execution completed.
    #[serde(skip)]
    pub(crate) last_completed: Option<DateTime<Utc>>,
}

/// Reads the outcomes of the executions in `window`.
pub(crate) async fn outcomes(pool: &PgPool, window: Window<'_>) -> Result<Outcomes> {
    let (executions, succeeded, failed, unfinished, last_completed): (
        i64,
        i64,
        i64,
        i64,
        Option<DateTime<Utc>>,
    ) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE status = 'success'),
                count(*) FILTER (WHERE status IN ('failed', 'cancelled')),
                count(*) FILTER (WHERE completed_at IS NULL),
                max(completed_at)
         FROM executions
         WHERE workflow_id = $1
           AND ($2::uuid[] IS NULL OR id = ANY($2))",
    )
    .bind(window.workflow_id)
    .bind(window.ids)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("counting executions"))?;

    let (node_runs, retries, skipped, first_started): (i64, i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE r.status IN ('success', 'failed')),
                    coalesce(sum(r.retry_count)
                             FILTER (WHERE r.status IN ('success', 'failed')), 0)::int8,
                    count(*) FILTER (WHERE r.status = 'skipped'),
                    min(r.started_at)
             FROM node_runs r
             JOIN executions e ON e.id = r.execution_id
             WHERE e.workflow_id = $1
               AND r.node_type <> 'trigger'
               AND ($2::uuid[] IS NULL OR e.id = ANY($2))",
        )
        .bind(window.workflow_id)
        .bind(window.ids)
        .fetch_one(pool)
        .await
        .map_err(HarnessError::db("counting node runs"))?;

    let completion = completion_micros(pool, window).await?;
    let busy_seconds = match (first_started, last_completed) {
        (Some(first), Some(last)) => Some((last - first).as_seconds_f64()),
        _ => None,
    };
    Ok(Outcomes {
        executions: executions as u64,
        succeeded: succeeded as u64,
        failed: failed as u64,
        unfinished: unfinished as u64,
        node_runs: node_runs as u64,
        retries: retries as u64,
        skipped: skipped as u64,
        completion: LatencySummary::from_micros(completion.iter().map(|(_, us)| *us)),
        busy_seconds,
        last_completed,
    })
}

/// Trigger-to-completion of each finished execution in `window`: its id and µs.
pub(crate) async fn completion_micros(
    pool: &PgPool,
    window: Window<'_>,
) -> Result<Vec<(Uuid, i64)>> {
    sqlx::query_as(
        "SELECT id, (extract(epoch FROM completed_at - created_at) * 1e6)::int8
         FROM executions
         WHERE workflow_id = $1 AND completed_at IS NOT NULL
           AND ($2::uuid[] IS NULL OR id = ANY($2))",
    )
    .bind(window.workflow_id)
    .bind(window.ids)
    .fetch_all(pool)
    .await
    .map_err(HarnessError::db("reading completion times"))
}

/// Per-hop latency of chain executions: `completed_at` of each node minus that of the node
/// before it (the trigger's is when the webhook was accepted), in µs.
pub(crate) async fn hop_micros(pool: &PgPool, window: Window<'_>) -> Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT hop FROM (
             SELECT (extract(epoch FROM r.completed_at - lag(r.completed_at)
                         OVER (PARTITION BY r.execution_id ORDER BY r.node_name)) * 1e6)::int8
                AS hop
             FROM node_runs r
             JOIN executions e ON e.id = r.execution_id
             WHERE e.workflow_id = $1 AND e.status = 'success'
               AND ($2::uuid[] IS NULL OR e.id = ANY($2))
         ) hops
         WHERE hop IS NOT NULL",
    )
    .bind(window.workflow_id)
    .bind(window.ids)
    .fetch_all(pool)
    .await
    .map_err(HarnessError::db("reading per-hop latency"))
}

/// One execution of a chain, node by node.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ChainTiming {
    /// Status of the execution.
    pub(crate) status: String,
    /// Trigger accepted to execution completed, seconds.
    pub(crate) wall_seconds: f64,
    /// Σ (completed_at − started_at) over the executed nodes, seconds.
    pub(crate) node_seconds: f64,
    /// Σ `duration_ms` over the executed nodes (whole milliseconds), seconds.
    pub(crate) node_duration_ms_seconds: f64,
    /// Nodes executed.
    pub(crate) nodes: u64,
    /// From one node's completion to the next one's start, per hop.
    pub(crate) transition: LatencySummary,
}

/// Reads how one execution's chain ran.
pub(crate) async fn chain_timing(pool: &PgPool, execution_id: Uuid) -> Result<ChainTiming> {
    let (status, wall): (String, Option<f64>) = sqlx::query_as(
        "SELECT status, extract(epoch FROM completed_at - created_at)::float8
         FROM executions WHERE id = $1",
    )
    .bind(execution_id)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("reading the execution"))?;
    let (nodes, node_seconds, duration_ms): (i64, Option<f64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(extract(epoch FROM completed_at - started_at))::float8,
                sum(duration_ms)::int8
         FROM node_runs
         WHERE execution_id = $1 AND node_type <> 'trigger' AND status IN ('success', 'failed')",
    )
    .bind(execution_id)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("summing node durations"))?;
    let transitions: Vec<i64> = sqlx::query_scalar(
        "SELECT gap FROM (
             SELECT (extract(epoch FROM started_at - lag(completed_at)
                         OVER (ORDER BY node_name)) * 1e6)::int8 AS gap
             FROM node_runs WHERE execution_id = $1
         ) gaps WHERE gap IS NOT NULL",
    )
    .bind(execution_id)
    .fetch_all(pool)
    .await
    .map_err(HarnessError::db("reading transitions"))?;
    Ok(ChainTiming {
        status,
        wall_seconds: wall.unwrap_or(f64::NAN),
        node_seconds: node_seconds.unwrap_or(0.0),
        node_duration_ms_seconds: duration_ms.unwrap_or(0) as f64 / 1000.0,
        nodes: nodes as u64,
        transition: LatencySummary::from_micros(transitions),
    })
}

/// Work waiting in the cluster at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Backlog {
    /// Node jobs queued and not yet claimed.
    pub(crate) jobs_pending: u64,
    /// Node jobs claimed and not yet acknowledged.
    pub(crate) jobs_running: u64,
    /// Executions not finished.
    pub(crate) executions_unfinished: u64,
}

/// Reads the backlog.
pub(crate) async fn backlog(pool: &PgPool) -> Result<Backlog> {
    let (pending, running): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'Pending'),
                count(*) FILTER (WHERE status IN ('Queued', 'Running'))
         FROM apalis.jobs WHERE job_type = $1",
    )
    .bind(NODE_RUN_QUEUE)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("counting queued jobs"))?;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM executions WHERE completed_at IS NULL")
            .fetch_one(pool)
            .await
            .map_err(HarnessError::db("counting unfinished executions"))?;
    Ok(Backlog {
        jobs_pending: pending as u64,
        jobs_running: running as u64,
        executions_unfinished: unfinished as u64,
    })
}

/// Worker processes registered with the node queue.
pub(crate) async fn registered_workers(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.workers WHERE worker_type = $1")
        .bind(NODE_RUN_QUEUE)
        .fetch_one(pool)
        .await
        .map_err(HarnessError::db("counting registered workers"))?;
    Ok(n as u64)
}

/// Executions finished so far, of every workflow, from the workflows' counters and the counts
/// recorded beside them but not folded onto them yet.
///
/// Polled several times a second during a run, so it must cost the database next to nothing:
/// counting `executions` rows instead scans a table whose rows are updated once per node run,
/// and took over 100 ms a call (a third of a core) in a 20,000-execution burn-down.
pub(crate) async fn finished_executions(pool: &PgPool) -> Result<u64> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT (SELECT coalesce(sum(successful_executions + failed_executions
                                     + cancelled_executions), 0)
                 FROM workflows)
              + (SELECT coalesce(sum(successful_executions + failed_executions
                                     + cancelled_executions), 0)
                 FROM workflow_counter_deltas)",
    )
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("reading the workflows' counters"))?;
    Ok(n.unwrap_or(0) as u64)
}

/// Node jobs waiting to be claimed. Counted through the queue's partial index of due jobs,
/// which holds only the waiting ones, so it stays cheap however many jobs are done.
pub(crate) async fn pending_jobs(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Pending'",
    )
    .bind(NODE_RUN_QUEUE)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("counting pending jobs"))?;
    Ok(n as u64)
}

/// One statement's share of a run's database work, from `pg_stat_statements`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatementCost {
    /// Times executed.
    pub(crate) calls: i64,
    /// Time spent executing, lock waits included, ms.
    pub(crate) total_ms: f64,
    /// Per call, ms.
    pub(crate) mean_ms: f64,
    /// Rows returned or changed.
    pub(crate) rows: i64,
    /// The normalised statement, whitespace collapsed, cut at 200 characters.
    pub(crate) query: String,
}

/// The statements that took the most time in this database; empty without
/// `pg_stat_statements`. Each run has a database of its own, so these are the run's.
pub(crate) async fn top_statements(pool: &PgPool, limit: i64) -> Result<Vec<StatementCost>> {
    if !crate::pgstats::has_statements(pool)
        .await
        .map_err(HarnessError::db("checking for pg_stat_statements"))?
    {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, f64, f64, i64, String)> = sqlx::query_as(
        r"SELECT s.calls, s.total_exec_time, s.mean_exec_time, s.rows,
                 left(regexp_replace(s.query, '\s+', ' ', 'g'), 200)
          FROM pg_stat_statements s
          JOIN pg_database d ON d.oid = s.dbid
          WHERE d.datname = current_database()
          ORDER BY s.total_exec_time DESC
          LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(HarnessError::db("reading pg_stat_statements"))?;
    Ok(rows
        .into_iter()
        .map(|(calls, total_ms, mean_ms, rows, query)| StatementCost {
            calls,
            total_ms,
            mean_ms,
            rows,
            query,
        })
        .collect())
}

/// A workflow's counters against what the harness saw.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CounterCheck {
    /// Webhooks the control plane answered 202.
    pub(crate) accepted: u64,
    /// `total_executions` as the API shows it (the `workflow_counters` view): executions
    /// counted as they ended, plus those in progress.
    pub(crate) total_executions: i64,
    /// `workflows.successful_executions`.
    pub(crate) successful_executions: i64,
    /// `workflows.failed_executions`.
    pub(crate) failed_executions: i64,
    /// Executions in the table that ended `success`.
    pub(crate) succeeded_rows: u64,
    /// Whether the counters equal what was sent and what the table holds.
    pub(crate) exact: bool,
}

/// Compares the workflow's counters with `accepted` and with its executions' rows.
pub(crate) async fn check_counters(
    pool: &PgPool,
    workflow_id: Uuid,
    accepted: u64,
) -> Result<CounterCheck> {
    let (total, successful, failed): (i32, i32, i32) = sqlx::query_as(
        "SELECT total_executions, successful_executions, failed_executions
         FROM workflow_counters WHERE workflow_id = $1",
    )
    .bind(workflow_id)
    .fetch_one(pool)
    .await
    .map_err(HarnessError::db("reading the workflow's counters"))?;
    let rows = outcomes(pool, Window::all(workflow_id)).await?;
    let exact = i64::from(total) == accepted as i64
        && rows.executions == accepted
        && i64::from(successful) == rows.succeeded as i64;
    Ok(CounterCheck {
        accepted,
        total_executions: total.into(),
        successful_executions: successful.into(),
        failed_executions: failed.into(),
        succeeded_rows: rows.succeeded,
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn summaries_convert_microseconds_to_milliseconds() {
        let summary = LatencySummary::from_micros((1..=1000).map(|ms| ms * 1000));

        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 500.0).abs() < 1.0, "{}", summary.p50_ms);
        assert!((summary.p99_ms - 990.0).abs() < 1.0, "{}", summary.p99_ms);
        assert!((summary.max_ms - 1000.0).abs() < 1.0, "{}", summary.max_ms);
        assert!((summary.mean_ms - 500.5).abs() < 1.0, "{}", summary.mean_ms);
    }

    #[test]
    fn an_empty_summary_is_all_zero() {
        assert_eq!(LatencySummary::from_micros([]), LatencySummary::default());
    }
}
