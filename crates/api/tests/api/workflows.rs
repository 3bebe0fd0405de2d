//! Creating workflows from one document, and reading them back.

use axum::http::{StatusCode, header};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{
    admin, create_workflow, document, get, post_json, post_raw, problem_detail, send, token_of,
    user, with_token,
};

const WORKFLOWS: &str = "/api/v1/workflows";

fn pointers(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect()
}

fn error_detail<'a>(body: &'a Value, pointer: &str) -> &'a str {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pointer"] == pointer)
        .and_then(|e| e["detail"].as_str())
        .unwrap_or_else(|| panic!("no error at {pointer}: {body}"))
}

#[tokio::test]
async fn a_created_workflow_reads_back_with_edges_named_by_their_nodes() {
    let db = TestDb::new().await;
    let owner = admin(&db).await;

    let created = send(&db, post_json(WORKFLOWS, &document())).await;
    let location = created.header(header::LOCATION).unwrap().to_owned();
    let read = send(&db, get(&location)).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let body = &created.body;
    assert_eq!(
        location,
        format!("{WORKFLOWS}/{}", body["id"].as_str().unwrap())
    );
    assert_eq!(body["name"], "Notify on signup");
    assert_eq!(body["status"], "active");
    assert_eq!(body["version"], 1);
    assert_eq!(body["owner_id"], owner.id.to_string());
    assert_eq!(body["total_executions"], 0);
    assert_eq!(body["last_execution_at"], Value::Null);
    assert_eq!(body["trigger_config"], document()["trigger_config"]);
    assert_eq!(body["settings"], document()["settings"]);

    let nodes = body["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["signup", "fetch", "notify", "report"]);
    assert_eq!(nodes[0]["position"], json!({"x": 0, "y": 0}));
    assert_eq!(
        nodes[1]["input_mapping"],
        json!({"user": "{{input.username}}"})
    );
    assert_eq!(nodes[3]["is_enabled"], false);

    let edges = body["edges"].as_array().unwrap();
    let ends: Vec<(&str, &str, &str)> = edges
        .iter()
        .map(|e| {
            let name = |field: &str| e[field].as_str().unwrap();
            (name("source"), name("target"), name("type"))
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("signup", "fetch", "default"),
            ("fetch", "notify", "conditional"),
            ("fetch", "report", "error"),
        ]
    );
    assert_eq!(edges[1]["label"], "found");
    assert_eq!(edges[1]["source_node_id"], nodes[1]["id"]);
    assert_eq!(edges[1]["target_node_id"], nodes[2]["id"]);
    assert!(edges.iter().all(|e| e["id"].is_string()), "{body}");

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, created.body);
}

#[tokio::test]
async fn a_workflow_without_a_status_is_created_as_a_draft() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc.as_object_mut().unwrap().remove("status");

    let created = send(&db, post_json(WORKFLOWS, &doc)).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["status"], "draft");
}

#[tokio::test]
async fn every_problem_in_a_document_is_reported_at_once_with_its_pointer() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["trigger_config"]["config"]["path"] = json!("/hooks/signup");
    doc["settings"]["retry_policy"] = json!({"max_retry": 3});
    doc["nodes"][1]["type"] = json!("http_request");
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "again", "type": "trigger"}));
    doc["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "notify", "target": "ghost"}));

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    let detail = problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("5 invalid parts"), "{detail}");
    assert_eq!(
        pointers(&refused.body),
        [
            "/trigger_config/config/path",
            "/settings/retry_policy",
            "/nodes/1/type",
            "/nodes/4/type",
            "/edges/3/target",
        ]
    );
    let body = &refused.body;
    assert!(error_detail(body, "/settings/retry_policy").contains("max_retry"));
    assert!(error_detail(body, "/nodes/1/type").contains("\"http_request\""));
    assert!(error_detail(body, "/nodes/4/type").contains("second trigger"));
    assert!(error_detail(body, "/edges/3/target").contains("\"ghost\""));
}

#[tokio::test]
async fn names_status_trigger_and_settings_are_each_checked() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["name"] = json!("  ");
    doc["status"] = json!("archived");
    doc["trigger_config"]["config"]["method"] = json!("post");
    doc["settings"]["error_handling"] = json!("ignore");
    doc["settings"]["timeout"] = json!(0);
    doc["nodes"][1]["config"]["retry_policy"] = json!({"max_retries": -1});
    doc["edges"][1]["label"] = json!("x".repeat(101));

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        pointers(&refused.body),
        [
            "/name",
            "/status",
            "/trigger_config/config/method",
            "/settings/error_handling",
            "/settings/timeout",
            "/nodes/1/config/retry_policy",
            "/edges/1/label",
        ]
    );
}

#[tokio::test]
async fn a_delay_or_timeout_out_of_range_is_refused_when_written_not_when_it_runs() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["nodes"][1]["config"]["timeout"] = json!(8 * 24 * 3600);
    let delays = [
        json!(1e18),
        json!(0),
        json!(-5),
        json!(true),
        json!("{{input.wait}}"),
    ];
    for (i, seconds) in delays.iter().enumerate() {
        let name = format!("wait{i}");
        doc["nodes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "type": "delay", "config": {"seconds": seconds}}));
        doc["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"source": "signup", "target": name}));
    }

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    // The template is left for the worker: its value is known only when the node runs.
    assert_eq!(
        pointers(&refused.body),
        [
            "/nodes/1/config/timeout",
            "/nodes/4/config/seconds",
            "/nodes/5/config/seconds",
            "/nodes/6/config/seconds",
            "/nodes/7/config/seconds",
        ]
    );
    let detail = error_detail(&refused.body, "/nodes/4/config/seconds");
    assert!(detail.contains("at most 604800 (a week)"), "{detail}");
}

#[tokio::test]
async fn an_unknown_trigger_type_is_refused() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["trigger_config"] = json!({"type": "email", "config": {}});

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(pointers(&refused.body), ["/trigger_config/type"]);
}

#[tokio::test]
async fn malformed_json_is_a_400_problem_saying_what_is_wrong() {
    let db = TestDb::new().await;
    admin(&db).await;

    let refused = send(
        &db,
        post_raw(WORKFLOWS, "application/json", r#"{"name": "x",,}"#),
    )
    .await;

    let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
    assert!(
        detail.contains("parse the request body as JSON"),
        "{detail}"
    );
    assert!(detail.contains("line 1 column"), "{detail}");
}

#[tokio::test]
async fn an_unknown_field_is_a_400_problem_naming_it_and_where_it_is() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["nodes"][2]["colour"] = json!("blue");

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
    assert!(detail.contains("nodes[2]"), "{detail}");
    assert!(detail.contains("unknown field `colour`"), "{detail}");
}

#[tokio::test]
async fn a_config_that_is_not_an_object_is_a_400_problem() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["nodes"][0]["config"] = json!("webhook");

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
    assert!(detail.contains("nodes[0].config"), "{detail}");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_a_415_problem() {
    let db = TestDb::new().await;
    admin(&db).await;

    let refused = send(
        &db,
        post_raw(WORKFLOWS, "text/plain", &document().to_string()),
    )
    .await;

    let detail = problem_detail(&refused, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(detail.contains("application/json"), "{detail}");
}

#[tokio::test]
async fn a_body_beyond_the_size_limit_is_a_413_problem() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut doc = document();
    doc["description"] = json!("x".repeat(3 << 20));

    let refused = send(&db, post_json(WORKFLOWS, &doc)).await;

    problem_detail(&refused, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_second_active_workflow_on_one_webhook_route_is_a_conflict_naming_the_route() {
    let db = TestDb::new().await;
    admin(&db).await;
    create_workflow(&db).await;

    let refused = send(&db, post_json(WORKFLOWS, &document())).await;

    let detail = problem_detail(&refused, StatusCode::CONFLICT);
    assert!(detail.contains("POST /webhook/signup"), "{detail}");
}

#[tokio::test]
async fn an_unknown_workflow_is_a_404_problem() {
    let db = TestDb::new().await;
    admin(&db).await;

    let missing = send(
        &db,
        get("/api/v1/workflows/01920a5c-5d4e-7c3a-9f1e-2b3c4d5e6f70"),
    )
    .await;

    let detail = problem_detail(&missing, StatusCode::NOT_FOUND);
    assert_eq!(detail, "workflow not found");
}

#[tokio::test]
async fn a_workflow_id_that_is_not_a_uuid_is_a_400_problem() {
    let db = TestDb::new().await;
    admin(&db).await;

    let refused = send(&db, get("/api/v1/workflows/new-user")).await;

    let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
    assert!(detail.contains("\"new-user\""), "{detail}");
    assert!(detail.contains("not a UUID"), "{detail}");
}

#[tokio::test]
async fn a_workflow_moves_through_its_lifecycle_and_only_an_active_one_takes_webhooks() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut draft = document();
    draft["status"] = json!("draft");
    let created = send(&db, post_json(WORKFLOWS, &draft)).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let webhook = || post_json("/webhook/signup", &json!({"username": "ada"}));
    let to = |action: &str| post_json(&format!("{WORKFLOWS}/{id}/{action}"), &json!({}));

    let mut statuses = Vec::new();
    for (action, expected) in [
        ("pause", StatusCode::CONFLICT),
        ("activate", StatusCode::OK),
        ("activate", StatusCode::OK),
        ("pause", StatusCode::OK),
        ("activate", StatusCode::OK),
        ("archive", StatusCode::OK),
        ("activate", StatusCode::CONFLICT),
        ("pause", StatusCode::CONFLICT),
    ] {
        let moved = send(&db, to(action)).await;
        assert_eq!(moved.status, expected, "{action}: {}", moved.body);
        let shown = send(&db, get(&format!("{WORKFLOWS}/{id}"))).await;
        let status = shown.body["status"].as_str().unwrap().to_owned();
        let accepted = send(&db, webhook()).await.status == StatusCode::ACCEPTED;
        statuses.push((status, accepted));
    }

    let expected = [
        ("draft", false),
        ("active", true),
        ("active", true),
        ("paused", false),
        ("active", true),
        ("archived", false),
        ("archived", false),
        ("archived", false),
    ];
    let statuses: Vec<(&str, bool)> = statuses.iter().map(|(s, a)| (s.as_str(), *a)).collect();
    assert_eq!(statuses, expected);
}

#[tokio::test]
async fn activating_a_second_workflow_on_a_taken_route_is_a_conflict_and_changes_nothing() {
    let db = TestDb::new().await;
    admin(&db).await;
    create_workflow(&db).await;
    let mut twin = document();
    twin["status"] = json!("draft");
    let created = send(&db, post_json(WORKFLOWS, &twin)).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    let refused = send(
        &db,
        post_json(&format!("{WORKFLOWS}/{id}/activate"), &json!({})),
    )
    .await;

    let detail = problem_detail(&refused, StatusCode::CONFLICT);
    assert!(detail.contains("POST /webhook/signup"), "{detail}");
    let shown = send(&db, get(&format!("{WORKFLOWS}/{id}"))).await;
    assert_eq!(shown.body["status"], "draft");
}

#[tokio::test]
async fn deleting_a_workflow_removes_it_for_its_owner_only() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let path = format!("{WORKFLOWS}/{}", workflow["id"].as_str().unwrap());
    let other = user(&db, "mallory", false).await;
    let token = token_of(&db, &other).await;
    let delete = || {
        axum::http::Request::delete(&path)
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let refused = send(&db, with_token(delete(), &token)).await;
    let still_there = send(&db, get(&path)).await.status;
    let deleted = send(&db, delete()).await.status;
    let gone = send(&db, get(&path)).await;
    let again = send(&db, delete()).await;

    problem_detail(&refused, StatusCode::NOT_FOUND);
    assert_eq!(still_there, StatusCode::OK);
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    problem_detail(&gone, StatusCode::NOT_FOUND);
    problem_detail(&again, StatusCode::NOT_FOUND);
    let accepted = send(&db, post_json("/webhook/signup", &json!({}))).await;
    problem_detail(&accepted, StatusCode::NOT_FOUND);
}
