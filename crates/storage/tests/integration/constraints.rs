//! The schema's constraints refuse what the data model forbids, and storage names them.

use quantumflow_domain::{EdgeKind, NodeKind, WorkflowStatus};
use quantumflow_storage::StorageError;
use quantumflow_storage::users::{self, NewUser};
use quantumflow_storage::workflows::{self, NewEdge, NewNode, NewWorkflow};
use quantumflow_testkit::TestDb;
use serde_json::json;

use crate::support;

#[tokio::test]
async fn a_malformed_email_is_refused_by_its_check() {
    let db = TestDb::new().await;
    let new = NewUser {
        email: "not-an-address",
        username: "someone",
        hashed_password: "x",
        full_name: None,
        is_superuser: false,
    };

    let err = users::insert(db.pool(), &new).await.unwrap_err();

    assert!(
        matches!(&err, StorageError::Invalid { constraint } if constraint == "users_email_check"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_second_user_with_the_same_email_conflicts() {
    let db = TestDb::new().await;
    let first = support::user(db.pool(), "ada").await;
    let new = NewUser {
        email: &first.email,
        username: "ada2",
        hashed_password: "x",
        full_name: None,
        is_superuser: false,
    };

    let err = users::insert(db.pool(), &new).await.unwrap_err();

    assert!(
        matches!(&err, StorageError::Conflict { constraint } if constraint == "idx_users_email"),
        "{err:?}"
    );
}

async fn insert_with_edges(db: &TestDb, edges: &[NewEdge<'_>]) -> Result<(), StorageError> {
    let owner = support::user(db.pool(), "owner").await;
    let empty = json!({});
    let node = |name, kind| NewNode {
        name,
        description: None,
        kind,
        config: &empty,
        input_mapping: &empty,
        output_mapping: &empty,
        position: &empty,
        is_enabled: true,
    };
    let nodes = [
        node("start", NodeKind::Trigger),
        node("next", NodeKind::Action),
    ];
    let new = NewWorkflow {
        name: "w",
        description: None,
        status: WorkflowStatus::Draft,
        trigger_config: &empty,
        settings: &empty,
        owner_id: owner.id,
    };

    let mut tx = db.pool().begin().await.unwrap();
    workflows::insert_document(&mut tx, &new, &nodes, edges).await?;
    tx.commit().await.unwrap();
    Ok(())
}

#[tokio::test]
async fn a_self_loop_is_refused_by_no_self_loop() {
    let db = TestDb::new().await;
    let empty = json!({});
    let edge = NewEdge {
        source: 1,
        target: 1,
        kind: EdgeKind::Default,
        condition: &empty,
        label: None,
    };

    let err = insert_with_edges(&db, &[edge]).await.unwrap_err();

    assert!(
        matches!(&err, StorageError::Invalid { constraint } if constraint == "no_self_loop"),
        "{err:?}"
    );
    let workflows: i64 = sqlx::query_scalar("SELECT count(*) FROM workflows")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(workflows, 0, "the rolled-back document left rows behind");
}

#[tokio::test]
async fn a_duplicate_edge_conflicts_on_unique_edge() {
    let db = TestDb::new().await;
    let empty = json!({});
    let edge = NewEdge {
        source: 0,
        target: 1,
        kind: EdgeKind::Default,
        condition: &empty,
        label: None,
    };

    let err = insert_with_edges(&db, &[edge.clone(), edge])
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StorageError::Conflict { constraint } if constraint == "unique_edge"),
        "{err:?}"
    );
}

#[tokio::test]
async fn deleting_a_workflow_deletes_its_nodes_edges_and_executions() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Active, "/webhook/x").await;
    sqlx::query("INSERT INTO executions (workflow_id, workflow_snapshot) VALUES ($1, '{}')")
        .bind(doc.workflow.id)
        .execute(db.pool())
        .await
        .unwrap();

    workflows::delete(db.pool(), doc.workflow.id).await.unwrap();

    let left: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM nodes), (SELECT count(*) FROM edges), \
                (SELECT count(*) FROM executions)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(left, (0, 0, 0));
}

#[tokio::test]
async fn deleting_a_user_deletes_what_they_own() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    support::chain(db.pool(), &owner, "w", WorkflowStatus::Draft, "/webhook/x").await;

    users::delete(db.pool(), owner.id).await.unwrap();

    let workflows: i64 = sqlx::query_scalar("SELECT count(*) FROM workflows")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(workflows, 0);
    assert!(matches!(
        users::get(db.pool(), owner.id).await,
        Err(StorageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn an_unknown_status_is_refused_by_the_database() {
    let db = TestDb::new().await;
    let owner = support::user(db.pool(), "owner").await;
    let doc = support::chain(db.pool(), &owner, "w", WorkflowStatus::Draft, "/webhook/x").await;

    let err = sqlx::query("UPDATE workflows SET status = 'running' WHERE id = $1")
        .bind(doc.workflow.id)
        .execute(db.pool())
        .await
        .map_err(StorageError::from)
        .unwrap_err();

    assert!(
        matches!(&err, StorageError::Invalid { constraint } if constraint == "workflows_status_check"),
        "{err:?}"
    );
}
