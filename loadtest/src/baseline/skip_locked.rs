//! The raw `FOR UPDATE SKIP LOCKED` queue, one job at a time: the per-job floor of the server.
//!
//! Each client claims one pending job in one autocommitted statement and marks it done in a
//! second, two round trips and two commits per job, until no pending job is left. Nothing here
//! retries, leases or records results; that is what the ratios to richer queues are for.

use std::time::Instant;

use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;

use super::measure::WorkMeter;
use super::scratch::{ScratchDb, in_scratch_db};
use super::{BaselineError, DrainConfig, DrainResult};

/// The queue: the columns a real job row carries, and the one index the claim needs, partial
/// on pending rows so finished jobs drop out of it.
const SCHEMA: &[&str] = &[
    r"
    CREATE TABLE jobs (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue       text        NOT NULL DEFAULT 'default',
        payload     jsonb       NOT NULL,
        status      text        NOT NULL DEFAULT 'pending',
        run_at      timestamptz NOT NULL DEFAULT now(),
        attempts    integer     NOT NULL DEFAULT 0,
        locked_by   integer,
        locked_at   timestamptz,
        finished_at timestamptz
    )
    ",
    r"
    CREATE INDEX jobs_pending
    ON jobs (queue, run_at, id)
    WHERE status = 'pending'
    ",
];

const PREFILL: &str = r"
    INSERT INTO jobs (payload)
    SELECT jsonb_build_object('n', n)
    FROM generate_series(1, $1) AS n
";

const CLAIM: &str = r"
    UPDATE jobs
    SET status = 'running', attempts = attempts + 1, locked_by = $1, locked_at = now()
    WHERE id = (
        SELECT id
        FROM jobs
        WHERE queue = 'default'
          AND status = 'pending'
          AND run_at <= now()
        ORDER BY run_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
";

const COMPLETE: &str = r"
    UPDATE jobs
    SET status = 'done', finished_at = now()
    WHERE id = $1
";

const COUNT_DONE: &str = r"
    SELECT count(*)
    FROM jobs
    WHERE status = 'done'
";

/// Drains `cfg.jobs` pre-inserted jobs with `workers × concurrency` clients in this process,
/// each on a connection of its own.
pub(crate) async fn skip_locked_cycle(cfg: &DrainConfig) -> Result<DrainResult, BaselineError> {
    cfg.validate()?;
    in_scratch_db(&cfg.database_url, "skiplocked", async |scratch| {
        drain(cfg, scratch).await
    })
    .await
}

async fn drain(cfg: &DrainConfig, scratch: &ScratchDb) -> Result<DrainResult, BaselineError> {
    let clients = cfg.workers * cfg.concurrency;
    let mut setup = scratch.connect().await?;
    prepare_queue(&mut setup, cfg.jobs).await?;
    let _ = setup.close().await;

    // All clients connect before the clock starts, so the timing is the queue's alone.
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(scratch.connect().await?);
    }
    let meter = WorkMeter::start(scratch).await?;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (client_id, connection) in (1..).zip(connections) {
        tasks.spawn(run_client(connection, client_id));
    }
    let mut drained = 0;
    while let Some(joined) = tasks.join_next().await {
        let (connection, done) = joined
            .map_err(BaselineError::ClientTask)?
            .map_err(BaselineError::database("claiming and completing jobs"))?;
        drained += done;
        // Closing each session as it finishes lets its statistics reach the closing reading.
        let _ = connection.close().await;
    }
    let seconds = started.elapsed().as_secs_f64();

    let work = meter.finish(scratch, 0).await?;
    let mut check = scratch.connect().await?;
    let done: i64 = sqlx::query_scalar(COUNT_DONE)
        .fetch_one(&mut check)
        .await
        .map_err(BaselineError::database("counting the jobs done"))?;
    let _ = check.close().await;
    let done = u64::try_from(done).unwrap_or_default();
    if drained != cfg.jobs || done != cfg.jobs {
        return Err(BaselineError::Incomplete {
            done,
            total: cfg.jobs,
        });
    }

    Ok(DrainResult {
        name: format!("skip-locked {clients} clients"),
        jobs: cfg.jobs,
        seconds,
        jobs_per_sec: cfg.jobs as f64 / seconds,
        commits_per_job: work.commits_per(cfg.jobs),
        statements_per_job: work.statements_per(cfg.jobs),
    })
}

/// Creates the queue and fills it, then vacuums and analyzes it so the claim is planned from
/// the real backlog rather than from an empty table's statistics.
async fn prepare_queue(connection: &mut PgConnection, jobs: u64) -> Result<(), BaselineError> {
    for statement in SCHEMA {
        sqlx::query(*statement)
            .execute(&mut *connection)
            .await
            .map_err(BaselineError::database("creating the queue table"))?;
    }
    let jobs = i64::try_from(jobs).map_err(|_| BaselineError::Config("jobs is too large"))?;
    sqlx::query(PREFILL)
        .bind(jobs)
        .execute(&mut *connection)
        .await
        .map_err(BaselineError::database("inserting the backlog"))?;
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(&mut *connection)
        .await
        .map_err(BaselineError::database("vacuuming the queue table"))?;
    Ok(())
}

/// One client: claim, complete, repeat until a claim finds nothing. Jobs other clients hold
/// are skipped, not waited for; those clients finish them.
async fn run_client(
    mut connection: PgConnection,
    client_id: i32,
) -> Result<(PgConnection, u64), sqlx::Error> {
    let mut done = 0;
    while let Some(id) = sqlx::query_scalar::<_, i64>(CLAIM)
        .bind(client_id)
        .fetch_optional(&mut connection)
        .await?
    {
        sqlx::query(COMPLETE)
            .bind(id)
            .execute(&mut connection)
            .await?;
        done += 1;
    }
    Ok((connection, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn skip_locked_drains_every_job_exactly_once() {
        let database_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must name a PostgreSQL server for the baseline tests");
        let cfg = DrainConfig {
            database_url,
            workers: 2,
            concurrency: 4,
            jobs: 500,
            harness_exe: std::path::PathBuf::new(),
        };

        let result = skip_locked_cycle(&cfg).await.unwrap();

        assert_eq!(result.jobs, 500);
        assert_eq!(result.name, "skip-locked 8 clients");
        assert!(result.seconds > 0.0);
        assert!(result.jobs_per_sec > 0.0);
        let implied = result.jobs as f64 / result.seconds;
        assert!((result.jobs_per_sec - implied).abs() < 1e-6 * implied);
        // Two commits per job, plus each client's last, empty claim and a few of the readings'
        // own transactions.
        let commits = result.commits_per_job.unwrap();
        assert!((2.0..2.1).contains(&commits), "commits per job: {commits}");
    }
}
