//! `quantumflow up` end to end: with a private server and with DATABASE_URL.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use quantumflow_testkit::TestDb;
use serde_json::json;

use crate::cluster::{create_workflow, execute, finished, grant_admin_token};
use crate::receiver::Receiver;

use crate::support::{
    free_address, get, quantumflow, run, scratch_dir, stderr, stdout, terminate, wait_ready,
};

#[tokio::test]
async fn up_runs_a_private_server_that_keeps_its_data_across_restarts() {
    let dir = scratch_dir();
    let data_dir = dir.path().join("data");
    let address = free_address();
    let up = || {
        quantumflow()
            .args(["up", "--listen", &address.to_string(), "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    let mut first = up();
    wait_ready(&mut first, address).await;
    let health = get(address, "/healthz").await;
    let busy = run(quantumflow()
        .args(["up", "--listen", &free_address().to_string(), "--data-dir"])
        .arg(&data_dir));
    let seeded = run(quantumflow().args(["seed", "--data-dir"]).arg(&data_dir));
    let stopped = terminate(&mut first);
    let key_file = data_dir.join("credential-keys");
    let first_key = std::fs::read_to_string(&key_file).unwrap();
    let key_mode = std::fs::metadata(&key_file).unwrap().permissions().mode();

    let mut second = up();
    wait_ready(&mut second, address).await;
    let reseeded = run(quantumflow().args(["seed", "--data-dir"]).arg(&data_dir));
    let stopped_again = terminate(&mut second);
    let second_key = std::fs::read_to_string(&key_file).unwrap();

    assert_eq!(health.map(|(status, _)| status), Some(200));
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        stderr(&busy).contains("is in use by another quantumflow process"),
        "{}",
        stderr(&busy)
    );
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert!(stopped.success(), "{stopped}");
    assert!(
        stdout(&reseeded).contains("already there"),
        "data was lost: {}",
        stdout(&reseeded)
    );
    assert!(stopped_again.success());
    // The generated key is private to its owner, usable, and kept across restarts: a new one
    // would leave the seeded connectors' credentials unreadable.
    assert_eq!(key_mode & 0o777, 0o600, "{key_mode:o}");
    assert!(quantumflow_secrets::Keyring::parse(first_key.trim()).is_ok());
    assert_eq!(first_key, second_key);
    assert!(
        !quantumflow_localpg::is_running(&data_dir),
        "the private server outlived up"
    );
}

#[tokio::test]
async fn up_with_database_url_creates_migrates_and_reports_ready() {
    let server = TestDb::empty().await;
    // A database that does not exist yet, on the test server.
    let mut url = server.connect_options();
    let name = format!("{}_up", server.name());
    url = url.database(&name);
    let url = sqlx::ConnectOptions::to_url_lossy(&url).to_string();
    let address = free_address();
    let receiver = Receiver::start(200).await;
    let logs = tempfile::NamedTempFile::new().unwrap();

    let mut child = quantumflow()
        .args(["up", "--listen", &address.to_string()])
        .env("DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_ready(&mut child, address).await;
    let ready = get(address, "/readyz").await;
    // The workers inside `up` run what the control plane accepts, and may call services on
    // this machine without being told to.
    let seeded = run(quantumflow().arg("seed").env("DATABASE_URL", &url));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let admin: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE username = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    grant_admin_token(&pool, admin).await;
    pool.close().await;
    let document = json!({
        "name": "up runs nodes", "status": "active", "trigger_config": {"type": "manual"},
        "nodes": [{"name": "start", "type": "trigger"},
                  {"name": "shout", "type": "transform",
                   "config": {"template": "{{ input.word | upper }}"}},
                  {"name": "tell", "type": "action", "config": {
                      "connector": "http", "url": format!("http://{}/local", receiver.address),
                      "body": {"said": "{{input}}"}}}],
        "edges": [{"source": "start", "target": "shout"}, {"source": "shout", "target": "tell"}]
    });
    let workflow = create_workflow(address, &document).await;
    let execution = finished(
        address,
        &execute(address, &workflow, &json!({"word": "hi"})).await,
    )
    .await;
    let metrics = get(address, "/metrics").await;
    let status = terminate(&mut child);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(server.pool())
    .await
    .unwrap();

    let (code, body) = ready.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"status\":\"ready\""), "{body}");
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(
        crate::cluster::run(&execution, "shout")["output_data"],
        json!("HI")
    );
    // One process runs both halves, so its one scrape holds both sides' counters.
    let (code, metrics) = metrics.unwrap();
    assert_eq!(code, 200);
    let scraped = crate::metrics::Scrape::parse(&metrics);
    let started = format!("quantumflow_executions_started_total{{workflow_id=\"{workflow}\"}}");
    assert_eq!(scraped.value(&started), 1.0, "{metrics}");
    let transforms = "quantumflow_node_runs_total{node_type=\"transform\",status=\"success\"}";
    assert_eq!(scraped.value(transforms), 1.0, "{metrics}");
    // The pool gauges count both halves' pools: the API's 16 and the workers' 4 + 4.
    assert_eq!(
        scraped.value("quantumflow_db_pool_max_connections"),
        24.0,
        "{metrics}"
    );
    let connections = scraped.value("quantumflow_db_pool_connections{state=\"in_use\"}")
        + scraped.value("quantumflow_db_pool_connections{state=\"idle\"}");
    assert!(connections > 1.0, "{metrics}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].body, json!({"said": "HI"}));
    assert!(status.success(), "{status}");
    let logged = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        logged.contains("may reach loopback addresses") && logged.contains("127.0.0.0/8,::1/128"),
        "{logged}"
    );
}
