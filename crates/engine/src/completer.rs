//! Group commit for successful node runs.
//!
//! Every worker task that finishes a node hands its result to one completer task per process,
//! which records whatever has queued up meanwhile in one transaction and one statement
//! ([`runs::complete`]). Under load a commit then carries many node runs, and at low load the
//! first result is written at once, so batching costs no waiting. A node that succeeds may take
//! one ready successor in the same statement; its worker task runs that next, skipping the
//! queue (see `carrier_id` in the migrations).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quantumflow_domain::{NodeKind, NodeRunStatus};
use quantumflow_queue::NodeRunJob;
use quantumflow_storage::PgPool;
use quantumflow_storage::runs::{self, Decided, EdgeDecision, Ending, Finished, Success, Target};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::meters::Tally;
use crate::{Closing, EngineError, Plan, Step, cascade};

/// Most results in one transaction: enough to amortise the commit, few enough that one slow
/// statement does not hold many workers' results.
const MAX_BATCH: usize = 64;

/// Results waiting for the completer; senders wait when it is this far behind.
const BACKLOG: usize = 1024;

/// How often a batch that lost a deadlock or serialization race is tried again before its
/// workers are told it failed (and their jobs are delivered again).
const CONFLICT_RETRIES: usize = 3;

/// One successful attempt, with the edges it decides.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) plan: Arc<Plan>,
    pub(crate) run_id: Uuid,
    /// The node's kind, for the metrics.
    pub(crate) kind: NodeKind,
    pub(crate) attempt: i32,
    pub(crate) execution_id: Uuid,
    /// The queue job the run is carried by.
    pub(crate) carrier: Uuid,
    pub(crate) input: Value,
    pub(crate) output: Value,
    /// (target index, edges decided, edges fired), one entry per target.
    pub(crate) decisions: Vec<(usize, i32, i32)>,
    /// The target this worker would run next if it becomes ready.
    pub(crate) next: Option<usize>,
    pub(crate) reply: oneshot::Sender<Result<Reply, EngineError>>,
}

/// What became of a request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The attempt was no longer current; nothing was written for it.
    Stale,
    /// Recorded; the successor taken for this worker, if any.
    Recorded(Option<Target>),
}

/// Batches recorded at once per process. While one batch waits on the database the next one
/// fills, so a worker's throughput is not one round trip per batch; more would mostly add lock
/// contention between batches of the same executions' workflows.
const WRITERS: usize = 2;

/// Starts the completer for `pool`; it stops when every sender is dropped.
pub(crate) fn spawn(pool: &PgPool) -> mpsc::Sender<Request> {
    let (sender, receiver) = mpsc::channel::<Request>(BACKLOG);
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..WRITERS {
        let pool = pool.clone();
        let receiver = Arc::clone(&receiver);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                // The lock is held only while taking a batch, so the other writer takes the
                // next one while this one is recorded.
                let taken = receiver.lock().await.recv_many(&mut batch, MAX_BATCH).await;
                if taken == 0 {
                    return;
                }
                let requests = std::mem::take(&mut batch);
                let outcome = record_with_retries(&pool, &requests).await;
                answer(requests, outcome);
            }
        });
    }
    sender
}

async fn record_with_retries(
    pool: &PgPool,
    requests: &[Request],
) -> Result<Vec<Reply>, EngineError> {
    let mut tries = 0;
    loop {
        match record(pool, requests).await {
            Err(EngineError::Storage(err)) if err.is_conflict() && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::debug!(
                    tries,
                    error.message = %err,
                    "batch of results conflicted; retrying"
                );
                tokio::time::sleep(Duration::from_millis(2 * tries as u64)).await;
            }
            other => return other,
        }
    }
}

fn answer(requests: Vec<Request>, outcome: Result<Vec<Reply>, EngineError>) {
    match outcome {
        Ok(replies) => {
            for (request, reply) in requests.into_iter().zip(replies) {
                // A worker that stopped waiting has nothing left to do with its answer.
                request.reply.send(Ok(reply)).ok();
            }
        }
        Err(err) => {
            let message = err.to_string();
            for request in requests {
                request
                    .reply
                    .send(Err(EngineError::Batch(message.clone())))
                    .ok();
            }
        }
    }
}

/// Records a batch in one transaction; replies in request order.
async fn record(pool: &PgPool, requests: &[Request]) -> Result<Vec<Reply>, EngineError> {
    let successes: Vec<Success<'_>> = requests
        .iter()
        .map(|r| Success {
            id: r.run_id,
            attempt: r.attempt,
            input: &r.input,
            output: &r.output,
        })
        .collect();
    let mut decisions = Vec::new();
    for r in requests {
        for &(target, decided, fired) in &r.decisions {
            decisions.push(EdgeDecision {
                source: r.run_id,
                execution_id: r.execution_id,
                node_id: r.plan.node(target).id,
                decided,
                fired,
                carrier: (r.next == Some(target)).then_some(r.carrier),
            });
        }
    }

    let mut tx = pool.begin().await?;
    let completed = runs::complete(&mut *tx, &successes, &decisions).await?;
    let mut tally = Tally::default();
    for request in requests {
        if completed.recorded.contains(&request.run_id) {
            tally.node_run(request.kind, NodeRunStatus::Success);
        }
    }

    let mut replies: Vec<Reply> = requests
        .iter()
        .map(|r| {
            if completed.recorded.contains(&r.run_id) {
                Reply::Recorded(None)
            } else {
                Reply::Stale
            }
        })
        .collect();
    let by_carrier: HashMap<Uuid, usize> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.carrier, i))
        .collect();
    let plan_of: HashMap<Uuid, &Arc<Plan>> =
        requests.iter().map(|r| (r.execution_id, &r.plan)).collect();

    // Targets that became decided without being taken are queued or skipped here, as a single
    // node's completion would do; skips may decide further nodes.
    let mut per_execution: HashMap<Uuid, Vec<Decided>> = HashMap::new();
    for target in completed.targets {
        if target.status == "running" && target.undecided_edges == 0 {
            if let Some(&i) = target.carrier_id.as_ref().and_then(|c| by_carrier.get(c))
                && requests[i].execution_id == target.execution_id
            {
                replies[i] = Reply::Recorded(Some(target));
            }
            continue;
        }
        per_execution
            .entry(target.execution_id)
            .or_default()
            .push(Decided {
                id: target.id,
                node_id: target.node_id,
                undecided_edges: target.undecided_edges,
                fired_edges: target.fired_edges,
                status: target.status,
            });
    }
    let mut jobs: Vec<(NodeRunJob, Duration)> = Vec::new();
    let mut remaining: HashMap<Uuid, (i32, bool)> = completed
        .executions
        .iter()
        .map(|&(id, left, unhandled)| (id, (left, unhandled)))
        .collect();
    for (execution_id, rows) in per_execution {
        let Some(plan) = plan_of.get(&execution_id) else {
            continue;
        };
        let mut step = Step {
            jobs: &mut jobs,
            tally: &mut tally,
        };
        let skipped = cascade(&mut tx, plan, execution_id, rows, None, &mut step).await?;
        if skipped > 0 {
            let settled = runs::settle(&mut *tx, execution_id, skipped, false).await?;
            remaining.insert(execution_id, settled);
        }
    }
    quantumflow_queue::push_node_runs(&mut tx, &jobs).await?;

    // Executions that have nothing left end together: one statement reads the outputs of all
    // of them, one ends them all, and each workflow gets one count for the batch.
    let finished: Vec<(Uuid, &Arc<Plan>, bool)> = remaining
        .into_iter()
        .filter(|(_, (left, _))| *left == 0)
        .filter_map(|(id, (_, unhandled))| plan_of.get(&id).map(|&plan| (id, plan, unhandled)))
        .collect();
    if !finished.is_empty() {
        let ids: Vec<Uuid> = finished.iter().map(|(id, _, _)| *id).collect();
        let mut outputs = runs::outputs_of(&mut *tx, &ids).await?;
        let closing: Vec<(Uuid, Closing)> = finished
            .iter()
            .map(|&(id, plan, unhandled)| {
                let outputs = outputs.remove(&id).unwrap_or_default();
                (id, Closing::new(plan, outputs, unhandled, None))
            })
            .collect();
        let endings: Vec<Ending<'_>> = closing
            .iter()
            .map(|(id, closing)| closing.ending(*id))
            .collect();
        let ended = runs::end_executions(&mut *tx, &endings).await?;
        let mut counts: BTreeMap<Uuid, Finished> = BTreeMap::new();
        for one in ended {
            tally.finished(one.workflow_id, &one.finished);
            counts
                .entry(one.workflow_id)
                .or_default()
                .add(&one.finished);
        }
        for (workflow, sum) in &counts {
            runs::count_finished(&mut *tx, *workflow, sum).await?;
        }
    }
    tx.commit().await?;
    tally.publish();
    Ok(replies)
}
