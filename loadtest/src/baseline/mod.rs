//! Raw queue baselines run beside the engine.
//!
//! Each baseline drains a fixed backlog of no-op jobs and reports how fast, so the engine's
//! numbers can be stated as ratios taken on the same machine in the same run:
//!
//! - [`apalis_drain`]: raw apalis 1.0 on PostgreSQL with its default config, the queue a user
//!   would pick instead of the engine. Its workers are separate processes, as they would be in a
//!   deployment.
//! - [`skip_locked_cycle`]: the plain `FOR UPDATE SKIP LOCKED` queue, one job per claim and one
//!   commit per step, the per-job floor of this PostgreSQL.
//!
//! Both run in a scratch database of their own on the server the harness was pointed at, which
//! is dropped afterwards whether the drain succeeded or not.

mod cli;
mod measure;
mod raw_apalis;
mod scratch;
mod skip_locked;

use std::path::PathBuf;
use std::process::ExitStatus;

use serde::Serialize;

pub(crate) use cli::internal_main;
pub(crate) use raw_apalis::apalis_drain;
pub(crate) use skip_locked::skip_locked_cycle;

/// How a baseline drain is run.
#[derive(Debug, Clone)]
pub(crate) struct DrainConfig {
    /// A server to create the scratch database on; its own database is left untouched.
    pub(crate) database_url: String,
    /// apalis: worker processes. SKIP LOCKED: multiplies `concurrency` into the client count.
    pub(crate) workers: usize,
    /// apalis: jobs in flight per worker. SKIP LOCKED: clients per "worker".
    pub(crate) concurrency: usize,
    /// The backlog queued before the clock starts.
    pub(crate) jobs: u64,
    /// The `qf-load` executable, re-run as `qf-load internal apalis-worker` for each apalis
    /// worker.
    pub(crate) harness_exe: PathBuf,
}

impl DrainConfig {
    fn validate(&self) -> Result<(), BaselineError> {
        if self.workers == 0 {
            return Err(BaselineError::Config("workers must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(BaselineError::Config("concurrency must be at least 1"));
        }
        if self.jobs == 0 {
            return Err(BaselineError::Config("jobs must be at least 1"));
        }
        Ok(())
    }
}

/// What one drain measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DrainResult {
    /// The baseline and its shape, e.g. `apalis 4x16 batch 10`.
    pub(crate) name: String,
    /// Jobs drained; always the configured backlog, a partial drain is an error.
    pub(crate) jobs: u64,
    /// From the moment the consumers were let go until the last job was durably done.
    pub(crate) seconds: f64,
    /// `jobs / seconds`.
    pub(crate) jobs_per_sec: f64,
    /// Transactions committed in the scratch database per job, the harness's own polling
    /// taken out.
    pub(crate) commits_per_job: Option<f64>,
    /// Statements per job, when the server has `pg_stat_statements` loaded.
    pub(crate) statements_per_job: Option<f64>,
}

/// Why a baseline drain failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BaselineError {
    /// The drain settings cannot describe a run.
    #[error("invalid drain settings: {0}")]
    Config(&'static str),

    /// The database URL is not one sqlx can connect with.
    #[error("cannot read the database URL")]
    DatabaseUrl(#[source] sqlx::Error),

    /// The URL names its database in a way the scratch name cannot override.
    #[error(
        "cannot point the database URL at the scratch database {scratch}; use a \
         postgres://user@host/db URL without a fragment"
    )]
    ScratchUrl {
        /// The scratch database's name.
        scratch: String,
    },

    /// A SQL step failed; `step` says which.
    #[error("{step}")]
    Database {
        /// What the harness was doing.
        step: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The scratch database could not be removed; it has to be dropped by hand.
    #[error("cannot drop the scratch database {name}; drop it by hand")]
    DropScratch {
        /// The database left behind.
        name: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// apalis's migrations failed in the scratch database.
    #[error("cannot create apalis's schema in the scratch database")]
    ApalisSetup(#[source] apalis_postgres::Error),

    /// apalis refused the backlog.
    #[error("cannot queue the backlog through apalis")]
    Enqueue(#[source] ::apalis::prelude::TaskSinkError<apalis_postgres::Error>),

    /// A worker process could not be started.
    #[error("cannot start worker process {index} from {}", exe.display())]
    SpawnWorker {
        /// Which worker, from 0.
        index: usize,
        /// The executable that was run.
        exe: PathBuf,
        /// Why the start failed.
        #[source]
        source: std::io::Error,
    },

    /// Talking to a worker process over its pipes failed.
    #[error("cannot {action} worker process {index}")]
    WorkerPipe {
        /// What was being done, e.g. "start".
        action: &'static str,
        /// Which worker, from 0.
        index: usize,
        /// The pipe error.
        #[source]
        source: std::io::Error,
    },

    /// A worker process did not say it was ready in time.
    #[error("worker process {index} was not ready within {seconds} s")]
    WorkerNotReady {
        /// Which worker, from 0.
        index: usize,
        /// How long it was given.
        seconds: u64,
    },

    /// A worker process ended before it was told to stop, or failed while stopping.
    #[error("worker process {index} exited with {status} {when}")]
    WorkerExited {
        /// Which worker, from 0.
        index: usize,
        /// Its exit status.
        status: ExitStatus,
        /// "before the backlog was drained", "while stopping", …
        when: &'static str,
    },

    /// A worker process ignored the request to stop and was killed.
    #[error("worker process {index} did not stop within {seconds} s and was killed")]
    WorkerStuck {
        /// Which worker, from 0.
        index: usize,
        /// How long it was given.
        seconds: u64,
    },

    /// The backlog stopped shrinking.
    #[error("no job finished for {seconds} s; {done} of {total} done")]
    Stalled {
        /// Jobs done when the drain gave up.
        done: u64,
        /// The backlog.
        total: u64,
        /// How long nothing finished.
        seconds: u64,
    },

    /// The consumers stopped with jobs left over or processed too many.
    #[error("the drain ended with {done} of {total} jobs done")]
    Incomplete {
        /// Jobs marked done.
        done: u64,
        /// The backlog.
        total: u64,
    },

    /// A SKIP LOCKED client task panicked or was cancelled.
    #[error("a SKIP LOCKED client task did not finish")]
    ClientTask(#[source] tokio::task::JoinError),
}

impl BaselineError {
    fn database(step: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { step, source }
    }

    fn worker_pipe(action: &'static str, index: usize) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::WorkerPipe {
            action,
            index,
            source,
        }
    }
}
