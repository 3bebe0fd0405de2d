//! QuantumFlow's storage layer: the only crate that writes SQL against QuantumFlow's tables.
//!
//! Queries are checked against the schema at compile time (`sqlx::query!` and friends, with the
//! results cached in `.sqlx/` for offline builds) and grouped by the table they serve. Each
//! function takes any executor, so callers compose several into one transaction.
//!
//! # Layout
//!
//! - [`schema`]: applying, reverting and inspecting migrations.
//! - [`users`], [`tokens`], [`connectors`], [`workflows`], [`executions`]: rows and queries per
//!   aggregate.
//! - [`runs`]: the execution engine's bookkeeping, fenced by attempt.
//! - [`deliveries`]: signed webhook deliveries already accepted, for replay detection.
//! - [`StorageError`]: what went wrong, by kind (not found, conflict, unavailable, …).
//! - [`meters`]: how often callers gave up waiting for the connection pool.
//! - [`probes`]: transactions whose statements the server cancels after a limit, for probes.

pub mod connectors;
pub mod deliveries;
mod error;
pub mod executions;
pub mod meters;
pub mod probes;
pub mod runs;
pub mod schema;
pub mod tokens;
pub mod users;
pub mod workflows;

pub use error::{StorageError, is_unavailable};
pub use sqlx::{PgPool, Postgres, Transaction};

/// Shorthand for storage results.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
