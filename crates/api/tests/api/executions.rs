//! Reading an execution with its node runs.

use axum::http::StatusCode;
use quantumflow_storage::executions::{self, NewExecution, NewNodeRun};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{admin, create_workflow, get, post_json, problem_detail, send};

fn id(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_execution_shows_its_node_runs_without_its_snapshot() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let trigger_node = &workflow["nodes"][0];
    let execution = executions::insert(
        db.pool(),
        &NewExecution {
            workflow_id: id(&workflow["id"]),
            workflow_name: "Notify on signup",
            workflow_version: 1,
            trigger_type: "webhook",
            trigger_data: &json!({"headers": {"user-agent": "curl"}}),
            workflow_snapshot: &workflow,
            input_data: &json!({"username": "ada"}),
            triggered_by: None,
        },
    )
    .await
    .unwrap();
    let run = executions::insert_node_run(
        db.pool(),
        &NewNodeRun {
            execution_id: execution.id,
            node_id: id(&trigger_node["id"]),
            node_name: "signup",
            node_type: "trigger",
            max_retries: 2,
        },
    )
    .await
    .unwrap();

    let shown = send(&db, get(&format!("/api/v1/executions/{}", execution.id))).await;

    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let body = &shown.body;
    assert_eq!(body["id"], execution.id.to_string());
    assert_eq!(body["workflow_id"], workflow["id"]);
    assert_eq!(body["workflow_name"], "Notify on signup");
    assert_eq!(body["workflow_version"], 1);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["trigger_type"], "webhook");
    assert_eq!(
        body["trigger_data"],
        json!({"headers": {"user-agent": "curl"}})
    );
    assert_eq!(body["input_data"], json!({"username": "ada"}));
    assert_eq!(body["output_data"], json!({}));
    assert_eq!(body["error_message"], Value::Null);
    assert_eq!(body["completed_at"], Value::Null);
    assert!(body.get("workflow_snapshot").is_none(), "{body}");

    let runs = body["node_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{body}");
    assert_eq!(runs[0]["id"], run.id.to_string());
    assert_eq!(runs[0]["node_id"], trigger_node["id"]);
    assert_eq!(runs[0]["node_name"], "signup");
    assert_eq!(runs[0]["node_type"], "trigger");
    assert_eq!(runs[0]["status"], "pending");
    assert_eq!(runs[0]["retry_count"], 0);
    assert_eq!(runs[0]["output_data"], json!({}));
    assert_eq!(runs[0]["duration_ms"], Value::Null);
}

#[tokio::test]
async fn an_unknown_execution_is_a_404_problem() {
    let db = TestDb::new().await;
    admin(&db).await;

    let missing = send(
        &db,
        get("/api/v1/executions/01920a5c-5d4e-7c3a-9f1e-2b3c4d5e6f70"),
    )
    .await;

    let detail = problem_detail(&missing, StatusCode::NOT_FOUND);
    assert_eq!(detail, "execution not found");
}

#[tokio::test]
async fn an_execution_id_that_is_not_a_uuid_is_a_400_problem() {
    let db = TestDb::new().await;
    admin(&db).await;

    let refused = send(&db, get("/api/v1/executions/latest")).await;

    let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
    assert!(detail.contains("not a UUID"), "{detail}");
}

#[tokio::test]
async fn a_workflows_executions_page_newest_first_by_cursor_and_filter_by_status() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let start = format!(
        "/api/v1/workflows/{}/executions",
        workflow["id"].as_str().unwrap()
    );
    for n in 0..5 {
        let started = send(&db, post_json(&start, &json!({"n": n}))).await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    }
    sqlx::query("UPDATE executions SET status = 'failed' WHERE input_data->>'n' IN ('1', '3')")
        .execute(db.pool())
        .await
        .unwrap();
    let newest_first: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM executions ORDER BY created_at DESC, id DESC")
            .fetch_all(db.pool())
            .await
            .unwrap();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = format!("{start}?limit=2");
    loop {
        let page = send(&db, get(&path)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        for execution in page.body["executions"].as_array().unwrap() {
            assert_eq!(
                execution.get("node_runs"),
                None,
                "a listing carries node runs"
            );
            seen.push(execution["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("{start}?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let failed = send(&db, get(&format!("{start}?status=failed"))).await;

    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);
    let inputs: Vec<&Value> = failed.body["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["input_data"]["n"])
        .collect();
    assert_eq!(inputs, [&json!(3), &json!(1)]);
    assert_eq!(failed.body["next_cursor"], Value::Null);

    // A cursor resumes only the listing that gave it out.
    let first = send(&db, get(&format!("{start}?limit=2"))).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let elsewhere = send(
        &db,
        get(&format!("{start}?limit=2&status=failed&cursor={cursor}")),
    )
    .await;
    let detail = problem_detail(&elsewhere, StatusCode::BAD_REQUEST);
    assert!(detail.contains("same workflow and status"), "{detail}");
}

#[tokio::test]
async fn a_bad_listing_query_is_a_400_saying_what_to_fix() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let list = format!(
        "/api/v1/workflows/{}/executions",
        workflow["id"].as_str().unwrap()
    );

    for (query, expected) in [
        ("status=done", "done"),
        ("limit=0", "between 1 and 100"),
        ("limit=101", "between 1 and 100"),
        ("limit=ten", "limit"),
        ("cursor=yesterday", "pass `next_cursor` unchanged"),
        ("cursor=1.not-a-uuid", "pass `next_cursor` unchanged"),
        (
            "cursor=1.0190a4c2b5c47a3e8f1d2c3b4a596877.zz",
            "pass `next_cursor` unchanged",
        ),
        ("order=oldest", "order"),
    ] {
        let refused = send(&db, get(&format!("{list}?{query}"))).await;
        let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
        assert!(detail.contains(expected), "{query}: {detail}");
    }
}
