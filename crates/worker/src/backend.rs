//! The worker's side of the queue: apalis-postgres's tables and queries, driven so that a job
//! queued while the worker is idle is fetched at once.
//!
//! apalis-postgres wakes its workers with LISTEN/NOTIFY, but its poller consumes a notification
//! that arrives while a fetch is in flight and then forgets it. When that fetch's snapshot
//! predates the new job's commit, the fetch comes back empty and, unless another job follows,
//! the job waits for the next heartbeat, up to [`crate::HEARTBEAT_INTERVAL`] later. Its
//! listener also stops for good after a connection error. This backend uses apalis-core's
//! [`Persisted`] state machine and apalis-postgres's queries as they are, and changes how the
//! worker is woken: a notification that came in during a fetch makes the worker fetch again
//! if that fetch found nothing, and the listener reconnects after the database comes back and
//! fetches once it listens again, since notifications sent while nobody listened are gone.
//!
//! Two more changes keep a worker useful across a database outage and a shutdown:
//!
//! - `Persisted` turns any error of its store into the state `Dead`, after which the worker
//!   fetches nothing until the process restarts. [`Store`] therefore waits out every database
//!   error, retrying with capped exponential backoff, so the state machine only ever sees
//!   success. Not only the errors that plainly mean "unreachable": a connection cut by a
//!   restarting server can also fail as a protocol error, and a worker that keeps retrying
//!   (unready, logging each failure) serves an operator better than one that exits.
//! - `Persisted` keeps the rest of a fetched batch to itself and gives it back to the queue only
//!   after every node in flight has finished, which on shutdown may be most of the grace
//!   period. The batch is kept in [`Fetched`] instead, which [`crate::run`] empties and hands
//!   back the moment shutdown begins.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_codec::json::JsonCodec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::persistence::{
    Persisted, Persistence, State, TaskEvent, TaskPersistLayer,
};
use apalis_core::backend::{Backend, BackendConfig, TaskResult, WireFormatBackend};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::{TaskId, TaskIdError};
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::{Config, Error, PgTask, queries};
use futures_util::task::AtomicWaker;
use quantumflow_queue::{NODE_RUN_QUEUE, NodeRunJob};
use quantumflow_storage::is_unavailable;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// The channel apalis-postgres's insert trigger notifies.
const INSERT_CHANNEL: &str = "apalis::job::insert";

/// The longest wait between attempts to reach the database while it is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The first wait after the database turns out to be unreachable.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Fetches [`NodeRunJob`]s for one worker.
pub(crate) struct NodeRunBackend {
    persisted: Persisted<Store>,
    fetched: Arc<Fetched>,
    codec: JsonCodec,
    signal: Arc<Signal>,
    listener: tokio::task::JoinHandle<()>,
    /// A notification arrived while a fetch was in flight; if that fetch finds nothing, fetch
    /// again.
    missed: bool,
}

/// What the listener task tells the poller.
#[derive(Default)]
struct Signal {
    notified: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.notified.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Jobs this worker fetched and has not yet handed to a handler.
#[derive(Default)]
pub(crate) struct Fetched {
    inner: Mutex<FetchedJobs>,
}

#[derive(Default)]
struct FetchedJobs {
    /// Set at shutdown: nothing more is handed out or fetched.
    closed: bool,
    jobs: VecDeque<PgTask>,
}

impl Fetched {
    fn lock(&self) -> std::sync::MutexGuard<'_, FetchedJobs> {
        // The critical sections only move jobs between queues, so a panic cannot leave them
        // half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether jobs are waiting to be handed out.
    fn has_jobs(&self) -> bool {
        let fetched = self.lock();
        !fetched.closed && !fetched.jobs.is_empty()
    }

    /// Stops handing out jobs and returns the ids of those not handed out. Each job is either
    /// started by a handler or returned here, never both.
    pub(crate) fn close(&self) -> Vec<String> {
        let mut fetched = self.lock();
        fetched.closed = true;
        fetched
            .jobs
            .drain(..)
            .filter_map(|job| job.task_id().map(ToString::to_string))
            .collect()
    }
}

impl NodeRunBackend {
    /// Starts listening for new jobs; must be called inside the Tokio runtime.
    pub(crate) fn new(pool: &PgPool, config: Config) -> Self {
        let signal = Arc::new(Signal::default());
        let listener = tokio::spawn(listen(pool.clone(), Arc::clone(&signal)));
        Self {
            persisted: Persisted::new(Store {
                pool: pool.clone(),
                config,
            }),
            fetched: Arc::default(),
            codec: JsonCodec::default(),
            signal,
            listener,
            missed: false,
        }
    }

    /// The jobs fetched but not yet started, for handing them back at shutdown.
    pub(crate) fn fetched(&self) -> Arc<Fetched> {
        Arc::clone(&self.fetched)
    }
}

impl Drop for NodeRunBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Holds a LISTEN connection open for as long as the worker runs, raising the signal for every
/// notification on this queue, and once each time it starts listening.
async fn listen(pool: PgPool, signal: Arc<Signal>) {
    let mut backoff = Backoff::default();
    loop {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                let (attempt, delay) = backoff.fail();
                tracing::warn!(
                    operation = "listen",
                    attempt,
                    retry_in = ?delay,
                    error.message = %err,
                    "cannot listen for jobs; retrying"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        if backoff.failures > 0 {
            tracing::info!(
                operation = "listen",
                failed_attempts = backoff.failures,
                "listening for jobs again"
            );
        }
        backoff = Backoff::default();
        // Jobs queued before LISTEN took effect notified nobody.
        signal.raise();
        let lost = loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if is_for_this_queue(notification.payload()) {
                        signal.raise();
                    }
                }
                Ok(None) => break None,
                Err(err) => break Some(err),
            }
        };
        // What was sent while nobody listened is gone, so the poller fetches once more; the
        // connection is made anew above, with backoff, so an outage is waited out in logged,
        // spaced attempts.
        signal.raise();
        match lost {
            Some(err) => tracing::warn!(
                error.message = %err,
                "lost the connection listening for jobs"
            ),
            None => tracing::warn!("lost the connection listening for jobs"),
        }
    }
}

/// Capped exponential backoff between attempts to reach the database.
struct Backoff {
    failures: u32,
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            failures: 0,
            delay: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// Counts a failed attempt; returns its number and how long to wait before the next.
    fn fail(&mut self) -> (u32, Duration) {
        self.failures += 1;
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        (self.failures, delay)
    }
}

/// Runs `attempt` until it succeeds or fails for a reason other than the database. Waiting
/// here, rather than failing, keeps `Persisted` out of its `Dead` state: the worker carries on
/// where it stopped once the database is back.
async fn patiently<T, F, Fut>(operation: &'static str, mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::default();
    loop {
        match attempt().await {
            Err(Error::Database(err)) => {
                let (attempt, delay) = backoff.fail();
                // The queue's own calls never become a StorageError, where pool timeouts are
                // otherwise counted.
                if matches!(err, sqlx::Error::PoolTimedOut) {
                    quantumflow_storage::meters::pool_timed_out();
                }
                if is_unavailable(&err) {
                    tracing::warn!(
                        operation,
                        attempt,
                        retry_in = ?delay,
                        error.message = %err,
                        "the queue's database is unreachable; retrying"
                    );
                } else {
                    tracing::error!(
                        operation,
                        attempt,
                        retry_in = ?delay,
                        error.message = %err,
                        "the queue's database failed; retrying"
                    );
                }
                tokio::time::sleep(delay).await;
            }
            Ok(value) => {
                if backoff.failures > 0 {
                    tracing::info!(
                        operation,
                        failed_attempts = backoff.failures,
                        "the queue's database is reachable again"
                    );
                }
                return Ok(value);
            }
            Err(err) => return Err(err),
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Left to itself, the listener reconnects inside `try_recv`, at once and again and again
    // for as long as connecting fails with an I/O error (a server's missing unix socket, say):
    // a busy loop that logs nothing. `listen` reconnects instead.
    listener.eager_reconnect(false);
    listener.listen(INSERT_CHANNEL).await?;
    Ok(listener)
}

/// Whether an insert notification names this queue. Its payload is JSON written by the queue's
/// trigger; anything unreadable is treated as ours, since an extra fetch costs little.
fn is_for_this_queue(payload: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Insert<'a> {
        job_type: &'a str,
    }
    serde_json::from_str::<Insert<'_>>(payload).map_or(true, |i| i.job_type == NODE_RUN_QUEUE)
}

impl Backend for NodeRunBackend {
    type Task = PgTask;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        // `Persisted` writes the events of finished jobs (their acknowledgements) only when it
        // holds no batch, and stays pending until they are written. The rest of a batch now
        // waits in `fetched` instead of in `Persisted`, so the same order is kept here: the
        // batch is handed out first. Otherwise each of its jobs after the first would wait a
        // round trip to the database, which at load shows as latency, not as CPU.
        if self.fetched.has_jobs() {
            return Poll::Ready(Ok(()));
        }
        let heartbeat = self.persisted.config.heartbeat_interval;
        self.persisted.poll_ready(cx, worker, heartbeat)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<PgTask, Error>>> {
        {
            let mut fetched = self.fetched.lock();
            if fetched.closed {
                return Poll::Pending;
            }
            if let Some(job) = fetched.jobs.pop_front() {
                return Poll::Ready(Some(Ok(job)));
            }
        }

        // Registered before the flag is read, so a notification after the read wakes us again.
        self.signal.waker.register(cx.waker());
        let was_fetching = matches!(self.persisted.state(), State::Fetch(_));
        if self.signal.notified.swap(false, Ordering::AcqRel) && was_fetching {
            self.missed = true;
        }

        let polled = self.persisted.poll_next(cx, worker);

        match self.persisted.state() {
            // The same fetch is still in flight.
            State::Fetch(_) if was_fetching => {}
            // Ready and pending means the fetch came back empty. It may have missed the job
            // behind a notification it raced with: fetch again now, not at the heartbeat.
            State::Ready if polled.is_pending() => {
                if std::mem::take(&mut self.missed) {
                    cx.waker().wake_by_ref();
                }
            }
            // A fetch started after every notification read so far, or a batch is being
            // handed out and the next poll fetches anyway.
            _ => self.missed = false,
        }
        if let State::Buffered(rest) = self.persisted.state_mut() {
            let rest = std::mem::take(rest);
            *self.persisted.state_mut() = State::Ready;
            self.fetched.lock().jobs.extend(rest);
        }
        polled
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        self.persisted.poll_close(cx, worker)
    }
}

impl BackendConfig for NodeRunBackend {
    type Args = NodeRunJob;
    type Kind = Durable;
    type Id = ulid::Ulid;
    type Config = Config;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &Config {
        &self.persisted.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        let config = self.persisted.config.clone();
        self.persisted
            .layer(JsonCodec::<Value>::default(), config.batch_size)
            .persist_results(config.persist_results)
            .lock_tasks(config.lock_tasks)
    }
}

impl WireFormatBackend for NodeRunBackend {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

/// Takes up to `$3` due jobs of queue `$2` for worker `$1`: the body of apalis-postgres's
/// `apalis.get_jobs` function, sent as a prepared statement instead. A SQL function whose body is
/// an UPDATE cannot be inlined, so PostgreSQL parses and plans `get_jobs`'s body on every call;
/// a prepared statement is parsed once per connection.
const FETCH_SQL: &str = "
    WITH due AS (
        SELECT id FROM apalis.jobs
        WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
          AND run_at < now() AND job_type = $2
        ORDER BY priority DESC, run_at ASC
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    UPDATE apalis.jobs AS j
    SET status = 'Queued', lock_by = $1, lock_at = now()
    FROM due
    WHERE j.id = due.id
    RETURNING j.id, j.job, j.attempts, j.max_attempts, j.priority,
              extract(epoch FROM j.run_at)::int8 AS run_at";

/// Gives the jobs that workers of queue `$1` silent for `$2` seconds hold back to the queue,
/// counting the attempt; returns each such worker with how many of its jobs went back. Jobs
/// another worker is rescuing at the same moment are left to it.
const RESCUE_SQL: &str = "
    WITH dead AS (
        SELECT j.id, j.lock_by
        FROM apalis.jobs AS j
        JOIN apalis.workers AS w ON w.id = j.lock_by
        WHERE w.worker_type = $1
          AND w.last_seen <= now() - make_interval(secs => $2)
          AND j.status IN ('Queued', 'Running')
        FOR UPDATE OF j SKIP LOCKED
    ), requeued AS (
        UPDATE apalis.jobs AS j
        SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL,
            attempts = j.attempts + 1,
            last_result = '{\"Err\": \"Re-enqueued: its worker passed its heartbeat timeout.\"}'
        FROM dead
        WHERE j.id = dead.id
        RETURNING dead.lock_by
    )
    SELECT lock_by, count(*) FROM requeued GROUP BY lock_by ORDER BY lock_by";

/// The workers whose jobs [`Store::rescue`] handed back, each with how many.
struct Rescued(Vec<(String, i64)>);

impl Rescued {
    /// Counts and logs the rescue; call after it committed.
    fn report(&self) {
        let mut total = 0;
        for (dead_worker, jobs) in &self.0 {
            tracing::info!(
                %dead_worker,
                jobs,
                "re-queued the jobs of a worker that stopped beating"
            );
            total += u64::try_from(*jobs).unwrap_or_default();
        }
        crate::meters::rescued(total);
    }
}

/// A job as [`FETCH_SQL`] returns it.
#[derive(sqlx::FromRow)]
struct FetchedJob {
    id: String,
    job: Vec<u8>,
    attempts: i32,
    max_attempts: i32,
    priority: Option<i32>,
    run_at: i64,
}

impl FetchedJob {
    /// The task as apalis-postgres would have built it from the same row.
    fn into_task(self, config: &Config, worker: &WorkerContext) -> Result<PgTask, Error> {
        let id = ulid::Ulid::from_string(&self.id)
            .map_err(|e| Error::TaskIdError(TaskIdError::Decode(e.to_string())))?;
        Ok(TaskBuilder::new(self.job)
            .task_id(TaskId::from_ulid(id))
            .queue(config.queue.clone())
            .status(Status::Queued)
            .attempt(usize::try_from(self.attempts).unwrap_or_default())
            .max_attempts(usize::try_from(self.max_attempts).unwrap_or_default())
            .priority(
                self.priority
                    .and_then(|p| usize::try_from(p).ok())
                    .unwrap_or_default(),
            )
            .run_at_timestamp(u64::try_from(self.run_at).unwrap_or_default())
            .lock_by(Some(worker.name().to_owned()))
            .build())
    }
}

/// apalis-postgres's own queries, in the transactions its storage uses.
#[derive(Debug, Clone)]
struct Store {
    pool: PgPool,
    config: Config,
}

impl Store {
    fn queue(&self) -> &str {
        self.config.queue.as_ref()
    }

    fn dead_for(&self) -> u64 {
        self.config.orphaned_duration().as_secs()
    }
}

impl Store {
    async fn register_once(&self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let rescued = self.rescue(&mut tx).await?;
        // Worker names are unique per process start (`worker_name`), so a conflict means two
        // processes were given the same name; a retry after a lost commit finds its own row.
        let inserted = sqlx::query(
            "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
             VALUES ($1, $2, 'PgStorage', $3, now()) \
             ON CONFLICT (id) DO UPDATE SET last_seen = now() \
             WHERE apalis.workers.worker_type = EXCLUDED.worker_type \
               AND apalis.workers.layers = EXCLUDED.layers",
        )
        .bind(worker.name())
        .bind(self.queue())
        .bind(worker.get_service())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::WorkerAlreadyExists(worker.name().to_owned()));
        }
        tx.commit().await?;
        rescued.report();
        Ok(())
    }

    async fn heartbeat_once(&self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        queries::keep_alive(&mut *tx, self.queue(), worker).await?;
        let rescued = self.rescue(&mut tx).await?;
        tx.commit().await?;
        rescued.report();
        Ok(())
    }

    /// Hands the jobs of workers that have not beaten for [`Store::dead_for`] back to the
    /// queue, as apalis-postgres's `reenqueue_orphaned` does (the attempt counted), and says
    /// whose they were: that query only counts them.
    async fn rescue(&self, tx: &mut sqlx::PgConnection) -> Result<Rescued, Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(RESCUE_SQL)
            .bind(self.queue())
            .bind(self.dead_for() as f64)
            .fetch_all(tx)
            .await?;
        Ok(Rescued(rows))
    }

    async fn fetch_once(&self, worker: &WorkerContext) -> Result<Vec<PgTask>, Error> {
        let rows: Vec<FetchedJob> = sqlx::query_as(FETCH_SQL)
            .bind(worker.name())
            .bind(self.queue())
            .bind(i32::try_from(self.config.batch_size).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| row.into_task(&self.config, worker))
            .collect()
    }

    async fn handle_events_once(
        &self,
        events: &[TaskEvent<Value>],
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        let done: Vec<&TaskResult<Value>> = events
            .iter()
            .filter_map(|event| match event {
                TaskEvent::Complete(result) => Some(result),
                _ => None,
            })
            .collect();
        // A job that finished before its lock was written needs no lock.
        let locks: Vec<String> = events
            .iter()
            .filter_map(|event| match event {
                TaskEvent::Lock { task_id } => Some(task_id),
                _ => None,
            })
            .filter(|id| done.iter().all(|result| result.task_id() != *id))
            .map(ToString::to_string)
            .collect();
        if done.is_empty() && locks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if !done.is_empty() {
            queries::handle_results(&mut *tx, &done, worker.name()).await?;
        }
        if !locks.is_empty() {
            queries::lock_tasks(&mut *tx, &locks, worker.name()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reenqueue_abandoned_once(
        &self,
        ids: &[String],
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await?;
        let count =
            queries::reenqueue_abandoned(&mut *tx, self.queue(), worker.name(), ids).await?;
        if count as usize != ids.len() {
            return Err(Error::ReenqueueMismatch {
                queued: ids.len(),
                abandoned: count as usize,
            });
        }
        tx.commit().await?;
        Ok(count)
    }
}

impl Persistence for Store {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        patiently("register", || self.register_once(worker)).await
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        patiently("heartbeat", || self.heartbeat_once(worker)).await
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<PgTask>, Error> {
        patiently("fetch", || self.fetch_once(worker)).await
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        worker: &WorkerContext,
    ) -> Result<(), Error> {
        // Kept until written: a lost result would leave its job looking taken for good.
        patiently("record results", || {
            self.handle_events_once(&events, worker)
        })
        .await
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<PgTask>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|task| task.task_id().map(ToString::to_string))
            .collect();
        patiently("hand back", || self.reenqueue_abandoned_once(&ids, worker)).await
    }

    async fn push_tasks(&mut self, tasks: Vec<PgTask>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        queries::push_tasks(&mut *tx, self.queue(), tasks).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Gives jobs locked by `worker` and not yet finished back to the queue and wakes the idle
/// workers: all of them, or only those with the ids in `only`. The attempts are not counted:
/// none of these jobs ran, or each handed its node run back itself. Returns how many jobs went
/// back.
pub(crate) async fn release(
    pool: &PgPool,
    worker: &str,
    only: Option<&[String]>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query(
        "UPDATE apalis.jobs \
         SET status = 'Pending', lock_by = NULL, lock_at = NULL, done_at = NULL \
         WHERE lock_by = $1 \
           AND job_type = $2 \
           AND status IN ('Queued', 'Running') \
           AND ($3::text[] IS NULL OR id = ANY($3))",
    )
    .bind(worker)
    .bind(NODE_RUN_QUEUE)
    .bind(only)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if released > 0 {
        // The queue notifies only for inserted jobs; these were updated. Sent at commit.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INSERT_CHANNEL)
            .bind(serde_json::json!({ "job_type": NODE_RUN_QUEUE }).to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_delay_up_to_the_cap() {
        let mut backoff = Backoff::default();

        let delays: Vec<(u32, Duration)> = (0..8).map(|_| backoff.fail()).collect();

        let ms = Duration::from_millis;
        assert_eq!(
            delays,
            [
                (1, ms(100)),
                (2, ms(200)),
                (3, ms(400)),
                (4, ms(800)),
                (5, ms(1600)),
                (6, ms(3200)),
                (7, MAX_BACKOFF),
                (8, MAX_BACKOFF),
            ]
        );
    }
}
