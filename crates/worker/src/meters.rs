//! The worker's metrics: its slots, how long nodes take, and jobs rescued from dead workers.
//!
//! Handles are registered once and cached, so an update is an atomic operation; the process
//! must install its recorder before the worker starts.

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use quantumflow_domain::NodeKind;

/// Slots of this process's worker, by `state` (`busy`, `free`).
pub const SLOTS: &str = "quantumflow_worker_slots";
/// How long running a node took, per attempt, by `node_type`.
pub const NODE_DURATION: &str = "quantumflow_node_run_duration_seconds";
/// Jobs of workers that stopped beating, handed back to the queue.
pub const JOBS_RESCUED: &str = "quantumflow_queue_jobs_rescued_total";

/// Buckets of [`NODE_DURATION`], in seconds: transforms and conditions take well under a
/// millisecond, HTTP calls tens to hundreds of milliseconds, timeouts and delays far longer.
pub const NODE_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Gives the metrics their help texts; call once, after installing the recorder.
pub fn describe() {
    metrics::describe_gauge!(
        SLOTS,
        Unit::Count,
        "Slots of this process's worker running a job (busy) or waiting for one (free)."
    );
    metrics::describe_histogram!(
        NODE_DURATION,
        Unit::Seconds,
        "Time a node took to run, per attempt and whatever its outcome, by node type."
    );
    metrics::describe_counter!(
        JOBS_RESCUED,
        Unit::Count,
        "Jobs of workers that stopped beating, handed back to the queue by this process."
    );
}

struct Handles {
    busy: Gauge,
    free: Gauge,
    /// One per node kind, in the order of [`NodeKind::ALL`].
    durations: Vec<Histogram>,
    rescued: Counter,
}

static HANDLES: LazyLock<Handles> = LazyLock::new(|| Handles {
    busy: metrics::gauge!(SLOTS, "state" => "busy"),
    free: metrics::gauge!(SLOTS, "state" => "free"),
    durations: NodeKind::ALL
        .iter()
        .map(|kind| metrics::histogram!(NODE_DURATION, "node_type" => kind.as_str()))
        .collect(),
    rescued: metrics::counter!(JOBS_RESCUED),
});

/// The worker has `slots` slots, none busy; 0 once it stopped.
pub(crate) fn slots(slots: usize) {
    HANDLES.busy.set(0.0);
    HANDLES.free.set(slots as f64);
}

/// A busy slot, free again when dropped.
pub(crate) struct Slot(());

impl Slot {
    pub(crate) fn take() -> Self {
        HANDLES.busy.increment(1.0);
        HANDLES.free.decrement(1.0);
        Self(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        HANDLES.busy.decrement(1.0);
        HANDLES.free.increment(1.0);
    }
}

/// A node of `kind` ran for `took`.
pub(crate) fn node_ran(kind: NodeKind, took: Duration) {
    if let Some(index) = NodeKind::ALL.iter().position(|k| *k == kind) {
        HANDLES.durations[index].record(took.as_secs_f64());
    }
}

/// `jobs` jobs of dead workers were handed back; call after that committed.
pub(crate) fn rescued(jobs: u64) {
    HANDLES.rescued.increment(jobs);
}
