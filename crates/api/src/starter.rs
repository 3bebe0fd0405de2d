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

use std::sync::Arc;

use quantumflow_engine::{EngineError, Start};
use quantumflow_storage::StorageError;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

/// Writer tasks. Two let one gather the next group while the other commits; more would split
/// the groups without adding a faster path to the database.
const WRITERS: usize = 2;

/// Starts committed in one transaction at most.
const MAX_GROUP: usize = 128;

/// Starts that may wait for a writer; past this, triggers are refused with 503. At the rates a
/// single control plane accepts, this is well under a second of backlog.
const QUEUE_CAPACITY: usize = 1024;

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
}

struct Waiting {
    start: Start,
    done: oneshot::Sender<Result<(), StartError>>,
}

/// Hands prepared executions to the writer tasks.
#[derive(Debug, Clone)]
pub struct Starter {
    queue: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("execution_id", &self.start.execution_id())
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
            let span = tracing::info_span!("starter", writer);
            tokio::spawn(write_groups(pool.clone(), Arc::clone(&receiver)).instrument(span));
        }
        Self { queue }
    }

    /// Commits `start` with whatever else is waiting, and returns once it is durable.
    pub async fn start(&self, start: Start) -> Result<(), StartError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .try_send(Waiting { start, done })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => StartError::Busy,
                mpsc::error::TrySendError::Closed(_) => StartError::Stopped,
            })?;
        committed.await.map_err(|_| StartError::Stopped)?
    }
}

async fn write_groups(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
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
    }
}

/// Commits a group, and tells each waiting handler how it went. When the group as a whole
/// fails for a reason other than the database being unreachable, each start is retried on its
/// own, so that one bad start cannot fail the others.
async fn write(pool: &PgPool, group: Vec<Waiting>) {
    let (starts, replies): (Vec<Start>, Vec<_>) =
        group.into_iter().map(|w| (w.start, w.done)).unzip();
    let result = commit(pool, &starts).await;
    tracing::debug!(
        starts = starts.len(),
        ok = result.is_ok(),
        "group committed"
    );
    match result {
        Ok(()) => {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(err) if is_unavailable(&err) => {
            tracing::warn!(error = %err, starts = starts.len(), "database unavailable");
            for reply in replies {
                let _ = reply.send(Err(StartError::Unavailable));
            }
        }
        Err(err) if starts.len() == 1 => {
            let _ = replies.into_iter().next().map(|r| r.send(Err(err.into())));
        }
        Err(err) => {
            tracing::warn!(error = %err, starts = starts.len(), "group failed; writing one by one");
            for (start, reply) in starts.into_iter().zip(replies) {
                let result = commit(pool, std::slice::from_ref(&start)).await;
                let _ = reply.send(result.map_err(StartError::from));
            }
        }
    }
}

async fn commit(pool: &PgPool, starts: &[Start]) -> Result<(), EngineError> {
    let mut tx = pool.begin().await.map_err(StorageError::from)?;
    quantumflow_engine::start_all(&mut tx, starts).await?;
    tx.commit().await.map_err(StorageError::from)?;
    Ok(())
}

fn is_unavailable(err: &EngineError) -> bool {
    matches!(err, EngineError::Storage(StorageError::Unavailable(_)))
}
