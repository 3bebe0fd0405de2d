//! QuantumFlow's worker: it claims node-run jobs from the queue and runs the nodes.
//!
//! Any number of worker processes may run; each claims jobs with `FOR UPDATE SKIP LOCKED`
//! through apalis-postgres, so one job goes to one worker at a time. What a job does to the
//! database is decided by [`quantumflow_engine`]; this crate runs the node itself ([`nodes`])
//! and drives the queue: worker identity, heartbeats, concurrency and shutdown.
//!
//! # Shutdown
//!
//! When the `shutdown` future given to [`run`] completes, the worker:
//!
//! 1. stops fetching, and gives the jobs it fetched but has not started back to the queue at
//!    once, waking idle workers, so they run elsewhere without waiting for any timeout;
//! 2. lets the nodes in flight finish for up to [`WorkerConfig::shutdown_grace`]; a chain
//!    stops at its next node, which goes back to the queue;
//! 3. when the grace period ends, stops the nodes still running and hands each node run back
//!    to the queue. The stopped attempt counts toward the node's retry policy, as one whose
//!    worker died does, and the engine's attempt fencing keeps it from recording anything, so
//!    the node run ends with one result; the node itself runs again elsewhere (unless that
//!    was its last attempt), so a call it had already sent is sent again, with the same
//!    `Idempotency-Key`;
//! 4. gives back whatever it still holds and returns. Should the database be unreachable
//!    throughout, it returns [`HAND_BACK_TIME`] after the grace period anyway, and the jobs it
//!    held run elsewhere once the other workers notice its heartbeat has stopped.
//!
//! # Database outages
//!
//! A worker outlives an unreachable database: it retries with capped exponential backoff,
//! logging each attempt, and picks up where it stopped when the database returns. A node run
//! whose result could not be recorded is delivered again and claimed anew.

mod backend;
pub mod meters;
pub mod nodes;
pub mod script;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// The prelude brings the builder's extension traits (concurrency, parallelize) into scope.
use apalis::prelude::*;
use apalis_postgres::Config;
use quantumflow_engine::{Attempt, Begin, Engine, EngineError, TraceContext};
use quantumflow_netguard::{Client, Policy};
use quantumflow_queue::{NODE_RUN_QUEUE, NodeRunJob};
use quantumflow_secrets::Keyring;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use status::WorkerStatus;

/// How often a worker proves it is alive. With [`MISSED_HEARTBEATS`] it sets how soon the jobs
/// of a crashed worker run elsewhere: within about a minute and a quarter.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Heartbeats a worker may miss before its jobs are handed to others.
pub const MISSED_HEARTBEATS: usize = 4;

/// How long nodes in flight may take to finish once shutdown begins, unless configured: with
/// [`HAND_BACK_TIME`] it fits Kubernetes' default termination grace period of 30 s.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// How long a worker waits, after the grace period, to hand back the node runs it stopped.
pub const HAND_BACK_TIME: Duration = Duration::from_secs(4);

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Nodes run at once.
    pub concurrency: usize,
    /// Jobs fetched per round trip.
    pub batch_size: usize,
    /// Which addresses http and slack nodes may reach. The default refuses every internal
    /// address: loopback, private, link-local (cloud metadata) and the like.
    pub outbound: Policy,
    /// Opens connector credentials (`QUANTUMFLOW_CREDENTIAL_KEYS`); without it, nodes using a
    /// connector whose credentials are sealed fail, saying so.
    pub keyring: Option<Arc<Keyring>>,
    /// Shows the worker's state to the process's readiness probe.
    pub status: WorkerStatus,
    /// How long nodes in flight may run on after shutdown begins; those still running then
    /// are stopped and handed back.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            batch_size: 10,
            outbound: Policy::default(),
            keyring: None,
            status: WorkerStatus::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// What every job handler shares.
#[derive(Debug)]
struct Runtime {
    engine: Engine,
    http: Client,
    /// Set once shutdown begins: nodes in flight finish, but chains stop at the next node.
    draining: AtomicBool,
    /// Set when the grace period ends: nodes still running stop and are handed back.
    interrupted: watch::Sender<bool>,
}

/// A name unique to this process start: a restarted process must not inherit the identity of
/// its predecessor, or the predecessor's abandoned jobs would look owned by a live worker.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", uuid::Uuid::now_v7().simple())
}

/// Runs a worker until `shutdown` completes; then it stops fetching and winds down as the
/// [crate documentation](crate#shutdown) describes.
pub async fn run(
    pool: PgPool,
    config: &WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let http = Client::new(config.outbound.clone()).map_err(WorkerError::Http)?;
    let runtime = Arc::new(Runtime {
        engine: Engine::new(pool.clone()).with_keyring(config.keyring.clone()),
        http,
        draining: AtomicBool::new(false),
        interrupted: watch::Sender::new(false),
    });

    let queue = Config::default()
        .queue(NODE_RUN_QUEUE)
        .batch_size(config.batch_size)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats(MISSED_HEARTBEATS)
        // A fetched job is already marked as this worker's, which is all that rescuing it
        // from a dead worker needs; marking it again as running would cost a write per job.
        .lock_tasks(false);
    // Jobs wake the worker through LISTEN/NOTIFY: the queue notifies for jobs due when they are
    // inserted, and the engine for delayed jobs when they fall due. The heartbeat's fetch is
    // the fallback if the listening connection is down.
    let backend = backend::NodeRunBackend::new(&pool, queue);
    let fetched = backend.fetched();
    let name = worker_name();
    config.status.started_as(&name);
    meters::slots(config.concurrency);
    let allowed: Vec<String> = config
        .outbound
        .allowed()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(
        worker = %name,
        concurrency = config.concurrency,
        shutdown_grace = ?config.shutdown_grace,
        allow_outbound = %allowed.join(","),
        credential_kids = %config
            .keyring
            .as_ref()
            .map(|k| k.kids().collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "worker starting"
    );

    let folding = tokio::spawn(quantumflow_engine::fold_counts(pool.clone()));
    let (stopping, stopped) = watch::channel(false);
    let signal = {
        let runtime = Arc::clone(&runtime);
        let (pool, name, status) = (pool.clone(), name.clone(), config.status.clone());
        async move {
            shutdown.await;
            runtime.draining.store(true, Ordering::SeqCst);
            status.begin_draining();
            let unstarted = fetched.close();
            let _ = stopping.send(true);
            tracing::info!(worker = %name, unstarted = unstarted.len(), "worker draining");
            if !unstarted.is_empty() {
                // Not awaited: the worker must stop fetching now, whatever the database does.
                tokio::spawn(async move { give_back(&pool, &name, Some(&unstarted)).await });
            }
            Ok::<(), std::io::Error>(())
        }
    };
    let worker = WorkerBuilder::new(WorkerContext::new(&name))
        .backend(backend)
        .data(Arc::clone(&runtime))
        .concurrency(config.concurrency)
        .parallelize(tokio::spawn)
        .build(handle);
    let wound_down = async {
        worker
            .run_until(signal)
            .await
            .map_err(|e| WorkerError::Queue(e.to_string()))?;
        // A fetch cut short by the shutdown may have taken jobs that were never handed out.
        give_back(&pool, &name, None).await;
        Ok(())
    };
    let ran = tokio::select! {
        ran = wound_down => ran,
        () = deadline(stopped, &runtime, config.shutdown_grace) => {
            tracing::warn!(
                worker = %name,
                "node runs could not be handed back in time; they run again once this \
                 worker's heartbeat is missed"
            );
            Ok(())
        }
    };
    folding.abort();
    meters::slots(0);
    ran?;
    tracing::info!(worker = %name, "worker stopped");
    Ok(())
}

/// Completes [`HAND_BACK_TIME`] after the grace period that starts when `stopped` turns true,
/// interrupting the node runs still in flight when the grace period ends.
async fn deadline(mut stopped: watch::Receiver<bool>, runtime: &Runtime, grace: Duration) {
    if stopped.wait_for(|&stopped| stopped).await.is_err() {
        return std::future::pending().await;
    }
    tokio::time::sleep(grace).await;
    tracing::warn!(
        grace = ?grace,
        "the shutdown grace period is over; stopping the node runs still in flight"
    );
    runtime.interrupted.send_replace(true);
    tokio::time::sleep(HAND_BACK_TIME).await;
}

/// Hands jobs this worker holds back to the queue, logging what it could not.
async fn give_back(pool: &PgPool, worker: &str, only: Option<&[String]>) {
    match backend::release(pool, worker, only).await {
        Ok(0) => {}
        Ok(jobs) => tracing::info!(worker, jobs, "handed jobs back to the queue"),
        Err(err) => tracing::warn!(
            worker,
            error.message = %err,
            "cannot hand jobs back; they run again once this worker's heartbeat is missed"
        ),
    }
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The HTTP client for nodes could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] quantumflow_netguard::Error),
    /// The queue failed.
    #[error("the job queue failed: {0}")]
    Queue(String),
}

/// One job: claim, run, report, and run on whatever successor the report hands back, so a
/// chain of nodes costs one job. Errors returned here are infrastructure errors (the database
/// went away); the queue delivers the job again, the claim picks up the chain's unfinished run,
/// and attempt fencing keeps that safe.
async fn handle(job: NodeRunJob, runtime: Data<Arc<Runtime>>) -> Result<(), BoxDynError> {
    let _slot = meters::Slot::take();
    // The execution's trace must be known before its span is entered: a span's parent cannot
    // change once it has started. A failure here only costs the link; `begin` meets the same
    // database and decides what the job does.
    let trace = match runtime.engine.trace_of(job.execution_id).await {
        Ok(trace) => trace,
        Err(err) => {
            tracing::debug!(
                execution.id = %job.execution_id,
                error = %err,
                "cannot read the execution's trace context"
            );
            None
        }
    };
    let span = node_span(job.execution_id, job.node_run_id, trace.as_ref());
    let begun = runtime
        .engine
        .begin(&job)
        .instrument(span.clone())
        .await
        .map_err(|err| redelivered(job.execution_id, job.node_run_id, err))?;
    let Begin::Run(mut attempt) = begun else {
        return Ok(());
    };
    let mut span = span;
    loop {
        let next = run_attempt(&runtime, &attempt)
            .instrument(span)
            .await
            .map_err(|err| redelivered(attempt.claim.execution_id, attempt.claim.id, err))?;
        let Some(next) = next else {
            return Ok(());
        };
        if runtime.draining.load(Ordering::SeqCst) {
            // A chain can be long; the process must exit within its grace period, so the
            // rest of the chain goes back to the queue for the workers that stay.
            runtime
                .engine
                .hand_back(&next)
                .await
                .map_err(|err| redelivered(next.claim.execution_id, next.claim.id, err))?;
            return Ok(());
        }
        attempt = next;
        span = node_span(attempt.claim.execution_id, attempt.claim.id, trace.as_ref());
    }
}

/// Logs that the job of node run `node_run_id` failed on `err` and goes back to the queue, to
/// be delivered again and its node run claimed anew, so that an operator sees each retry.
fn redelivered(execution_id: uuid::Uuid, node_run_id: uuid::Uuid, err: EngineError) -> BoxDynError {
    let source = std::error::Error::source(&err).map(ToString::to_string);
    tracing::warn!(
        execution.id = %execution_id,
        node_run.id = %node_run_id,
        error.message = %err,
        error.source = source.as_deref(),
        "cannot record the node run's progress; its job will be delivered again"
    );
    err.into()
}

/// The span of one node run; a child of the execution's span when the execution has a trace.
fn node_span(
    execution_id: uuid::Uuid,
    node_run_id: uuid::Uuid,
    trace: Option<&TraceContext>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "node_run",
        otel.status_code = tracing::field::Empty,
        execution.id = %execution_id,
        node_run.id = %node_run_id,
        node.name = tracing::field::Empty,
        node.r#type = tracing::field::Empty,
        attempt = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(trace) = trace {
        // Fails only when no OpenTelemetry layer is installed: there is no trace to join.
        let _ = span.set_parent(trace.parent());
    }
    quantumflow_engine::trace::record_trace_id(&span);
    span
}

/// Runs one claimed attempt and reports it; returns the successor to run next, if any.
async fn run_attempt(
    runtime: &Runtime,
    attempt: &Attempt,
) -> Result<Option<Box<Attempt>>, EngineError> {
    let span = tracing::Span::current();
    span.record("node.name", attempt.node().name.as_str());
    span.record("node.type", attempt.node().kind.as_str());
    span.record("attempt", attempt.claim.attempt);

    // The node's own timeout applies inside `nodes::run`; the execution's deadline may come
    // sooner, and then the whole execution fails, not just this attempt.
    let started = std::time::Instant::now();
    let run = async {
        let run = nodes::run(attempt, &runtime.http);
        match attempt.time_left() {
            Some(left) => tokio::time::timeout(left, run).await.ok(),
            None => Some(run.await),
        }
    };
    let mut interrupted = runtime.interrupted.subscribe();
    let interrupted = async move { interrupted.wait_for(|&stop| stop).await.is_ok() };
    let ran = tokio::select! {
        ran = run => ran,
        true = interrupted => {
            // The node's future is gone, so this attempt records nothing; its node run goes
            // back to the queue for a worker that stays. The attempt counts, as one whose
            // worker died would: a node that outlasts every drain must not run forever.
            tracing::warn!("node stopped at the end of the shutdown grace period; handing it back");
            runtime.engine.requeue_stopped(attempt).await?;
            return Ok(None);
        }
    };
    meters::node_ran(attempt.node().kind, started.elapsed());
    match ran {
        Some(Ok(done)) => {
            runtime
                .engine
                .succeed(attempt, done.output, done.hold)
                .await
        }
        Some(Err(failure)) => {
            span.record("otel.status_code", "error");
            runtime.engine.fail(attempt, &failure).await.map(|()| None)
        }
        None => {
            span.record("otel.status_code", "error");
            runtime.engine.expire(attempt).await.map(|()| None)
        }
    }
}
