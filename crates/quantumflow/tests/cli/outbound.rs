//! Outbound address filtering through real worker processes: a worker started without
//! `--allow-outbound` refuses loopback, so nodes aimed at a receiver on 127.0.0.1 fail before
//! they connect, and say what to allow.

use quantumflow_testkit::TestDb;
use serde_json::json;

use crate::cluster::{Cluster, admin, create_workflow, execute, finished, run, slack_connector};
use crate::receiver::Receiver;

#[tokio::test]
async fn nodes_aimed_at_a_refused_address_fail_at_once_and_say_how_to_allow_it() {
    let receiver = Receiver::start(200).await;
    let db = TestDb::new().await;
    admin(&db).await;
    let webhook = format!("http://{}/slack-secret-path", receiver.address);
    let slack = slack_connector(&db, &webhook).await;
    let cluster = Cluster::refusing_loopback(&db).await;
    // Credentials and a query, which failures must not repeat: they are logged and exported.
    let url = format!("http://ops:pa55@{}/internal?token=s3cret", receiver.address);
    let document = json!({
        "name": "reaches inside",
        "status": "active",
        "trigger_config": {"type": "manual"},
        // Retries would be allowed, and continuing lets both nodes run.
        "settings": {"retry_policy": {"max_retries": 2, "retry_delay": 1},
                     "error_handling": "continue"},
        "nodes": [
            {"name": "start", "type": "trigger"},
            {"name": "call", "type": "action", "config": {"connector": "http", "url": url}},
            {"name": "post", "type": "action",
             "config": {"connector": "slack", "connector_id": slack, "message": "hi"}}
        ],
        "edges": [{"source": "start", "target": "call"}, {"source": "start", "target": "post"}]
    });
    let id = create_workflow(cluster.api, &document).await;

    let execution = finished(cluster.api, &execute(cluster.api, &id, &json!({})).await).await;

    assert_eq!(execution["status"], "failed", "{execution:#}");
    let call = run(&execution, "call");
    let post = run(&execution, "post");
    for node in [call, post] {
        assert_eq!(node["status"], "failed", "{node:#}");
        assert_eq!(node["retry_count"], 0, "a refusal is not retried: {node:#}");
        let message = node["error_message"].as_str().unwrap();
        assert!(
            message.contains("127.0.0.1 is a loopback address"),
            "{message}"
        );
        assert!(message.contains("--allow-outbound"), "{message}");
        assert!(message.contains("QUANTUMFLOW_ALLOW_OUTBOUND"), "{message}");
    }
    let message = call["error_message"].as_str().unwrap();
    let shown = format!("http://{}/internal", receiver.address);
    assert!(
        message.starts_with(&format!("request to {shown} was refused: ")),
        "{message}"
    );
    assert!(
        !message.contains("s3cret") && !message.contains("pa55"),
        "{message}"
    );
    let message = post["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("request to the Slack webhook was refused: "),
        "{message}"
    );
    assert!(
        !message.contains("slack-secret-path"),
        "the webhook URL is a secret: {message}"
    );
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
}
