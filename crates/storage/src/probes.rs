//! Transactions for health probes and metric scrapes, which must never hold a connection for
//! long.
//!
//! A probe gives up after a few seconds, but dropping a query's future does not stop the
//! query: the connection stays busy until the server finishes the statement, and sqlx hands it
//! out again only then. Behind a lock held for minutes, probes repeated every few seconds would
//! take every connection of the pool, and the work the pool is for would starve. In a probe's
//! transaction the server cancels each statement itself once the limit passes.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use crate::StorageError;

/// Begins a transaction on `pool` whose statements, lock waits included, the server
/// cancels after `limit`. Drop it when done: it rolls back.
pub async fn begin(
    pool: &PgPool,
    limit: Duration,
) -> Result<Transaction<'static, Postgres>, StorageError> {
    let mut tx = pool.begin().await?;
    // `SET LOCAL` takes no parameters; `set_config(..., true)` is its bindable form.
    let millis = limit.as_millis().max(1).to_string();
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)",
    )
    .bind(millis)
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}
