//! The seam between QuantumFlow and its job queue, apalis on PostgreSQL.
//!
//! apalis-postgres owns the `apalis` schema: its tables, functions and its own migration
//! history (`apalis._sqlx_migrations`). This crate names the queues QuantumFlow uses, defines
//! their job payloads, and exposes the queue's migrations so they are applied by the same
//! command, and checked by the same readiness probe, as QuantumFlow's own.

use std::sync::LazyLock;

use apalis_postgres::PostgresStorage;
use quantumflow_storage::schema::MigrationSet;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// The queue that carries [`NodeRunJob`]s.
pub const NODE_RUN_QUEUE: &str = "quantumflow.node_run";

/// Where apalis-postgres records its migrations (set by its own `sqlx.toml`).
pub const MIGRATIONS_TABLE: &str = "apalis._sqlx_migrations";

/// apalis-postgres's migrations.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(PostgresStorage::<()>::migrations);

/// Asks a worker to run one node of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRunJob {
    /// The execution the node belongs to.
    pub execution_id: Uuid,
    /// The `node_runs` row to run.
    pub node_run_id: Uuid,
}

/// Every set of migrations a QuantumFlow database needs, in the order they are applied.
pub fn migration_sets() -> [MigrationSet<'static>; 2] {
    [
        MigrationSet::quantumflow(),
        MigrationSet {
            name: "queue",
            migrator: &MIGRATOR,
            table: MIGRATIONS_TABLE,
        },
    ]
}

/// Removes the queue's schema with every job in it; the inverse of applying [`MIGRATOR`].
pub async fn drop_schema(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("DROP SCHEMA IF EXISTS apalis CASCADE")
        .execute(pool)
        .await?;
    Ok(())
}

/// Queues node runs inside the caller's transaction, each after its own delay, so a job exists
/// exactly when the writes that call for it commit.
///
/// The rows are written here rather than through apalis's own push, which takes run times from
/// the application's clock in whole seconds. Two things go wrong with that: a job pushed late in
/// a second by a transaction that began early in it lands "in the future" by the database's
/// clock, so the queue's insert trigger does not notify anyone and the fetch skips it until a
/// heartbeat; and delays and retry backoff lose their fractions of a second. Here the run time
/// is the database's `now()` (the transaction's start) plus the delay, to the microsecond.
pub async fn push_node_runs(
    conn: &mut sqlx::PgConnection,
    jobs: &[(NodeRunJob, std::time::Duration)],
) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(jobs.len());
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut delays = Vec::with_capacity(jobs.len());
    for (job, delay) in jobs {
        ids.push(ulid::Ulid::generate().to_string());
        payloads.push(serde_json::to_vec(job).map_err(QueueError::Encode)?);
        delays.push(delay.as_secs_f64());
    }
    sqlx::query(
        "INSERT INTO apalis.jobs \
             (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata) \
         SELECT id, $2, job, 'Pending', 0, $4, now() + make_interval(secs => delay), 0, \
                ''::hstore \
         FROM unnest($1::text[], $3::bytea[], $5::float8[]) AS j (id, job, delay)",
    )
    .bind(&ids)
    .bind(NODE_RUN_QUEUE)
    .bind(&payloads)
    // Retries of a node are counted by the engine; the queue's own attempts only cover
    // infrastructure trouble (a lost database connection while acknowledging).
    .bind(INFRASTRUCTURE_ATTEMPTS)
    .bind(&delays)
    .execute(conn)
    .await
    .map_err(QueueError::Push)?;
    Ok(())
}

/// How often the queue itself re-delivers a job whose handler returned an error.
pub const INFRASTRUCTURE_ATTEMPTS: i32 = 25;

/// Why queueing failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A job could not be encoded.
    #[error("cannot encode a job")]
    Encode(#[source] serde_json::Error),
    /// The queue refused the jobs.
    #[error("cannot queue jobs")]
    Push(#[source] sqlx::Error),
}

/// Wakes idle workers as the queue's insert notification does. The queue notifies only for jobs
/// that are due when inserted; the engine calls this when a delayed job falls due.
pub async fn wake_workers(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    // Listeners check the job type and parse the id, but fetch whatever is due, so any valid
    // task id serves.
    const ANY_TASK_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let payload = serde_json::json!({"job_type": NODE_RUN_QUEUE, "id": ANY_TASK_ID}).to_string();
    sqlx::query("SELECT pg_notify('apalis::job::insert', $1)")
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// The node-run jobs a worker could take right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// How many jobs are due and not taken.
    pub runnable: i64,
    /// Seconds since the longest-waiting of them fell due; 0 when there is none.
    pub oldest_age_seconds: f64,
}

/// Counts the runnable node-run jobs. The condition is the one of the queue's partial fetch
/// index (`idx_apalis_jobs_fetch_partial`), so the query reads only that index's entries of due
/// jobs, never the finished jobs the table keeps.
pub async fn backlog(db: impl sqlx::PgExecutor<'_>) -> Result<Backlog, sqlx::Error> {
    let (runnable, oldest_age_seconds): (i64, f64) = sqlx::query_as(
        "SELECT count(*), \
                coalesce(extract(epoch FROM now() - min(run_at))::float8, 0) \
         FROM apalis.jobs \
         WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)) \
           AND job_type = $1 AND run_at <= now()",
    )
    .bind(NODE_RUN_QUEUE)
    .fetch_one(db)
    .await?;
    Ok(Backlog {
        runnable,
        oldest_age_seconds: oldest_age_seconds.max(0.0),
    })
}

/// Seconds since the worker called `name` last proved it is alive; `None` when the queue has
/// no such worker (it has not registered yet).
pub async fn worker_silence(
    db: impl sqlx::PgExecutor<'_>,
    name: &str,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - last_seen)::float8 \
         FROM apalis.workers WHERE id = $1 AND worker_type = $2",
    )
    .bind(name)
    .bind(NODE_RUN_QUEUE)
    .fetch_optional(db)
    .await
}
