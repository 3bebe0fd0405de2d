//! Triggers: what one accepted webhook or API call writes, and what a refused one does not.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{
    admin, counts, create_workflow, get, post_json, problem_detail, send, send_to,
};

#[tokio::test]
async fn a_webhook_writes_the_execution_its_node_runs_and_the_first_job_together() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let request = Request::post("/webhook/signup?source=site")
        .header(header::CONTENT_TYPE, "application/json")
        .header("authorization", "Bearer not-for-the-record")
        .header("x-request-id", "r-1")
        .body(Body::from(
            r#"{"username": "ada", "id": 123456789012345678901234567890}"#,
        ))
        .unwrap();

    let accepted = send(&db, request).await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.body["execution_id"].as_str().unwrap();
    assert_eq!(
        accepted.header(header::LOCATION),
        Some(&*format!("/api/v1/executions/{id}"))
    );
    // The workflow's row is shared by all its executions; a start does not write it.
    assert_eq!(counts(&db).await, (1, 4, 1, 0));
    let execution = send(&db, get(&format!("/api/v1/executions/{id}")))
        .await
        .body;
    assert_eq!(execution["status"], "running");
    assert_eq!(execution["trigger_type"], "webhook");
    assert_eq!(execution["workflow_id"], workflow["id"]);
    assert_eq!(
        execution["trigger_data"]["query"],
        json!({"source": "site"})
    );
    assert_eq!(execution["trigger_data"]["headers"]["x-request-id"], "r-1");
    assert!(
        execution["trigger_data"]["headers"]
            .get("authorization")
            .is_none()
    );
    assert_eq!(
        execution["input_data"]["id"].to_string(),
        "123456789012345678901234567890"
    );
    let trigger = execution["node_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node_name"] == "signup")
        .unwrap();
    assert_eq!(trigger["status"], "success");
    assert_eq!(trigger["output_data"], execution["input_data"]);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405_with_allow() {
    let db = TestDb::new().await;
    admin(&db).await;
    create_workflow(&db).await;

    let missing = send(&db, post_json("/webhook/nothing-here", &json!({}))).await;
    let wrong = send(
        &db,
        Request::put("/webhook/signup").body(Body::empty()).unwrap(),
    )
    .await;

    problem_detail(&missing, StatusCode::NOT_FOUND);
    problem_detail(&wrong, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header(header::ALLOW), Some("POST"));
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn paused_workflows_do_not_answer_webhooks_and_cannot_be_executed_by_id() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let id = workflow["id"].as_str().unwrap();
    sqlx::query("UPDATE workflows SET status = 'paused' WHERE id = $1::uuid")
        .bind(id)
        .execute(db.pool())
        .await
        .unwrap();

    let webhook = send(&db, post_json("/webhook/signup", &json!({}))).await;
    let by_id = send(
        &db,
        post_json(&format!("/api/v1/workflows/{id}/executions"), &json!({})),
    )
    .await;

    problem_detail(&webhook, StatusCode::NOT_FOUND);
    let detail = problem_detail(&by_id, StatusCode::CONFLICT);
    assert!(detail.contains("paused"), "{detail}");
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn an_api_call_starts_an_execution_with_its_body_as_input() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let id = workflow["id"].as_str().unwrap();

    let accepted = send(
        &db,
        post_json(
            &format!("/api/v1/workflows/{id}/executions"),
            &json!({"username": "bob"}),
        ),
    )
    .await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let execution_id = accepted.body["execution_id"].as_str().unwrap();
    let execution = send(&db, get(&format!("/api/v1/executions/{execution_id}")))
        .await
        .body;
    assert_eq!(execution["trigger_type"], "api");
    assert_eq!(execution["input_data"], json!({"username": "bob"}));
    let shown = send(&db, get(&format!("/api/v1/workflows/{id}")))
        .await
        .body;
    assert_eq!(shown["total_executions"], 1);
    assert!(shown["last_execution_at"].is_string());
}

#[tokio::test]
async fn an_execution_snapshots_the_workflow_as_changed_since_the_last_one() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let id: uuid::Uuid = workflow["id"].as_str().unwrap().parse().unwrap();
    // One application for every request, so its document cache lives across them.
    let app = quantumflow_api::router(quantumflow_api::AppState::new(db.pool().clone()));
    let start = || post_json("/webhook/signup", &json!({"username": "ada"}));
    let first = send_to(&app, start()).await;
    let cached = send_to(&app, start()).await;
    quantumflow_storage::workflows::set_setting(db.pool(), id, &["timeout"], &json!(90))
        .await
        .unwrap();
    let changed = send_to(&app, start()).await;

    assert_eq!(snapshot_timeout(&db, &first.body).await, 60);
    assert_eq!(snapshot_timeout(&db, &cached.body).await, 60);
    assert_eq!(snapshot_timeout(&db, &changed.body).await, 90);
}

/// The workflow timeout frozen in the snapshot of an accepted execution.
async fn snapshot_timeout(db: &TestDb, accepted: &Value) -> Value {
    let snapshot: Value =
        sqlx::query_scalar("SELECT workflow_snapshot FROM executions WHERE id = $1::uuid")
            .bind(accepted["execution_id"].as_str().unwrap())
            .fetch_one(db.pool())
            .await
            .unwrap();
    snapshot["workflow"]["settings"]["timeout"].clone()
}

#[tokio::test]
async fn webhooks_arriving_together_are_committed_together() {
    let db = TestDb::new().await;
    admin(&db).await;
    create_workflow(&db).await;
    let app = quantumflow_api::router(quantumflow_api::AppState::new(db.pool().clone()));
    const BURST: usize = 40;

    let requests = (0..BURST).map(|i| {
        let request = post_json("/webhook/signup", &json!({"username": format!("user{i}")}));
        send_to(&app, request)
    });
    let responses = futures_util::future::join_all(requests).await;

    for response in &responses {
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
    }
    // created_at is the transaction's start time, so executions written by one transaction
    // share it.
    let (executions, transactions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT created_at) FROM executions")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(executions, BURST as i64);
    assert!(
        transactions < BURST as i64 / 2,
        "{BURST} webhooks took {transactions} transactions"
    );
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let (_, node_runs, jobs, _) = counts(&db).await;
    assert_eq!((node_runs, jobs), (nodes * BURST as i64, BURST as i64));
}

#[tokio::test]
async fn a_start_that_cannot_be_written_fails_alone() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let id: uuid::Uuid = workflow["id"].as_str().unwrap().parse().unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let doc = quantumflow_storage::workflows::get_document(&mut conn, id)
        .await
        .unwrap();
    // The same document under an id no workflow has: its execution breaks a foreign key.
    let mut orphan = doc.clone();
    orphan.workflow.id = uuid::Uuid::now_v7();
    let starter = quantumflow_api::starter::Starter::spawn(db.pool());
    let trigger = |name: &str| quantumflow_engine::Trigger {
        trigger_type: "api",
        trigger_data: json!({}),
        input: json!({"username": name}),
        triggered_by: None,
    };
    let prepare = |doc, name| quantumflow_engine::Start::prepare(doc, trigger(name)).unwrap();

    let results = futures_util::future::join_all([
        starter.start(prepare(&doc, "ada"), None, None),
        starter.start(prepare(&orphan, "bob"), None, None),
        starter.start(prepare(&doc, "cy"), None, None),
    ])
    .await;

    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(results[1].is_err());
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let inputs: Vec<Value> =
        sqlx::query_scalar("SELECT input_data FROM executions ORDER BY input_data ->> 'username'")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        inputs,
        [json!({"username": "ada"}), json!({"username": "cy"})]
    );
}
