//! What a running worker tells the rest of its process: the name it has in the queue, which
//! the readiness probe looks up, and whether it is draining.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// A handle on a worker's state, shared with whoever probes it. Cloning shares the state.
#[derive(Debug, Clone, Default)]
pub struct WorkerStatus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once, when the worker starts; the queue's `apalis.workers` row has this id.
    name: OnceLock<String>,
    /// Set when shutdown begins: the worker fetches nothing more.
    draining: AtomicBool,
}

impl WorkerStatus {
    /// The worker's name in the queue, once it started.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.get().map(String::as_str)
    }

    /// Whether shutdown has begun; a draining worker is not ready.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn started_as(&self, name: &str) {
        // A handle is meant for one worker; a second start keeps the first name.
        let _ = self.inner.name.set(name.to_owned());
    }
}
