//! Schema migrations: applying, reverting and inspecting them.
//!
//! Two sets of migrations make up a QuantumFlow database: ours in `migrations/` ([`MIGRATOR`])
//! and the job queue's, which apalis-postgres keeps in its own `apalis` schema. Both are plain
//! [`Migrator`]s, so the same functions serve both; each set records itself in its own table.
//!
//! sqlx takes a session advisory lock around every run, so two processes migrating at once
//! take turns and the second finds nothing left to do.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgConnection, PgPool};

use crate::StorageError;

/// QuantumFlow's own migrations, embedded from the workspace's `migrations/` directory.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Where [`MIGRATOR`] records what it has applied.
pub const MIGRATIONS_TABLE: &str = "public._sqlx_migrations";

/// One set of migrations and the table it records itself in.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet<'a> {
    /// Short name for messages, e.g. `quantumflow` or `queue`.
    pub name: &'static str,
    /// The migrations.
    pub migrator: &'a Migrator,
    /// Schema-qualified bookkeeping table.
    pub table: &'static str,
}

impl MigrationSet<'static> {
    /// QuantumFlow's own tables.
    pub fn quantumflow() -> Self {
        Self {
            name: "quantumflow",
            migrator: &MIGRATOR,
            table: MIGRATIONS_TABLE,
        }
    }
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database has applied migrations this binary does not know: it was migrated by a
    /// newer QuantumFlow.
    #[error(
        "the database has {set} migration {version}, which this binary does not know; \
         it was migrated by a newer QuantumFlow, so upgrade this one"
    )]
    Newer {
        /// Which set.
        set: &'static str,
        /// The unknown version.
        version: i64,
    },

    /// An applied migration differs from the file this binary carries.
    #[error(
        "{set} migration {version} was changed after it was applied; \
         restore the original file or rebuild the database"
    )]
    Modified {
        /// Which set.
        set: &'static str,
        /// The changed version.
        version: i64,
    },

    /// A migration failed half-way in an earlier run and must be repaired by hand.
    #[error("{set} migration {version} failed part-way in an earlier run; repair it by hand")]
    Dirty {
        /// Which set.
        set: &'static str,
        /// The dirty version.
        version: i64,
    },

    /// Reverting was asked of a set whose migrations cannot be reverted.
    #[error("{set} migration {version} has no down migration, so it cannot be reverted")]
    Irreversible {
        /// Which set.
        set: &'static str,
        /// The version without a down script.
        version: i64,
    },

    /// The database failed underneath.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MigrationError {
    fn from_sqlx(set: &'static str, err: MigrateError) -> Self {
        match err {
            MigrateError::VersionMissing(version) => Self::Newer { set, version },
            MigrateError::VersionMismatch(version) => Self::Modified { set, version },
            MigrateError::Dirty(version) => Self::Dirty { set, version },
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
                Self::Storage(StorageError::from(e))
            }
            other => Self::Storage(StorageError::Other(sqlx::Error::Migrate(Box::new(other)))),
        }
    }
}

/// Applies every pending migration of `set`.
pub async fn apply(pool: &PgPool, set: MigrationSet<'_>) -> Result<(), MigrationError> {
    set.migrator
        .run(pool)
        .await
        .map_err(|e| MigrationError::from_sqlx(set.name, e))
}

/// Reverts `set` down to version `target` (0 reverts everything).
pub async fn revert(
    pool: &PgPool,
    set: MigrationSet<'_>,
    target: i64,
) -> Result<(), MigrationError> {
    let mut conn = pool.acquire().await.map_err(StorageError::from)?;
    let applied = applied_versions(&mut conn, set).await?;
    for m in set
        .migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let reversible = set
            .migrator
            .iter()
            .any(|d| d.version == m.version && d.migration_type.is_down_migration());
        if m.version > target && applied.contains(&m.version) && !reversible {
            return Err(MigrationError::Irreversible {
                set: set.name,
                version: m.version,
            });
        }
    }
    set.migrator
        .undo(pool, target)
        .await
        .map_err(|e| MigrationError::from_sqlx(set.name, e))
}

/// The state of one migration as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// The migration's version number.
    pub version: i64,
    /// Its description, from the file name.
    pub description: String,
    /// Whether it has been applied.
    pub applied: bool,
}

/// How the database's schema compares to the migrations this binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    /// Which set.
    pub name: &'static str,
    /// Every migration the binary knows, in order, with whether it is applied.
    pub migrations: Vec<MigrationState>,
    /// Versions applied in the database that the binary does not know.
    pub unknown: Vec<i64>,
}

impl SetReport {
    /// Whether the database has exactly the migrations this binary carries.
    pub fn is_current(&self) -> bool {
        self.unknown.is_empty() && self.migrations.iter().all(|m| m.applied)
    }

    /// The highest applied version, or 0.
    pub fn version(&self) -> i64 {
        let known = self
            .migrations
            .iter()
            .filter(|m| m.applied)
            .map(|m| m.version);
        known.chain(self.unknown.iter().copied()).max().unwrap_or(0)
    }

    /// Versions the binary knows that are not applied yet.
    pub fn pending(&self) -> impl Iterator<Item = &MigrationState> {
        self.migrations.iter().filter(|m| !m.applied)
    }
}

/// Compares the database with `set` without changing anything.
pub async fn inspect(pool: &PgPool, set: MigrationSet<'_>) -> Result<SetReport, StorageError> {
    inspect_on(&mut *pool.acquire().await?, set).await
}

/// [`inspect`] on `conn`, such as a probe's transaction (see [`crate::probes`]).
pub async fn inspect_on(
    conn: &mut PgConnection,
    set: MigrationSet<'_>,
) -> Result<SetReport, StorageError> {
    let applied = applied_versions(conn, set).await?;
    let migrations: Vec<MigrationState> = set
        .migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationState {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect();
    let unknown = applied
        .iter()
        .copied()
        .filter(|v| !migrations.iter().any(|m| m.version == *v))
        .collect();
    Ok(SetReport {
        name: set.name,
        migrations,
        unknown,
    })
}

async fn applied_versions(
    conn: &mut PgConnection,
    set: MigrationSet<'_>,
) -> Result<Vec<i64>, StorageError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(set.table)
        .fetch_one(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }

    // The table name comes from a constant of this crate or the queue crate, never from input,
    // and identifiers cannot be bound as parameters.
    let sql = format!(
        "SELECT version FROM {} WHERE success ORDER BY version",
        set.table
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?)
}
