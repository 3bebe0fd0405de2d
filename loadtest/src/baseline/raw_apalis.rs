//! Raw apalis 1.0 on PostgreSQL with its default config: what a user would run instead of the
//! engine.
//!
//! The harness queues the backlog itself, then starts one `qf-load internal apalis-worker`
//! process per worker. Workers talk to the harness over their standard streams:
//!
//! 1. the worker connects, builds its apalis worker and prints `ready`;
//! 2. once all are ready the harness starts the clock and writes `go` to each;
//! 3. the harness polls the job table until every job is `Done`, stops the clock and closes
//!    the workers' stdin, on which they stop gracefully and exit.
//!
//! Process start-up and connecting thus stay out of the timing, and a worker whose harness
//! dies sees its stdin close and stops too.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use super::measure::WorkMeter;
use super::scratch::{ScratchDb, in_scratch_db};
use super::{BaselineError, DrainConfig, DrainResult};

/// The queue (apalis's `job_type`) the backlog goes to; the scratch database holds no other.
const QUEUE: &str = "qf-load-baseline";

/// Jobs per `push_bulk` call, each one transaction.
const ENQUEUE_CHUNK: u64 = 1_000;

/// The worker's announcement that it is connected and built.
const READY: &str = "ready";

/// The harness's signal to start consuming.
const GO: &str = "go";

/// How long a worker process may take to start, connect and build its worker.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker may take to stop after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the backlog may stand still before the drain is called stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Polling bounds: polls compete with the workers for the server's two cores, so they are
/// sparse while much is left and dense near the end, where they decide the measured time.
const MIN_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(100);

/// The wait before the first poll that finds a job done, when there is no rate to go by yet.
const FIRST_POLL: Duration = Duration::from_millis(20);

const COUNT_DONE: &str = r"
    SELECT count(*)
    FROM apalis.jobs
    WHERE job_type = $1
      AND status = 'Done'
";

/// Drains `cfg.jobs` pre-queued no-op jobs with `cfg.workers` apalis worker processes of
/// `cfg.concurrency` each.
pub(crate) async fn apalis_drain(cfg: &DrainConfig) -> Result<DrainResult, BaselineError> {
    cfg.validate()?;
    in_scratch_db(&cfg.database_url, "apalis", async |scratch| {
        drain(cfg, scratch).await
    })
    .await
}

async fn drain(cfg: &DrainConfig, scratch: &ScratchDb) -> Result<DrainResult, BaselineError> {
    let pool = scratch.pool(2).await?;
    PostgresStorage::setup(&pool)
        .await
        .map_err(BaselineError::ApalisSetup)?;
    enqueue_backlog(&pool, cfg.jobs).await?;
    // Fresh statistics, as on a queue that has been running for a while; the fetch query's
    // plan depends on them.
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(&pool)
        .await
        .map_err(BaselineError::database("vacuuming apalis's job table"))?;

    let mut fleet = Fleet::spawn(cfg, scratch.url())?;
    fleet.wait_until_ready().await?;
    let mut progress = scratch.connect().await?;
    let meter = WorkMeter::start(scratch).await?;

    let started = Instant::now();
    fleet.start().await?;
    let (elapsed, polls) = wait_until_drained(&mut progress, &mut fleet, cfg.jobs, started).await?;
    fleet.stop().await?;
    let _ = progress.close().await;
    pool.close().await;

    let work = meter.finish(scratch, polls).await?;
    let seconds = elapsed.as_secs_f64();
    Ok(DrainResult {
        name: format!(
            "apalis {}x{} batch {}",
            cfg.workers,
            cfg.concurrency,
            Config::default().batch_size
        ),
        jobs: cfg.jobs,
        seconds,
        jobs_per_sec: cfg.jobs as f64 / seconds,
        commits_per_job: work.commits_per(cfg.jobs),
        statements_per_job: work.statements_per(cfg.jobs),
    })
}

/// Queues the backlog in bulk, one transaction per chunk, so queueing costs little next to the
/// drain and leaves a backlog like one a burst of traffic would.
async fn enqueue_backlog(pool: &PgPool, jobs: u64) -> Result<(), BaselineError> {
    let mut storage = PostgresStorage::<u64>::new(pool).with_config(Config::default().queue(QUEUE));
    let mut next = 0;
    while next < jobs {
        let end = (next + ENQUEUE_CHUNK).min(jobs);
        storage
            .push_bulk((next..end).collect())
            .await
            .map_err(BaselineError::Enqueue)?;
        next = end;
    }
    Ok(())
}

/// Polls until all `total` jobs are `Done`; returns the time since `started` at the poll that
/// saw them done, and how many polls were run (each one transaction in the scratch database).
async fn wait_until_drained(
    progress: &mut PgConnection,
    fleet: &mut Fleet,
    total: u64,
    started: Instant,
) -> Result<(Duration, i64), BaselineError> {
    let mut polls = 0;
    let mut last_done = 0;
    let mut last_change = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar(COUNT_DONE)
            .bind(QUEUE)
            .fetch_one(&mut *progress)
            .await
            .map_err(BaselineError::database("polling the backlog"))?;
        polls += 1;
        let elapsed = started.elapsed();
        let done = u64::try_from(done).unwrap_or_default();
        if done >= total {
            return Ok((elapsed, polls));
        }

        fleet.check_running()?;
        if done > last_done {
            last_done = done;
            last_change = Instant::now();
        } else if last_change.elapsed() >= STALL_TIMEOUT {
            return Err(BaselineError::Stalled {
                done,
                total,
                seconds: STALL_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(poll_interval(done, total, elapsed)).await;
    }
}

/// A quarter of the expected time left at the rate so far, within [`MIN_POLL`, `MAX_POLL`]:
/// the end of the drain is then seen within a few milliseconds at a handful of polls a second.
fn poll_interval(done: u64, total: u64, elapsed: Duration) -> Duration {
    if done == 0 || elapsed.is_zero() {
        return FIRST_POLL;
    }
    let rate = done as f64 / elapsed.as_secs_f64();
    let left = total.saturating_sub(done) as f64 / rate;
    Duration::from_secs_f64(left / 4.0).clamp(MIN_POLL, MAX_POLL)
}

/// The worker processes of one drain. Dropping it kills any that are still running, so an
/// error anywhere in the drain leaves no process behind.
struct Fleet {
    workers: Vec<WorkerProcess>,
}

struct WorkerProcess {
    index: usize,
    child: Child,
    /// The worker's stdin: `go` starts it, closing it stops it.
    control: Option<ChildStdin>,
}

impl Fleet {
    fn spawn(cfg: &DrainConfig, database_url: &str) -> Result<Self, BaselineError> {
        let concurrency = cfg.concurrency.to_string();
        let mut workers = Vec::with_capacity(cfg.workers);
        for index in 0..cfg.workers {
            let mut child = worker_command(&cfg.harness_exe, database_url, &concurrency)
                .spawn()
                .map_err(|source| BaselineError::SpawnWorker {
                    index,
                    exe: cfg.harness_exe.clone(),
                    source,
                })?;
            let control = child.stdin.take();
            workers.push(WorkerProcess {
                index,
                child,
                control,
            });
        }
        Ok(Self { workers })
    }

    /// Waits for every worker's `ready`.
    async fn wait_until_ready(&mut self) -> Result<(), BaselineError> {
        for worker in &mut self.workers {
            worker.wait_until_ready().await?;
        }
        Ok(())
    }

    async fn start(&mut self) -> Result<(), BaselineError> {
        for worker in &mut self.workers {
            let index = worker.index;
            let Some(control) = worker.control.as_mut() else {
                continue;
            };
            control
                .write_all(format!("{GO}\n").as_bytes())
                .await
                .map_err(BaselineError::worker_pipe("start", index))?;
        }
        Ok(())
    }

    /// Fails if any worker has exited; none should before it is told to stop.
    fn check_running(&mut self) -> Result<(), BaselineError> {
        for worker in &mut self.workers {
            let index = worker.index;
            let exited = worker
                .child
                .try_wait()
                .map_err(BaselineError::worker_pipe("check on", index))?;
            if let Some(status) = exited {
                return Err(BaselineError::WorkerExited {
                    index,
                    status,
                    when: "before the backlog was drained",
                });
            }
        }
        Ok(())
    }

    /// Closes every worker's stdin at once so they stop in parallel, then waits for each;
    /// reports the first that failed or had to be killed.
    async fn stop(mut self) -> Result<(), BaselineError> {
        for worker in &mut self.workers {
            worker.control = None;
        }
        let mut first_error = None;
        for worker in &mut self.workers {
            if let Err(error) = worker.wait_for_exit().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl WorkerProcess {
    /// Waits for the worker's `ready`, then keeps its stdout drained in the background so
    /// whatever else it prints cannot fill the pipe and block it.
    async fn wait_until_ready(&mut self) -> Result<(), BaselineError> {
        let index = self.index;
        let stdout = self.child.stdout.take();
        let announced = tokio::time::timeout(READY_TIMEOUT, wait_for_ready(stdout))
            .await
            .map_err(|_| BaselineError::WorkerNotReady {
                index,
                seconds: READY_TIMEOUT.as_secs(),
            })?
            .map_err(BaselineError::worker_pipe("read from", index))?;
        let Some(mut rest) = announced else {
            let status = self
                .child
                .wait()
                .await
                .map_err(BaselineError::worker_pipe("wait for", index))?;
            return Err(BaselineError::WorkerExited {
                index,
                status,
                when: "before it was ready",
            });
        };
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        });
        Ok(())
    }

    async fn wait_for_exit(&mut self) -> Result<(), BaselineError> {
        let index = self.index;
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(BaselineError::WorkerExited {
                index,
                status,
                when: "while stopping",
            }),
            Ok(Err(source)) => Err(BaselineError::worker_pipe("wait for", index)(source)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(BaselineError::WorkerStuck {
                    index,
                    seconds: STOP_TIMEOUT.as_secs(),
                })
            }
        }
    }
}

fn worker_command(exe: &Path, database_url: &str, concurrency: &str) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["internal", "apalis-worker"])
        .args(["--database-url", database_url])
        .args(["--queue", QUEUE])
        .args(["--concurrency", concurrency])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Reads the worker's stdout up to its `ready` line and hands back the rest of the stream, or
/// `None` if the stream ended first. Other lines are skipped: a log subscriber may write there.
async fn wait_for_ready(
    stdout: Option<ChildStdout>,
) -> std::io::Result<Option<BufReader<ChildStdout>>> {
    let Some(stdout) = stdout else {
        return Ok(None);
    };
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if line.trim_end() == READY {
            return Ok(Some(reader));
        }
    }
}

/// The worker process: one apalis worker with the default config on `queue`, run between the
/// harness's `go` and the end of its stdin.
pub(super) async fn run_worker(
    database_url: &str,
    queue: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    let pool = PgPool::connect(database_url)
        .await
        .context("cannot connect to the queue's database")?;
    let backend = PostgresStorage::<u64>::new(&pool).with_config(Config::default().queue(queue));
    let worker = WorkerBuilder::new(format!("qf-load-baseline-{}", std::process::id()))
        .backend(backend)
        .concurrency(concurrency)
        .parallelize(tokio::spawn)
        .build(no_op);

    let mut control = stdin_lines();
    announce_ready().context("cannot tell the harness this worker is ready")?;
    if control.recv().await.as_deref() != Some(GO) {
        // The harness gave up before starting the drain, and reports why itself.
        pool.close().await;
        return Ok(());
    }

    let stdin_closed = async move {
        while control.recv().await.is_some() {}
        Ok::<(), std::io::Error>(())
    };
    worker
        .run_until(stdin_closed)
        .await
        .context("the apalis worker failed")?;
    pool.close().await;
    Ok(())
}

/// The lines of this process's stdin, read on a thread of its own: a blocking read cannot be
/// cancelled, and the process must be able to exit while one is pending. The channel closes
/// when stdin does.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else {
                break;
            };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

fn announce_ready() -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY}")?;
    stdout.flush()
}

async fn no_op(_job: u64) -> Result<(), BoxDynError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_sparse_early_and_dense_near_the_end() {
        let early = poll_interval(1_000, 20_000, Duration::from_secs(1));
        let late = poll_interval(19_990, 20_000, Duration::from_secs(10));

        assert_eq!(early, MAX_POLL);
        assert_eq!(late, MIN_POLL);
    }

    #[test]
    fn the_first_poll_comes_soon_when_nothing_is_done_yet() {
        assert_eq!(poll_interval(0, 20_000, Duration::ZERO), FIRST_POLL);
        assert_eq!(poll_interval(0, 20_000, Duration::from_secs(1)), FIRST_POLL);
    }
}
