//! The snapshot of a workflow that an execution runs from.
//!
//! Taken when the execution starts and stored in `executions.workflow_snapshot`, it holds the
//! workflow's settings, nodes and edges as they were then; workers never read the live
//! definition, so editing a workflow cannot change executions already under way. Edges name
//! their nodes, as in the workflow document.

use std::collections::HashMap;

use quantumflow_domain::graph::{EdgeSpec, NodeSpec};
use quantumflow_domain::{EdgeKind, GraphProblem, NodeKind, WorkflowGraph, WorkflowSettings};
use quantumflow_storage::workflows::WorkflowDocument;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The workflow part of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotWorkflow {
    /// The workflow's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: i32,
    /// Its trigger.
    pub trigger_config: Value,
    /// Its settings.
    pub settings: Value,
}

/// A node as the execution sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// The node's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Its settings.
    pub config: Value,
    /// How its input is assembled.
    pub input_mapping: Value,
    /// How its output is reshaped.
    pub output_mapping: Value,
    /// Disabled nodes are skipped.
    pub is_enabled: bool,
}

/// An edge as the execution sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEdge {
    /// Source node name.
    pub source: String,
    /// Target node name.
    pub target: String,
    /// When it fires.
    #[serde(rename = "type")]
    pub kind: EdgeKind,
    /// The condition of a conditional edge.
    pub condition: Value,
}

/// A workflow frozen for one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The workflow row.
    pub workflow: SnapshotWorkflow,
    /// Its nodes.
    pub nodes: Vec<SnapshotNode>,
    /// Its edges.
    pub edges: Vec<SnapshotEdge>,
}

impl Snapshot {
    /// Freezes a stored workflow document.
    pub fn of(doc: &WorkflowDocument) -> Self {
        let names: HashMap<Uuid, &str> =
            doc.nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
        let name = |id: &Uuid| names.get(id).copied().unwrap_or_default().to_owned();
        Self {
            workflow: SnapshotWorkflow {
                id: doc.workflow.id,
                name: doc.workflow.name.clone(),
                version: doc.workflow.version,
                trigger_config: doc.workflow.trigger_config.clone(),
                settings: doc.workflow.settings.clone(),
            },
            nodes: doc
                .nodes
                .iter()
                .map(|n| SnapshotNode {
                    id: n.id,
                    name: n.name.clone(),
                    kind: n.kind,
                    config: n.config.clone(),
                    input_mapping: n.input_mapping.clone(),
                    output_mapping: n.output_mapping.clone(),
                    is_enabled: n.is_enabled,
                })
                .collect(),
            edges: doc
                .edges
                .iter()
                .map(|e| SnapshotEdge {
                    source: name(&e.source_node_id),
                    target: name(&e.target_node_id),
                    kind: e.kind,
                    condition: e.condition.clone(),
                })
                .collect(),
        }
    }
}

/// A snapshot checked and indexed for running: the graph, the settings, node lookup by id.
#[derive(Debug)]
pub struct Plan {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its validated graph; node indices match `snapshot.nodes`.
    pub graph: WorkflowGraph,
    /// Its settings.
    pub settings: WorkflowSettings,
    by_id: HashMap<Uuid, usize>,
}

/// Why a snapshot cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The graph is not a valid workflow.
    #[error("the workflow's graph is invalid: {}", list(.0))]
    Graph(Vec<GraphProblem>),
    /// The settings cannot be read.
    #[error("the workflow's settings are invalid: {0}")]
    Settings(String),
    /// The stored snapshot is not a snapshot.
    #[error("the stored snapshot is unreadable: {0}")]
    Unreadable(String),
}

fn list(problems: &[GraphProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Plan {
    /// Checks a snapshot: the graph is validated again here, because the definition may have
    /// been written by an older version with weaker checks.
    pub fn new(snapshot: Snapshot) -> Result<Self, PlanError> {
        let nodes = snapshot
            .nodes
            .iter()
            .map(|n| NodeSpec {
                name: n.name.clone(),
                kind: n.kind,
            })
            .collect();
        let edges: Vec<EdgeSpec> = snapshot
            .edges
            .iter()
            .map(|e| EdgeSpec {
                source: e.source.clone(),
                target: e.target.clone(),
                kind: e.kind,
            })
            .collect();
        let graph = WorkflowGraph::build(nodes, &edges).map_err(PlanError::Graph)?;
        let settings = WorkflowSettings::from_json(&snapshot.workflow.settings)
            .map_err(|e| PlanError::Settings(e.to_string()))?;
        let by_id = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i))
            .collect();
        Ok(Self {
            snapshot,
            graph,
            settings,
            by_id,
        })
    }

    /// Reads a stored snapshot.
    pub fn from_json(value: Value) -> Result<Self, PlanError> {
        let snapshot =
            serde_json::from_value(value).map_err(|e| PlanError::Unreadable(e.to_string()))?;
        Self::new(snapshot)
    }

    /// Index of the node with id `id`.
    pub fn index_of(&self, id: Uuid) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// The node at `index`.
    pub fn node(&self, index: usize) -> &SnapshotNode {
        &self.snapshot.nodes[index]
    }
}
