//! What a running worker tells the rest of its process: the name it has in the queue, which
//! the readiness probe looks up.

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
}

impl WorkerStatus {
    /// The worker's name in the queue, once it started.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.get().map(String::as_str)
    }

    pub(crate) fn started_as(&self, name: &str) {
        // A handle is meant for one worker; a second start keeps the first name.
        let _ = self.inner.name.set(name.to_owned());
    }
}
