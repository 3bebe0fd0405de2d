//! Graph semantics, retries, timeouts and exactly-once bookkeeping, each on a real control plane
//! and two worker processes.

use std::sync::Arc;
use std::time::Duration;

use quantumflow_queue::NodeRunJob;
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cluster::{
    Cluster, admin, create_workflow, execute, finished, finished_within, run, slack_connector,
};
use crate::receiver::Receiver;

async fn cluster(db: &TestDb) -> Cluster {
    admin(db).await;
    Cluster::start(db).await
}

fn workflow(settings: Value, nodes: Value, edges: Value) -> Value {
    let mut document = json!({
        "name": "flow under test",
        "status": "active",
        "trigger_config": {"type": "manual"},
    });
    document["settings"] = settings;
    document["nodes"] = nodes;
    document["edges"] = edges;
    document
}

fn statuses(execution: &Value) -> Vec<(String, String)> {
    let mut runs: Vec<(String, String)> = execution["node_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node_name"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    runs.sort();
    runs
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_fan_out_of_twenty_joins_back_into_one_node() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let mut nodes = vec![json!({"name": "start", "type": "trigger"})];
    let mut edges = Vec::new();
    for i in 0..20 {
        nodes.push(json!({"name": format!("branch{i}"), "type": "transform",
                          "config": {"template": {"branch": i, "seen": "{{input.value}}"}}}));
        edges.push(json!({"source": "start", "target": format!("branch{i}")}));
        edges.push(json!({"source": format!("branch{i}"), "target": "join"}));
    }
    nodes.push(json!({"name": "join", "type": "transform",
                      "config": {"template": {"count": "{{ input | length }}",
                                              "first": "{{input.branch0.seen}}"}}}));
    let id = create_workflow(
        cluster.api,
        &workflow(json!({}), json!(nodes), json!(edges)),
    )
    .await;

    let execution = finished(
        cluster.api,
        &execute(cluster.api, &id, &json!({"value": 7})).await,
    )
    .await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(execution["node_runs"].as_array().unwrap().len(), 22);
    assert!(statuses(&execution).iter().all(|(_, s)| s == "success"));
    assert_eq!(
        run(&execution, "join")["output_data"],
        json!({"count": 20, "first": 7})
    );
    assert_eq!(execution["output_data"], json!({"count": 20, "first": 7}));
}

#[tokio::test]
async fn a_chain_runs_under_the_queue_job_that_started_it() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "one", "type": "transform", "config": {"template": {"n": "{{input.n}}"}}},
        {"name": "two", "type": "transform",
         "config": {"template": {"n": "{{input.n}}", "two": true}}},
        {"name": "three", "type": "transform", "config": {"template": {"last": "{{input.n}}"}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "one"},
        {"source": "one", "target": "two"},
        {"source": "two", "target": "three"}
    ]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution = finished(
        cluster.api,
        &execute(cluster.api, &id, &json!({"n": 5})).await,
    )
    .await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let carriers: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT node_name, carrier_id FROM node_runs \
         WHERE execution_id = $1::uuid AND node_type <> 'trigger' ORDER BY node_name",
    )
    .bind(execution["id"].as_str().unwrap())
    .fetch_all(db.pool())
    .await
    .unwrap();
    let first: Uuid = run(&execution, "one")["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(jobs, 1, "one job for the whole chain");
    assert_eq!(
        carriers,
        [
            ("one".to_owned(), Some(first)),
            ("three".to_owned(), Some(first)),
            ("two".to_owned(), Some(first))
        ]
    );
    assert_eq!(
        run(&execution, "two")["output_data"],
        json!({"n": 5, "two": true})
    );
    assert_eq!(execution["output_data"], json!({"last": 5}));
    assert!(
        ["one", "two", "three"]
            .iter()
            .all(|name| run(&execution, name)["duration_ms"].as_i64().is_some()),
        "{execution:#}"
    );
}

#[tokio::test]
async fn an_untaken_branch_is_skipped_and_the_join_after_it_still_fires() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "check", "type": "condition", "config": {"expression": "{{input.amount}} > 100"}},
        {"name": "big", "type": "transform", "config": {"template": {"size": "big"}}},
        {"name": "small", "type": "transform", "config": {"template": {"size": "small"}}},
        {"name": "after_small", "type": "transform", "config": {"template": {"x": 1}}},
        {"name": "join", "type": "transform",
         "config": {"template": {"joined": "{{input.big.size}}"}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "check"},
        {"source": "check", "target": "big", "type": "conditional",
         "condition": {"expression": "{{output.result}} == true"}},
        {"source": "check", "target": "small", "type": "conditional",
         "condition": {"field": "{{output.result}}", "operator": "equals", "value": false}},
        {"source": "small", "target": "after_small"},
        {"source": "big", "target": "join"},
        {"source": "after_small", "target": "join"}
    ]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution = finished(
        cluster.api,
        &execute(cluster.api, &id, &json!({"amount": 500})).await,
    )
    .await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        statuses(&execution),
        pairs(&[
            ("start", "success"),
            ("check", "success"),
            ("big", "success"),
            ("small", "skipped"),
            ("after_small", "skipped"),
            ("join", "success")
        ])
    );
    assert_eq!(
        run(&execution, "join")["output_data"],
        json!({"joined": "big"})
    );
}

#[tokio::test]
async fn an_error_edge_handles_a_failure_and_the_execution_succeeds() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(400).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "call", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/reject", receiver.address)}},
        {"name": "next", "type": "transform", "config": {"template": {"x": 1}}},
        {"name": "alert", "type": "transform",
         "config": {"template": {"failed": "{{input.error.node}}",
                                 "why": "{{input.error.message}}"}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "call"},
        {"source": "call", "target": "next"},
        {"source": "call", "target": "alert", "type": "error"}
    ]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        statuses(&execution),
        pairs(&[
            ("start", "success"),
            ("call", "failed"),
            ("next", "skipped"),
            ("alert", "success")
        ])
    );
    let alert = &run(&execution, "alert")["output_data"];
    assert_eq!(alert["failed"], "call");
    assert!(alert["why"].as_str().unwrap().contains("400"), "{alert}");
    assert_eq!(
        run(&execution, "call")["retry_count"],
        0,
        "a 400 is not retried"
    );
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_unhandled_failure_fails_the_execution_and_cancels_what_has_not_started() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(404).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "call", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/missing", receiver.address)}},
        {"name": "next", "type": "transform", "config": {"template": {"x": 1}}}
    ]);
    let edges =
        json!([{"source": "start", "target": "call"}, {"source": "call", "target": "next"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;
    let (_, counters) = crate::support::send(
        cluster.api,
        "GET",
        &format!("/api/v1/workflows/{id}"),
        &[],
        None,
    )
    .await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    assert!(
        execution["error_message"]
            .as_str()
            .unwrap()
            .contains("\"call\" failed"),
        "{execution:#}"
    );
    assert_eq!(run(&execution, "next")["status"], "skipped");
    assert_eq!(
        (
            counters["total_executions"].clone(),
            counters["failed_executions"].clone()
        ),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn retries_follow_the_policy_and_are_spaced_by_the_queue() {
    let db = TestDb::new().await;
    // Fails the first two attempts of each request, then accepts.
    let receiver = Receiver::start_with(Arc::new(|_, seen| {
        (if seen < 2 { 503 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let cluster = cluster(&db).await;
    let settings = json!({"retry_policy": {"max_retries": 3, "retry_delay": 2}});
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "flaky", "type": "action",
         "config": {"connector": "http", "method": "POST",
                    "url": format!("http://{}/flaky", receiver.address),
                    "body": {"hello": "world"}}}
    ]);
    let edges = json!([{"source": "start", "target": "flaky"}]);
    let id = create_workflow(cluster.api, &workflow(settings, nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    let flaky = run(&execution, "flaky");
    assert_eq!(flaky["retry_count"], 2, "{flaky:#}");
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(
        received
            .windows(2)
            .all(|w| w[0].idempotency_key == w[1].idempotency_key)
    );

    // Each attempt was its own queue job; the database's claim times show the spacing. A retry
    // falls due 2 s after the failing attempt's transaction began, so a gap may fall a few
    // milliseconds short of 2 s, and the wake-up on time keeps it well under 3 s.
    let node_run = flaky["id"].as_str().unwrap();
    let jobs: Vec<(f64, f64, Option<String>)> = sqlx::query_as(
        "SELECT extract(epoch FROM run_at)::float8, extract(epoch FROM lock_at)::float8, lock_by \
         FROM apalis.jobs \
         WHERE convert_from(job, 'UTF8')::jsonb ->> 'node_run_id' = $1 ORDER BY lock_at",
    )
    .bind(node_run)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let claimed: Vec<f64> = jobs.iter().map(|j| j.1).collect();
    assert_eq!(claimed.len(), 3, "{jobs:?}");
    for gap in claimed.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            (1.9..=3.0).contains(&gap),
            "retry gap {gap} s, policy says 2 s: {claimed:?}"
        );
    }
}

#[tokio::test]
async fn a_node_past_its_timeout_fails_with_a_message_that_says_so() {
    let db = TestDb::new().await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (200, Duration::from_secs(5)))).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "slow", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/slow", receiver.address),
                    "timeout": 1, "retry_policy": {"max_retries": 0}}}
    ]);
    let edges = json!([{"source": "start", "target": "slow"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    let slow = run(&execution, "slow");
    assert!(
        slow["error_message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s"),
        "{slow:#}"
    );
    assert!(slow["duration_ms"].as_i64().unwrap() < 4000, "{slow:#}");
}

#[tokio::test]
async fn an_execution_past_its_timeout_fails_and_skips_the_rest() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "wait", "type": "delay", "config": {"seconds": 3}},
        {"name": "after", "type": "transform", "config": {"template": {"x": 1}}},
        {"name": "later", "type": "transform", "config": {"template": {"y": 2}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "wait"},
        {"source": "wait", "target": "after"},
        {"source": "after", "target": "later"}
    ]);
    let id = create_workflow(cluster.api, &workflow(json!({"timeout": 1}), nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    assert!(
        execution["error_message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s"),
        "{execution:#}"
    );
    assert_eq!(run(&execution, "wait")["status"], "success");
    assert_eq!(run(&execution, "after")["status"], "failed");
    assert_eq!(run(&execution, "later")["status"], "skipped");
}

#[tokio::test]
async fn a_job_delivered_again_changes_nothing() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(200).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "shape", "type": "transform", "config": {"template": {"n": "{{input.n}}"}}},
        {"name": "send", "type": "action",
         "config": {"connector": "http", "method": "POST",
                    "url": format!("http://{}/once", receiver.address),
                    "body": "{{input}}"}}
    ]);
    let edges =
        json!([{"source": "start", "target": "shape"}, {"source": "shape", "target": "send"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;
    let execution_id = execute(cluster.api, &id, &json!({"n": 1})).await;
    let before = finished(cluster.api, &execution_id).await;

    // Deliver the middle node's job again, as the queue may after a worker is presumed dead.
    let job = NodeRunJob {
        execution_id: execution_id.parse().unwrap(),
        node_run_id: run(&before, "shape")["id"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap(),
    };
    let mut conn = db.pool().acquire().await.unwrap();
    quantumflow_queue::push_node_runs(&mut conn, &[(job, Duration::ZERO)])
        .await
        .unwrap();
    drop(conn);
    let drained = async {
        loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM apalis.jobs WHERE status NOT IN ('Done', 'Failed', 'Killed')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .expect("the duplicate job ran");
    let after = finished(cluster.api, &execution_id).await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM node_runs WHERE execution_id = $1::uuid")
            .bind(&execution_id)
            .fetch_one(db.pool())
            .await
            .unwrap();

    assert_eq!(after["status"], "success");
    assert_eq!(
        after["node_runs"], before["node_runs"],
        "a duplicate delivery rewrote a node run"
    );
    assert_eq!(rows, 3);
    assert_eq!(receiver.received().len(), 1, "the successor ran twice");
}

#[tokio::test]
async fn two_hundred_concurrent_executions_keep_the_counters_exact() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "double", "type": "transform", "config": {"template": {"n": "{{ input.n * 2 }}"}}}
    ]);
    let edges = json!([{"source": "start", "target": "double"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let mut started = tokio::task::JoinSet::new();
    for n in 0..200 {
        let (api, id) = (cluster.api, id.clone());
        started.spawn(async move { (n, execute(api, &id, &json!({"n": n})).await) });
    }
    let mut executions = Vec::new();
    while let Some(joined) = started.join_next().await {
        executions.push(joined.unwrap());
    }
    for (n, execution) in &executions {
        let execution = finished(cluster.api, execution).await;
        assert_eq!(execution["status"], "success", "{execution:#}");
        assert_eq!(execution["output_data"], json!({"n": n * 2}));
    }
    let (_, workflow) = crate::support::send(
        cluster.api,
        "GET",
        &format!("/api/v1/workflows/{id}"),
        &[],
        None,
    )
    .await;

    assert_eq!(workflow["total_executions"], 200);
    assert_eq!(workflow["successful_executions"], 200);
    assert_eq!(workflow["failed_executions"], 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM node_runs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, 400);
    // The row counts executions as they end, each under exactly one final status.
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflows WHERE total_executions <> successful_executions \
         + failed_executions + cancelled_executions",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(broken, 0);
}

#[tokio::test]
async fn jobs_queued_in_bursts_run_at_once_not_at_the_next_heartbeat() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "echo", "type": "transform", "config": {"template": {"n": "{{ input.n }}"}}}
    ]);
    let edges = json!([{"source": "start", "target": "echo"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    // Short bursts, each followed by silence: a job whose wake-up is lost (its notification
    // raced a fetch that missed it, or nobody was listening) has no later job to bring a
    // worker back, and would wait for a heartbeat (15 s) instead of the milliseconds it takes.
    for burst in 0..40 {
        let mut started = tokio::task::JoinSet::new();
        for n in 0..6 {
            let (api, id) = (cluster.api, id.clone());
            started.spawn(async move { execute(api, &id, &json!({"n": n})).await });
        }
        started.join_all().await;
        let waiting = std::time::Instant::now();
        loop {
            let unfinished: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM executions WHERE status IN ('pending', 'running')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            if unfinished == 0 {
                break;
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(5),
                "burst {burst}: {unfinished} executions still waiting after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_worker_killed_mid_node_has_its_work_finished_elsewhere() {
    let db = TestDb::new().await;
    admin(&db).await;
    // The first request hangs long enough for its worker to be killed; later ones answer.
    let receiver = Receiver::start_with(Arc::new(|_, seen| {
        (
            200,
            if seen == 0 {
                Duration::from_secs(300)
            } else {
                Duration::ZERO
            },
        )
    }))
    .await;
    let mut cluster = Cluster::with_workers(&db, 1).await;
    // `call` follows `prep`, so the worker runs it straight after `prep` without a queue job
    // of its own: what is recovered is the job that started the chain.
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "prep", "type": "transform", "config": {"template": {"ready": true}}},
        {"name": "call", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/hang", receiver.address),
                    "timeout": 600}},
        {"name": "after", "type": "transform", "config": {"template": {"done": true}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "prep"},
        {"source": "prep", "target": "call"},
        {"source": "call", "target": "after"}
    ]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;
    let execution_id = execute(cluster.api, &id, &json!({})).await;

    // Kill the only worker while the node is in flight, then bring up a new one.
    receiver.wait_for_requests(1).await;
    cluster.kill(1);
    cluster.add_worker();

    // The dead worker's job is handed on once it has missed its heartbeats (about 60 to 75 s).
    let execution = finished_within(cluster.api, &execution_id, Duration::from_secs(120)).await;
    let replacement = cluster.admins[1];
    let (_, metrics) = crate::support::get(replacement, "/metrics").await.unwrap();
    let rescued =
        crate::metrics::Scrape::parse(&metrics).value("quantumflow_queue_jobs_rescued_total");
    let (_, counters) = crate::support::send(
        cluster.api,
        "GET",
        &format!("/api/v1/workflows/{id}"),
        &[],
        None,
    )
    .await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM node_runs WHERE execution_id = $1::uuid")
            .bind(&execution_id)
            .fetch_one(db.pool())
            .await
            .unwrap();

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        run(&execution, "call")["retry_count"],
        1,
        "the killed attempt counts"
    );
    assert_eq!(rows, 4);
    assert_eq!(
        rescued, 1.0,
        "the new worker rescued the dead one's job: {metrics}"
    );
    assert_eq!(run(&execution, "prep")["retry_count"], 0, "prep ran once");
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].idempotency_key, received[1].idempotency_key);
    assert_eq!(
        (
            counters["total_executions"].clone(),
            counters["successful_executions"].clone()
        ),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn scripts_and_slack_messages_run_from_the_snapshot() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(200).await;
    let cluster = cluster(&db).await;
    let slack = slack_connector(&db, &format!("http://{}/slack", receiver.address)).await;
    let nodes = json!([
        {"name": "signup", "type": "trigger"},
        {"name": "compose", "type": "transform", "config": {"script": concat!(
            "let output = #{ text: `New user: ${input.username} (${input.email})`, ",
            "n: input.seats * 2 };"
        )}},
        {"name": "post", "type": "action",
         "config": {"connector": "slack", "connector_id": slack,
                    "channel": "#signups", "message": "{{input.text}}"}}
    ]);
    let edges =
        json!([{"source": "signup", "target": "compose"}, {"source": "compose", "target": "post"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let input = json!({"username": "ada", "email": "ada@example.com", "seats": 21});
    let execution = finished(cluster.api, &execute(cluster.api, &id, &input).await).await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        run(&execution, "compose")["output_data"],
        json!({"text": "New user: ada (ada@example.com)", "n": 42})
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/slack");
    assert_eq!(
        received[0].body,
        json!({"text": "New user: ada (ada@example.com)", "channel": "#signups"})
    );
}

#[tokio::test]
async fn continue_lets_other_branches_finish_and_still_fails_the_execution() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(400).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "bad", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/bad", receiver.address)}},
        {"name": "good", "type": "transform", "config": {"template": {"ok": true}}},
        {"name": "after_good", "type": "transform",
         "config": {"template": {"still": "{{input.ok}}"}}}
    ]);
    let edges = json!([
        {"source": "start", "target": "bad"},
        {"source": "start", "target": "good"},
        {"source": "good", "target": "after_good"}
    ]);
    let settings = json!({"error_handling": "continue"});
    let id = create_workflow(cluster.api, &workflow(settings, nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    assert_eq!(run(&execution, "bad")["status"], "failed");
    assert_eq!(run(&execution, "after_good")["status"], "success");
    assert_eq!(
        run(&execution, "after_good")["output_data"],
        json!({"still": true})
    );
}

// Several threads: waiting for the worker to exit blocks this one, and the receiver must keep
// answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_worker_finish_its_node_before_it_exits() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (200, Duration::from_secs(2)))).await;
    let mut cluster = Cluster::with_workers(&db, 1).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "call", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/slow", receiver.address)}},
        {"name": "after", "type": "transform", "config": {"template": {"done": true}}}
    ]);
    let edges =
        json!([{"source": "start", "target": "call"}, {"source": "call", "target": "after"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;
    let execution_id = execute(cluster.api, &id, &json!({})).await;
    receiver.wait_for_requests(1).await;

    let exit = cluster.terminate(1);
    let state = |name: &'static str| {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT status, retry_count FROM node_runs \
             WHERE execution_id = $1::uuid AND node_name = $2",
        )
        .bind(&execution_id)
        .bind(name)
        .fetch_one(db.pool())
    };
    let call = state("call").await.unwrap();
    let after = state("after").await.unwrap();
    cluster.add_worker();
    let execution = finished(cluster.api, &execution_id).await;

    assert!(exit.success(), "{exit}");
    assert_eq!(
        call,
        ("success".to_owned(), 0),
        "the node in flight was finished before exit"
    );
    assert_eq!(
        after,
        ("pending".to_owned(), 0),
        "the rest of the chain was left to the queue"
    );
    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(receiver.received().len(), 1, "the node ran twice");
}

#[tokio::test]
async fn an_execution_deadline_stops_a_node_still_running() {
    let db = TestDb::new().await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (200, Duration::from_secs(20)))).await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "call", "type": "action",
         "config": {"connector": "http", "url": format!("http://{}/slow", receiver.address),
                    "timeout": 60}}
    ]);
    let edges = json!([{"source": "start", "target": "call"}]);
    let id = create_workflow(cluster.api, &workflow(json!({"timeout": 2}), nodes, edges)).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    assert!(
        execution["error_message"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 s"),
        "{execution:#}"
    );
    assert!(
        execution["duration_ms"].as_i64().unwrap() < 10_000,
        "{execution:#}"
    );
}

#[tokio::test]
async fn mappings_shape_a_nodes_input_and_output() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "greet", "type": "transform",
         "input_mapping": {"who": "{{input.user.name}}", "id": "{{execution.id}}"},
         "config": {"template": {"greeting": "hi {{input.who}}", "run": "{{input.id}}"}},
         "output_mapping": {"message": "{{output.greeting}}", "from": "{{input.who}}"}}
    ]);
    let edges = json!([{"source": "start", "target": "greet"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution_id = execute(cluster.api, &id, &json!({"user": {"name": "Ada"}})).await;
    let execution = finished(cluster.api, &execution_id).await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    let greet = run(&execution, "greet");
    assert_eq!(
        greet["output_data"],
        json!({"message": "hi Ada", "from": "Ada"})
    );
}

#[tokio::test]
async fn a_delay_holds_its_successor_back_through_the_queue() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "wait", "type": "delay", "config": {"seconds": 2}},
        {"name": "after", "type": "transform",
         "config": {"template": {"passed": "{{input.x}}",
                                 "from_start": "{{nodes.start.output.x}}"}}}
    ]);
    let edges =
        json!([{"source": "start", "target": "wait"}, {"source": "wait", "target": "after"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;

    let execution_id = execute(cluster.api, &id, &json!({"x": 5})).await;
    let execution = finished(cluster.api, &execution_id).await;
    let waited: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM a.started_at - w.completed_at)::float8 \
         FROM node_runs a JOIN node_runs w USING (execution_id) \
         WHERE a.execution_id = $1::uuid AND a.node_name = 'after' AND w.node_name = 'wait'",
    )
    .bind(&execution_id)
    .fetch_one(db.pool())
    .await
    .unwrap();

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        run(&execution, "after")["output_data"],
        json!({"passed": 5, "from_start": 5})
    );
    // The successor falls due 2 s after the transaction that recorded the delay began, a few
    // milliseconds before that transaction's completion time.
    assert!(
        (1.9..3.0).contains(&waited),
        "waited {waited} s for a 2 s delay"
    );
    assert!(
        run(&execution, "wait")["duration_ms"].as_i64().unwrap() < 1000,
        "the delay held a worker slot"
    );
}

#[tokio::test]
async fn big_integers_and_long_decimals_keep_every_digit_to_a_nodes_output() {
    let db = TestDb::new().await;
    let cluster = cluster(&db).await;
    let nodes = json!([
        {"name": "start", "type": "trigger"},
        {"name": "copy", "type": "transform",
         "config": {"template": {"big": "{{input.big}}", "long": "{{input.long}}"}}}
    ]);
    let edges = json!([{"source": "start", "target": "copy"}]);
    let id = create_workflow(cluster.api, &workflow(json!({}), nodes, edges)).await;
    let big = "123456789012345678901234567890";
    let long = "0.1000000000000000000000000000000000000001";
    let input: Value =
        serde_json::from_str(&format!(r#"{{"big": {big}, "long": {long}}}"#)).unwrap();

    let execution = finished(cluster.api, &execute(cluster.api, &id, &input).await).await;

    assert_eq!(execution["status"], "success", "{execution:#}");
    let output = &run(&execution, "copy")["output_data"];
    assert_eq!(output["big"].to_string(), big);
    assert_eq!(output["long"].to_string(), long);
    let stored: (String, String) = sqlx::query_as(
        "SELECT output_data->>'big', output_data->>'long' FROM node_runs WHERE node_name = 'copy'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(stored, (big.to_owned(), long.to_owned()));
}
