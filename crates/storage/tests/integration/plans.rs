//! With realistic volumes loaded, the hot queries are served by the indexes meant for them.

use quantumflow_storage::executions::LATEST_FOR_WORKFLOW_SQL;
use quantumflow_storage::workflows::{ACTIVE_TRIGGER_SQL, LIST_SQL, webhook_trigger};
use quantumflow_testkit::TestDb;
use serde_json::Value;
use uuid::Uuid;

const WORKFLOWS: i64 = 10_000;
const EXECUTIONS: i64 = 100_000;

/// Loads 10,000 workflows (a third of them active webhooks, the rest paused webhooks and
/// schedules) and 100,000 executions, then refreshes the statistics. As in real use, a few
/// busy workflows have most executions: half of them go to the first 100 workflows.
async fn loaded_db() -> TestDb {
    let db = TestDb::new().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"
        INSERT INTO users (id, email, username, hashed_password)
        VALUES ('00000000-0000-0000-0000-000000000001', 'load@example.com', 'load', 'x');

        INSERT INTO workflows (name, status, trigger_config, owner_id, created_at)
        SELECT 'workflow ' || i,
               CASE i % 3 WHEN 0 THEN 'active' ELSE 'paused' END,
               CASE WHEN i % 5 = 4
                    THEN jsonb_build_object('type', 'schedule', 'config', jsonb_build_object('cron', '* * * * *'))
                    ELSE jsonb_build_object('type', 'webhook', 'config',
                             jsonb_build_object('method', 'POST', 'path', '/webhook/w' || i))
               END,
               '00000000-0000-0000-0000-000000000001',
               now() - i * interval '1 minute'
        FROM generate_series(1, {WORKFLOWS}) AS i;

        INSERT INTO executions (workflow_id, status, workflow_snapshot, created_at)
        SELECT w.id,
               CASE e % 10 WHEN 0 THEN 'failed' ELSE 'success' END,
               '{{}}',
               now() - e * interval '1 second'
        FROM generate_series(1, {EXECUTIONS}) AS e
        JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM workflows) w
          ON w.n = CASE WHEN e % 2 = 0 THEN e % 100 ELSE e % {WORKFLOWS} END;

        ANALYZE users, workflows, executions;
        "#
    )))
    .execute(db.pool())
    .await
    .unwrap();
    db
}

/// The index names a plan touches, from `EXPLAIN (FORMAT JSON)`.
fn indexes_in(plan: &Value, found: &mut Vec<String>) {
    match plan {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("Index Name") {
                found.push(name.clone());
            }
            map.values().for_each(|v| indexes_in(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| indexes_in(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_trigger_lookup_is_served_by_a_gin_index_on_trigger_config() {
    let db = loaded_db().await;
    let explain = format!("EXPLAIN (FORMAT JSON) {ACTIVE_TRIGGER_SQL}");

    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(webhook_trigger("POST", "/webhook/w3"))
        .fetch_one(db.pool())
        .await
        .unwrap();

    let mut used = Vec::new();
    indexes_in(&plan, &mut used);
    assert!(
        used.iter()
            .any(|i| i == "idx_active_webhooks" || i == "idx_workflows_trigger_config"),
        "expected a GIN index on trigger_config, plan used {used:?}: {plan:#}"
    );
    let methods: Vec<String> = sqlx::query_scalar(
        "SELECT am.amname::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam \
         WHERE c.relname = ANY($1)",
    )
    .bind(&used)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(methods.iter().all(|m| m == "gin"), "{methods:?}");
}

#[tokio::test]
async fn latest_executions_of_a_workflow_use_the_workflow_created_index() {
    let db = loaded_db().await;
    // A busy workflow: with a handful of rows any plan reads a page or two, and the planner
    // rightly may pick the plain workflow_id index and sort; with hundreds it must not.
    let workflow: Uuid =
        sqlx::query_scalar("SELECT id FROM workflows ORDER BY id LIMIT 1 OFFSET 42")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let plan_for = |status: Option<&'static str>| {
        let explain = format!("EXPLAIN (FORMAT JSON) {LATEST_FOR_WORKFLOW_SQL}");
        let pool = db.pool().clone();
        async move {
            let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                .bind(workflow)
                .bind(None::<chrono::DateTime<chrono::Utc>>)
                .bind(None::<Uuid>)
                .bind(20_i64)
                .bind(status)
                .fetch_one(&pool)
                .await
                .unwrap();
            let mut used = Vec::new();
            indexes_in(&plan, &mut used);
            (plan, used)
        }
    };

    let (plan, used) = plan_for(None).await;
    let (filtered_plan, filtered) = plan_for(Some("failed")).await;

    assert_eq!(used, ["idx_executions_workflow_created"], "{plan:#}");
    // Filtered by status, the planner may also take the partial index of failed executions.
    let composite = [
        "idx_executions_workflow_created",
        "idx_executions_workflow_status",
        "idx_failed_executions",
    ];
    assert!(
        !filtered.is_empty() && filtered.iter().all(|i| composite.contains(&i.as_str())),
        "{filtered_plan:#}"
    );
}

/// The indexes the first page of the workflow listing uses with these filters, as a superuser
/// lists (no owner), and the plan.
async fn listing_plan(
    db: &TestDb,
    trigger_type: Option<&str>,
    text: Option<&str>,
) -> (Value, Vec<String>) {
    let explain = format!("EXPLAIN (FORMAT JSON) {LIST_SQL}");
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(None::<Uuid>)
        .bind(None::<&str>)
        .bind(trigger_type)
        .bind(text)
        .bind(None::<chrono::DateTime<chrono::Utc>>)
        .bind(None::<Uuid>)
        .bind(None::<f32>)
        .bind(21_i64)
        .fetch_one(db.pool())
        .await
        .unwrap();
    let mut used = Vec::new();
    indexes_in(&plan, &mut used);
    (plan, used)
}

#[tokio::test]
async fn listing_by_trigger_type_is_served_by_the_gin_index_on_the_type() {
    let db = loaded_db().await;
    // A rare type, as a filter worth an index is: one workflow in 500 is started by hand.
    sqlx::raw_sql(
        "UPDATE workflows SET trigger_config = '{\"type\": \"manual\"}' \
         WHERE id IN (SELECT id FROM workflows ORDER BY id LIMIT 20); \
         ANALYZE workflows;",
    )
    .execute(db.pool())
    .await
    .unwrap();

    let (plan, used) = listing_plan(&db, Some("manual"), None).await;

    assert!(
        used.iter().any(|i| i == "idx_workflows_trigger_type"),
        "plan used {used:?}: {plan:#}"
    );
}

#[tokio::test]
async fn listing_by_text_is_served_by_the_full_text_index() {
    let db = loaded_db().await;

    let (plan, used) = listing_plan(&db, None, Some("workflow 4242")).await;

    assert!(
        used.iter().any(|i| i == "idx_workflows_search"),
        "plan used {used:?}: {plan:#}"
    );
}
