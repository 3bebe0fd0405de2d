//! Reading an execution with its node runs.

use axum::http::StatusCode;
use quantumflow_storage::executions::{self, NewExecution, NewNodeRun};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{admin, create_workflow, get, problem_detail, send};

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
