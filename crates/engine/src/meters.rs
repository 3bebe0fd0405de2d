//! The engine's metrics: executions, node runs and retries, counted as they are committed.
//!
//! A transition gathers its counts in a [`Tally`] while it writes, and publishes them only
//! after its `COMMIT` succeeded: a transaction that rolls back, conflicts or loses its
//! connection publishes nothing, so the counters (summed over every process) agree with the
//! tables. Handles are registered once per label set and cached, so publishing is an atomic
//! add; the process must install its recorder before the first transition.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use metrics::{Counter, Unit};
use quantumflow_domain::{ExecutionStatus, NodeKind, NodeRunStatus};
use quantumflow_storage::runs::Finished;
use uuid::Uuid;

use crate::{Plan, Start};

/// Executions written by a control plane, by `workflow_id`.
pub const EXECUTIONS_STARTED: &str = "quantumflow_executions_started_total";
/// Executions that ended, by `workflow_id` and final `status`.
pub const EXECUTIONS_FINISHED: &str = "quantumflow_executions_finished_total";
/// Node runs that reached a final status, by `node_type` and `status`.
pub const NODE_RUNS: &str = "quantumflow_node_runs_total";
/// Failed attempts handed back to the queue for another try.
pub const RETRIES_SCHEDULED: &str = "quantumflow_node_retries_scheduled_total";
/// Node runs that failed for good after using every attempt their retry policy allows.
pub const ATTEMPTS_EXHAUSTED: &str = "quantumflow_node_attempts_exhausted_total";

/// The statuses a node run ends with, in the order of [`Tally`]'s table.
const FINAL_RUN: [NodeRunStatus; 3] = [
    NodeRunStatus::Success,
    NodeRunStatus::Failed,
    NodeRunStatus::Skipped,
];

/// The statuses an execution ends with, in the order of [`Finished`]'s fields.
const FINAL_EXECUTION: [ExecutionStatus; 3] = [
    ExecutionStatus::Success,
    ExecutionStatus::Failed,
    ExecutionStatus::Cancelled,
];

/// Gives the engine's metrics their help texts; call once, after installing the recorder.
pub fn describe() {
    metrics::describe_counter!(
        EXECUTIONS_STARTED,
        Unit::Count,
        "Executions a control plane wrote, counted when the transaction committed."
    );
    metrics::describe_counter!(
        EXECUTIONS_FINISHED,
        Unit::Count,
        "Executions that ended, by final status, counted when the ending committed."
    );
    metrics::describe_counter!(
        NODE_RUNS,
        Unit::Count,
        "Node runs that reached a final status (success, failed, skipped)."
    );
    metrics::describe_counter!(
        RETRIES_SCHEDULED,
        Unit::Count,
        "Failed node attempts queued again under their retry policy."
    );
    metrics::describe_counter!(
        ATTEMPTS_EXHAUSTED,
        Unit::Count,
        "Node runs that failed for good with no attempt left to retry."
    );
}

/// The cached handles.
struct Handles {
    /// One per node kind and final status, indexed as [`run_slot`] says.
    node_runs: Vec<Counter>,
    retries: Counter,
    exhausted: Counter,
    /// Workflows come and go, so their handles are made on first use and kept.
    started: Mutex<HashMap<Uuid, Counter>>,
    finished: Mutex<HashMap<(Uuid, ExecutionStatus), Counter>>,
}

static HANDLES: LazyLock<Handles> = LazyLock::new(|| Handles {
    node_runs: NodeKind::ALL
        .iter()
        .flat_map(|kind| {
            FINAL_RUN.iter().map(|status| {
                let (kind, status) = (kind.as_str(), status.as_str());
                metrics::counter!(NODE_RUNS, "node_type" => kind, "status" => status)
            })
        })
        .collect(),
    retries: metrics::counter!(RETRIES_SCHEDULED),
    exhausted: metrics::counter!(ATTEMPTS_EXHAUSTED),
    started: Mutex::default(),
    finished: Mutex::default(),
});

fn run_slot(kind: NodeKind, status: NodeRunStatus) -> Option<usize> {
    let kind = NodeKind::ALL.iter().position(|k| *k == kind)?;
    let status = FINAL_RUN.iter().position(|s| *s == status)?;
    Some(kind * FINAL_RUN.len() + status)
}

/// Counts one failed attempt queued for a retry; call after its transaction committed.
pub(crate) fn retry_scheduled() {
    HANDLES.retries.increment(1);
}

/// Counts one node run that failed with no attempt left; call after its transaction committed.
pub(crate) fn attempts_exhausted() {
    HANDLES.exhausted.increment(1);
}

/// Counts executions that [`crate::start_all`] wrote, with the node runs and executions that
/// ended with their trigger. Call only once the transaction that wrote them has committed.
pub fn started(starts: &[&Start]) {
    let mut tally = Tally::default();
    for start in starts {
        tally.started.push(start.workflow_id);
        for (node, run) in start.plan.snapshot.nodes.iter().zip(&start.runs) {
            if let Ok(status) = run.status.parse() {
                tally.node_run(node.kind, status);
            }
        }
        if let Some((status, _, _)) = &start.end {
            let finished = Finished::one(status, chrono::Utc::now());
            tally.finished(start.workflow_id, &finished);
        }
    }
    tally.publish();
}

/// Counts gathered while a transaction writes, published once it commits.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Node runs ended, indexed as [`run_slot`] says.
    node_runs: Vec<u64>,
    started: Vec<Uuid>,
    finished: Vec<(Uuid, Finished)>,
}

impl Tally {
    /// One node run of `kind` ended with `status`; statuses that are not final are ignored.
    pub(crate) fn node_run(&mut self, kind: NodeKind, status: NodeRunStatus) {
        let Some(slot) = run_slot(kind, status) else {
            return;
        };
        if self.node_runs.is_empty() {
            self.node_runs = vec![0; NodeKind::ALL.len() * FINAL_RUN.len()];
        }
        self.node_runs[slot] += 1;
    }

    /// The runs of `node_ids` in `plan` were skipped.
    pub(crate) fn skipped(&mut self, plan: &Plan, node_ids: &[Uuid]) {
        for index in node_ids.iter().filter_map(|id| plan.index_of(*id)) {
            self.node_run(plan.node(index).kind, NodeRunStatus::Skipped);
        }
    }

    /// Executions of `workflow` ended as `finished` counts them.
    pub(crate) fn finished(&mut self, workflow: Uuid, finished: &Finished) {
        self.finished.push((workflow, *finished));
    }

    /// Adds the counts to the metrics; call after the transaction committed.
    pub(crate) fn publish(self) {
        let handles = &*HANDLES;
        for (slot, &count) in self.node_runs.iter().enumerate() {
            if count > 0 {
                handles.node_runs[slot].increment(count);
            }
        }
        if !self.started.is_empty() {
            let mut started = handles
                .started
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for workflow in self.started {
                started
                    .entry(workflow)
                    .or_insert_with(|| {
                        metrics::counter!(EXECUTIONS_STARTED, "workflow_id" => workflow.to_string())
                    })
                    .increment(1);
            }
        }
        if !self.finished.is_empty() {
            let mut finished = handles
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (workflow, counts) in self.finished {
                let by_status = [counts.success, counts.failed, counts.cancelled];
                for (status, count) in FINAL_EXECUTION.into_iter().zip(by_status) {
                    let Ok(count @ 1..) = u64::try_from(count) else {
                        continue;
                    };
                    finished
                        .entry((workflow, status))
                        .or_insert_with(|| {
                            metrics::counter!(
                                EXECUTIONS_FINISHED,
                                "workflow_id" => workflow.to_string(),
                                "status" => status.as_str()
                            )
                        })
                        .increment(count);
                }
            }
        }
    }
}
