//! Database work counters: commits from `pg_stat_database` and statement calls from
//! `pg_stat_statements`, read before and after a measured phase so the report can divide them
//! by the work done in between.

use serde::Serialize;
use sqlx::PgPool;

/// Server-wide counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// Committed transactions in the measured database (read-only ones included).
    pub(crate) commits: i64,
    /// Rolled-back transactions in the measured database.
    pub(crate) rollbacks: i64,
    /// Top-level statement executions recorded by `pg_stat_statements`, `None` when the
    /// extension is not loaded on this server.
    pub(crate) statements: Option<i64>,
}

/// What happened between two [`Counters`] readings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Delta {
    /// Transactions committed.
    pub(crate) commits: i64,
    /// Transactions rolled back.
    pub(crate) rollbacks: i64,
    /// Statements executed, when `pg_stat_statements` is available.
    pub(crate) statements: Option<i64>,
}

impl Delta {
    /// Commits per unit of work (a job, a node run), or `None` for no work.
    pub(crate) fn commits_per(&self, units: u64) -> Option<f64> {
        (units > 0).then(|| self.commits as f64 / units as f64)
    }

    /// Statements per unit of work, when statements were counted.
    pub(crate) fn statements_per(&self, units: u64) -> Option<f64> {
        match (self.statements, units) {
            (Some(s), u) if u > 0 => Some(s as f64 / u as f64),
            _ => None,
        }
    }
}

impl Counters {
    /// Reads the counters of the database `pool` is connected to.
    ///
    /// `pg_stat_database` is updated by backends when their transactions end and flushed to the
    /// shared statistics at most once a second, so readings are taken after a short settle
    /// (`pg_stat_clear_snapshot` only drops this backend's cached copy).
    pub(crate) async fn read(pool: &PgPool) -> Result<Self, sqlx::Error> {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(pool)
            .await?;
        let (commits, rollbacks): (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        let statements = if has_statements(pool).await? {
            let calls: Option<i64> = sqlx::query_scalar(
                "SELECT sum(calls)::int8 FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
            )
            .fetch_one(pool)
            .await?;
            Some(calls.unwrap_or(0))
        } else {
            None
        };
        Ok(Self {
            commits,
            rollbacks,
            statements,
        })
    }

    /// The work done since `earlier`.
    pub(crate) fn since(&self, earlier: &Self) -> Delta {
        Delta {
            commits: self.commits - earlier.commits,
            rollbacks: self.rollbacks - earlier.rollbacks,
            statements: match (self.statements, earlier.statements) {
                (Some(now), Some(then)) => Some(now - then),
                _ => None,
            },
        }
    }
}

/// Whether `pg_stat_statements` is both preloaded by the server and installed in this database.
/// Installing it is attempted once; a server without the library keeps reporting `false`.
pub(crate) async fn has_statements(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let preloaded: String =
        sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
            .fetch_one(pool)
            .await?;
    if !preloaded
        .split(',')
        .any(|l| l.trim() == "pg_stat_statements")
    {
        return Ok(false);
    }
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await?;
    Ok(true)
}
