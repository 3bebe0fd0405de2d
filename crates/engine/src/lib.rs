//! The execution engine: how executions start, how node outcomes move them along, and how
//! they finish.
//!
//! The control plane decides a start with [`Start::prepare`] and writes it, alone or with
//! others, with [`start_all`] in the transaction that accepts the trigger. Workers
//! call [`Engine::begin`] for each node-run job, run the node, and report with
//! [`Engine::succeed`] or [`Engine::fail`]. Every transition is one transaction: the node run's
//! row, the counters of its successors, the jobs of those that became ready, and, when nothing
//! is left, the execution's final status with its workflow's counters.
//!
//! The rules themselves (which edges fire, joins, skips, error handling) live in
//! [`quantumflow_domain::progress`]; this crate applies them to stored state.
//!
//! # Layout
//!
//! - [`snapshot`]: the frozen workflow an execution runs from.
//! - [`meters`]: counters of what the engine commits.
//! - [`trace`]: the trace context an execution's node runs join.
//! - this module: starting, claiming, completing.

mod completer;
pub mod meters;
pub mod snapshot;
pub mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantumflow_domain::expr::{self, ExprError, Scope};
use quantumflow_domain::progress::{self, Fate, NodeState, Outcome, Progress};
use quantumflow_domain::{EdgeKind, ErrorHandling, NodeKind, NodeRunStatus, RetryPolicy};
use quantumflow_queue::{NodeRunJob, QueueError};
use quantumflow_secrets::{Keyring, Redactor, Revealed};
use quantumflow_storage::runs::{
    self, AttemptResult, Claim, Decided, PlannedRun, StartedExecution, Target,
};
use quantumflow_storage::workflows::WorkflowDocument;
use quantumflow_storage::{PgPool, StorageError};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::meters::Tally;
pub use snapshot::{Plan, PlanError, Snapshot};
pub use trace::TraceContext;

/// Plans kept in memory per worker; snapshots never change, so a cached plan is never stale.
const PLAN_CACHE_SIZE: usize = 4096;

/// Why the engine could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The workflow cannot run as it is defined.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Jobs could not be queued.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The transaction that was to record this result with others failed.
    #[error("recording a batch of node results failed: {0}")]
    Batch(String),
}

impl From<sqlx::Error> for EngineError {
    fn from(err: sqlx::Error) -> Self {
        Self::Storage(err.into())
    }
}

/// How a trigger started an execution.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `manual`, `webhook`, `schedule` or `api`.
    pub trigger_type: &'static str,
    /// Request metadata worth keeping (headers, query).
    pub trigger_data: Value,
    /// The payload; the trigger node's output.
    pub input: Value,
    /// The user whose token triggered it.
    pub triggered_by: Option<Uuid>,
}

/// Why a node run that was never started is over, when the trigger itself failed.
const TRIGGER_FAILED: &str = "cancelled: the trigger failed";

/// What a node run waiting for its next attempt shows when its last one was stopped by a
/// worker shutting down.
const STOPPED_AT_SHUTDOWN: &str =
    "the attempt was stopped at the end of its worker's shutdown grace period";

/// An execution decided in memory and not yet written: its snapshot, the first state of every
/// node run, and the jobs to queue. [`Start::prepare`] does the deciding, which needs no
/// database, so that [`start_all`] can write many of them with a few statements.
#[derive(Debug)]
pub struct Start {
    id: Uuid,
    workflow_id: Uuid,
    workflow_name: String,
    workflow_version: i32,
    trigger: Trigger,
    snapshot_json: Value,
    plan: Plan,
    runs: Vec<FirstState>,
    /// Node runs to queue now.
    ready: Vec<Uuid>,
    /// Final status, output and error of an execution that ends with its trigger.
    end: Option<(&'static str, Value, Option<String>)>,
    /// The trace its node runs join.
    trace: Option<TraceContext>,
}

/// A node run as it is first written.
#[derive(Debug)]
struct FirstState {
    id: Uuid,
    status: &'static str,
    error: Option<&'static str>,
    max_retries: i32,
    undecided_edges: i32,
    fired_edges: i32,
}

impl Start {
    /// Decides how `trigger` starts `doc`: the trigger's edges, which nodes are ready, and
    /// whether the execution is over before any worker sees it.
    pub fn prepare(doc: &WorkflowDocument, trigger: Trigger) -> Result<Self, EngineError> {
        let snapshot = Snapshot::of(doc);
        let snapshot_json =
            serde_json::to_value(&snapshot).map_err(|e| PlanError::Unreadable(e.to_string()))?;
        let plan = Plan::new(snapshot)?;
        let trigger_index = plan.graph.trigger();

        // Decide the trigger's edges in memory: nothing is stored yet, so the node runs can be
        // written once, already in their first state.
        let enabled = plan.snapshot.nodes.iter().map(|n| n.is_enabled).collect();
        let mut progress = Progress::start(&plan.graph, enabled, plan.settings.error_handling);
        let scope = Scope::new()
            .with("output", trigger.input.clone())
            .with("input", trigger.input.clone());
        let mut trigger_error = None;
        if let Err(err) = progress.finish(trigger_index, Outcome::Succeeded, |edge| {
            let edge = &plan.snapshot.edges[edge];
            expr::condition_holds(&edge.condition, &scope)
        }) {
            // A condition that cannot be evaluated is the trigger's failure, not a silent "no".
            trigger_error = Some(format!("condition of an outgoing edge: {err}"));
            let enabled = plan.snapshot.nodes.iter().map(|n| n.is_enabled).collect();
            progress = Progress::start(&plan.graph, enabled, plan.settings.error_handling);
            progress
                .finish(trigger_index, Outcome::Failed, |_| {
                    Ok::<_, ExprError>(false)
                })
                .ok();
        }
        let trigger_failed = trigger_error.is_some();

        let runs: Vec<FirstState> = plan
            .snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let (status, error) = match progress.states()[i] {
                    NodeState::Done(Outcome::Succeeded) => ("success", None),
                    NodeState::Done(Outcome::Failed) => ("failed", None),
                    NodeState::Done(Outcome::Skipped) => ("skipped", None),
                    // Nothing runs after a failed trigger.
                    NodeState::Waiting | NodeState::Ready if trigger_failed => {
                        ("skipped", Some(TRIGGER_FAILED))
                    }
                    NodeState::Waiting | NodeState::Ready => ("pending", None),
                };
                FirstState {
                    id: Uuid::now_v7(),
                    status,
                    error,
                    max_retries: policy_of(&plan, i).max_retries.min(i32::MAX as u32) as i32,
                    undecided_edges: progress.undecided(i) as i32,
                    fired_edges: progress.fired(i) as i32,
                }
            })
            .collect();

        let (ready, end) = if progress.is_finished() || trigger_failed {
            let failed = progress.has_unhandled_failure();
            let (status, output) = if failed {
                ("failed", json!({}))
            } else {
                ("success", trigger.input.clone())
            };
            (Vec::new(), Some((status, output, trigger_error)))
        } else {
            let ready = progress.ready().into_iter().map(|i| runs[i].id).collect();
            (ready, None)
        };
        Ok(Self {
            id: Uuid::now_v7(),
            workflow_id: doc.workflow.id,
            workflow_name: doc.workflow.name.clone(),
            workflow_version: doc.workflow.version,
            trigger,
            snapshot_json,
            plan,
            runs,
            ready,
            end,
            trace: None,
        })
    }

    /// The same start, with node runs joining `trace`.
    #[must_use]
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The id the execution will have.
    pub fn execution_id(&self) -> Uuid {
        self.id
    }

    /// The workflow it runs.
    pub fn workflow_id(&self) -> Uuid {
        self.workflow_id
    }
}

/// Writes prepared executions in the caller's transaction, with the same few statements
/// however many there are: executions, node runs, jobs, and the counters of those that ended
/// with their trigger.
pub async fn start_all(conn: &mut PgConnection, starts: &[&Start]) -> Result<(), EngineError> {
    let empty = json!({});
    let planned: Vec<Vec<PlannedRun<'_>>> = starts
        .iter()
        .map(|start| {
            let trigger_index = start.plan.graph.trigger();
            start
                .plan
                .snapshot
                .nodes
                .iter()
                .zip(&start.runs)
                .enumerate()
                .map(|(i, (node, run))| PlannedRun {
                    id: run.id,
                    node_id: node.id,
                    node_name: &node.name,
                    node_type: node.kind.as_str(),
                    status: run.status,
                    output: if i == trigger_index {
                        &start.trigger.input
                    } else {
                        &empty
                    },
                    error: run.error,
                    max_retries: run.max_retries,
                    undecided_edges: run.undecided_edges,
                    fired_edges: run.fired_edges,
                })
                .collect()
        })
        .collect();
    let executions: Vec<StartedExecution<'_>> = starts
        .iter()
        .zip(&planned)
        .map(|(start, runs)| {
            let (status, output, error) = match &start.end {
                Some((status, output, error)) => (*status, output, error.as_deref()),
                None => ("running", &empty, None),
            };
            StartedExecution {
                id: start.id,
                workflow_id: start.workflow_id,
                workflow_name: &start.workflow_name,
                workflow_version: start.workflow_version,
                status,
                trigger_type: start.trigger.trigger_type,
                trigger_data: &start.trigger.trigger_data,
                workflow_snapshot: &start.snapshot_json,
                input_data: &start.trigger.input,
                output_data: output,
                error,
                triggered_by: start.trigger.triggered_by,
                timeout_seconds: start.plan.settings.timeout,
                traceparent: start.trace.as_ref().map(|t| t.traceparent.as_str()),
                tracestate: start.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
                runs,
            }
        })
        .collect();
    runs::start(&mut *conn, &executions).await?;

    let jobs: Vec<(NodeRunJob, Duration)> = starts
        .iter()
        .flat_map(|start| {
            start.ready.iter().map(|&node_run_id| {
                let job = NodeRunJob {
                    execution_id: start.id,
                    node_run_id,
                };
                (job, Duration::ZERO)
            })
        })
        .collect();
    quantumflow_queue::push_node_runs(&mut *conn, &jobs).await?;
    Ok(())
}

/// How often [`fold_counts`] moves recorded counts onto the workflows' rows.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// Moves the execution counts that ending transactions record onto their workflows' rows,
/// every [`FOLD_INTERVAL`], until the task is dropped. Every worker and control plane runs
/// one; they take turns, so the rows see about one update a second in all. Counters read
/// through the `workflow_counters` view are exact whether or not this has run; folding only
/// keeps the table of recorded counts small.
pub async fn fold_counts(pool: PgPool) {
    let mut ticks = tokio::time::interval(FOLD_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failures in a row. While the database is away, waits grow to a minute, so that logging
    // each attempt does not flood the log.
    let mut failures: u32 = 0;
    loop {
        ticks.tick().await;
        let folded = async {
            let mut conn = pool.acquire().await?;
            runs::fold_counts(&mut conn).await
        };
        match folded.await {
            Ok(folded) => {
                if failures > 0 {
                    tracing::info!(failures, "folding execution counts again");
                }
                failures = 0;
                if let Some(workflows @ 1..) = folded {
                    tracing::debug!(workflows, "counts folded onto workflows");
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = FOLD_INTERVAL
                    .saturating_mul(2_u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(60));
                tracing::warn!(
                    operation = "fold counts",
                    attempt = failures,
                    retry_in = ?wait,
                    error = %err,
                    "cannot fold execution counts; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A claimed node run, ready for a worker to execute.
#[derive(Debug)]
pub struct Attempt {
    /// The claim: ids and the attempt number.
    pub claim: Claim,
    /// The execution's plan.
    pub plan: Arc<Plan>,
    /// The node's index in the plan.
    pub index: usize,
    /// The node's rendered input.
    pub input: Value,
    /// The node's config with every template rendered.
    pub config: Value,
    /// The node's retry policy.
    pub policy: RetryPolicy,
    /// The node run whose queue job this attempt runs under: its own, or the one that started
    /// the chain it continues.
    pub carrier: Uuid,
    /// When the execution times out, on this process's clock.
    pub deadline: Option<Instant>,
    /// Everything the node's input and output templates could see: `input`, `execution`,
    /// `workflow`, `trigger` (the request that started the execution), and `nodes` when the
    /// node uses them. Never `secrets`: those are in scope only while `config` is rendered.
    pub scope: Scope,
    /// The credentials of the connector the node names in `config.connector_id`, opened.
    pub secrets: Option<Revealed>,
    /// Scrubs those credentials from the node's output and error before they are recorded.
    pub redactor: Redactor,
    /// The trace context stored with the execution, if any: what outgoing requests carry when
    /// this process has no span of its own on the trace.
    pub trace: Option<TraceContext>,
}

impl Attempt {
    /// An attempt of a claimed run whose input and config are not rendered yet.
    fn unprepared(
        claim: Claim,
        plan: Arc<Plan>,
        trace: Option<TraceContext>,
        index: usize,
        carrier: Uuid,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            policy: policy_of(&plan, index),
            claim,
            plan,
            trace,
            index,
            input: json!({}),
            config: json!({}),
            carrier,
            deadline,
            scope: Scope::new(),
            secrets: None,
            redactor: Redactor::default(),
        }
    }

    /// The node being run.
    pub fn node(&self) -> &snapshot::SnapshotNode {
        self.plan.node(self.index)
    }

    /// How long until the execution's deadline, if it has one.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The `Idempotency-Key` for outgoing requests: the same for every attempt of this node in
    /// this execution, so receivers can recognise a retry.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.claim.execution_id, self.node().id)
    }
}

/// What a worker should do with a job.
#[derive(Debug)]
pub enum Begin {
    /// Nothing: the node run or its execution already ended, or the attempt was settled here.
    Nothing,
    /// Run the node.
    Run(Box<Attempt>),
}

/// Why a node failed, as its executor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    /// What went wrong, for `node_runs.error_message`.
    pub message: String,
    /// Whether another attempt could succeed (a timeout or a 503, not a template typo).
    pub retryable: bool,
}

/// What never changes about an execution, cached per worker.
#[derive(Debug)]
struct Known {
    plan: Arc<Plan>,
    trace: Option<TraceContext>,
}

/// The engine as a worker uses it.
#[derive(Debug)]
pub struct Engine {
    pool: PgPool,
    /// Opens connector credentials; without it only rows still in clear can be used.
    keyring: Option<Arc<Keyring>>,
    plans: Mutex<HashMap<Uuid, Arc<Known>>>,
    completions: mpsc::Sender<completer::Request>,
}

impl Engine {
    /// An engine on `pool`. It starts a task that records successes in batches, so it must be
    /// created inside a Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        Self {
            completions: completer::spawn(&pool),
            pool,
            keyring: None,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The engine with `keyring` for opening connector credentials.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// The engine's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Claims the job's node run and prepares its attempt.
    pub async fn begin(&self, job: &NodeRunJob) -> Result<Begin, EngineError> {
        let Some(claim) = runs::claim(&self.pool, job.node_run_id).await? else {
            return Ok(Begin::Nothing);
        };
        let known = self.known(claim.execution_id).await?;
        let plan = Arc::clone(&known.plan);
        let index = node_index(&plan, claim.node_id)?;
        let deadline = claim
            .seconds_left
            .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
        let seconds_left = claim.seconds_left;
        let trace = known.trace.clone();
        let attempt = Attempt::unprepared(claim, plan, trace, index, job.node_run_id, deadline);

        if seconds_left.is_some_and(|left| left <= 0.0) {
            let timeout = attempt.plan.settings.timeout.unwrap_or_default();
            let message = format!("the execution timed out after {timeout} s");
            self.time_out(&attempt, &message).await?;
            return Ok(Begin::Nothing);
        }
        if attempt.claim.attempt as u32 > attempt.policy.max_attempts() {
            // The earlier attempts ended without reporting: their workers died, or stopped
            // them when a shutdown grace period ran out. A node that keeps killing its worker,
            // or outlasting every drain, must stop being retried somewhere.
            let ran = attempt.claim.attempt - 1;
            let message = format!(
                "gave up after {ran} attempt{}; the workers running it stopped without reporting",
                if ran == 1 { "" } else { "s" }
            );
            if self.finish(&attempt, Err(&message), None).await? {
                meters::attempts_exhausted();
            }
            return Ok(Begin::Nothing);
        }

        Ok(match self.fill(attempt, None).await? {
            Some(attempt) => Begin::Run(attempt),
            None => Begin::Nothing,
        })
    }

    /// Records a successful attempt. `hold` delays the successors' jobs (a delay node).
    ///
    /// Returns the successor this worker should run next, already claimed, when one became
    /// ready: a chain of nodes runs on one worker without a queue job per node.
    pub async fn succeed(
        &self,
        attempt: &Attempt,
        output: Value,
        hold: Option<Duration>,
    ) -> Result<Option<Box<Attempt>>, EngineError> {
        let node = attempt.node();
        // Whatever the node echoed of its credentials goes no further than this.
        let output = attempt.redactor.value(output);
        let output = if is_empty(&node.output_mapping) {
            output
        } else {
            let scope = Scope::new()
                .with("output", output)
                .with("input", attempt.input.clone());
            match expr::render(&node.output_mapping, &scope) {
                Ok(mapped) => mapped,
                Err(err) => {
                    let message = format!("output_mapping: {err}");
                    self.finish(attempt, Err(&message), None).await?;
                    return Ok(None);
                }
            }
        };
        if hold.is_some() {
            // Delayed successors are queued with a run time; nothing continues here.
            self.finish(attempt, Ok(&output), hold).await?;
            return Ok(None);
        }
        let plan = &attempt.plan;
        let scope = Scope::new()
            .with("output", output.clone())
            .with("input", attempt.input.clone());
        let Ok(decided) = decide(plan, attempt.index, Outcome::Succeeded, &scope) else {
            // A condition that cannot be evaluated fails the node; that path records it.
            self.finish(attempt, Ok(&output), None).await?;
            return Ok(None);
        };

        let mut decisions: Vec<(usize, i32, i32)> = Vec::new();
        for (target, fired) in decided {
            match decisions.iter_mut().find(|d| d.0 == target) {
                Some(d) => {
                    d.1 += 1;
                    d.2 += i32::from(fired);
                }
                None => decisions.push((target, 1, i32::from(fired))),
            }
        }
        let next = decisions
            .iter()
            .find(|&&(target, _, fired)| fired > 0 && plan.node(target).is_enabled)
            .map(|d| d.0);

        let (reply, answer) = oneshot::channel();
        let request = completer::Request {
            plan: Arc::clone(plan),
            run_id: attempt.claim.id,
            kind: node.kind,
            attempt: attempt.claim.attempt,
            execution_id: attempt.claim.execution_id,
            carrier: attempt.carrier,
            input: attempt.input.clone(),
            output: output.clone(),
            decisions,
            next,
            reply,
        };
        self.completions
            .send(request)
            .await
            .map_err(|_| EngineError::Batch("the completer stopped".into()))?;
        let reply = answer
            .await
            .map_err(|_| EngineError::Batch("the completer dropped the result".into()))??;
        match reply {
            completer::Reply::Stale => {
                tracing::info!("stale attempt; its result was discarded");
                Ok(None)
            }
            completer::Reply::Recorded(None) => Ok(None),
            completer::Reply::Recorded(Some(target)) => {
                self.resume(attempt, &target, &output).await
            }
        }
    }

    /// Prepares the successor `target` that finishing `previous` claimed for this worker.
    async fn resume(
        &self,
        previous: &Attempt,
        target: &Target,
        previous_output: &Value,
    ) -> Result<Option<Box<Attempt>>, EngineError> {
        let plan = Arc::clone(&previous.plan);
        let index = node_index(&plan, target.node_id)?;
        let node = plan.node(index);
        let claim = Claim {
            id: target.id,
            execution_id: target.execution_id,
            node_id: target.node_id,
            node_name: node.name.clone(),
            attempt: target.attempt,
            max_retries: policy_of(&plan, index).max_retries.min(i32::MAX as u32) as i32,
            started_at: target.started_at.unwrap_or_else(chrono::Utc::now),
            seconds_left: previous.time_left().map(|d| d.as_secs_f64()),
            trigger_data: previous.claim.trigger_data.clone(),
        };
        let attempt = Attempt::unprepared(
            claim,
            plan,
            previous.trace.clone(),
            index,
            previous.carrier,
            previous.deadline,
        );

        if previous.time_left().is_some_and(|left| left.is_zero()) {
            self.expire(&attempt).await?;
            return Ok(None);
        }
        self.fill(attempt, Some((previous.index, previous_output)))
            .await
    }

    /// Renders a claimed attempt's input and config. A node whose input cannot be rendered
    /// fails (and `None` is returned); a database error is returned for the job to be retried.
    async fn fill(
        &self,
        mut attempt: Attempt,
        known: Option<(usize, &Value)>,
    ) -> Result<Option<Box<Attempt>>, EngineError> {
        let prepared = self
            .prepare(&attempt.plan, attempt.index, &attempt.claim, known)
            .await;
        match prepared {
            Ok(prepared) => {
                attempt.input = prepared.input;
                attempt.config = prepared.config;
                attempt.scope = prepared.scope;
                attempt.redactor = prepared
                    .secrets
                    .as_ref()
                    .map(Revealed::redactor)
                    .unwrap_or_default();
                attempt.secrets = prepared.secrets;
                Ok(Some(Box::new(attempt)))
            }
            // The database failing is not the node's fault: the job is delivered again.
            Err(PrepareError::Storage(err)) => Err(err.into()),
            Err(PrepareError::Template { message, secrets }) => {
                let message = secrets.map_or(message.clone(), |s| s.redactor().text(&message));
                self.finish(&attempt, Err(&message), None).await?;
                Ok(None)
            }
            Err(err) => {
                self.finish(&attempt, Err(&err.to_string()), None).await?;
                Ok(None)
            }
        }
    }

    /// Gives a successor claimed by [`Engine::succeed`] back to the queue without running it,
    /// for a worker that is shutting down: any worker then runs it, and the claim that was
    /// never started is not counted as an attempt.
    pub async fn hand_back(&self, attempt: &Attempt) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        if runs::hand_back(&mut *tx, attempt.claim.id, attempt.claim.attempt).await? {
            queue_now(&mut tx, attempt).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives the run of an attempt that was stopped mid-node (its worker's shutdown grace
    /// period ended) back to the queue at once. The attempt counts, as one whose worker died
    /// would: the next claim is a new attempt, and one past the retry policy's last fails the
    /// run for good (see [`Engine::begin`]) instead of running the node again.
    pub async fn requeue_stopped(&self, attempt: &Attempt) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let released = runs::release_for_retry(
            &mut *tx,
            attempt.claim.id,
            attempt.claim.attempt,
            STOPPED_AT_SHUTDOWN,
        )
        .await?;
        if released {
            queue_now(&mut tx, attempt).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed attempt: retried later if the policy allows, failed for good otherwise.
    pub async fn fail(&self, attempt: &Attempt, failure: &NodeFailure) -> Result<(), EngineError> {
        let failure = &NodeFailure {
            message: attempt.redactor.text(&failure.message),
            retryable: failure.retryable,
        };
        let number = attempt.claim.attempt.max(1) as u32;
        if failure.retryable && attempt.policy.allows_retry_after(number) {
            let delay = attempt.policy.delay_after(number, rand::random::<f64>());
            let mut tx = self.pool.begin().await?;
            let released = runs::release_for_retry(
                &mut *tx,
                attempt.claim.id,
                attempt.claim.attempt,
                &failure.message,
            )
            .await?;
            if released {
                let job = NodeRunJob {
                    execution_id: attempt.claim.execution_id,
                    node_run_id: attempt.claim.id,
                };
                quantumflow_queue::push_node_runs(&mut tx, &[(job, delay)]).await?;
            }
            tx.commit().await?;
            if released {
                meters::retry_scheduled();
                self.wake_after(delay);
            }
            tracing::info!(
                attempt = number,
                delay_ms = delay.as_millis() as u64,
                error.message = %failure.message,
                "node failed; retry scheduled"
            );
            return Ok(());
        }
        let recorded = self.finish(attempt, Err(&failure.message), None).await?;
        if recorded {
            // Logged, and so attached to the node's span as an event, like a retried failure:
            // the final one is what an operator looks for first.
            tracing::info!(
                attempt = number,
                retryable = failure.retryable,
                error.message = %failure.message,
                "node failed; no retry left"
            );
            if failure.retryable {
                meters::attempts_exhausted();
            }
        }
        Ok(())
    }

    /// The trace the execution's node runs join, if it was started on one. Read with the
    /// execution's plan and cached with it, so a worker calling this before [`Engine::begin`]
    /// costs no extra query.
    pub async fn trace_of(&self, execution_id: Uuid) -> Result<Option<TraceContext>, EngineError> {
        Ok(self.known(execution_id).await?.trace.clone())
    }

    async fn known(&self, execution_id: Uuid) -> Result<Arc<Known>, EngineError> {
        if let Some(known) = self
            .plans
            .lock()
            .map_err(|_| poisoned())?
            .get(&execution_id)
        {
            return Ok(Arc::clone(known));
        }
        let source = quantumflow_storage::executions::run_source(&self.pool, execution_id).await?;
        let known = Arc::new(Known {
            plan: Arc::new(Plan::from_json(source.workflow_snapshot)?),
            trace: TraceContext::from_columns(source.traceparent, source.tracestate),
        });
        let mut plans = self.plans.lock().map_err(|_| poisoned())?;
        if plans.len() >= PLAN_CACHE_SIZE {
            plans.clear();
        }
        plans.insert(execution_id, Arc::clone(&known));
        Ok(known)
    }

    /// The node's input, rendered config and the credentials it uses.
    async fn prepare(
        &self,
        plan: &Plan,
        index: usize,
        claim: &Claim,
        known: Option<(usize, &Value)>,
    ) -> Result<Prepared, PrepareError> {
        let node = plan.node(index);
        let incoming: Vec<_> = plan.graph.incoming(index).copied().collect();
        let sources: Vec<Uuid> = incoming.iter().map(|e| plan.node(e.source).id).collect();
        // A node continuing a chain from its only predecessor already has that one's output.
        let results = match known {
            Some((source, output)) if incoming.iter().all(|e| e.source == source) => {
                vec![runs::PriorResult {
                    node_id: plan.node(source).id,
                    status: "success".to_owned(),
                    output_data: output.clone(),
                    error_message: None,
                }]
            }
            _ => runs::results(&self.pool, claim.execution_id, &sources).await?,
        };
        let by_node: HashMap<Uuid, &runs::PriorResult> =
            results.iter().map(|r| (r.node_id, r)).collect();

        // The input is what arrived over the edges that fired: one predecessor's output as it
        // is, several keyed by node name.
        let mut arrived = Map::new();
        for edge in &incoming {
            let source = plan.node(edge.source);
            let Some(result) = by_node.get(&source.id) else {
                continue;
            };
            let value = match (edge.kind, result.status.as_str()) {
                (EdgeKind::Error, "failed") => json!({"error": {
                    "node": source.name, "message": result.error_message.clone().unwrap_or_default()
                }}),
                (EdgeKind::Default, "success") => result.output_data.clone(),
                (EdgeKind::Conditional, "success") => {
                    let scope = Scope::new().with("output", result.output_data.clone());
                    let condition = &plan.snapshot.edges[edge_index(plan, edge)].condition;
                    if !expr::condition_holds(condition, &scope).unwrap_or(false) {
                        continue;
                    }
                    result.output_data.clone()
                }
                _ => continue,
            };
            arrived.insert(source.name.clone(), value);
        }
        // The shape follows the graph, not the run: a join sees an object keyed by predecessor
        // even when only one of its branches ran.
        let input = if incoming.len() == 1 {
            arrived
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default()
        } else {
            Value::Object(arrived)
        };

        let mut scope = Scope::new()
            .with("input", input.clone())
            .with(
                "execution",
                json!({"id": claim.execution_id, "attempt": claim.attempt}),
            )
            .with("trigger", claim.trigger_data.clone())
            .with(
                "workflow",
                json!({"id": plan.snapshot.workflow.id, "name": plan.snapshot.workflow.name}),
            );
        let mentions_nodes = |v: &Value| v.to_string().contains("nodes.");
        if mentions_nodes(&node.config) || mentions_nodes(&node.input_mapping) {
            let outputs = runs::outputs(&self.pool, claim.execution_id).await?;
            let nodes: Map<String, Value> = outputs
                .into_iter()
                .map(|(name, output)| (name, json!({ "output": output })))
                .collect();
            scope = scope.with("nodes", Value::Object(nodes));
        }
        let secrets = match node.config.get("connector_id") {
            Some(connector) => Some(self.connector_secrets(connector, claim).await?),
            None => None,
        };

        let input = if is_empty(&node.input_mapping) {
            input
        } else {
            expr::render(&node.input_mapping, &scope).map_err(|e| {
                let message = if mentions_secrets(&e) {
                    format!(
                        "input_mapping: {e}: secrets are only available in the node's config, \
                         never in input_mapping"
                    )
                } else {
                    format!("input_mapping: {e}")
                };
                PrepareError::template(message, None)
            })?
        };
        let scope = scope.with("input", input.clone());
        // A condition node's expression is evaluated by the node itself, as an expression, not
        // rendered into text first.
        let config = if node.kind == NodeKind::Condition {
            node.config.clone()
        } else {
            // Only this rendering sees the credentials; the scope kept on the attempt does not.
            let config_scope = match &secrets {
                Some(revealed) => scope.clone().with("secrets", revealed.as_value().clone()),
                None => scope.clone(),
            };
            expr::render(&node.config, &config_scope)
                .map_err(|e| PrepareError::template(format!("config: {e}"), secrets.as_ref()))?
        };
        Ok(Prepared {
            input,
            config,
            scope,
            secrets,
        })
    }

    /// Opens the credentials of the connector a node's `config.connector_id` names. The
    /// connector must exist, belong to the owner of the execution's workflow and be active.
    async fn connector_secrets(
        &self,
        connector: &Value,
        claim: &Claim,
    ) -> Result<Revealed, PrepareError> {
        let id = connector
            .as_str()
            .and_then(|text| text.parse::<Uuid>().ok())
            .ok_or_else(|| {
                PrepareError::Config(format!("config.connector_id {connector} is not a UUID"))
            })?;
        let found =
            quantumflow_storage::connectors::for_node(&self.pool, id, claim.execution_id).await?;
        // Someone else's connector reads exactly like a missing one: a workflow must not learn
        // which ids exist.
        let connector = found.filter(|c| c.same_owner).ok_or_else(|| {
            PrepareError::Config(format!(
                "connector {id} (config.connector_id) does not exist or belongs to another \
                 user; a node may only use connectors of its workflow's owner"
            ))
        })?;
        if !connector.is_active {
            return Err(PrepareError::Config(format!(
                "connector {id} (config.connector_id) is inactive; activate it to use it"
            )));
        }
        let opened = quantumflow_secrets::reveal(
            self.keyring.as_deref(),
            id,
            &connector.credentials,
        )
        .map_err(|err| {
            tracing::warn!(connector.id = %id, error.message = %err, "cannot open credentials");
            PrepareError::Config(format!("cannot use connector {id}: {err}"))
        })?;
        Ok(Revealed::new(opened))
    }

    /// Fails the execution because its deadline passed while the attempt's node ran.
    pub async fn expire(&self, attempt: &Attempt) -> Result<(), EngineError> {
        let timeout = attempt.plan.settings.timeout.unwrap_or_default();
        let message = format!("the execution timed out after {timeout} s");
        self.time_out(attempt, &message).await
    }

    async fn time_out(&self, attempt: &Attempt, message: &str) -> Result<(), EngineError> {
        let mut tally = Tally::default();
        let mut tx = self.pool.begin().await?;
        let result = AttemptResult {
            status: "failed",
            input: &attempt.input,
            output: &json!({}),
            error: Some(message),
        };
        if runs::finish(&mut *tx, attempt.claim.id, attempt.claim.attempt, &result).await? {
            tally.node_run(attempt.node().kind, NodeRunStatus::Failed);
            let cancelled = runs::cancel_unstarted(
                &mut *tx,
                attempt.claim.execution_id,
                "cancelled: the execution timed out",
            )
            .await?;
            tally.skipped(&attempt.plan, &cancelled);
            let finished = 1 + cancelled.len() as i32;
            runs::settle(&mut *tx, attempt.claim.execution_id, finished, true).await?;
            let ended = runs::finish_execution(
                &mut tx,
                attempt.claim.execution_id,
                "failed",
                &json!({}),
                Some(message),
            )
            .await?;
            if ended {
                let workflow = attempt.plan.snapshot.workflow.id;
                tally.finished(workflow, &runs::Finished::one("failed", chrono::Utc::now()));
            }
        }
        tx.commit().await?;
        tally.publish();
        Ok(())
    }

    /// Records the final result of an attempt and moves the execution along, in one
    /// transaction. `false` when the attempt was stale and nothing was written.
    async fn finish(
        &self,
        attempt: &Attempt,
        result: Result<&Value, &str>,
        hold: Option<Duration>,
    ) -> Result<bool, EngineError> {
        let plan = &attempt.plan;
        let execution_id = attempt.claim.execution_id;
        let node = attempt.node();

        // Decide the outgoing edges before writing anything: a condition that cannot be
        // evaluated turns the node's success into its failure.
        let mut outcome = if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        let mut error = result.err().map(str::to_owned);
        let output = result.ok().cloned().unwrap_or_else(|| json!({}));
        let scope = Scope::new()
            .with("output", output.clone())
            .with("input", attempt.input.clone());
        let decisions = match decide(plan, attempt.index, outcome, &scope) {
            Ok(d) => d,
            Err(err) => {
                outcome = Outcome::Failed;
                error = Some(format!("condition of an outgoing edge: {err}"));
                decide(plan, attempt.index, outcome, &scope).unwrap_or_default()
            }
        };

        let mut tx = self.pool.begin().await?;
        let recorded = AttemptResult {
            status: if outcome == Outcome::Succeeded {
                "success"
            } else {
                "failed"
            },
            input: &attempt.input,
            output: &output,
            error: error.as_deref(),
        };
        if !runs::finish(&mut *tx, attempt.claim.id, attempt.claim.attempt, &recorded).await? {
            // A newer attempt owns the run, or it already ended: this report is stale.
            tx.rollback().await?;
            tracing::info!("stale attempt; its result was discarded");
            return Ok(false);
        }
        let mut tally = Tally::default();
        let status = if outcome == Outcome::Succeeded {
            NodeRunStatus::Success
        } else {
            NodeRunStatus::Failed
        };
        tally.node_run(node.kind, status);

        let mut finished = 1;
        let handled =
            progress::failure_is_handled(plan.graph.outgoing(attempt.index).map(|e| e.kind));
        let unhandled = outcome == Outcome::Failed && !handled;
        let mut jobs = Vec::new();
        if unhandled && plan.settings.error_handling == ErrorHandling::Stop {
            let reason = format!("cancelled: node {:?} failed", node.name);
            let cancelled = runs::cancel_unstarted(&mut *tx, execution_id, &reason).await?;
            tally.skipped(plan, &cancelled);
            finished += cancelled.len() as i32;
        } else {
            let mut step = Step {
                jobs: &mut jobs,
                tally: &mut tally,
            };
            finished += propagate(&mut tx, plan, execution_id, decisions, hold, &mut step).await?;
        }
        quantumflow_queue::push_node_runs(&mut tx, &jobs).await?;
        let due_later = jobs
            .iter()
            .map(|(_, delay)| *delay)
            .filter(|d| !d.is_zero())
            .max();

        let (remaining, any_unhandled) =
            runs::settle(&mut *tx, execution_id, finished, unhandled).await?;
        if remaining == 0 {
            let message = if unhandled {
                error
                    .as_ref()
                    .map(|e| format!("node {:?} failed: {e}", node.name))
            } else {
                None
            };
            if let Some((workflow, ended)) =
                close_if_done(&mut tx, plan, execution_id, any_unhandled, message).await?
            {
                tally.finished(workflow, &ended);
            }
        }
        tx.commit().await?;
        tally.publish();
        if let Some(delay) = due_later {
            self.wake_after(delay);
        }
        Ok(true)
    }

    /// Wakes the workers once jobs queued with `delay` fall due, so they run on time rather
    /// than at the next heartbeat. If this process dies first, the heartbeat still finds them.
    fn wake_after(&self, delay: Duration) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            // The job's run time is the queueing transaction's start plus the delay, which is
            // before now + delay.
            tokio::time::sleep(delay).await;
            if let Err(err) = quantumflow_queue::wake_workers(&pool).await {
                tracing::warn!(error.message = %err, "could not wake workers for a due job");
            }
        });
    }
}

/// The index of `node_id` in the execution's snapshot.
fn node_index(plan: &Plan, node_id: Uuid) -> Result<usize, EngineError> {
    plan.index_of(node_id)
        .ok_or_else(|| PlanError::Unreadable(format!("no node {node_id} in the snapshot")).into())
}

/// Queues a job for `attempt`'s node run, due now, in the transaction that made it runnable
/// again.
async fn queue_now(conn: &mut PgConnection, attempt: &Attempt) -> Result<(), EngineError> {
    let job = NodeRunJob {
        execution_id: attempt.claim.execution_id,
        node_run_id: attempt.claim.id,
    };
    quantumflow_queue::push_node_runs(conn, &[(job, Duration::ZERO)]).await?;
    Ok(())
}

/// The retry policy of the node at `index`: its own, or the workflow's.
fn policy_of(plan: &Plan, index: usize) -> RetryPolicy {
    plan.settings
        .retry_policy_for(&plan.node(index).config)
        .unwrap_or(plan.settings.retry_policy)
}

/// Applies edge decisions to the successors' counters, skipping and queueing as they become
/// decided. Returns how many runs were skipped.
async fn propagate(
    tx: &mut PgConnection,
    plan: &Plan,
    execution_id: Uuid,
    decisions: Vec<(usize, bool)>,
    hold: Option<Duration>,
    step: &mut Step<'_>,
) -> Result<i32, EngineError> {
    let rows = decide_edges(tx, plan, execution_id, decisions).await?;
    cascade(tx, plan, execution_id, rows, hold, step).await
}

/// What a transaction gathers while it moves executions along, to act on once it commits.
pub(crate) struct Step<'a> {
    /// Jobs of the runs that became ready, with their delays.
    pub(crate) jobs: &'a mut Vec<(NodeRunJob, Duration)>,
    /// Counts to publish.
    pub(crate) tally: &'a mut Tally,
}

/// Acts on successors whose incoming edges are all decided: queues those that run (after
/// `hold`, for the first round only: what a delay node unblocks later runs at once) and skips
/// the others, deciding their own successors' edges in turn. Returns how many were skipped.
pub(crate) async fn cascade(
    tx: &mut PgConnection,
    plan: &Plan,
    execution_id: Uuid,
    mut rows: Vec<Decided>,
    hold: Option<Duration>,
    step: &mut Step<'_>,
) -> Result<i32, EngineError> {
    let mut skipped_total = 0;
    let mut delay = hold.unwrap_or_default();
    loop {
        let mut to_skip = Vec::new();
        for row in rows
            .iter()
            .filter(|r| r.undecided_edges == 0 && r.status == "pending")
        {
            let Some(index) = plan.index_of(row.node_id) else {
                continue;
            };
            match progress::fate_when_decided(row.fired_edges as usize, plan.node(index).is_enabled)
            {
                Fate::Run => step.jobs.push((
                    NodeRunJob {
                        execution_id,
                        node_run_id: row.id,
                    },
                    delay,
                )),
                Fate::Skip => to_skip.push(row.node_id),
            }
        }
        delay = Duration::ZERO;
        if to_skip.is_empty() {
            return Ok(skipped_total);
        }
        let skipped = runs::skip(&mut *tx, execution_id, &to_skip, None).await?;
        step.tally.skipped(plan, &skipped);
        skipped_total += skipped.len() as i32;
        let decisions: Vec<(usize, bool)> = skipped
            .iter()
            .filter_map(|id| plan.index_of(*id))
            .flat_map(|index| plan.graph.outgoing(index).map(|e| (e.target, false)))
            .collect();
        if decisions.is_empty() {
            return Ok(skipped_total);
        }
        rows = decide_edges(tx, plan, execution_id, decisions).await?;
    }
}

/// Counts decided edges on their targets, (target, fired) each.
async fn decide_edges(
    tx: &mut PgConnection,
    plan: &Plan,
    execution_id: Uuid,
    decisions: Vec<(usize, bool)>,
) -> Result<Vec<Decided>, EngineError> {
    let mut per_target: Vec<(usize, i32, i32)> = Vec::new();
    for (target, fired) in decisions {
        match per_target.iter_mut().find(|t| t.0 == target) {
            Some(t) => {
                t.1 += 1;
                t.2 += i32::from(fired);
            }
            None => per_target.push((target, 1, i32::from(fired))),
        }
    }
    let node_ids: Vec<Uuid> = per_target.iter().map(|t| plan.node(t.0).id).collect();
    let decided: Vec<i32> = per_target.iter().map(|t| t.1).collect();
    let fired: Vec<i32> = per_target.iter().map(|t| t.2).collect();
    Ok(runs::decide_edges(&mut *tx, execution_id, &node_ids, &decided, &fired).await?)
}

/// Ends an execution none of whose runs remain: failed if a failure went unhandled (with
/// `message`, or a general one), successful otherwise, with its final nodes' outputs. Returns
/// its workflow and how it ended, `None` if it had already ended.
pub(crate) async fn close_if_done(
    tx: &mut PgConnection,
    plan: &Plan,
    execution_id: Uuid,
    any_unhandled: bool,
    message: Option<String>,
) -> Result<Option<(Uuid, runs::Finished)>, EngineError> {
    let ended = close(tx, plan, execution_id, any_unhandled, message).await?;
    if let Some((workflow, finished)) = &ended {
        runs::count_finished(&mut *tx, *workflow, finished).await?;
    }
    Ok(ended)
}

/// Like [`close_if_done`], but leaves counting the execution on its workflow to the caller,
/// which may add up many: returns the workflow and the count to add, `None` if the execution
/// had already ended.
pub(crate) async fn close(
    tx: &mut PgConnection,
    plan: &Plan,
    execution_id: Uuid,
    any_unhandled: bool,
    message: Option<String>,
) -> Result<Option<(Uuid, runs::Finished)>, EngineError> {
    let outputs = runs::outputs(&mut *tx, execution_id).await?;
    let closing = Closing::new(plan, outputs, any_unhandled, message);
    let ending = closing.ending(execution_id);
    let ended = runs::end_execution(
        &mut *tx,
        execution_id,
        ending.status,
        ending.output,
        ending.error,
    )
    .await?;
    Ok(ended.map(|ended| (ended.workflow_id, ended.finished)))
}

/// How an execution with nothing left to run ends: its status, output and error message.
pub(crate) struct Closing {
    status: &'static str,
    output: Value,
    message: Option<String>,
}

impl Closing {
    /// The end of an execution of `plan` whose successful runs produced `outputs`, in the
    /// order they finished.
    pub(crate) fn new(
        plan: &Plan,
        outputs: Vec<(String, Value)>,
        any_unhandled: bool,
        message: Option<String>,
    ) -> Self {
        let message = message.or_else(|| {
            any_unhandled.then(|| "a node failed without an error edge to handle it".to_owned())
        });
        Self {
            status: if any_unhandled { "failed" } else { "success" },
            output: execution_output(plan, outputs),
            message,
        }
    }

    /// The row update that records this end for execution `id`.
    pub(crate) fn ending(&self, id: Uuid) -> runs::Ending<'_> {
        runs::Ending {
            id,
            status: self.status,
            output: &self.output,
            error: self.message.as_deref(),
        }
    }
}

/// The outgoing edges of `index` after it ended with `outcome`: (target, fired).
fn decide(
    plan: &Plan,
    index: usize,
    outcome: Outcome,
    scope: &Scope,
) -> Result<Vec<(usize, bool)>, ExprError> {
    plan.graph
        .edges()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.source == index)
        .map(|(i, e)| {
            let fires = progress::edge_fires(e.kind, outcome, || {
                expr::condition_holds(&plan.snapshot.edges[i].condition, scope)
            })?;
            Ok((e.target, fires))
        })
        .collect()
}

fn edge_index(plan: &Plan, edge: &quantumflow_domain::graph::Edge) -> usize {
    plan.graph
        .edges()
        .iter()
        .position(|e| e == edge)
        .unwrap_or_default()
}

/// The result of an execution: the outputs of its final nodes (those without successors that
/// ran), one as it is, several keyed by node name.
fn execution_output(plan: &Plan, outputs: Vec<(String, Value)>) -> Value {
    let finals: Vec<(String, Value)> = outputs
        .into_iter()
        .filter(|(name, _)| {
            !plan
                .snapshot
                .edges
                .iter()
                .any(|e| &e.source == name && e.kind != EdgeKind::Error)
        })
        .collect();
    match finals.len() {
        0 => json!({}),
        1 => finals
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default(),
        _ => Value::Object(finals.into_iter().collect()),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

fn poisoned() -> EngineError {
    EngineError::Plan(PlanError::Unreadable(
        "the plan cache was poisoned by a panic".into(),
    ))
}

/// A node's input and config, rendered.
struct Prepared {
    input: Value,
    config: Value,
    scope: Scope,
    secrets: Option<Revealed>,
}

/// Why a node's input or config could not be prepared.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    /// A template failed; its message is redacted with `secrets` before it is recorded.
    #[error("{message}")]
    Template {
        message: String,
        secrets: Option<Revealed>,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PrepareError {
    fn template(message: String, secrets: Option<&Revealed>) -> Self {
        Self::Template {
            message,
            secrets: secrets.cloned(),
        }
    }
}

/// Whether a failed expression refers to `secrets`.
fn mentions_secrets(err: &ExprError) -> bool {
    err.expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word == "secrets")
}
