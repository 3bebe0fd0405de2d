//! Metrics and probes of every process role.
//!
//! The binary installs one Prometheus recorder per process ([`install`]); the libraries update
//! their metrics through the `metrics` facade, and `GET /metrics` renders them in the text
//! format. `serve` and `up` answer `/metrics` on the API's address. A worker has no API, so it
//! serves `/healthz`, `/readyz` and `/metrics` on a small admin listener of its own
//! ([`serve_admin`]).
//!
//! Gauges read from the database (the queue's backlog) and from the pool are refreshed when
//! `/metrics` is scraped, so they cost nothing between scrapes and are never older than the
//! scrape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quantumflow_api::{ApiError, health};
use quantumflow_storage::{StorageError, probes};
use quantumflow_worker::WorkerStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer;
use tracing_subscriber::registry::LookupSpan;

/// Runnable node-run jobs: due and not taken by a worker.
const QUEUE_RUNNABLE: &str = "quantumflow_queue_runnable_jobs";
/// Seconds since the longest-waiting runnable job fell due.
const QUEUE_OLDEST_AGE: &str = "quantumflow_queue_oldest_runnable_age_seconds";
/// This process's database connections, by `state` (`in_use`, `idle`), over all its pools.
const POOL_CONNECTIONS: &str = "quantumflow_db_pool_connections";
/// The most connections this process's pools open together.
const POOL_MAX: &str = "quantumflow_db_pool_max_connections";
/// How long callers waited for a pooled connection.
const POOL_WAIT: &str = "quantumflow_db_pool_acquire_wait_seconds";

/// Buckets of [`POOL_WAIT`], in seconds: an idle connection is handed out in microseconds, a
/// new one opens in milliseconds, and anything near the control plane's acquire timeout (half
/// a second by default) or the workers' (5 s) means the pool is too small.
const POOL_WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The target and field of the event sqlx emits for each connection its pool hands out.
const ACQUIRE_TARGET: &str = "sqlx::pool::acquire";
const ACQUIRE_FIELD: &str = "acquired_after_secs";

/// Buckets for histograms that have none of their own, so no histogram becomes a summary.
const DEFAULT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// How often the recorder drains its histograms' buffers when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The longest a scrape waits for the queue's backlog; a slow database must not make the
/// scrape itself time out and lose every other metric.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest the backlog's query runs before the database cancels it: under
/// [`BACKLOG_TIMEOUT`], so a scrape that gave up does not keep its connection busy behind a
/// lock (see [`quantumflow_storage::probes`]).
const BACKLOG_STATEMENT_LIMIT: Duration = Duration::from_millis(1500);

/// The longest `/readyz` waits for the database before it answers 503.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The recorder's handle; the recorder itself is process-wide, as the `metrics` facade is.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder. Call before anything records a metric: handles
/// taken earlier would stay detached from it.
pub(crate) fn install() -> anyhow::Result<()> {
    let builder = PrometheusBuilder::new()
        .set_buckets(DEFAULT_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(quantumflow_api::meters::ACCEPT_DURATION.to_owned()),
                quantumflow_api::meters::ACCEPT_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(quantumflow_worker::meters::NODE_DURATION.to_owned()),
                quantumflow_worker::meters::NODE_DURATION_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(POOL_WAIT.to_owned()), POOL_WAIT_BUCKETS)
        })
        .context("invalid histogram buckets")?;
    let handle = builder
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

fn describe() {
    quantumflow_api::meters::describe();
    quantumflow_engine::meters::describe();
    quantumflow_worker::meters::describe();
    quantumflow_storage::meters::describe();
    metrics::describe_gauge!(
        QUEUE_RUNNABLE,
        Unit::Count,
        "Node-run jobs due and not taken by any worker, read from the queue at scrape time."
    );
    metrics::describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Seconds since the longest-waiting runnable job fell due; 0 when none waits."
    );
    metrics::describe_gauge!(
        POOL_CONNECTIONS,
        Unit::Count,
        "This process's database connections, in use or idle, summed over its pools."
    );
    metrics::describe_gauge!(
        POOL_MAX,
        Unit::Count,
        "The most database connections this process's pools open, summed over its pools."
    );
    metrics::describe_histogram!(
        POOL_WAIT,
        Unit::Seconds,
        "Time callers waited for a database connection from this process's pools, opening \
         one included; waits that ended in a timeout are not in it but in \
         quantumflow_db_pool_acquire_timeouts_total. The rate of its sum is the average number \
         of callers waiting, too low when callers time out."
    );
}

/// A layer that turns sqlx's acquire events into [`POOL_WAIT`] observations. sqlx exposes no
/// count of the callers waiting for its pool, only this event per connection handed out (with
/// `acquire_time_level` set, see `database::pool`), so the wait is measured from it: by
/// Little's law the rate of the histogram's sum is the average number of callers waiting. A
/// wait that times out emits no event; `quantumflow_db_pool_acquire_timeouts_total` counts
/// those.
pub(crate) fn pool_waits<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    PoolWaits.with_filter(Targets::new().with_target(ACQUIRE_TARGET, Level::TRACE))
}

struct PoolWaits;

impl<S: Subscriber> Layer<S> for PoolWaits {
    fn on_event(&self, event: &Event<'_>, _: layer::Context<'_, S>) {
        let mut wait = WaitSeconds(None);
        event.record(&mut wait);
        if let Some(seconds) = wait.0 {
            POOL_WAIT_HISTOGRAM.record(seconds);
        }
    }
}

static POOL_WAIT_HISTOGRAM: LazyLock<Histogram> = LazyLock::new(|| metrics::histogram!(POOL_WAIT));

/// Picks the wait out of an acquire event's fields.
struct WaitSeconds(Option<f64>);

impl Visit for WaitSeconds {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == ACQUIRE_FIELD {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Drains the recorder's buffers every [`UPKEEP_INTERVAL`] until the task is dropped, so memory
/// stays bounded between scrapes.
pub(crate) async fn upkeep() {
    let Some(handle) = HANDLE.get() else {
        return;
    };
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// `GET /metrics` of a process whose pools are `pool`, on which the queue's backlog is read, and
/// `others`: the pool gauges sum them all, as they are all the process's connections.
pub(crate) fn metrics_router(pool: PgPool, others: Vec<PgPool>) -> Router {
    let mut pools = vec![pool];
    pools.extend(others);
    Router::new()
        .route("/metrics", get(render))
        .method_not_allowed_fallback(quantumflow_api::method_not_allowed)
        .with_state(Arc::new(pools))
}

struct ScrapeGauges {
    runnable: Gauge,
    oldest_age: Gauge,
    in_use: Gauge,
    idle: Gauge,
    max: Gauge,
}

static SCRAPE_GAUGES: LazyLock<ScrapeGauges> = LazyLock::new(|| ScrapeGauges {
    runnable: metrics::gauge!(QUEUE_RUNNABLE),
    oldest_age: metrics::gauge!(QUEUE_OLDEST_AGE),
    in_use: metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use"),
    idle: metrics::gauge!(POOL_CONNECTIONS, "state" => "idle"),
    max: metrics::gauge!(POOL_MAX),
});

async fn render(State(pools): State<Arc<Vec<PgPool>>>) -> Response {
    let gauges = &*SCRAPE_GAUGES;
    let (mut in_use, mut idle, mut max) = (0.0, 0.0, 0.0);
    for pool in pools.iter() {
        let size = pool.size();
        let free = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        in_use += f64::from(size - free);
        idle += f64::from(free);
        max += f64::from(pool.options().get_max_connections());
    }
    gauges.in_use.set(in_use);
    gauges.idle.set(idle);
    gauges.max.set(max);
    // Beginning the transaction turns a pool timeout into a StorageError, which counts it in
    // quantumflow_db_pool_acquire_timeouts_total like any other caller's.
    let backlog = async {
        let mut probe = probes::begin(&pools[0], BACKLOG_STATEMENT_LIMIT).await?;
        Ok::<_, StorageError>(quantumflow_queue::backlog(&mut *probe).await?)
    };
    match tokio::time::timeout(BACKLOG_TIMEOUT, backlog).await {
        Ok(Ok(backlog)) => {
            gauges.runnable.set(backlog.runnable as f64);
            gauges.oldest_age.set(backlog.oldest_age_seconds);
        }
        // The gauges keep their last values; the log says why they are stale.
        Ok(Err(err)) => {
            tracing::warn!(
                error.message = %err,
                error.source = ?std::error::Error::source(&err),
                "cannot read the queue's backlog for /metrics"
            );
        }
        Err(_) => tracing::warn!("reading the queue's backlog for /metrics timed out"),
    }
    let text = HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What the worker's admin routes read.
#[derive(Clone)]
struct Admin {
    pool: PgPool,
    status: WorkerStatus,
}

/// Binds the worker's admin listener; done before the worker starts, so a taken address stops
/// the process at once.
pub(crate) async fn bind_admin(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address}; free the address or pass --admin-listen")
    })
}

/// Serves the worker's `/healthz`, `/readyz` and `/metrics` on `listener` until `shutdown`
/// completes.
pub(crate) async fn serve_admin(
    listener: TcpListener,
    pool: PgPool,
    status: WorkerStatus,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upkeep = tokio::spawn(upkeep());
    let app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(worker_ready))
        .method_not_allowed_fallback(quantumflow_api::method_not_allowed)
        .with_state(Admin {
            pool: pool.clone(),
            status,
        })
        .merge(metrics_router(pool, Vec::new()))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::UnknownRoute(format!(
                "no route answers {method} {}; a worker's admin listener serves GET /healthz, \
                 /readyz and /metrics",
                uri.path()
            ))
        });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep.abort();
    served.context("the admin listener failed")
}

/// `GET /readyz` of a worker: the database answers and has every migration this binary needs,
/// and the worker is registered with the queue and beating. 503 with a problem body naming the
/// check that failed otherwise.
async fn worker_ready(State(admin): State<Admin>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, check_worker(&admin)).await {
        Ok(Ok(ready)) => axum::Json(ready).into_response(),
        Ok(Err(detail)) => ApiError::Unavailable(detail).into_response(),
        Err(_) => ApiError::Unavailable(format!(
            "the database did not answer within {} s",
            READY_TIMEOUT.as_secs()
        ))
        .into_response(),
    }
}

async fn check_worker(admin: &Admin) -> Result<Value, String> {
    if admin.status.is_draining() {
        return Err("draining: this worker is shutting down and fetches no new jobs".to_owned());
    }
    let mut probe = health::begin_probe(&admin.pool)
        .await
        .map_err(|err| err.to_string())?;
    let versions = health::schema_versions(&mut probe)
        .await
        .map_err(|err| err.to_string())?;

    let name = admin
        .status
        .name()
        .ok_or_else(|| "the worker has not started yet".to_owned())?;
    let silence = quantumflow_queue::worker_silence(&mut *probe, name)
        .await
        .map_err(|err| health::unready(&StorageError::from(err)).to_string())?
        .ok_or_else(|| format!("worker {name} is not registered with the queue yet"))?;
    // Two missed beats, not one: a beat can be a little late under load. Its jobs are handed
    // to others only after MISSED_HEARTBEATS.
    let limit = 2 * quantumflow_worker::HEARTBEAT_INTERVAL.as_secs();
    if silence > limit as f64 {
        return Err(format!(
            "worker {name} last beat {silence:.0} s ago, more than {limit} s; the queue may \
             hand its jobs to others"
        ));
    }
    Ok(json!({"status": "ready", "worker": name, "schema": versions}))
}
