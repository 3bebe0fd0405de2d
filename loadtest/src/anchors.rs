//! The baselines as the suite runs them: the raw drains of [`crate::baseline`], and apalis
//! `push()` on the same open-loop schedule as the webhook test, which is what the engine's
//! accept path is compared with.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_postgres::{Config, PostgresStorage};

use crate::baseline::{self, DrainConfig};
use crate::bench::Bench;
use crate::cli::Load;
use crate::database;
use crate::drive::{self, Failure, Schedule, Sender};
use crate::error::{HarnessError, Result};
use crate::measure::LatencySummary;
use crate::modes::Shape;
use crate::pgstats::Counters;
use crate::report::{BaselineRun, PushRun};

/// The scratch database of the push baseline, dropped and recreated per run.
pub(crate) const PUSH_DATABASE: &str = "qf_load_push";

/// The queue the push baseline fills; nothing consumes it.
const PUSH_QUEUE: &str = "qf_load.push";

/// Lets the pool's backends exit and flush their statistics before the last reading.
const FLUSH_PAUSE: Duration = Duration::from_millis(300);

fn drain_config(bench: &Bench, shape: Shape, jobs: u64) -> Result<DrainConfig> {
    Ok(DrainConfig {
        database_url: bench.pg.admin_url(),
        workers: shape.workers,
        concurrency: shape.concurrency,
        jobs,
        harness_exe: std::env::current_exe()
            .map_err(HarnessError::io("find", "the harness's own executable"))?,
    })
}

/// Raw apalis draining `jobs` no-op jobs with `shape` worker processes.
pub(crate) async fn apalis_drain(
    bench: &Bench,
    shape: Shape,
    jobs: u64,
    repeat: usize,
) -> Result<BaselineRun> {
    crate::note(format_args!(
        "baseline apalis drain {}×{}: {jobs} jobs",
        shape.workers, shape.concurrency
    ));
    let config = drain_config(bench, shape, jobs)?;
    let result =
        baseline::apalis_drain(&config)
            .await
            .map_err(|source| HarnessError::Baseline {
                name: "apalis drain",
                source,
            })?;
    crate::note(format_args!(
        "baseline {}: {:.0} jobs/s",
        result.name, result.jobs_per_sec
    ));
    Ok(BaselineRun {
        repeat,
        workers: shape.workers,
        concurrency: shape.concurrency,
        result,
    })
}

/// Raw SKIP LOCKED claim-and-complete of `jobs` jobs by `shape` clients.
pub(crate) async fn skip_locked(
    bench: &Bench,
    shape: Shape,
    jobs: u64,
    repeat: usize,
) -> Result<BaselineRun> {
    crate::note(format_args!(
        "baseline SKIP LOCKED {}×{}: {jobs} jobs",
        shape.workers, shape.concurrency
    ));
    let config = drain_config(bench, shape, jobs)?;
    let result = baseline::skip_locked_cycle(&config)
        .await
        .map_err(|source| HarnessError::Baseline {
            name: "SKIP LOCKED cycle",
            source,
        })?;
    crate::note(format_args!(
        "baseline {}: {:.0} jobs/s",
        result.name, result.jobs_per_sec
    ));
    Ok(BaselineRun {
        repeat,
        workers: shape.workers,
        concurrency: shape.concurrency,
        result,
    })
}

/// apalis `push()` of one job per send on the open-loop schedule of `load`, through a pool
/// as large as the control plane's.
pub(crate) async fn apalis_push(bench: &Bench, load: &Load, repeat: usize) -> Result<PushRun> {
    crate::note(format_args!(
        "baseline apalis push(): open loop at {:.0}/s",
        load.rate
    ));
    bench.pg.recreate(PUSH_DATABASE).await?;
    let url = bench.pg.url_for(PUSH_DATABASE);
    let pool = database::pool(&url, bench.db_pool_size).await?;
    PostgresStorage::migrations()
        .run(&pool)
        .await
        .map_err(|e| {
            HarnessError::Invalid(format!(
                "cannot create apalis's schema for the push baseline: {e}"
            ))
        })?;
    let before = Counters::read(&pool)
        .await
        .map_err(HarnessError::db("reading pg_stat_database"))?;

    let storage: PostgresStorage<u64> =
        PostgresStorage::new(&pool).with_config(Config::default().queue(PUSH_QUEUE));
    let send: Sender = Arc::new(move |seq| {
        let mut storage = storage.clone();
        Box::pin(async move {
            storage.push(seq).await.map_err(|_| Failure::Other)?;
            Ok(None)
        })
    });
    let schedule = Schedule {
        rate: load.rate,
        warmup: load.warmup,
        duration: load.duration,
    };
    let sent = drive::open_loop(&send, schedule, load.max_in_flight).await;
    drop(send);
    pool.close().await;
    tokio::time::sleep(FLUSH_PAUSE).await;

    let reader = database::pool(&url, 1).await?;
    let after = Counters::read(&reader)
        .await
        .map_err(HarnessError::db("reading pg_stat_database"))?;
    reader.close().await;
    bench.pg.drop_database(PUSH_DATABASE).await?;
    let delta = after.since(&before);

    let run = PushRun {
        repeat,
        rate: load.rate,
        seconds: load.duration.as_secs_f64(),
        ok: sent.ok,
        errors: sent.errors.clone(),
        latency: LatencySummary::from_histogram(&sent.latency),
        achieved_rate: sent.achieved_rate(),
        commits_per_push: delta.commits_per(sent.ok_total),
        statements_per_push: delta.statements_per(sent.ok_total),
    };
    crate::note(format_args!(
        "baseline apalis push(): p50 {:.2} ms p99 {:.2} ms at {:.0}/s",
        run.latency.p50_ms, run.latency.p99_ms, run.achieved_rate
    ));
    Ok(run)
}
