//! The workflows the harness runs, as the documents `POST /api/v1/workflows` takes, and the
//! webhook requests that start them.
//!
//! Node names sort in chain order (`n00` is the trigger, `n01` the first node after it), so
//! per-hop latency can be read from `node_runs` by ordering on the name alone.

use serde_json::{Value, json};

/// The GitHub deliveries of the `github` scenario: event name and payload.
const GITHUB_PAYLOADS: [(&str, &[u8]); 5] = [
    ("ping", include_bytes!("../fixtures/github/ping.json")),
    ("push", include_bytes!("../fixtures/github/push.json")),
    (
        "release",
        include_bytes!("../fixtures/github/release-published.json"),
    ),
    (
        "issues",
        include_bytes!("../fixtures/github/issues-opened.json"),
    ),
    (
        "pull_request",
        include_bytes!("../fixtures/github/pull_request-opened.json"),
    ),
];

/// Nodes in the chain of `chain10` and `flaky20`.
const CHAIN_LENGTH: usize = 10;

/// Parallel branches of `fanout100`.
const FANOUT_WIDTH: usize = 100;

/// The nodes of `flaky20` that call the receiver's `/flaky` (two of ten).
const FLAKY_NODES: [usize; 2] = [3, 7];

/// A workflow shape the load modes can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// A trigger with no successors: the webhook accept path alone.
    Ingest,
    /// Trigger → one no-op transform.
    OneNode,
    /// Trigger → ten no-op transforms in a line.
    #[value(name = "chain10")]
    Chain10,
    /// Trigger → A → 100 parallel transforms → a join.
    #[value(name = "fanout100")]
    Fanout100,
    /// A ten-node chain in which two http nodes fail once with 503 and succeed on the retry.
    #[value(name = "flaky20")]
    Flaky20,
    /// `one-node` started by real GitHub deliveries of 7–28 kB.
    Github,
}

impl Scenario {
    /// Every scenario, in the order reports list them.
    pub(crate) const ALL: [Self; 6] = [
        Self::Ingest,
        Self::OneNode,
        Self::Chain10,
        Self::Fanout100,
        Self::Flaky20,
        Self::Github,
    ];

    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::OneNode => "one-node",
            Self::Chain10 => "chain10",
            Self::Fanout100 => "fanout100",
            Self::Flaky20 => "flaky20",
            Self::Github => "github",
        }
    }

    /// The webhook route the scenario's workflow listens on.
    pub(crate) fn webhook_path(self) -> String {
        format!("/webhook/qf-load/{}", self.name())
    }

    /// Node runs a worker executes for one execution, retries not counted.
    pub(crate) fn node_runs_per_execution(self) -> u64 {
        match self {
            Self::Ingest => 0,
            Self::OneNode | Self::Github => 1,
            Self::Chain10 | Self::Flaky20 => CHAIN_LENGTH as u64,
            Self::Fanout100 => FANOUT_WIDTH as u64 + 2,
        }
    }

    /// Whether the scenario is a line of nodes whose per-hop latency means something.
    pub(crate) fn is_chain(self) -> bool {
        matches!(self, Self::Chain10 | Self::Flaky20)
    }

    /// The workflow document. `receiver` is the loopback receiver's base URL, which the http
    /// nodes of `flaky20` call.
    pub(crate) fn document(self, receiver: &str) -> Value {
        let trigger = node("n00", "trigger", json!({}));
        let (nodes, edges) = match self {
            Self::Ingest => (vec![trigger], Vec::new()),
            Self::OneNode | Self::Github => {
                let nodes = vec![trigger, noop("n01")];
                (nodes, vec![edge("n00", "n01")])
            }
            Self::Chain10 => chain(trigger, CHAIN_LENGTH, 2, |name, _| noop(name)),
            Self::Flaky20 => chain(trigger, CHAIN_LENGTH, 2, |name, i| {
                if FLAKY_NODES.contains(&i) {
                    http_get(name, &format!("{receiver}/flaky"))
                } else {
                    noop(name)
                }
            }),
            Self::Fanout100 => fanout(trigger),
        };
        let settings = match self {
            // Retries right away: the point is the cost of a retry, not of waiting for it.
            Self::Flaky20 => json!({"retry_policy": {"max_retries": 3, "retry_delay": 0}}),
            _ => json!({}),
        };
        workflow(
            &format!("qf-load {}", self.name()),
            &self.webhook_path(),
            settings,
            nodes,
            edges,
        )
    }

    /// The `seq`-th webhook request of a run.
    pub(crate) fn request(self, seq: u64) -> WebhookRequest {
        match self {
            Self::Github => {
                let (event, payload) = GITHUB_PAYLOADS[seq as usize % GITHUB_PAYLOADS.len()];
                WebhookRequest {
                    body: payload.to_vec(),
                    github_event: Some(event),
                }
            }
            _ => WebhookRequest {
                body: small_payload(seq),
                github_event: None,
            },
        }
    }
}

/// A webhook delivery: a JSON body and, for GitHub deliveries, the event header.
#[derive(Debug, Clone)]
pub(crate) struct WebhookRequest {
    /// The JSON body.
    pub(crate) body: Vec<u8>,
    /// The `X-GitHub-Event` header's value.
    pub(crate) github_event: Option<&'static str>,
}

/// The Windmill-study shape: `tasks` http nodes in a line, each asking the receiver to answer
/// after `sleep_ms`, so every task takes about that long.
pub(crate) fn sequential_document(tasks: usize, sleep_ms: u64, receiver: &str) -> Value {
    let url = format!("{receiver}/sleep?ms={sleep_ms}");
    let trigger = node("n000", "trigger", json!({}));
    let (nodes, edges) = chain(trigger, tasks, 3, |name, _| http_get(name, &url));
    workflow(
        "qf-load sequential",
        &sequential_path(),
        json!({}),
        nodes,
        edges,
    )
}

/// The webhook route of the sequential workflow.
pub(crate) fn sequential_path() -> String {
    "/webhook/qf-load/sequential".to_owned()
}

/// About 200 bytes of JSON, like a typical small webhook.
fn small_payload(seq: u64) -> Vec<u8> {
    let body = json!({
        "seq": seq,
        "event": "order.created",
        "customer": {"id": seq % 1000, "tier": "gold", "country": "NL"},
        "items": [{"sku": "A-100", "qty": 2, "price": 1999}, {"sku": "B-7", "qty": 1, "price": 450}],
        "note": "sent by qf-load",
    });
    body.to_string().into_bytes()
}

fn workflow(
    name: &str,
    path: &str,
    settings: Value,
    nodes: Vec<Value>,
    edges: Vec<Value>,
) -> Value {
    let mut doc = json!({
        "name": name,
        "status": "active",
        "trigger_config": {"type": "webhook", "config": {"method": "POST", "path": path}},
    });
    doc["settings"] = settings;
    doc["nodes"] = Value::Array(nodes);
    doc["edges"] = Value::Array(edges);
    doc
}

fn node(name: &str, kind: &str, config: Value) -> Value {
    let mut node = json!({"name": name, "type": kind});
    node["config"] = config;
    node
}

/// A transform whose output is a constant: the cheapest node there is.
fn noop(name: &str) -> Value {
    node(name, "transform", json!({"template": {"ok": true}}))
}

fn http_get(name: &str, url: &str) -> Value {
    node(
        name,
        "action",
        json!({"connector": "http", "method": "GET", "url": url}),
    )
}

fn edge(source: &str, target: &str) -> Value {
    json!({"source": source, "target": target})
}

/// `trigger` followed by `length` nodes in a line, named `n` plus `digits` digits.
fn chain(
    trigger: Value,
    length: usize,
    digits: usize,
    make: impl Fn(&str, usize) -> Value,
) -> (Vec<Value>, Vec<Value>) {
    let name = |i: usize| format!("n{i:0digits$}");
    let mut nodes = vec![trigger];
    let mut edges = Vec::with_capacity(length);
    for i in 1..=length {
        nodes.push(make(&name(i), i));
        edges.push(edge(&name(i - 1), &name(i)));
    }
    (nodes, edges)
}

fn fanout(trigger: Value) -> (Vec<Value>, Vec<Value>) {
    let mut nodes = vec![trigger, noop("a")];
    let mut edges = vec![edge("n00", "a")];
    for i in 1..=FANOUT_WIDTH {
        let branch = format!("b{i:03}");
        nodes.push(noop(&branch));
        edges.push(edge("a", &branch));
        edges.push(edge(&branch, "join"));
    }
    nodes.push(node(
        "join",
        "transform",
        json!({"template": {"joined": FANOUT_WIDTH}}),
    ));
    (nodes, edges)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const RECEIVER: &str = "http://127.0.0.1:9";

    fn names(doc: &Value) -> Vec<String> {
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Checks what the API's validation would: one trigger, unique names, edges between
    /// known nodes.
    fn assert_well_formed(doc: &Value) {
        let text = serde_json::to_string(doc).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let names = names(&doc);
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate node names");
        let triggers = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "trigger")
            .count();
        assert_eq!(triggers, 1);
        for e in doc["edges"].as_array().unwrap() {
            assert!(unique.contains(&e["source"].as_str().unwrap().to_owned()));
            assert!(unique.contains(&e["target"].as_str().unwrap().to_owned()));
        }
        assert_eq!(doc["status"], "active");
        assert!(
            doc["trigger_config"]["config"]["path"]
                .as_str()
                .unwrap()
                .starts_with("/webhook/")
        );
    }

    #[test]
    fn every_scenario_document_is_well_formed_with_the_expected_size() {
        let expected = [
            (Scenario::Ingest, 1, 0),
            (Scenario::OneNode, 2, 1),
            (Scenario::Chain10, 11, 10),
            (Scenario::Fanout100, 103, 201),
            (Scenario::Flaky20, 11, 10),
            (Scenario::Github, 2, 1),
        ];
        for (scenario, nodes, edges) in expected {
            let doc = scenario.document(RECEIVER);

            assert_well_formed(&doc);
            assert_eq!(
                doc["nodes"].as_array().unwrap().len(),
                nodes,
                "{scenario:?}"
            );
            assert_eq!(
                doc["edges"].as_array().unwrap().len(),
                edges,
                "{scenario:?}"
            );
            assert_eq!(
                scenario.node_runs_per_execution() as usize,
                nodes - 1,
                "{scenario:?}"
            );
        }
    }

    #[test]
    fn chain_names_sort_in_chain_order() {
        let doc = Scenario::Chain10.document(RECEIVER);
        let names = names(&doc);
        let mut sorted = names.clone();
        sorted.sort();

        assert_eq!(names, sorted);
        assert_eq!(names.first().unwrap(), "n00");
        assert_eq!(names.last().unwrap(), "n10");
    }

    #[test]
    fn flaky20_calls_the_receiver_from_two_of_ten_nodes_and_retries_at_once() {
        let doc = Scenario::Flaky20.document(RECEIVER);
        let http: Vec<&Value> = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "action")
            .collect();

        assert_eq!(http.len(), 2);
        assert!(
            http.iter()
                .all(|n| n["config"]["url"] == format!("{RECEIVER}/flaky"))
        );
        assert_eq!(doc["settings"]["retry_policy"]["retry_delay"], 0);
    }

    #[test]
    fn the_sequential_document_has_one_http_task_per_requested_task() {
        let doc = sequential_document(400, 10, RECEIVER);
        let names = names(&doc);

        assert_well_formed(&doc);
        assert_eq!(names.len(), 401);
        assert_eq!(doc["edges"].as_array().unwrap().len(), 400);
        assert_eq!(names[400], "n400");
        assert_eq!(
            doc["nodes"][400]["config"]["url"],
            format!("{RECEIVER}/sleep?ms=10")
        );
    }

    #[test]
    fn requests_are_json_and_github_ones_rotate_through_every_event() {
        let small: Value = serde_json::from_slice(&Scenario::OneNode.request(7).body).unwrap();
        assert_eq!(small["seq"], 7);

        let events: HashSet<&str> = (0..5)
            .map(|i| Scenario::Github.request(i))
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap();
                r.github_event.unwrap()
            })
            .collect();
        assert_eq!(events.len(), 5);
    }
}
