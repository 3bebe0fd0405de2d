//! QuantumFlow's worker: it claims node-run jobs from the queue and runs the nodes.
//!
//! Any number of worker processes may run; each claims jobs with `FOR UPDATE SKIP LOCKED`
//! through apalis-postgres, so one job goes to one worker at a time. What a job does to the
//! database is decided by [`quantumflow_engine`]; this crate runs the node itself ([`nodes`])
//! and drives the queue: worker identity, heartbeats, concurrency and shutdown.

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
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use status::WorkerStatus;

/// How often a worker proves it is alive. With [`MISSED_HEARTBEATS`] it sets how soon the jobs
/// of a crashed worker run elsewhere: within about a minute and a quarter.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Heartbeats a worker may miss before its jobs are handed to others.
pub const MISSED_HEARTBEATS: usize = 4;

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
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            batch_size: 10,
            outbound: Policy::default(),
            keyring: None,
            status: WorkerStatus::default(),
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
}

/// A name unique to this process start: a restarted process must not inherit the identity of
/// its predecessor, or the predecessor's abandoned jobs would look owned by a live worker.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", uuid::Uuid::now_v7().simple())
}

/// Runs a worker until `shutdown` completes; then it stops fetching, finishes the nodes in
/// flight and returns.
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
        allow_outbound = %allowed.join(","),
        credential_kids = %config
            .keyring
            .as_ref()
            .map(|k| k.kids().collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "worker starting"
    );

    let folding = tokio::spawn(quantumflow_engine::fold_counts(pool.clone()));
    let draining = Arc::clone(&runtime);
    let worker = WorkerBuilder::new(WorkerContext::new(&name))
        .backend(backend)
        .data(runtime)
        .concurrency(config.concurrency)
        .parallelize(tokio::spawn)
        .build(handle);
    let ran = worker
        .run_until(async move {
            shutdown.await;
            draining.draining.store(true, Ordering::SeqCst);
            Ok::<(), std::io::Error>(())
        })
        .await;
    folding.abort();
    meters::slots(0);
    ran.map_err(|e| WorkerError::Queue(e.to_string()))?;
    tracing::info!(worker = %name, "worker stopped");
    Ok(())
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
    let begun = runtime.engine.begin(&job).instrument(span.clone()).await?;
    let Begin::Run(mut attempt) = begun else {
        return Ok(());
    };
    let mut span = span;
    loop {
        let next = run_attempt(&runtime, &attempt).instrument(span).await?;
        let Some(next) = next else {
            return Ok(());
        };
        if runtime.draining.load(Ordering::SeqCst) {
            // A chain can be long; the process must exit within its grace period, so the
            // rest of the chain goes back to the queue for the workers that stay.
            runtime.engine.hand_back(&next).await?;
            return Ok(());
        }
        attempt = next;
        span = node_span(attempt.claim.execution_id, attempt.claim.id, trace.as_ref());
    }
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
    let run = nodes::run(attempt, &runtime.http);
    let started = std::time::Instant::now();
    let ran = match attempt.time_left() {
        Some(left) => tokio::time::timeout(left, run).await.ok(),
        None => Some(run.await),
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
