//! Replacing a workflow with a new document: in place for drafts, as a new version for active
//! workflows, never for retired versions.

use axum::http::{StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    admin, create_workflow, document, get, post_json, problem_detail, put_json, send, send_to,
};

const WORKFLOWS: &str = "/api/v1/workflows";

/// [`document`] with its `notify` node renamed `alert`, one more node, and a new timeout.
fn revised() -> Value {
    let mut doc = document();
    doc["name"] = json!("Notify on signup, revised");
    doc["settings"]["timeout"] = json!(120);
    doc["nodes"][2]["name"] = json!("alert");
    doc["edges"][1]["target"] = json!("alert");
    doc["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "audit", "type": "transform"}));
    doc["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "alert", "target": "audit"}));
    doc
}

fn node_names(body: &Value) -> Vec<&str> {
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect()
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The node names in the snapshot an execution runs from, and those of its node runs.
async fn ran_with(db: &TestDb, execution: &str) -> (Vec<String>, Vec<String>) {
    let id: Uuid = execution.parse().unwrap();
    let snapshot: Value =
        sqlx::query_scalar("SELECT workflow_snapshot FROM executions WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let runs: Vec<String> = sqlx::query_scalar(
        "SELECT n.name FROM node_runs AS r JOIN nodes AS n ON n.id = r.node_id \
         WHERE r.execution_id = $1 ORDER BY n.name",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut nodes: Vec<String> = snapshot["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    (nodes, runs)
}

#[tokio::test]
async fn replacing_a_draft_rewrites_it_in_place() {
    let db = TestDb::new().await;
    admin(&db).await;
    let mut draft = document();
    draft["status"] = json!("draft");
    let created = send(&db, post_json(WORKFLOWS, &draft)).await;
    let id = id_of(&created.body);
    let path = format!("{WORKFLOWS}/{id}");
    let mut edit = revised();
    edit.as_object_mut().unwrap().remove("status");

    let replaced = send(&db, put_json(&path, &edit)).await;
    let shown = send(&db, get(&path)).await;

    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.header(header::LOCATION), None);
    let body = &replaced.body;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["version"], 1);
    assert_eq!(body["status"], "draft");
    assert_eq!(body["parent_workflow_id"], Value::Null);
    assert_eq!(body["name"], "Notify on signup, revised");
    assert_eq!(body["settings"]["timeout"], 120);
    assert_eq!(
        node_names(body),
        ["signup", "fetch", "alert", "report", "audit"]
    );
    assert_eq!(body["edges"][3]["source"], "alert");
    assert_eq!(body["edges"][3]["target"], "audit");
    assert_ne!(body["updated_at"], created.body["updated_at"]);
    assert_eq!(shown.body, replaced.body);
    assert_eq!(count(&db, "SELECT count(*) FROM workflows").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM nodes").await, 5);
    assert_eq!(count(&db, "SELECT count(*) FROM edges").await, 4);
}

#[tokio::test]
async fn replacing_an_active_workflow_makes_a_new_version_that_takes_its_webhooks() {
    let db = TestDb::new().await;
    admin(&db).await;
    // One router for every request, so its document cache is exercised across the replace.
    let app = router(AppState::new(db.pool().clone()));
    let created = send_to(&app, post_json(WORKFLOWS, &document())).await;
    let old_id = id_of(&created.body);
    let webhook = || post_json("/webhook/signup", &json!({"username": "ada"}));
    let before = send_to(&app, webhook()).await;
    assert_eq!(before.status, StatusCode::ACCEPTED, "{}", before.body);

    let replaced = send_to(&app, put_json(&format!("{WORKFLOWS}/{old_id}"), &revised())).await;
    let after = send_to(&app, webhook()).await;
    let old = send_to(&app, get(&format!("{WORKFLOWS}/{old_id}"))).await;
    let listed = send_to(&app, get(WORKFLOWS)).await;

    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    let new = &replaced.body;
    let new_id = id_of(new);
    assert_ne!(new_id, old_id);
    assert_eq!(
        replaced.header(header::LOCATION),
        Some(&*format!("{WORKFLOWS}/{new_id}"))
    );
    assert_eq!(new["version"], 2);
    assert_eq!(new["parent_workflow_id"], old_id.as_str());
    assert_eq!(new["is_latest"], true);
    assert_eq!(new["status"], "active");
    assert_eq!(new["owner_id"], created.body["owner_id"]);
    assert_eq!(
        node_names(new),
        ["signup", "fetch", "alert", "report", "audit"]
    );
    assert_eq!(old.body["status"], "archived");
    assert_eq!(old.body["is_latest"], false);
    assert_eq!(
        node_names(&old.body),
        ["signup", "fetch", "notify", "report"]
    );
    let listed: Vec<&Value> = listed.body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], new_id.as_str());

    assert_eq!(after.status, StatusCode::ACCEPTED, "{}", after.body);
    let started_by = |execution: &Value| {
        let id: Uuid = execution["execution_id"].as_str().unwrap().parse().unwrap();
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT workflow_id::text FROM executions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(started_by(&before.body).await, old_id);
    assert_eq!(started_by(&after.body).await, new_id);
    let (old_snapshot, old_runs) =
        ran_with(&db, before.body["execution_id"].as_str().unwrap()).await;
    let (new_snapshot, _) = ran_with(&db, after.body["execution_id"].as_str().unwrap()).await;
    assert_eq!(old_snapshot, ["fetch", "notify", "report", "signup"]);
    assert!(!old_runs.is_empty(), "the old execution lost its node runs");
    assert!(
        old_runs.iter().all(|n| old_snapshot.contains(n)),
        "{old_runs:?}"
    );
    assert_eq!(
        new_snapshot,
        ["alert", "audit", "fetch", "report", "signup"]
    );

    let versions = send_to(&app, get(&format!("{WORKFLOWS}/{old_id}/versions"))).await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.body);
    let chain: Vec<(&str, &Value)> = versions.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap(), &v["version"]))
        .collect();
    assert_eq!(
        chain,
        [(new_id.as_str(), &json!(2)), (old_id.as_str(), &json!(1))]
    );
}

#[tokio::test]
async fn a_paused_workflow_that_has_run_keeps_that_version_and_gets_a_new_one() {
    let db = TestDb::new().await;
    admin(&db).await;
    let created = create_workflow(&db).await;
    let old_id = id_of(&created);
    let start = format!("{WORKFLOWS}/{old_id}/executions");
    let started = send(&db, post_json(&start, &json!({}))).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let paused = send(
        &db,
        post_json(&format!("{WORKFLOWS}/{old_id}/pause"), &json!({})),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    let runs_before = count(&db, "SELECT count(*) FROM node_runs").await;
    let mut edit = revised();
    edit.as_object_mut().unwrap().remove("status");

    let replaced = send(&db, put_json(&format!("{WORKFLOWS}/{old_id}"), &edit)).await;

    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_ne!(id_of(&replaced.body), old_id);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["status"], "paused");
    assert_eq!(
        count(&db, "SELECT count(*) FROM node_runs").await,
        runs_before
    );
    let (snapshot, runs) = ran_with(&db, started.body["execution_id"].as_str().unwrap()).await;
    assert_eq!(snapshot, ["fetch", "notify", "report", "signup"]);
    assert!(!runs.is_empty());
}

#[tokio::test]
async fn replacing_an_old_or_archived_version_is_a_conflict_naming_the_latest() {
    let db = TestDb::new().await;
    admin(&db).await;
    let old_id = id_of(&create_workflow(&db).await);
    let replaced = send(&db, put_json(&format!("{WORKFLOWS}/{old_id}"), &revised())).await;
    let new_id = id_of(&replaced.body);

    let stale = send(&db, put_json(&format!("{WORKFLOWS}/{old_id}"), &document())).await;
    let archived = send(
        &db,
        post_json(&format!("{WORKFLOWS}/{new_id}/archive"), &json!({})),
    )
    .await;
    assert_eq!(archived.status, StatusCode::OK, "{}", archived.body);
    let retired = send(&db, put_json(&format!("{WORKFLOWS}/{new_id}"), &document())).await;

    let detail = problem_detail(&stale, StatusCode::CONFLICT);
    assert!(detail.contains(&new_id), "{detail}");
    let detail = problem_detail(&retired, StatusCode::CONFLICT);
    assert!(detail.contains(&new_id), "{detail}");
    assert!(detail.contains("archived"), "{detail}");
    assert_eq!(count(&db, "SELECT count(*) FROM workflows").await, 2);
    let shown = send(&db, get(&format!("{WORKFLOWS}/{new_id}"))).await;
    assert_eq!(shown.body["name"], "Notify on signup, revised");
}

#[tokio::test]
async fn deleting_any_version_deletes_every_version_with_its_executions() {
    let db = TestDb::new().await;
    admin(&db).await;
    let first = id_of(&create_workflow(&db).await);
    let started = send(
        &db,
        post_json("/webhook/signup", &json!({"email": "a@b.c"})),
    )
    .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let second = id_of(
        &send(&db, put_json(&format!("{WORKFLOWS}/{first}"), &revised()))
            .await
            .body,
    );
    let third = send(&db, put_json(&format!("{WORKFLOWS}/{second}"), &document())).await;
    assert_eq!(third.body["version"], 3, "{}", third.body);

    let delete = axum::http::Request::delete(format!("{WORKFLOWS}/{second}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let deleted = send(&db, delete).await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(count(&db, "SELECT count(*) FROM workflows").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM executions").await, 0);
    let latest = send(&db, get(&format!("{WORKFLOWS}/{}", id_of(&third.body)))).await;
    problem_detail(&latest, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn of_two_concurrent_replaces_exactly_one_wins() {
    let db = TestDb::new().await;
    admin(&db).await;
    let app = router(AppState::new(db.pool().clone()));
    let id = id_of(&create_workflow(&db).await);
    let path = format!("{WORKFLOWS}/{id}");
    let mut other = revised();
    other["name"] = json!("The other revision");

    let (first, second) = tokio::join!(
        send_to(&app, put_json(&path, &revised())),
        send_to(&app, put_json(&path, &other)),
    );

    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let (winner, loser) = if first.status == StatusCode::OK {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let detail = problem_detail(loser, StatusCode::CONFLICT);
    assert!(
        detail.contains(winner.body["id"].as_str().unwrap()),
        "{detail}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM workflows").await, 2);
    assert_eq!(
        count(&db, "SELECT count(*) FROM workflows WHERE is_latest").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM workflows WHERE status = 'active'"
        )
        .await,
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM nodes").await, 4 + 5);
}

#[tokio::test]
async fn an_invalid_replacement_is_a_422_with_pointers_and_writes_nothing() {
    let db = TestDb::new().await;
    admin(&db).await;
    let created = create_workflow(&db).await;
    let path = format!("{WORKFLOWS}/{}", id_of(&created));
    let mut bad = revised();
    bad["status"] = json!("draft");
    bad["nodes"][1]["type"] = json!("http_request");
    bad["edges"][0]["target"] = json!("ghost");
    let mut archiving = document();
    archiving["status"] = json!("archived");

    let refused = send(&db, put_json(&path, &bad)).await;
    let archive = send(&db, put_json(&path, &archiving)).await;
    let shown = send(&db, get(&path)).await;

    problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/status", "/nodes/1/type", "/edges/0/target"]);
    problem_detail(&archive, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(shown.body, created);
    assert_eq!(count(&db, "SELECT count(*) FROM workflows").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM nodes").await, 4);
}
