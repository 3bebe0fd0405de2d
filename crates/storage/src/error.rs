//! The storage error type: what went wrong, in terms a caller can act on.
//!
//! Callers decide on the variant, never on the text: the API turns `NotFound` into 404,
//! `Conflict` into 409, `Invalid` into 422 and `Unavailable` into 503.

use sqlx::error::ErrorKind;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The row asked for does not exist (or is not visible to the caller).
    #[error("{entity} not found")]
    NotFound {
        /// What was looked up, e.g. `workflow`.
        entity: &'static str,
    },

    /// A uniqueness or exclusion constraint refused the write.
    #[error("conflicts with an existing row (constraint {constraint})")]
    Conflict {
        /// The constraint's name as declared in the migrations, e.g. `unique_edge`.
        constraint: String,
    },

    /// A check, foreign-key or not-null constraint refused the write.
    #[error("violates constraint {constraint}")]
    Invalid {
        /// The constraint's name as declared in the migrations, e.g. `no_self_loop`.
        constraint: String,
    },

    /// A value the database cannot hold: a NUL character (`\u0000`) in text or JSON, or a
    /// number beyond the range of `numeric`. The statement wrote nothing.
    #[error("a value cannot be stored: {detail}")]
    Unstorable {
        /// The database's own message, which names the kind of value.
        detail: String,
    },

    /// The database could not be reached or refused to serve; retrying later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),

    /// A stored value that the code cannot interpret, such as an unknown status.
    #[error("stored {column} holds an unexpected value: {detail}")]
    Corrupt {
        /// Table and column, e.g. `workflows.status`.
        column: &'static str,
        /// What was found.
        detail: String,
    },

    /// Anything else: a bug or an unexpected database error.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        // Every sqlx error of our own code, the pool's included, passes through here: the one
        // place that sees each caller giving up on the pool.
        if matches!(err, sqlx::Error::PoolTimedOut) {
            crate::meters::pool_timed_out();
        }
        if is_unavailable(&err) {
            return Self::Unavailable(err);
        }
        let sqlx::Error::Database(db) = &err else {
            return Self::Other(err);
        };
        // 22021 and 22P05: a character the database cannot hold (NUL); 22003: a number out of
        // the range of its type. Either comes from what a client sent, not from a fault here.
        if matches!(db.code().as_deref(), Some("22021" | "22P05" | "22003")) {
            return Self::Unstorable {
                detail: db.message().to_owned(),
            };
        }
        let constraint = db.constraint().unwrap_or("unnamed").to_owned();
        match db.kind() {
            ErrorKind::UniqueViolation | ErrorKind::ExclusionViolation => {
                Self::Conflict { constraint }
            }
            ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => Self::Invalid { constraint },
            _ => Self::Other(err),
        }
    }
}

/// Whether the error means "the database is not there right now" rather than "the request was
/// wrong": broken or refused connections, an exhausted pool, a server shutting down.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 53: insufficient resources (too many
            // connections, out of memory, disk full); 57P01-57P03: the server is shutting down
            // or starting up.
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
        }),
        _ => false,
    }
}

impl StorageError {
    pub(crate) fn corrupt(column: &'static str, detail: &dyn std::fmt::Display) -> Self {
        Self::Corrupt {
            column,
            detail: detail.to_string(),
        }
    }
}

impl StorageError {
    /// Whether every connection of the pool stayed busy for the whole acquire timeout: the
    /// database may be fine, but this process has no connection to spare.
    pub fn is_pool_exhausted(&self) -> bool {
        matches!(self, Self::Unavailable(sqlx::Error::PoolTimedOut))
    }

    /// Whether the server cancelled the statement because it ran, or waited for a lock, longer
    /// than the transaction's `statement_timeout` or `lock_timeout` (see [`crate::probes`]).
    pub fn is_statement_timeout(&self) -> bool {
        let Self::Other(sqlx::Error::Database(db)) = self else {
            return false;
        };
        // 57014: query_canceled; 55P03: lock_not_available.
        matches!(db.code().as_deref(), Some("57014" | "55P03"))
    }

    /// Whether the transaction lost a race with another one (a deadlock or a serialization
    /// failure) and would likely succeed if run again.
    pub fn is_conflict(&self) -> bool {
        let Self::Other(sqlx::Error::Database(db)) = self else {
            return false;
        };
        matches!(db.code().as_deref(), Some("40P01" | "40001"))
    }
}
