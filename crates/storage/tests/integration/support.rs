//! Builders shared by the storage tests.

use quantumflow_domain::{EdgeKind, NodeKind, WorkflowStatus};
use quantumflow_storage::users::{self, NewUser, User};
use quantumflow_storage::workflows::{self, NewEdge, NewNode, NewWorkflow, WorkflowDocument};
use serde_json::{Value, json};
use sqlx::PgPool;

pub(crate) async fn user(pool: &PgPool, name: &str) -> User {
    let email = format!("{name}@example.com");
    let new = NewUser {
        email: &email,
        username: name,
        hashed_password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        full_name: None,
        is_superuser: false,
    };
    users::insert(pool, &new).await.unwrap()
}

/// A webhook → transform → action chain owned by `owner`.
pub(crate) async fn chain(
    pool: &PgPool,
    owner: &User,
    name: &str,
    status: WorkflowStatus,
    path: &str,
) -> WorkflowDocument {
    let trigger = json!({"type": "webhook", "config": {"method": "POST", "path": path}});
    let settings = json!({"timeout": 60, "retry_policy": {"max_retries": 3, "retry_delay": 10}});
    let empty = json!({});
    let configs = [
        json!({"connector": "webhook", "method": "POST"}),
        json!({"template": {"message": "New user: {{input.username}}"}}),
        json!({"connector": "http", "url": "http://127.0.0.1:9/hook",
               "headers": {"Authorization": "Bearer {{secrets.token}}"}}),
    ];
    let positions: Vec<Value> = (0..3)
        .map(|i| json!({"x": 100 + 200 * i, "y": 100}))
        .collect();
    let kinds = [NodeKind::Trigger, NodeKind::Transform, NodeKind::Action];
    let names = ["webhook", "transform", "notify"];
    let nodes: Vec<NewNode<'_>> = (0..3)
        .map(|i| NewNode {
            name: names[i],
            description: None,
            kind: kinds[i],
            config: &configs[i],
            input_mapping: &empty,
            output_mapping: &empty,
            position: &positions[i],
            is_enabled: true,
        })
        .collect();
    let edges = [
        NewEdge {
            source: 0,
            target: 1,
            kind: EdgeKind::Default,
            condition: &empty,
            label: None,
        },
        NewEdge {
            source: 1,
            target: 2,
            kind: EdgeKind::Default,
            condition: &empty,
            label: None,
        },
    ];
    let new = NewWorkflow {
        name,
        description: Some("Sends a notification when a new user registers"),
        status,
        trigger_config: &trigger,
        settings: &settings,
        owner_id: owner.id,
    };

    let mut tx = pool.begin().await.unwrap();
    let doc = workflows::insert_document(&mut tx, &new, &nodes, &edges)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    doc
}
