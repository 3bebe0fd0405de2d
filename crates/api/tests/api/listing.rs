//! Listing workflows: filters, the keyset cursor, and who sees what.

use axum::http::StatusCode;
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{
    admin, document, get, post_json, problem_detail, send, token_of, user, with_token,
};

const WORKFLOWS: &str = "/api/v1/workflows";

/// [`document`] renamed, in `status`, started by `trigger`; webhooks get a path of their own.
fn named(name: &str, description: &str, status: &str, trigger: &str) -> Value {
    let mut doc = document();
    doc["name"] = json!(name);
    doc["description"] = json!(description);
    doc["status"] = json!(status);
    doc["trigger_config"] = match trigger {
        "webhook" => {
            let path = format!("/webhook/{}", name.to_lowercase().replace(' ', "-"));
            json!({"type": "webhook", "config": {"method": "POST", "path": path}})
        }
        other => json!({"type": other}),
    };
    doc
}

async fn create(db: &TestDb, doc: &Value) -> String {
    let created = send(db, post_json(WORKFLOWS, doc)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"].as_str().unwrap().to_owned()
}

fn names(body: &Value) -> Vec<&str> {
    body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect()
}

/// Every page of `query`, `limit` at a time: the ids in the order given, and the page count.
async fn every_page(db: &TestDb, query: &str, limit: u32) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = format!("{WORKFLOWS}?{query}&limit={limit}");
    loop {
        let page = send(db, get(&path)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        pages += 1;
        for workflow in page.body["workflows"].as_array().unwrap() {
            seen.push(workflow["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("{WORKFLOWS}?{query}&limit={limit}&cursor={cursor}"),
            None => break,
        }
    }
    (seen, pages)
}

#[tokio::test]
async fn each_filter_narrows_the_listing_alone_and_combined() {
    let db = TestDb::new().await;
    admin(&db).await;
    let signup = named("Signup alerts", "Greets new users", "active", "webhook");
    let signup_id = create(&db, &signup).await;
    create(
        &db,
        &named("Invoice run", "Bills customers", "draft", "schedule"),
    )
    .await;
    create(
        &db,
        &named("Invoice audit", "Checks invoices", "active", "manual"),
    )
    .await;
    create(
        &db,
        &named("Churn report", "Lists lost users", "draft", "webhook"),
    )
    .await;
    let start = format!("{WORKFLOWS}/{signup_id}/executions");
    let started = send(&db, post_json(&start, &json!({}))).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);

    let mut listed = Vec::new();
    for query in [
        "",
        "status=active",
        "trigger_type=webhook",
        "q=invoice",
        "status=active&trigger_type=webhook",
        "status=active&q=invoices",
        "trigger_type=schedule&q=invoice",
        "status=draft&trigger_type=webhook&q=users",
        "status=paused",
    ] {
        let page = send(&db, get(&format!("{WORKFLOWS}?{query}"))).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.body);
        assert_eq!(page.body["next_cursor"], Value::Null, "{query}");
        listed.push((query, names(&page.body).join(", ")));
    }
    let all = send(&db, get(WORKFLOWS)).await;

    let expected = [
        (
            "",
            "Churn report, Invoice audit, Invoice run, Signup alerts",
        ),
        ("status=active", "Invoice audit, Signup alerts"),
        ("trigger_type=webhook", "Churn report, Signup alerts"),
        ("q=invoice", "Invoice audit, Invoice run"),
        ("status=active&trigger_type=webhook", "Signup alerts"),
        ("status=active&q=invoices", "Invoice audit"),
        ("trigger_type=schedule&q=invoice", "Invoice run"),
        ("status=draft&trigger_type=webhook&q=users", "Churn report"),
        ("status=paused", ""),
    ];
    let listed: Vec<(&str, &str)> = listed.iter().map(|(q, n)| (*q, n.as_str())).collect();
    assert_eq!(listed, expected);
    let signup_row = all.body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == signup_id.as_str())
        .unwrap();
    assert_eq!(signup_row["total_executions"], 1, "{signup_row}");
    assert_eq!(signup_row["successful_executions"], 0);
    assert_eq!(signup_row["failed_executions"], 0);
    assert!(signup_row["last_execution_at"].is_string(), "{signup_row}");
    assert_eq!(signup_row.get("nodes"), None, "a listing carries nodes");
    assert_eq!(signup_row.get("edges"), None, "a listing carries edges");
}

#[tokio::test]
async fn pages_visit_every_workflow_once_in_order_also_with_equal_ranks_and_timestamps() {
    let db = TestDb::new().await;
    admin(&db).await;
    for n in 0..7 {
        create(
            &db,
            &named(&format!("Nightly report {n}"), "", "draft", "manual"),
        )
        .await;
    }
    create(
        &db,
        &named(
            "Report of reports",
            "report every report",
            "draft",
            "manual",
        ),
    )
    .await;
    create(
        &db,
        &named("Cleanup", "Deletes old rows", "draft", "manual"),
    )
    .await;
    // Four rows share one timestamp, so only the id tells them apart.
    sqlx::query(
        "UPDATE workflows SET created_at = '2030-01-01T00:00:00Z' \
         WHERE name IN ('Nightly report 1', 'Nightly report 2', 'Nightly report 4', 'Cleanup')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let by_date: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM workflows ORDER BY created_at DESC, id DESC")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let by_rank: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM workflows \
         WHERE to_tsvector('english', name || ' ' || coalesce(description, '')) \
               @@ websearch_to_tsquery('english', 'report') \
         ORDER BY ts_rank(to_tsvector('english', name || ' ' || coalesce(description, '')), \
                          websearch_to_tsquery('english', 'report')) DESC, \
                  created_at DESC, id DESC",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let best: String =
        sqlx::query_scalar("SELECT id::text FROM workflows WHERE name = 'Report of reports'")
            .fetch_one(db.pool())
            .await
            .unwrap();

    let (newest_first, pages) = every_page(&db, "status=draft", 2).await;
    let (best_first, ranked_pages) = every_page(&db, "q=report", 3).await;

    assert_eq!(newest_first, by_date);
    assert_eq!(pages, 5);
    assert_eq!(best_first, by_rank);
    assert_eq!(best_first.len(), 8);
    assert_eq!(best_first[0], best);
    assert_eq!(ranked_pages, 3);
}

#[tokio::test]
async fn a_garbage_or_foreign_cursor_and_bad_parameters_are_400s_naming_the_parameter() {
    let db = TestDb::new().await;
    admin(&db).await;
    for n in 0..3 {
        create(&db, &named(&format!("Flow {n}"), "", "active", "manual")).await;
    }
    let first = send(&db, get(&format!("{WORKFLOWS}?status=active&limit=1"))).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let resumed = send(
        &db,
        get(&format!(
            "{WORKFLOWS}?status=active&limit=1&cursor={cursor}"
        )),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);

    for (query, expected) in [
        (format!("status=draft&cursor={cursor}"), "other filters"),
        (format!("cursor={cursor}"), "other filters"),
        (
            format!("status=active&q=flow&cursor={cursor}"),
            "other filters",
        ),
        (
            "cursor=yesterday".to_owned(),
            "pass `next_cursor` unchanged",
        ),
        ("cursor=zz.1.2.3".to_owned(), "pass `next_cursor` unchanged"),
        ("status=done".to_owned(), "status"),
        ("trigger_type=email".to_owned(), "trigger_type"),
        ("q=%20%20".to_owned(), "q must not be blank"),
        ("limit=0".to_owned(), "limit must be between 1 and 100"),
        ("limit=101".to_owned(), "limit must be between 1 and 100"),
        ("limit=ten".to_owned(), "limit"),
        ("order=oldest".to_owned(), "order"),
    ] {
        let refused = send(&db, get(&format!("{WORKFLOWS}?{query}"))).await;
        let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
        assert!(detail.contains(expected), "{query}: {detail}");
    }
}

#[tokio::test]
async fn a_user_lists_only_their_own_workflows_and_a_superuser_lists_everyone_s() {
    let db = TestDb::new().await;
    admin(&db).await;
    let ada = user(&db, "ada", false).await;
    let ada_token = token_of(&db, &ada).await;
    let bob = user(&db, "bob", false).await;
    let bob_token = token_of(&db, &bob).await;
    for (token, name) in [(&ada_token, "Ada's flow"), (&bob_token, "Bob's flow")] {
        let doc = named(name, "", "draft", "manual");
        let created = send(&db, with_token(post_json(WORKFLOWS, &doc), token)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    create(&db, &named("Admin's flow", "", "draft", "manual")).await;

    let as_ada = send(&db, with_token(get(WORKFLOWS), &ada_token)).await;
    let as_bob = send(
        &db,
        with_token(get(&format!("{WORKFLOWS}?q=flow")), &bob_token),
    )
    .await;
    let as_admin = send(&db, get(WORKFLOWS)).await;

    assert_eq!(names(&as_ada.body), ["Ada's flow"]);
    assert_eq!(names(&as_bob.body), ["Bob's flow"]);
    assert_eq!(
        names(&as_admin.body),
        ["Admin's flow", "Bob's flow", "Ada's flow"]
    );
}
