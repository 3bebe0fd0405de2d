//! The storage layer's queries, including the data model's JSONB idioms, do what they say.

use quantumflow_domain::WorkflowStatus;
use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::executions::{self, Cursor, NewExecution, NewNodeRun};
use quantumflow_storage::workflows::{self, ListFilter};
use quantumflow_testkit::TestDb;
use serde_json::json;

use crate::support;

#[tokio::test]
async fn a_document_reads_back_as_written() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let written = support::chain(db.pool(), &owner, "w", WorkflowStatus::Draft, "/webhook/x").await;

    let mut conn = db.pool().acquire().await.unwrap();
    let read = workflows::get_document(&mut conn, written.workflow.id)
        .await
        .unwrap();

    assert_eq!(read, written);
    let names: Vec<&str> = read.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["webhook", "transform", "notify"]);
    assert_eq!(read.edges[0].source_node_id, read.nodes[0].id);
    assert_eq!(read.edges[1].target_node_id, read.nodes[2].id);
}

#[tokio::test]
async fn the_trigger_lookup_finds_only_active_workflows_by_method_and_path() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let active = support::chain(db.pool(), &owner, "a", WorkflowStatus::Active, "/webhook/a").await;
    support::chain(db.pool(), &owner, "p", WorkflowStatus::Paused, "/webhook/p").await;

    let hit = workflows::find_active_webhook(db.pool(), "POST", "/webhook/a")
        .await
        .unwrap();
    let paused = workflows::find_active_webhook(db.pool(), "POST", "/webhook/p")
        .await
        .unwrap();
    let wrong_method = workflows::find_active_webhook(db.pool(), "GET", "/webhook/a")
        .await
        .unwrap();

    assert_eq!(hit.map(|w| w.id), Some(active.workflow.id));
    assert_eq!(paused, None);
    assert_eq!(wrong_method, None);
}

#[tokio::test]
async fn listing_filters_by_status_trigger_type_and_text() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let signup = support::chain(
        db.pool(),
        &owner,
        "Signup alerts",
        WorkflowStatus::Active,
        "/webhook/s",
    )
    .await;
    let billing = support::chain(
        db.pool(),
        &owner,
        "Billing sync",
        WorkflowStatus::Draft,
        "/webhook/b",
    )
    .await;
    sqlx::query(
        "UPDATE workflows SET trigger_config = '{\"type\": \"schedule\"}', \
                 description = 'Nightly invoices' WHERE id = $1",
    )
    .bind(billing.workflow.id)
    .execute(db.pool())
    .await
    .unwrap();

    let ids =
        |ws: Vec<workflows::Listed>| ws.into_iter().map(|w| w.workflow.id).collect::<Vec<_>>();
    let all = ListFilter {
        limit: 10,
        ..ListFilter::default()
    };
    let active = ListFilter {
        status: Some(WorkflowStatus::Active),
        ..all.clone()
    };
    let scheduled = ListFilter {
        trigger_type: Some("schedule"),
        ..all.clone()
    };
    let invoices = ListFilter {
        text: Some("invoice"),
        ..all.clone()
    };
    let registers = ListFilter {
        text: Some("registers -invoices"),
        ..all.clone()
    };

    assert_eq!(
        ids(workflows::list(db.pool(), &all).await.unwrap()).len(),
        2
    );
    assert_eq!(
        ids(workflows::list(db.pool(), &active).await.unwrap()),
        [signup.workflow.id]
    );
    assert_eq!(
        ids(workflows::list(db.pool(), &scheduled).await.unwrap()),
        [billing.workflow.id]
    );
    assert_eq!(
        ids(workflows::list(db.pool(), &invoices).await.unwrap()),
        [billing.workflow.id]
    );
    assert_eq!(
        ids(workflows::list(db.pool(), &registers).await.unwrap()),
        [signup.workflow.id]
    );
}

#[tokio::test]
async fn settings_are_changed_in_place_with_jsonb_operators() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Draft, "/webhook/x").await;
    let id = doc.workflow.id;

    let set = workflows::set_setting(
        db.pool(),
        id,
        &["retry_policy", "backoff"],
        &json!("exponential"),
    )
    .await
    .unwrap();
    let merged = workflows::merge_settings(db.pool(), id, &json!({"error_handling": "continue"}))
        .await
        .unwrap();
    let removed = workflows::remove_setting(db.pool(), id, "timeout")
        .await
        .unwrap();

    assert_eq!(set["retry_policy"]["backoff"], "exponential");
    assert_eq!(
        set["retry_policy"]["max_retries"], 3,
        "siblings must survive jsonb_set"
    );
    assert_eq!(merged["error_handling"], "continue");
    assert_eq!(merged["timeout"], 60);
    assert_eq!(
        removed,
        json!({"retry_policy": {"max_retries": 3, "retry_delay": 10, "backoff": "exponential"},
               "error_handling": "continue"})
    );
}

#[tokio::test]
async fn nodes_are_found_by_connector_and_by_header() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Draft, "/webhook/x").await;

    let http = workflows::nodes_using_connector(db.pool(), "http")
        .await
        .unwrap();
    let slack = workflows::nodes_using_connector(db.pool(), "slack")
        .await
        .unwrap();
    let authorized = workflows::nodes_sending_header(db.pool(), doc.workflow.id, "Authorization")
        .await
        .unwrap();
    let cookies = workflows::nodes_sending_header(db.pool(), doc.workflow.id, "Cookie")
        .await
        .unwrap();

    assert_eq!(
        http.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["notify"]
    );
    assert!(slack.is_empty());
    assert_eq!(
        authorized
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["notify"]
    );
    assert!(cookies.is_empty());
}

#[tokio::test]
async fn connectors_keep_credentials_out_of_ordinary_reads() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let credentials = json!({"webhook_url": "http://127.0.0.1:9/secret-path"});
    let new = NewConnector {
        id: uuid::Uuid::now_v7(),
        name: "Slack",
        kind: "slack",
        description: None,
        config: &json!({"workspace": "demo"}),
        credentials: &credentials,
        is_active: true,
        test_status: Some("pending"),
        owner_id: owner.id,
    };

    let created = connectors::insert(db.pool(), &new).await.unwrap();
    let listed = connectors::list(db.pool(), Some(owner.id), Some("slack"))
        .await
        .unwrap();
    let stored = connectors::credentials(db.pool(), created.id)
        .await
        .unwrap();

    assert_eq!(listed, std::slice::from_ref(&created));
    assert!(
        !serde_json::to_string(&created)
            .unwrap()
            .contains("secret-path")
    );
    assert_eq!(stored, credentials);
}

#[tokio::test]
async fn executions_page_newest_first_through_a_cursor() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Active, "/webhook/x").await;
    let snapshot = json!({"nodes": []});
    let mut created = Vec::new();
    for i in 0..5 {
        let new = NewExecution {
            workflow_id: doc.workflow.id,
            workflow_name: "w",
            workflow_version: 1,
            trigger_type: "webhook",
            trigger_data: &json!({}),
            workflow_snapshot: &snapshot,
            input_data: &json!({"n": i}),
            triggered_by: None,
        };
        created.push(executions::insert(db.pool(), &new).await.unwrap());
    }

    let first = executions::latest_for_workflow(db.pool(), doc.workflow.id, None, None, 2)
        .await
        .unwrap();
    let last = first.last().unwrap();
    let cursor = Cursor {
        created_at: last.created_at,
        id: last.id,
    };
    let rest = executions::latest_for_workflow(db.pool(), doc.workflow.id, None, Some(cursor), 10)
        .await
        .unwrap();

    let mut expected: Vec<_> = created.iter().map(|e| (e.created_at, e.id)).collect();
    expected.sort();
    expected.reverse();
    let seen: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|e| (e.created_at, e.id))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn node_runs_are_recorded_under_their_execution() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Active, "/webhook/x").await;
    let new = NewExecution {
        workflow_id: doc.workflow.id,
        workflow_name: "w",
        workflow_version: 1,
        trigger_type: "webhook",
        trigger_data: &json!({"headers": {"x-github-event": "ping"}}),
        workflow_snapshot: &json!({}),
        input_data: &json!({"zen": "Design for failure."}),
        triggered_by: Some(owner.id),
    };
    let execution = executions::insert(db.pool(), &new).await.unwrap();
    let node = &doc.nodes[0];

    executions::insert_node_run(
        db.pool(),
        &NewNodeRun {
            execution_id: execution.id,
            node_id: node.id,
            node_name: &node.name,
            node_type: node.kind.as_str(),
            max_retries: 3,
        },
    )
    .await
    .unwrap();
    let runs = executions::node_runs(db.pool(), execution.id)
        .await
        .unwrap();
    let read = executions::get(db.pool(), execution.id).await.unwrap();

    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].node_name.as_deref(), Some("webhook"));
    assert_eq!(runs[0].status, quantumflow_domain::NodeRunStatus::Pending);
    assert_eq!(read, execution);
    assert_eq!(read.status, quantumflow_domain::ExecutionStatus::Pending);
}

#[tokio::test]
async fn counts_read_the_same_before_and_after_they_are_folded_onto_the_workflow() {
    use quantumflow_storage::runs::{self, Finished};

    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Active, "/webhook/w").await;
    let id = doc.workflow.id;
    let started = chrono::Utc::now();
    let ended = |success, failed, cancelled| Finished {
        success,
        failed,
        cancelled,
        latest_start: Some(started),
    };
    runs::count_finished(db.pool(), id, &ended(3, 1, 0))
        .await
        .unwrap();
    runs::count_finished(db.pool(), id, &ended(1, 0, 2))
        .await
        .unwrap();
    // Counts of a workflow that no longer exists are dropped by the fold, not kept forever.
    runs::count_finished(db.pool(), uuid::Uuid::now_v7(), &ended(9, 0, 0))
        .await
        .unwrap();
    let row = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i32, i32, i32, i32)>(
            "SELECT total_executions, successful_executions, failed_executions, \
                    cancelled_executions FROM workflows WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let before = workflows::get(db.pool(), id).await.unwrap();
    let row_before = row(db.pool().clone()).await;
    let mut conn = db.pool().acquire().await.unwrap();
    let folded = runs::fold_counts(&mut conn).await.unwrap();
    let after = workflows::get(db.pool(), id).await.unwrap();
    let row_after = row(db.pool().clone()).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_counter_deltas")
        .fetch_one(db.pool())
        .await
        .unwrap();

    let shown = |w: &workflows::Workflow| {
        (
            w.total_executions,
            w.successful_executions,
            w.failed_executions,
        )
    };
    assert_eq!(shown(&before), (7, 4, 1));
    assert_eq!(shown(&after), shown(&before));
    assert_eq!(
        before.last_execution_at.map(|t| t.timestamp_micros()),
        Some(started.timestamp_micros())
    );
    assert_eq!(after.last_execution_at, before.last_execution_at);
    assert_eq!(row_before, (0, 0, 0, 0));
    assert_eq!(row_after, (7, 4, 1, 2));
    assert_eq!(folded, Some(1));
    assert_eq!(left, 0);
}
