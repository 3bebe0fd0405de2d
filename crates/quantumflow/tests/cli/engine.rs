//! Executions end to end: a control plane and two worker processes on one test database, real
//! GitHub webhook payloads in, an http node posting summaries to a loopback receiver.

use std::net::SocketAddr;

use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::cluster::{Cluster, admin, finished};
use crate::receiver::Receiver;
use crate::support::send;

/// The GitHub events of the test data, with the file each payload is in.
const EVENTS: &[&str] = &["ping", "push", "issues", "pull_request", "release"];

fn summary_workflow(receiver: SocketAddr) -> Value {
    json!({
        "name": "GitHub activity to chat",
        "status": "active",
        "trigger_config": {"type": "webhook", "config": {"method": "POST", "path": "/webhook/github"}},
        "settings": {"retry_policy": {"max_retries": 2, "retry_delay": 1}},
        "nodes": [
            {"name": "github", "type": "trigger", "config": {}},
            {"name": "summarize", "type": "transform", "config": {"template": {
                "event": "{{trigger.headers['x-github-event']}}",
                "repository": "{{input.repository.full_name}}",
                "sender": "{{input.sender.login}}",
                "text": "{{trigger.headers['x-github-event']}} on {{input.repository.full_name}} by {{input.sender.login}}"
            }}},
            {"name": "notify", "type": "action", "config": {
                "connector": "http", "method": "POST",
                "url": format!("http://{receiver}/chat"),
                "body": {"text": "{{input.text}}", "repository": "{{input.repository}}"}
            }}
        ],
        "edges": [
            {"source": "github", "target": "summarize"},
            {"source": "summarize", "target": "notify"}
        ]
    })
}

#[tokio::test]
async fn github_webhooks_run_to_completion_across_two_workers() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start(200).await;
    let cluster = Cluster::start(&db).await;
    let (status, workflow) = send(
        cluster.api,
        "POST",
        "/api/v1/workflows",
        &[],
        Some(&summary_workflow(receiver.address)),
    )
    .await;
    assert_eq!(status, 201, "{workflow:#}");

    let mut executions = Vec::new();
    for event in EVENTS {
        let payload: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("tests/data/github/{event}.json")).unwrap(),
        )
        .unwrap();
        let headers = [
            ("X-GitHub-Event", *event),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ];
        let (status, accepted) = send(
            cluster.api,
            "POST",
            "/webhook/github",
            &headers,
            Some(&payload),
        )
        .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["execution_id"].as_str().unwrap().to_owned();
        assert_eq!(accepted["status_url"], format!("/api/v1/executions/{id}"));
        executions.push((event, payload, id));
    }

    for (event, payload, id) in &executions {
        let execution = finished(cluster.api, id).await;
        assert_eq!(execution["status"], "success", "{execution:#}");
        let runs = execution["node_runs"].as_array().unwrap();
        assert_eq!(runs.len(), 3);
        for run in runs {
            assert_eq!(run["status"], "success", "{run:#}");
            assert!(run["duration_ms"].as_i64().is_some(), "{run:#}");
        }
        let repository = payload["repository"]["full_name"].as_str().unwrap();
        let sender = payload["sender"]["login"].as_str().unwrap();
        let summary = runs.iter().find(|r| r["node_name"] == "summarize").unwrap();
        assert_eq!(
            summary["output_data"]["text"],
            format!("{event} on {repository} by {sender}")
        );
        assert_eq!(
            execution["trigger_data"]["headers"]["x-github-event"],
            **event
        );
        assert_eq!(execution["input_data"], *payload);
    }

    let received = receiver.received();
    let mut texts: Vec<String> = received
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    texts.sort();
    let mut expected: Vec<String> = executions
        .iter()
        .map(|(event, payload, _)| {
            format!(
                "{event} on {} by {}",
                payload["repository"]["full_name"].as_str().unwrap(),
                payload["sender"]["login"].as_str().unwrap()
            )
        })
        .collect();
    expected.sort();
    assert_eq!(texts, expected);
    assert!(
        received
            .iter()
            .all(|r| r.path == "/chat" && r.idempotency_key.is_some())
    );

    let id = workflow["id"].as_str().unwrap();
    let (_, workflow) = send(
        cluster.api,
        "GET",
        &format!("/api/v1/workflows/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(workflow["total_executions"], 5);
    assert_eq!(workflow["successful_executions"], 5);
    assert_eq!(workflow["failed_executions"], 0);
}

#[tokio::test]
async fn an_unknown_webhook_is_404_and_a_wrong_method_405() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start(200).await;
    let cluster = Cluster::start(&db).await;
    send(
        cluster.api,
        "POST",
        "/api/v1/workflows",
        &[],
        Some(&summary_workflow(receiver.address)),
    )
    .await;

    let (missing, problem) =
        send(cluster.api, "POST", "/webhook/nope", &[], Some(&json!({}))).await;
    let (wrong, _) = send(cluster.api, "PUT", "/webhook/github", &[], Some(&json!({}))).await;

    assert_eq!(missing, 404, "{problem}");
    assert_eq!(problem["status"], 404);
    assert_eq!(wrong, 405);
}
