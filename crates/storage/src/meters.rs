//! The storage layer's one metric: callers that gave up waiting for a pooled connection.
//!
//! How long callers wait is measured from the pool's own timing events by the binary, which
//! owns the pool's options; a wait that ends in a timeout produces no such event, so it is
//! counted here instead, where every pool error turns into a [`crate::StorageError`].

use metrics::Unit;

/// Callers that waited the whole acquire timeout for a connection and got none.
pub const POOL_TIMEOUTS: &str = "quantumflow_db_pool_acquire_timeouts_total";

/// Gives the metric its help text and its first sample, 0; call once, after installing the
/// recorder. Without a sample before the first timeout, `increase()` would miss that one.
pub fn describe() {
    metrics::describe_counter!(
        POOL_TIMEOUTS,
        Unit::Count,
        "Callers that gave up waiting for a free database connection after the acquire timeout."
    );
    metrics::counter!(POOL_TIMEOUTS).increment(0);
}

/// Counts one caller that gave up on the pool.
pub fn pool_timed_out() {
    metrics::counter!(POOL_TIMEOUTS).increment(1);
}
