//! Connector credentials in a running cluster: an http node sends them where its config says,
//! and nothing recorded about the run holds them.

use quantumflow_secrets::Keyring;
use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::users::{self, NewUser};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::cluster::{Cluster, admin, create_workflow, execute, finished, run};
use crate::receiver::Receiver;
use crate::support::send;

/// The token the connector holds; nothing recorded may contain it.
const TOKEN: &str = "tok-c0ffee-never-recorded";

fn workflow(name: &str, node: &Value) -> Value {
    json!({
        "name": name,
        "status": "active",
        "trigger_config": {"type": "manual"},
        "nodes": [{"name": "start", "type": "trigger"}, node],
        "edges": [{"source": "start", "target": "call"}]
    })
}

async fn run_once(cluster: &Cluster, name: &str, node: &Value) -> Value {
    let id = create_workflow(cluster.api, &workflow(name, node)).await;
    finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await
}

/// Every text column an execution leaves behind, as one string.
async fn recorded(db: &TestDb) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', e.workflow_snapshot::text, e.trigger_data::text, \
                e.output_data::text, e.error_message, r.input_data::text, r.output_data::text, \
                r.error_message) \
         FROM executions e LEFT JOIN node_runs r ON r.execution_id = e.id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.join("\n")
}

#[tokio::test]
async fn a_node_sends_its_connectors_secret_and_records_it_redacted() {
    let receiver = Receiver::start(200).await;
    let db = TestDb::new().await;
    admin(&db).await;
    let entry = Keyring::generate_entry();
    let keyring = Keyring::parse(&entry).unwrap();
    let cluster = Cluster::with_keys(&db, &entry).await;
    let (status, connector) = send(
        cluster.api,
        "POST",
        "/api/v1/connectors",
        &[],
        Some(&json!({"name": "receiver", "type": "http", "credentials": {"token": TOKEN}})),
    )
    .await;
    assert_eq!(status, 201, "{connector}");
    let connector_id = connector["id"].as_str().unwrap().to_owned();

    // Bob's connector, sealed like any other, which admin's workflows may not use.
    let bob = users::insert(
        db.pool(),
        &NewUser {
            email: "bob@example.com",
            username: "bob",
            hashed_password: "x",
            full_name: None,
            is_superuser: false,
        },
    )
    .await
    .unwrap();
    let bobs_id = uuid::Uuid::now_v7();
    let sealed = keyring.seal(bobs_id, &json!({"token": TOKEN})).unwrap();
    connectors::insert(
        db.pool(),
        &NewConnector {
            id: bobs_id,
            name: "bob's",
            kind: "http",
            description: None,
            config: &json!({}),
            credentials: &sealed,
            is_active: true,
            test_status: None,
            owner_id: bob.id,
        },
    )
    .await
    .unwrap();

    let url = format!("http://{}/echo", receiver.address);
    let call = |connector: &str, input_mapping: Value| {
        json!({"name": "call", "type": "action", "input_mapping": input_mapping, "config": {
            "connector": "http", "url": url, "connector_id": connector,
            "headers": {"Authorization": "Bearer {{secrets.token}}"}
        }})
    };
    let sent = run_once(&cluster, "sends", &call(&connector_id, json!({}))).await;
    let leaked = run_once(
        &cluster,
        "leaks",
        &call(&connector_id, json!({"token": "{{secrets.token}}"})),
    )
    .await;
    let borrowed = run_once(&cluster, "borrows", &call(&bobs_id.to_string(), json!({}))).await;

    assert_eq!(sent["status"], "success", "{sent:#}");
    let received: Vec<_> = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let output = &run(&sent, "call")["output_data"];
    assert_eq!(
        output["body"]["authorization"], "Bearer [redacted]",
        "{output:#}"
    );

    let leak = run(&leaked, "call");
    assert_eq!(leak["status"], "failed", "{leaked:#}");
    let message = leak["error_message"].as_str().unwrap();
    assert!(
        message.contains("secrets are only available in the node's config"),
        "{message}"
    );

    let borrow = run(&borrowed, "call");
    assert_eq!(borrow["status"], "failed", "{borrowed:#}");
    assert_eq!(borrow["retry_count"], 0, "{borrow:#}");
    let message = borrow["error_message"].as_str().unwrap();
    assert!(message.contains(&bobs_id.to_string()), "{message}");
    assert!(message.contains("belongs to another user"), "{message}");

    let everything = recorded(&db).await;
    assert!(everything.contains("[redacted]"), "{everything}");
    assert!(!everything.contains(TOKEN), "a run recorded the secret");
}
