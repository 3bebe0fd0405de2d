//! Accepting triggers in groups.
//!
//! Each accepted trigger needs its execution, node runs and first jobs committed before the
//! sender hears `202`. Committed one by one, every webhook pays for a transaction, a WAL flush
//! and the queue's notification, and PostgreSQL serializes notifying commits: under load the
//! accept path, not the work, becomes the limit. Handlers therefore decide their execution in
//! memory ([`Start::prepare`]) and hand it to a few writer tasks; a writer takes everything
//! that has queued meanwhile and commits it as one transaction of a few statements. An idle
//! server still commits each trigger at once, alone; a busy one commits many per flush.
//!
//! A full queue is answered at once with 503 rather than by making the sender wait.
//!
//! A start is written only while its request still waits for it. A group whose statements are
//! not done by the earliest deadline of its requests is rolled back and answered 503; a
//! request answered 408 meanwhile is left out of its group (see [`Ticket`]); and a request whose
//! group is being committed is answered with the outcome, late if need be. Either way the
//! sender's answer says truly whether the execution exists.
//!
//! A signed webhook delivery carries the sender's id for it. The id is claimed in the same
//! transaction that writes the execution (see [`quantumflow_storage::deliveries`]), so a repeat
//! of it, whether it arrives later, in the same group, or in a group another writer commits at
//! the same moment, starts nothing and is told the original execution. Claims older than
//! [`DELIVERY_RETENTION`] are pruned by the writers as they go.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use quantumflow_engine::{EngineError, Start};
use quantumflow_storage::StorageError;
use quantumflow_storage::deliveries::{self, Delivery};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

/// Writer tasks. Two let one gather the next group while the other commits; more would split
/// the groups without adding a faster path to the database.
const WRITERS: usize = 2;

/// Starts committed in one transaction at most.
const MAX_GROUP: usize = 128;

/// Starts that may wait for a writer; past this, triggers are refused with 503. At the rates a
/// single control plane accepts, this is well under a second of backlog.
const QUEUE_CAPACITY: usize = 1024;

/// How long a delivery id is remembered. Signatures of the `standard-webhooks` scheme carry a
/// timestamp that must be within at most an hour of the server's clock, so a replay older than
/// that is refused for its timestamp anyway; a day leaves a wide margin, also for GitHub's
/// deliveries, which carry no timestamp and whose redeliveries are usually sent within hours.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How often each writer prunes remembered deliveries, at most. Pruning happens between groups,
/// so an idle server does not wake up for it.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What became of a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The execution was written.
    New,
    /// The delivery was accepted before; nothing was written. Holds the execution that the
    /// first copy started.
    Duplicate(Uuid),
}

/// Why a start was not committed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Too many starts are waiting already.
    #[error("too many triggers are waiting to be recorded; retry shortly")]
    Busy,
    /// The database could not be reached to write the group this start was in.
    #[error("the database is unavailable")]
    Unavailable,
    /// Writing failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The writers have stopped: the server is shutting down.
    #[error("the server is shutting down")]
    Stopped,
    /// The group could not be written before the request's time limit; nothing was written.
    #[error("the trigger could not be recorded in time; nothing was written; retry shortly")]
    OutOfTime,
}

/// Decides, between a request's time limit and the writer committing its start, which of the
/// two answers the request. The writer takes it just before it sends `COMMIT`, and from then
/// on the request waits for the outcome however long that takes; the time limit takes it to
/// answer 408, and from then on the writer leaves the start out. Without it, a sender could be
/// told "send it again" about an execution that was about to be written, and start it twice.
#[derive(Debug, Clone)]
pub struct Ticket {
    state: Arc<AtomicU8>,
    deadline: Instant,
}

impl Ticket {
    const OPEN: u8 = 0;
    const COMMITTING: u8 = 1;
    const ABANDONED: u8 = 2;

    /// A ticket for a request that must be answered by `deadline`.
    pub fn new(deadline: Instant) -> Self {
        Self {
            state: Arc::new(AtomicU8::new(Self::OPEN)),
            deadline,
        }
    }

    /// The time limit's side: whether the request may be answered now without its start, which
    /// is then never written. False while the start is being committed.
    pub fn abandon(&self) -> bool {
        match self.state.compare_exchange(
            Self::OPEN,
            Self::ABANDONED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(state) => state == Self::ABANDONED,
        }
    }

    fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::SeqCst) == Self::ABANDONED
    }

    /// The writer's side, before `COMMIT`: false if the request was answered already.
    fn hold(&self) -> bool {
        self.state
            .compare_exchange(
                Self::OPEN,
                Self::COMMITTING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Undoes [`Ticket::hold`] for a group that is not committed after all.
    fn release(&self) {
        let _ = self.state.compare_exchange(
            Self::COMMITTING,
            Self::OPEN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

struct Waiting {
    entry: Entry,
    ticket: Option<Ticket>,
    done: oneshot::Sender<Result<Started, StartError>>,
}

impl Waiting {
    /// Whether someone still waits for this start: not a request answered 408 already, nor
    /// one whose client went away.
    fn awaited(&self) -> bool {
        !self.done.is_closed() && !self.ticket.as_ref().is_some_and(Ticket::is_abandoned)
    }

    fn entry(&self) -> (&Entry, Option<&Ticket>) {
        (&self.entry, self.ticket.as_ref())
    }
}

/// Hands prepared executions to the writer tasks.
#[derive(Debug, Clone)]
pub struct Starter {
    queue: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("execution_id", &self.entry.0.execution_id())
            .finish_non_exhaustive()
    }
}

impl Starter {
    /// Spawns the writers on the current runtime. They stop once every clone of the returned
    /// starter is dropped and the queue is empty.
    pub fn spawn(pool: &PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for writer in 0..WRITERS {
            // Names the writer in debug logs only. A writer lives as long as the process, so at
            // info level its span would be exported, once the process stops, as a stray trace
            // of its own; what a start belongs to is the request's trace and `execution` span.
            let span = tracing::debug_span!("starter", writer);
            tokio::spawn(write_groups(pool.clone(), Arc::clone(&receiver)).instrument(span));
        }
        Self { queue }
    }

    /// Commits `start` with whatever else is waiting, and returns once it is durable. With a
    /// `delivery` id, a start whose id the workflow has already seen is not written; the
    /// execution of the first is returned instead. With the request's `ticket`, the start is
    /// written only if the request is still waiting for it, by the ticket's deadline.
    pub async fn start(
        &self,
        start: Start,
        delivery: Option<String>,
        ticket: Option<Ticket>,
    ) -> Result<Started, StartError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .try_send(Waiting {
                entry: (start, delivery),
                ticket,
                done,
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => StartError::Busy,
                mpsc::error::TrySendError::Closed(_) => StartError::Stopped,
            })?;
        committed.await.map_err(|_| StartError::Stopped)?
    }
}

async fn write_groups(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
    let mut pruned_at: Option<Instant> = None;
    loop {
        let mut group = Vec::new();
        {
            // One writer gathers at a time, so a group holds everything that queued while the
            // other writer was committing.
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut group, MAX_GROUP).await == 0 {
                return;
            }
        }
        write(&pool, group).await;
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            pruned_at = Some(Instant::now());
            prune(&pool).await;
        }
    }
}

/// Forgets deliveries older than [`DELIVERY_RETENTION`]. A failure is only logged: the rows
/// wait for the next try.
async fn prune(pool: &PgPool) {
    let retention = chrono::Duration::from_std(DELIVERY_RETENTION).unwrap_or(chrono::Duration::MAX);
    let before = chrono::Utc::now() - retention;
    match deliveries::prune(pool, before).await {
        Ok(0) => {}
        Ok(pruned) => tracing::debug!(pruned, "old webhook deliveries forgotten"),
        Err(err) => tracing::warn!(error = %err, "cannot prune webhook deliveries; will retry"),
    }
}

/// A start waiting to be written, with its delivery id.
type Entry = (Start, Option<String>);

/// How a group's transaction ended, when the database did not fail it.
enum Written {
    /// Committed: for each entry, whether it started or repeated a delivery.
    Committed(Vec<Started>),
    /// Rolled back: the earliest deadline in the group came before it could commit.
    OutOfTime,
    /// Rolled back: a request of the group was answered while it was written; the others are
    /// to be written again without it.
    Abandoned,
}

/// Commits a group, and tells each waiting handler how it went. When the group as a whole
/// fails for a reason other than the database being unreachable, each start is retried on its
/// own, so that one bad start cannot fail the others.
async fn write(pool: &PgPool, mut group: Vec<Waiting>) {
    let result = loop {
        group.retain(Waiting::awaited);
        if group.is_empty() {
            return;
        }
        let entries: Vec<(&Entry, Option<&Ticket>)> = group.iter().map(Waiting::entry).collect();
        let result = commit(pool, &entries).await;
        tracing::debug!(starts = entries.len(), ok = result.is_ok(), "group written");
        if !matches!(result, Ok(Written::Abandoned)) {
            break result;
        }
    };
    match result {
        Ok(Written::Committed(outcomes)) => {
            for (waiting, outcome) in group.into_iter().zip(outcomes) {
                let _ = waiting.done.send(Ok(outcome));
            }
        }
        Ok(Written::OutOfTime | Written::Abandoned) => {
            tracing::warn!(
                starts = group.len(),
                "a group of starts could not be written before its requests' time limit"
            );
            for waiting in group {
                let _ = waiting.done.send(Err(StartError::OutOfTime));
            }
        }
        Err(err) if is_unavailable(&err) => {
            tracing::warn!(error = %err, starts = group.len(), "database unavailable");
            for waiting in group {
                let _ = waiting.done.send(Err(StartError::Unavailable));
            }
        }
        Err(err) if group.len() == 1 => {
            let _ = group
                .into_iter()
                .next()
                .map(|w| w.done.send(Err(err.into())));
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                starts = group.len(),
                "group failed; writing one by one"
            );
            for waiting in group {
                if !waiting.awaited() {
                    continue;
                }
                let outcome = match commit(pool, &[waiting.entry()]).await {
                    Ok(Written::Committed(outcomes)) => Ok(outcomes[0]),
                    // Answered meanwhile: nobody waits for this one any more.
                    Ok(Written::Abandoned) => continue,
                    Ok(Written::OutOfTime) => Err(StartError::OutOfTime),
                    Err(err) => Err(err.into()),
                };
                let _ = waiting.done.send(outcome);
            }
        }
    }
}

/// Writes a group in one transaction and says, for each entry, whether it started or repeated
/// a delivery already claimed. The statements must be done by the group's earliest deadline;
/// `COMMIT` is sent only once every request of the group has been held to wait for it.
async fn commit(
    pool: &PgPool,
    group: &[(&Entry, Option<&Ticket>)],
) -> Result<Written, EngineError> {
    let entries: Vec<&Entry> = group.iter().map(|(entry, _)| *entry).collect();
    let tickets: Vec<&Ticket> = group.iter().filter_map(|(_, ticket)| *ticket).collect();
    let written = write_group(pool, &entries);
    let (tx, outcomes) = match tickets.iter().map(|t| t.deadline).min() {
        Some(deadline) => {
            // Dropping the unfinished transaction rolls it back: COMMIT was never sent.
            match tokio::time::timeout_at(deadline.into(), written).await {
                Ok(written) => written?,
                Err(_) => return Ok(Written::OutOfTime),
            }
        }
        None => written.await?,
    };
    for (held, ticket) in tickets.iter().enumerate() {
        if !ticket.hold() {
            tickets[..held].iter().for_each(|t| t.release());
            return Ok(Written::Abandoned);
        }
    }
    tx.commit().await.map_err(StorageError::from)?;
    quantumflow_engine::meters::started(&new_starts(&entries, &outcomes));
    Ok(Written::Committed(outcomes))
}

/// Runs a group's statements in a new transaction, left open for the caller to commit.
async fn write_group(
    pool: &PgPool,
    entries: &[&Entry],
) -> Result<(Transaction<'static, Postgres>, Vec<Started>), EngineError> {
    let mut tx = pool.begin().await.map_err(StorageError::from)?;
    let mut outcomes = vec![Started::New; entries.len()];

    let signed: Vec<Delivery<'_>> = entries
        .iter()
        .filter_map(|(start, delivery)| {
            Some(Delivery {
                workflow_id: start.workflow_id(),
                delivery_id: delivery.as_deref()?,
                execution_id: start.execution_id(),
            })
        })
        .collect();
    if !signed.is_empty() {
        let claimed: HashSet<Uuid> = deliveries::claim(&mut tx, &signed)
            .await?
            .into_iter()
            .collect();
        let repeats: Vec<(Uuid, &str)> = signed
            .iter()
            .filter(|d| !claimed.contains(&d.execution_id))
            .map(|d| (d.workflow_id, d.delivery_id))
            .collect();
        if !repeats.is_empty() {
            let originals: HashMap<(Uuid, String), Uuid> = deliveries::originals(&mut tx, &repeats)
                .await?
                .into_iter()
                .map(|(workflow, delivery, execution)| ((workflow, delivery), execution))
                .collect();
            for ((start, delivery), outcome) in entries.iter().zip(&mut outcomes) {
                let Some(delivery) = delivery else { continue };
                if claimed.contains(&start.execution_id()) {
                    continue;
                }
                // The claim lost to a row that must still be there: this transaction saw it.
                let key = (start.workflow_id(), delivery.clone());
                let original = originals.get(&key).ok_or(StorageError::Conflict {
                    constraint: "webhook_deliveries_pkey".into(),
                })?;
                *outcome = Started::Duplicate(*original);
            }
        }
    }

    quantumflow_engine::start_all(&mut tx, &new_starts(entries, &outcomes)).await?;
    Ok((tx, outcomes))
}

/// The starts of `entries` that are written: not repeats of a delivery.
fn new_starts<'a>(entries: &[&'a Entry], outcomes: &[Started]) -> Vec<&'a Start> {
    entries
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| **outcome == Started::New)
        .map(|((start, _), _)| start)
        .collect()
}

fn is_unavailable(err: &EngineError) -> bool {
    matches!(err, EngineError::Storage(StorageError::Unavailable(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_taken_by_one_side_only() {
        let deadline = Instant::now();

        let committed = Ticket::new(deadline);
        assert!(committed.hold());
        assert!(!committed.abandon(), "a start being committed was cut off");

        let answered = Ticket::new(deadline);
        assert!(answered.abandon());
        assert!(answered.abandon(), "abandoning twice must still say so");
        assert!(
            !answered.hold(),
            "an answered request's start was committed"
        );

        let released = Ticket::new(deadline);
        assert!(released.hold());
        released.release();
        assert!(released.abandon());
    }
}
