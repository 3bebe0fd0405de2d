//! Database work per job: counter readings taken around the measured phase.
//!
//! PostgreSQL publishes a session's commit counts when the session ends, or at most once a
//! second while it runs, so the closing reading waits until every session that did measured
//! work has gone; a session ends its statistics before it leaves `pg_stat_activity`.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::BaselineError;
use super::scratch::ScratchDb;
use crate::pgstats::{Counters, Delta};

/// How long the sessions of the measured phase may take to go away after being closed.
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to look for sessions still open.
const QUIET_POLL: Duration = Duration::from_millis(10);

/// The reading taken before the measured phase.
#[derive(Debug)]
pub(super) struct WorkMeter {
    before: Counters,
}

impl WorkMeter {
    /// Takes the opening reading on a session of its own, which is closed right away so its
    /// own commits are published long before the closing reading.
    pub(super) async fn start(scratch: &ScratchDb) -> Result<Self, BaselineError> {
        let pool = scratch.pool(1).await?;
        let before = Counters::read(&pool)
            .await
            .map_err(BaselineError::database("reading the opening statistics"));
        pool.close().await;
        Ok(Self { before: before? })
    }

    /// Takes the closing reading once the measured sessions are gone, and returns the work done
    /// in between less `harness_queries`: the single-statement transactions the harness itself
    /// ran in the scratch database while measuring (its progress polls).
    pub(super) async fn finish(
        self,
        scratch: &ScratchDb,
        harness_queries: i64,
    ) -> Result<Delta, BaselineError> {
        let pool = scratch.pool(1).await?;
        let after = async {
            wait_for_quiet(&pool).await?;
            Counters::read(&pool).await
        }
        .await
        .map_err(BaselineError::database("reading the closing statistics"));
        pool.close().await;

        let delta = after?.since(&self.before);
        Ok(Delta {
            commits: delta.commits - harness_queries,
            rollbacks: delta.rollbacks,
            statements: delta.statements.map(|s| s - harness_queries),
        })
    }
}

/// Waits until this pool's session is the only client in the database. Gives up quietly after
/// [`QUIET_TIMEOUT`]: a straggler only makes the counts a little low, which is no reason to
/// throw away the timing.
async fn wait_for_quiet(pool: &PgPool) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    loop {
        let others: i64 = sqlx::query_scalar(
            r"
            SELECT count(*)
            FROM pg_stat_activity
            WHERE datname = current_database()
              AND backend_type = 'client backend'
              AND pid <> pg_backend_pid()
            ",
        )
        .fetch_one(pool)
        .await?;
        if others == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            crate::note(format_args!(
                "warning: {others} sessions still open in the scratch database at the closing \
                 statistics reading; its work counts may be low"
            ));
            return Ok(());
        }
        tokio::time::sleep(QUIET_POLL).await;
    }
}
