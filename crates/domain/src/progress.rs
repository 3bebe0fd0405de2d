//! How an execution moves through its graph: which edges fire, which nodes run, which are
//! skipped, and when the execution is over.
//!
//! The rules, applied whenever a node reaches a final state:
//!
//! 1. Each outgoing edge is decided once: a `default` edge fires when its source succeeded, a
//!    `conditional` edge when its source succeeded and its condition holds, an `error` edge
//!    when its source failed for good. Every other edge is *dead*.
//! 2. A node waits until all of its incoming edges are decided (a join waits for every branch
//!    that can still reach it). Then it runs if at least one of them fired and the node is
//!    enabled; otherwise it is skipped, and a skipped node's outgoing edges are all dead, so
//!    skipping propagates and a join after an untaken branch still fires.
//! 3. A failure is *handled* when the failed node has an outgoing error edge. An unhandled
//!    failure fails the execution: under `error_handling: stop` (the default) at once, with
//!    nodes that have not started cancelled; under `continue` once every other branch is done.
//!
//! [`Progress`] applies the rules to one execution in memory. The worker applies the same
//! functions ([`edge_fires`], [`fate_when_decided`]) to counters stored per node run, so both
//! agree by construction.

use serde::{Deserialize, Serialize};

use crate::graph::{EdgeKind, WorkflowGraph};

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It produced output.
    Succeeded,
    /// It failed for good: retries are exhausted or the error is not retryable.
    Failed,
    /// It did not run.
    Skipped,
}

/// `settings.error_handling`: what an unhandled failure does to the rest of the execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorHandling {
    /// Fail the execution at once and cancel what has not started.
    #[default]
    Stop,
    /// Let other branches run on; the execution still ends `failed`.
    Continue,
}

/// Whether an edge of `kind` fires after its source ended with `outcome`.
///
/// `condition` is asked only for a conditional edge whose source succeeded.
pub fn edge_fires<E>(
    kind: EdgeKind,
    outcome: Outcome,
    condition: impl FnOnce() -> Result<bool, E>,
) -> Result<bool, E> {
    Ok(match (kind, outcome) {
        (EdgeKind::Default, Outcome::Succeeded) => true,
        (EdgeKind::Conditional, Outcome::Succeeded) => condition()?,
        (EdgeKind::Error, Outcome::Failed) => true,
        _ => false,
    })
}

/// What happens to a node once all its incoming edges are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Run it.
    Run,
    /// Skip it; its outgoing edges are all dead.
    Skip,
}

/// The fate of a node whose incoming edges are all decided, `fired` of them having fired.
pub fn fate_when_decided(fired: usize, enabled: bool) -> Fate {
    if fired > 0 && enabled {
        Fate::Run
    } else {
        Fate::Skip
    }
}

/// Whether a failure of a node with these outgoing edge kinds is handled by an error edge.
pub fn failure_is_handled(outgoing: impl IntoIterator<Item = EdgeKind>) -> bool {
    outgoing.into_iter().any(|k| k == EdgeKind::Error)
}

/// The state of one node in [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Some incoming edge is undecided.
    Waiting,
    /// Ready to run, or running.
    Ready,
    /// Ended.
    Done(Outcome),
}

/// One execution's progress through its graph, in memory.
#[derive(Debug, Clone)]
pub struct Progress<'g> {
    graph: &'g WorkflowGraph,
    enabled: Vec<bool>,
    undecided: Vec<usize>,
    fired: Vec<usize>,
    states: Vec<NodeState>,
    error_handling: ErrorHandling,
    unhandled_failure: bool,
}

impl<'g> Progress<'g> {
    /// Starts an execution: the trigger is ready, everything else waits.
    pub fn start(
        graph: &'g WorkflowGraph,
        enabled: Vec<bool>,
        error_handling: ErrorHandling,
    ) -> Self {
        let n = graph.nodes().len();
        let mut undecided = vec![0; n];
        for e in graph.edges() {
            undecided[e.target] += 1;
        }
        let mut states = vec![NodeState::Waiting; n];
        states[graph.trigger()] = NodeState::Ready;
        Self {
            graph,
            enabled,
            undecided,
            fired: vec![0; n],
            states,
            error_handling,
            unhandled_failure: false,
        }
    }

    /// The state of every node, by index.
    pub fn states(&self) -> &[NodeState] {
        &self.states
    }

    /// Incoming edges of `node` not decided yet.
    pub fn undecided(&self, node: usize) -> usize {
        self.undecided[node]
    }

    /// Incoming edges of `node` that fired.
    pub fn fired(&self, node: usize) -> usize {
        self.fired[node]
    }

    /// Nodes ready to run.
    pub fn ready(&self) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| self.states[i] == NodeState::Ready)
            .collect()
    }

    /// Records that `node` ended with `outcome`; `condition` decides conditional edges by index.
    pub fn finish<E>(
        &mut self,
        node: usize,
        outcome: Outcome,
        mut condition: impl FnMut(usize) -> Result<bool, E>,
    ) -> Result<(), E> {
        self.states[node] = NodeState::Done(outcome);
        if outcome == Outcome::Failed
            && !failure_is_handled(self.graph.outgoing(node).map(|e| e.kind))
        {
            self.unhandled_failure = true;
            if self.error_handling == ErrorHandling::Stop {
                self.cancel_unstarted();
                return Ok(());
            }
        }

        // Decide edges breadth-first; skipped nodes decide theirs (all dead) in turn.
        let mut ended = vec![(node, outcome)];
        while let Some((source, outcome)) = ended.pop() {
            let edges: Vec<(usize, usize, EdgeKind)> = self
                .graph
                .edges()
                .iter()
                .enumerate()
                .filter(|(_, e)| e.source == source)
                .map(|(i, e)| (i, e.target, e.kind))
                .collect();
            for (index, target, kind) in edges {
                let fires = edge_fires(kind, outcome, || condition(index))?;
                self.undecided[target] -= 1;
                self.fired[target] += usize::from(fires);
                if self.undecided[target] > 0 || self.states[target] != NodeState::Waiting {
                    continue;
                }
                match fate_when_decided(self.fired[target], self.enabled[target]) {
                    Fate::Run => self.states[target] = NodeState::Ready,
                    Fate::Skip => {
                        self.states[target] = NodeState::Done(Outcome::Skipped);
                        ended.push((target, Outcome::Skipped));
                    }
                }
            }
        }
        Ok(())
    }

    fn cancel_unstarted(&mut self) {
        for state in &mut self.states {
            if *state == NodeState::Waiting {
                *state = NodeState::Done(Outcome::Skipped);
            }
        }
    }

    /// Whether every node has ended (nodes that were ready when a stop cancelled the rest
    /// still count as running until they end).
    pub fn is_finished(&self) -> bool {
        self.states.iter().all(|s| matches!(s, NodeState::Done(_)))
    }

    /// Whether some failure was not handled by an error edge.
    pub fn has_unhandled_failure(&self) -> bool {
        self.unhandled_failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{EdgeSpec, NodeKind, NodeSpec};

    fn graph(nodes: &[(&str, NodeKind)], edges: &[(&str, &str, EdgeKind)]) -> WorkflowGraph {
        let nodes = nodes
            .iter()
            .map(|(n, k)| NodeSpec {
                name: (*n).into(),
                kind: *k,
            })
            .collect();
        let edges: Vec<EdgeSpec> = edges
            .iter()
            .map(|(s, t, k)| EdgeSpec {
                source: (*s).into(),
                target: (*t).into(),
                kind: *k,
            })
            .collect();
        WorkflowGraph::build(nodes, &edges).unwrap()
    }

    fn always(_: usize) -> Result<bool, ()> {
        Ok(true)
    }

    use EdgeKind::{Conditional, Default as Plain, Error};
    use NodeKind::{Action, Condition, Trigger};

    #[test]
    fn a_chain_runs_node_after_node() {
        let g = graph(
            &[("t", Trigger), ("a", Action), ("b", Action)],
            &[("t", "a", Plain), ("a", "b", Plain)],
        );
        let mut p = Progress::start(&g, vec![true; 3], ErrorHandling::Stop);

        assert_eq!(p.ready(), [0]);
        p.finish(0, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [1]);
        p.finish(1, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [2]);
        p.finish(2, Outcome::Succeeded, always).unwrap();

        assert!(p.is_finished());
        assert!(!p.has_unhandled_failure());
    }

    #[test]
    fn a_join_waits_for_every_branch() {
        let g = graph(
            &[
                ("t", Trigger),
                ("a", Action),
                ("b", Action),
                ("join", Action),
            ],
            &[
                ("t", "a", Plain),
                ("t", "b", Plain),
                ("a", "join", Plain),
                ("b", "join", Plain),
            ],
        );
        let mut p = Progress::start(&g, vec![true; 4], ErrorHandling::Stop);

        p.finish(0, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [1, 2]);
        p.finish(1, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [2], "the join must wait for b");
        p.finish(2, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [3]);
    }

    #[test]
    fn an_untaken_branch_is_skipped_and_the_join_after_it_still_fires() {
        let g = graph(
            &[
                ("t", Trigger),
                ("if", Condition),
                ("yes", Action),
                ("no", Action),
                ("after_no", Action),
                ("join", Action),
            ],
            &[
                ("t", "if", Plain),
                ("if", "yes", Conditional),
                ("if", "no", Conditional),
                ("no", "after_no", Plain),
                ("yes", "join", Plain),
                ("after_no", "join", Plain),
            ],
        );
        let mut p = Progress::start(&g, vec![true; 6], ErrorHandling::Stop);
        // Edge 1 (if → yes) holds, edge 2 (if → no) does not.
        let branch = |edge: usize| Ok::<_, ()>(edge == 1);

        p.finish(0, Outcome::Succeeded, branch).unwrap();
        p.finish(1, Outcome::Succeeded, branch).unwrap();
        assert_eq!(p.ready(), [2]);
        assert_eq!(p.states()[3], NodeState::Done(Outcome::Skipped));
        assert_eq!(
            p.states()[4],
            NodeState::Done(Outcome::Skipped),
            "skipping propagates"
        );
        p.finish(2, Outcome::Succeeded, branch).unwrap();

        assert_eq!(p.ready(), [5], "the join fires on the taken branch");
    }

    #[test]
    fn an_error_edge_handles_a_failure_and_the_execution_can_succeed() {
        let g = graph(
            &[
                ("t", Trigger),
                ("call", Action),
                ("next", Action),
                ("alert", Action),
            ],
            &[
                ("t", "call", Plain),
                ("call", "next", Plain),
                ("call", "alert", Error),
            ],
        );
        let mut p = Progress::start(&g, vec![true; 4], ErrorHandling::Stop);

        p.finish(0, Outcome::Succeeded, always).unwrap();
        p.finish(1, Outcome::Failed, always).unwrap();
        assert_eq!(p.ready(), [3], "only the error branch runs");
        assert_eq!(p.states()[2], NodeState::Done(Outcome::Skipped));
        p.finish(3, Outcome::Succeeded, always).unwrap();

        assert!(p.is_finished());
        assert!(!p.has_unhandled_failure());
    }

    #[test]
    fn error_edges_stay_dead_when_the_source_succeeds() {
        let g = graph(
            &[("t", Trigger), ("call", Action), ("alert", Action)],
            &[("t", "call", Plain), ("call", "alert", Error)],
        );
        let mut p = Progress::start(&g, vec![true; 3], ErrorHandling::Stop);

        p.finish(0, Outcome::Succeeded, always).unwrap();
        p.finish(1, Outcome::Succeeded, always).unwrap();

        assert_eq!(p.states()[2], NodeState::Done(Outcome::Skipped));
        assert!(p.is_finished());
    }

    #[test]
    fn stop_cancels_what_has_not_started_but_lets_running_nodes_end() {
        let g = graph(
            &[
                ("t", Trigger),
                ("a", Action),
                ("b", Action),
                ("after_a", Action),
                ("after_b", Action),
            ],
            &[
                ("t", "a", Plain),
                ("t", "b", Plain),
                ("a", "after_a", Plain),
                ("b", "after_b", Plain),
            ],
        );
        let mut p = Progress::start(&g, vec![true; 5], ErrorHandling::Stop);

        p.finish(0, Outcome::Succeeded, always).unwrap();
        p.finish(1, Outcome::Failed, always).unwrap();

        assert!(p.has_unhandled_failure());
        assert_eq!(p.states()[3], NodeState::Done(Outcome::Skipped));
        assert_eq!(p.states()[4], NodeState::Done(Outcome::Skipped));
        assert_eq!(p.states()[2], NodeState::Ready, "b was already running");
        assert!(!p.is_finished());
    }

    #[test]
    fn continue_lets_other_branches_run_and_still_records_the_failure() {
        let g = graph(
            &[
                ("t", Trigger),
                ("a", Action),
                ("b", Action),
                ("after_b", Action),
            ],
            &[
                ("t", "a", Plain),
                ("t", "b", Plain),
                ("b", "after_b", Plain),
            ],
        );
        let mut p = Progress::start(&g, vec![true; 4], ErrorHandling::Continue);

        p.finish(0, Outcome::Succeeded, always).unwrap();
        p.finish(1, Outcome::Failed, always).unwrap();
        p.finish(2, Outcome::Succeeded, always).unwrap();
        assert_eq!(p.ready(), [3]);
        p.finish(3, Outcome::Succeeded, always).unwrap();

        assert!(p.is_finished());
        assert!(p.has_unhandled_failure());
    }

    #[test]
    fn a_disabled_node_is_skipped_with_what_follows_it() {
        let g = graph(
            &[("t", Trigger), ("off", Action), ("b", Action)],
            &[("t", "off", Plain), ("off", "b", Plain)],
        );
        let mut p = Progress::start(&g, vec![true, false, true], ErrorHandling::Stop);

        p.finish(0, Outcome::Succeeded, always).unwrap();

        assert_eq!(p.states()[1], NodeState::Done(Outcome::Skipped));
        assert_eq!(p.states()[2], NodeState::Done(Outcome::Skipped));
        assert!(p.is_finished());
    }

    #[test]
    fn a_condition_error_is_passed_to_the_caller() {
        let g = graph(&[("t", Trigger), ("a", Action)], &[("t", "a", Conditional)]);
        let mut p = Progress::start(&g, vec![true; 2], ErrorHandling::Stop);

        let result = p.finish(0, Outcome::Succeeded, |_| Err("bad condition"));

        assert_eq!(result, Err("bad condition"));
    }
}
