//! Node and edge kinds, and validation of a workflow's directed acyclic graph.
//!
//! A workflow names its nodes; edges refer to nodes by name. [`WorkflowGraph::build`] checks a
//! whole graph at once and reports every problem it finds, each with a JSON pointer into the
//! workflow document, so an editor can underline all of them in one round trip.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a node does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// The entry point; its output is the trigger's payload.
    Trigger,
    /// Calls out to a connector (HTTP, Slack, …).
    Action,
    /// Reshapes data with a template or a sandboxed script.
    Transform,
    /// Chooses which conditional edges fire.
    Condition,
    /// Holds its successors back for a while.
    Delay,
}

/// How an edge decides whether it fires.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Fires when its source succeeds.
    #[default]
    Default,
    /// Fires when its source succeeds and the edge's condition holds.
    Conditional,
    /// Fires only when its source failed for good.
    Error,
}

/// A kind name that the model does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} type {value:?}, expected one of: {expected}")]
pub struct UnknownKind {
    what: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! text_enum {
    ($name:ident, $what:literal, $expected:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as stored in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownKind;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownKind { what: $what, value: s.to_owned(), expected: $expected }),
                }
            }
        }
    };
}

text_enum!(NodeKind, "node", "trigger, action, transform, condition, delay" {
    Trigger => "trigger",
    Action => "action",
    Transform => "transform",
    Condition => "condition",
    Delay => "delay",
});

/// The longest a node's own durations may be, a delay's `config.seconds` and any node's
/// `config.timeout`: a week. A longer wait is a job for a schedule, not for a job parked in
/// the queue.
pub const MAX_NODE_SECONDS: u64 = 7 * 24 * 3600;

/// A node's `config.seconds` or `config.timeout` as a duration, or what is wrong with it, worded
/// to follow the key's name.
pub fn node_seconds(seconds: &serde_json::Value) -> Result<Duration, String> {
    seconds
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_NODE_SECONDS as f64)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "must be a number of seconds above 0 and at most {MAX_NODE_SECONDS} (a week), \
                 not {seconds}"
            )
        })
}

text_enum!(EdgeKind, "edge", "default, conditional, error" {
    Default => "default",
    Conditional => "conditional",
    Error => "error",
});

/// One problem in a workflow document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphProblem {
    /// RFC 6901 pointer to the offending part of the document, e.g. `/edges/2/target`.
    pub pointer: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl GraphProblem {
    fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// A node as the graph sees it: a unique name and a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique within the workflow; edges and templates refer to it.
    pub name: String,
    /// What the node does.
    pub kind: NodeKind,
}

/// An edge as written in a workflow document, naming its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Name of the node the edge leaves.
    pub source: String,
    /// Name of the node the edge enters.
    pub target: String,
    /// When the edge fires.
    pub kind: EdgeKind,
}

/// An edge between two nodes, by their index in [`WorkflowGraph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Index of the source node.
    pub source: usize,
    /// Index of the target node.
    pub target: usize,
    /// When the edge fires.
    pub kind: EdgeKind,
}

/// A validated workflow graph: one trigger, every node reachable from it, no cycles.
#[derive(Debug, Clone)]
pub struct WorkflowGraph {
    nodes: Vec<NodeSpec>,
    edges: Vec<Edge>,
    trigger: usize,
    order: Vec<usize>,
}

impl WorkflowGraph {
    /// Checks a graph and returns it, or every problem found.
    pub fn build(nodes: Vec<NodeSpec>, edges: &[EdgeSpec]) -> Result<Self, Vec<GraphProblem>> {
        let mut problems = Vec::new();

        let mut by_name = HashMap::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            if node.name.trim().is_empty() {
                problems.push(GraphProblem::new(
                    format!("/nodes/{i}/name"),
                    "must not be empty",
                ));
            } else if let Some(first) = by_name.insert(node.name.as_str(), i) {
                let message = format!("duplicates the name of /nodes/{first}: {:?}", node.name);
                problems.push(GraphProblem::new(format!("/nodes/{i}/name"), message));
            }
        }

        let triggers: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].kind == NodeKind::Trigger)
            .collect();
        match triggers.as_slice() {
            [] => problems.push(GraphProblem::new(
                "/nodes",
                "needs exactly one trigger node",
            )),
            [_] => {}
            [_, extra @ ..] => {
                for &i in extra {
                    let message = "is a second trigger; a workflow has exactly one";
                    problems.push(GraphProblem::new(format!("/nodes/{i}/type"), message));
                }
            }
        }

        let resolved = resolve_edges(&by_name, triggers.first().copied(), edges, &mut problems);

        if !problems.is_empty() {
            return Err(problems);
        }

        let graph = Self {
            trigger: triggers[0],
            order: Vec::new(),
            nodes,
            edges: resolved,
        };
        graph.into_ordered()
    }

    /// The nodes, in document order.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The edges, in document order, by node index.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Index of the trigger node.
    pub fn trigger(&self) -> usize {
        self.trigger
    }

    /// Node indices in an order where every node comes after all of its predecessors.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Edges leaving `node`.
    pub fn outgoing(&self, node: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.source == node)
    }

    /// Edges entering `node`.
    pub fn incoming(&self, node: usize) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.target == node)
    }

    /// Orders the nodes, reporting cycles and nodes the trigger cannot reach.
    fn into_ordered(mut self) -> Result<Self, Vec<GraphProblem>> {
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        for e in &self.edges {
            indegree[e.target] += 1;
        }

        // Kahn's algorithm from the trigger alone: a node that never becomes ready is either
        // on a cycle or cut off from the trigger, and both are reported below.
        let mut ready = vec![self.trigger];
        let mut order = Vec::with_capacity(n);
        let mut seen_from_trigger = vec![false; n];
        seen_from_trigger[self.trigger] = true;
        while let Some(node) = ready.pop() {
            order.push(node);
            for e in self.edges.iter().filter(|e| e.source == node) {
                seen_from_trigger[e.target] = true;
                indegree[e.target] -= 1;
                if indegree[e.target] == 0 {
                    ready.push(e.target);
                }
            }
        }

        if order.len() == n {
            self.order = order;
            return Ok(self);
        }

        let mut problems = Vec::new();
        if let Some(cycle) = self.find_cycle() {
            let names: Vec<&str> = cycle.iter().map(|&i| self.nodes[i].name.as_str()).collect();
            let message = format!("edges form a cycle: {}", names.join(" → "));
            problems.push(GraphProblem::new("/edges", message));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if !seen_from_trigger[i] && !self.is_on_cycle(i) {
                let message = format!("node {:?} cannot be reached from the trigger", node.name);
                problems.push(GraphProblem::new(format!("/nodes/{i}"), message));
            }
        }
        Err(problems)
    }

    /// Returns one cycle as a closed walk of node indices (first = last), if any exists.
    fn find_cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        let mut path = Vec::new();

        fn visit(
            g: &WorkflowGraph,
            node: usize,
            marks: &mut [Mark],
            path: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            marks[node] = Mark::OnPath;
            path.push(node);
            for e in g.outgoing(node) {
                match marks[e.target] {
                    Mark::OnPath => {
                        let start = path.iter().position(|&p| p == e.target)?;
                        let mut cycle = path[start..].to_vec();
                        cycle.push(e.target);
                        return Some(cycle);
                    }
                    Mark::New => {
                        if let Some(cycle) = visit(g, e.target, marks, path) {
                            return Some(cycle);
                        }
                    }
                    Mark::Done => {}
                }
            }
            path.pop();
            marks[node] = Mark::Done;
            None
        }

        (0..self.nodes.len()).find_map(|start| {
            if marks[start] == Mark::New {
                visit(self, start, &mut marks, &mut path)
            } else {
                None
            }
        })
    }

    fn is_on_cycle(&self, node: usize) -> bool {
        // A node is on a cycle when it can reach itself.
        let mut stack: Vec<usize> = self.outgoing(node).map(|e| e.target).collect();
        let mut seen = vec![false; self.nodes.len()];
        while let Some(next) = stack.pop() {
            if next == node {
                return true;
            }
            if !std::mem::replace(&mut seen[next], true) {
                stack.extend(self.outgoing(next).map(|e| e.target));
            }
        }
        false
    }
}

fn resolve_edges(
    by_name: &HashMap<&str, usize>,
    trigger: Option<usize>,
    edges: &[EdgeSpec],
    problems: &mut Vec<GraphProblem>,
) -> Vec<Edge> {
    let mut resolved = Vec::with_capacity(edges.len());
    let mut seen = HashMap::with_capacity(edges.len());
    for (i, edge) in edges.iter().enumerate() {
        let lookup = |field: &str, name: &str, problems: &mut Vec<GraphProblem>| {
            let found = by_name.get(name).copied();
            if found.is_none() {
                let message = format!("names no node of this workflow: {name:?}");
                problems.push(GraphProblem::new(format!("/edges/{i}/{field}"), message));
            }
            found
        };
        let source = lookup("source", &edge.source, problems);
        let target = lookup("target", &edge.target, problems);
        let (Some(source), Some(target)) = (source, target) else {
            continue;
        };

        if Some(target) == trigger {
            let message = "the trigger cannot have incoming edges";
            problems.push(GraphProblem::new(format!("/edges/{i}/target"), message));
            continue;
        }
        if source == target {
            let message = format!("connects node {:?} to itself", edge.source);
            problems.push(GraphProblem::new(format!("/edges/{i}"), message));
            continue;
        }
        if let Some(first) = seen.insert((source, target, edge.kind), i) {
            let message = format!("repeats /edges/{first} (same source, target and type)");
            problems.push(GraphProblem::new(format!("/edges/{i}"), message));
            continue;
        }
        resolved.push(Edge {
            source,
            target,
            kind: edge.kind,
        });
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeKind) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            kind,
        }
    }

    fn edge(source: &str, target: &str) -> EdgeSpec {
        EdgeSpec {
            source: source.to_owned(),
            target: target.to_owned(),
            kind: EdgeKind::Default,
        }
    }

    fn pointers(problems: &[GraphProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.pointer.as_str()).collect()
    }

    #[test]
    fn a_chain_orders_each_node_after_its_predecessor() {
        let nodes = vec![
            node("c", NodeKind::Action),
            node("start", NodeKind::Trigger),
            node("b", NodeKind::Transform),
        ];
        let graph = WorkflowGraph::build(nodes, &[edge("start", "b"), edge("b", "c")]).unwrap();

        assert_eq!(graph.trigger(), 1);
        assert_eq!(graph.topological_order(), &[1, 2, 0]);
    }

    #[test]
    fn a_join_comes_after_every_branch() {
        let nodes = vec![
            node("t", NodeKind::Trigger),
            node("left", NodeKind::Action),
            node("right", NodeKind::Action),
            node("join", NodeKind::Transform),
        ];
        let edges = [
            edge("t", "left"),
            edge("t", "right"),
            edge("left", "join"),
            edge("right", "join"),
        ];
        let graph = WorkflowGraph::build(nodes, &edges).unwrap();

        let position = |i| {
            graph
                .topological_order()
                .iter()
                .position(|&n| n == i)
                .unwrap()
        };
        assert!(position(3) > position(1) && position(3) > position(2));
        assert_eq!(graph.incoming(3).count(), 2);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let nodes = vec![
            node("a", NodeKind::Action),
            node("a", NodeKind::Action),
            node("", NodeKind::Transform),
        ];
        let edges = [edge("a", "ghost"), edge("nobody", "a")];
        let problems = WorkflowGraph::build(nodes, &edges).unwrap_err();

        assert_eq!(
            pointers(&problems),
            [
                "/nodes/1/name",
                "/nodes/2/name",
                "/nodes",
                "/edges/0/target",
                "/edges/1/source"
            ]
        );
    }

    #[test]
    fn a_second_trigger_is_pointed_at() {
        let nodes = vec![node("t1", NodeKind::Trigger), node("t2", NodeKind::Trigger)];
        let problems = WorkflowGraph::build(nodes, &[]).unwrap_err();

        assert_eq!(pointers(&problems), ["/nodes/1/type"]);
    }

    #[test]
    fn cycles_are_named_node_by_node() {
        let nodes = vec![
            node("t", NodeKind::Trigger),
            node("a", NodeKind::Action),
            node("b", NodeKind::Action),
        ];
        let edges = [edge("t", "a"), edge("a", "b"), edge("b", "a")];
        let problems = WorkflowGraph::build(nodes, &edges).unwrap_err();

        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].message, "edges form a cycle: a → b → a");
    }

    #[test]
    fn self_loops_duplicates_and_edges_into_the_trigger_are_refused() {
        let nodes = vec![node("t", NodeKind::Trigger), node("a", NodeKind::Action)];
        let edges = [
            edge("t", "a"),
            edge("t", "a"),
            edge("a", "a"),
            edge("a", "t"),
        ];
        let problems = WorkflowGraph::build(nodes, &edges).unwrap_err();

        assert_eq!(
            pointers(&problems),
            ["/edges/1", "/edges/2", "/edges/3/target"]
        );
    }

    #[test]
    fn nodes_cut_off_from_the_trigger_are_refused() {
        let nodes = vec![
            node("t", NodeKind::Trigger),
            node("island", NodeKind::Action),
        ];
        let problems = WorkflowGraph::build(nodes, &[]).unwrap_err();

        assert_eq!(pointers(&problems), ["/nodes/1"]);
        assert!(problems[0].message.contains("\"island\""));
    }

    #[test]
    fn edges_of_different_types_between_the_same_nodes_are_allowed() {
        let nodes = vec![node("t", NodeKind::Trigger), node("a", NodeKind::Action)];
        let mut on_error = edge("t", "a");
        on_error.kind = EdgeKind::Error;

        assert!(WorkflowGraph::build(nodes, &[edge("t", "a"), on_error]).is_ok());
    }

    #[test]
    fn kinds_parse_from_their_text_and_list_the_choices_otherwise() {
        assert_eq!("delay".parse::<NodeKind>(), Ok(NodeKind::Delay));
        assert_eq!("error".parse::<EdgeKind>(), Ok(EdgeKind::Error));
        let err = "http_request".parse::<NodeKind>().unwrap_err();
        assert!(
            err.to_string().contains("expected one of: trigger, action"),
            "{err}"
        );
    }
}
