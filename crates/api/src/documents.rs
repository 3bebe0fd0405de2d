//! Workflow documents kept in memory, so that starting an execution reads no workflow, node or
//! edge rows.
//!
//! A webhook has already read its workflow's row to find it by route; if the row's
//! `updated_at` and `version` are those of the cached document, the document is current.
//! Everything that changes a workflow's nodes, edges, settings or status moves its
//! `updated_at`, and counting executions on the row does not, so the cache is never stale for
//! what a snapshot holds. A replace in place moves `updated_at` strictly forward; a replace
//! that makes a new version gives it a new id, which no cached document has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use quantumflow_storage::workflows::{self, Workflow, WorkflowDocument};
use sqlx::PgPool;
use uuid::Uuid;

/// Documents kept at most; past this the cache starts over rather than tracking recency.
const CAPACITY: usize = 4096;

/// Workflow documents by id.
#[derive(Debug, Default)]
pub struct Documents {
    by_id: Mutex<HashMap<Uuid, Arc<WorkflowDocument>>>,
}

impl Documents {
    /// The document of `workflow` as its row, just read, describes it.
    pub async fn of(
        &self,
        pool: &PgPool,
        workflow: &Workflow,
    ) -> Result<Arc<WorkflowDocument>, quantumflow_storage::StorageError> {
        if let Some(doc) = self.lock().get(&workflow.id)
            && is_current(doc, workflow)
        {
            return Ok(Arc::clone(doc));
        }
        let doc = Arc::new(workflows::read_document(pool, workflow.id).await?);
        let mut by_id = self.lock();
        if by_id.len() >= CAPACITY {
            by_id.clear();
        }
        by_id.insert(workflow.id, Arc::clone(&doc));
        Ok(doc)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<WorkflowDocument>>> {
        // The map holds no invariant a panic could break halfway.
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn is_current(doc: &WorkflowDocument, workflow: &Workflow) -> bool {
    doc.workflow.updated_at == workflow.updated_at && doc.workflow.version == workflow.version
}
