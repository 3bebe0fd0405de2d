//! The pure model of QuantumFlow: what a workflow is and which states its runs move through.
//!
//! Nothing here performs I/O. Storage, the queue, the API and the worker all speak these types,
//! so the rules they encode (which graphs are valid, which status may follow which, how long to
//! wait before a retry) live in exactly one place and are tested without a database.
//!
//! # Layout
//!
//! - [`status`]: the status enums of workflows, executions and node runs, and their transitions.
//! - [`expr`]: templates (`{{input.x}}`) and conditions, rendered strictly and once.
//! - [`graph`]: node and edge kinds, and validation of a workflow's DAG.
//! - [`progress`]: which edges fire, which nodes run or are skipped, when an execution ends.
//! - [`settings`]: a workflow's timeout, retry policy and error handling.
//! - [`retry`]: the retry policy and its backoff schedule.

pub mod expr;
pub mod graph;
pub mod progress;
pub mod retry;
pub mod settings;
pub mod status;

pub use graph::{EdgeKind, GraphProblem, NodeKind, WorkflowGraph};
pub use progress::{ErrorHandling, Outcome};
pub use retry::{Backoff, RetryPolicy};
pub use settings::WorkflowSettings;
pub use status::{ExecutionStatus, NodeRunStatus, UnknownStatus, WorkflowStatus};
