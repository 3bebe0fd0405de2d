//! Stopping processes while they work, and taking the database away from under them.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantumflow_localpg::{LocalPg, Options};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{
    Cluster, admin, admin_in, control_plane, create_workflow, execute, finished_within,
};
use crate::receiver::Receiver;
use crate::support::{
    exchange, free_address, get, quantumflow, run, scratch_dir, send, stderr, terminate, wait_ready,
};

/// How long a worker's jobs wait after it dies without a word, before the other workers take
/// them over: four missed heartbeats of 15 s. Work handed back on shutdown must not wait that.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);

/// A chain of a trigger and `calls` http nodes posting to `receiver`.
fn chain(receiver: SocketAddr, calls: usize) -> Value {
    let mut nodes = vec![json!({"name": "n0", "type": "trigger"})];
    let mut edges = Vec::new();
    for i in 1..=calls {
        nodes.push(
            json!({"name": format!("n{i}"), "type": "action", "config": {
            "connector": "http", "method": "POST", "url": format!("http://{receiver}/n{i}")}}),
        );
        edges.push(json!({"source": format!("n{}", i - 1), "target": format!("n{i}")}));
    }
    json!({"name": "chain", "status": "active", "trigger_config": {"type": "manual"},
           "nodes": nodes, "edges": edges})
}

/// Waits for `cluster`'s process `index` to exit, for at most `limit`.
async fn exit_of(cluster: &mut Cluster, index: usize, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = cluster.exited(index) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process {index} did not exit in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Several threads: the receiver must keep answering while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_under_load_hands_its_work_to_the_other_at_once() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (200, Duration::from_millis(20)))).await;
    let mut cluster = Cluster::on(db.url(), 2, &["--shutdown-grace", "10"]).await;
    let workflow = create_workflow(cluster.api, &chain(receiver.address, 9)).await;
    let mut executions = Vec::new();
    for _ in 0..50 {
        executions.push(execute(cluster.api, &workflow, &json!({})).await);
    }
    receiver.wait_for_requests(100).await;

    let stopped_at = Instant::now();
    cluster.signal(1);
    let exit = exit_of(&mut cluster, 1, Duration::from_secs(20)).await;
    let exited_after = stopped_at.elapsed();
    let mut statuses = Vec::new();
    for id in &executions {
        let execution = finished_within(cluster.api, id, ORPHAN_TIMEOUT).await;
        statuses.push(execution["status"].as_str().unwrap_or_default().to_owned());
    }
    let finished_after = stopped_at.elapsed();
    let (runs, succeeded, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'success'), \
                count(DISTINCT (execution_id, node_name)) \
         FROM node_runs WHERE execution_id = ANY($1::uuid[])",
    )
    .bind(&executions)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE last_result::text LIKE '%heartbeat timeout%'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let received = receiver.received();
    let mut keys: Vec<_> = received.iter().map(|r| r.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();

    assert!(exit.success(), "{exit}");
    assert!(
        exited_after < Duration::from_secs(10),
        "the worker took {exited_after:?}, longer than its grace period"
    );
    assert!(statuses.iter().all(|s| s == "success"), "{statuses:?}");
    assert_eq!(
        (runs, succeeded, distinct),
        (500, 500, 500),
        "one successful run of each node"
    );
    assert_eq!(received.len(), 450, "each http node called once");
    assert_eq!(keys.len(), 450, "each http node called once");
    assert_eq!(rescued, 0, "no job waited for the heartbeat timeout");
    // The orphan timeout, or the idle fetch at each 15 s heartbeat, would take far longer.
    assert!(
        finished_after < Duration::from_secs(12),
        "the handed-back work took {finished_after:?}"
    );
}

// Several threads: the receiver must keep answering while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_stopping_worker_fetched_but_never_started_run_elsewhere_at_once() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start_with(Arc::new(|request, _| {
        let pause = if request.path == "/slow" { 5000 } else { 0 };
        (200, Duration::from_millis(pause))
    }))
    .await;
    let mut cluster = Cluster::on(db.url(), 0, &["--concurrency", "1"]).await;
    let document = json!({
        "name": "one call", "status": "active", "trigger_config": {"type": "manual"},
        "nodes": [{"name": "start", "type": "trigger"},
                  {"name": "call", "type": "action", "config": {
                      "connector": "http", "method": "POST",
                      "url": format!("http://{}/{{{{input.pace}}}}", receiver.address)}}],
        "edges": [{"source": "start", "target": "call"}]
    });
    let workflow = create_workflow(cluster.api, &document).await;
    let mut executions = vec![execute(cluster.api, &workflow, &json!({"pace": "slow"})).await];
    for _ in 0..9 {
        executions.push(execute(cluster.api, &workflow, &json!({"pace": "fast"})).await);
    }
    // One node at a time: the first worker runs the slow call and holds the rest of its batch.
    let stopping = cluster.add_worker();
    receiver.wait_for_requests(1).await;
    // The second worker's first fetch finds nothing; only a wake-up can bring it work now.
    cluster.add_worker();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    cluster.signal(stopping);
    let (ready, readiness) = unready(cluster.admins[0]).await;
    receiver.wait_for_requests(10).await;
    let exited_before_the_rest_ran = cluster.exited(stopping);
    let exit = exit_of(&mut cluster, stopping, Duration::from_secs(20)).await;
    let mut statuses = Vec::new();
    for id in &executions {
        let execution = finished_within(cluster.api, id, ORPHAN_TIMEOUT).await;
        statuses.push(execution["status"].as_str().unwrap_or_default().to_owned());
    }
    let received = receiver.received();

    assert_eq!(received[0].path, "/slow");
    assert_eq!(ready, 503, "{readiness}");
    assert!(
        readiness["detail"].as_str().unwrap().contains("draining"),
        "{readiness}"
    );
    assert_eq!(
        exited_before_the_rest_ran, None,
        "the other jobs waited for the slow node to finish"
    );
    assert!(exit.success(), "{exit}");
    assert!(statuses.iter().all(|s| s == "success"), "{statuses:?}");
    assert_eq!(received.len(), 10, "each node called once: {received:?}");
}

// Several threads: the receiver must keep answering while the test polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_when_the_grace_period_ends_counts_as_an_attempt() {
    let db = TestDb::new().await;
    admin(&db).await;
    // Each node's first call hangs far beyond the grace period; a call made again answers at
    // once.
    let receiver = Receiver::start_with(Arc::new(|_, seen| {
        let pause = if seen == 0 { 20 } else { 0 };
        (200, Duration::from_secs(pause))
    }))
    .await;
    let mut cluster = Cluster::on(db.url(), 1, &["--shutdown-grace", "1"]).await;
    let retried = create_workflow(cluster.api, &chain(receiver.address, 1)).await;
    // The same node with no retries: its stopped attempt was its only one.
    let mut once = chain(receiver.address, 1);
    once["name"] = json!("chain without retries");
    once["settings"] = json!({"retry_policy": {"max_retries": 0, "retry_delay": 1}});
    let once = create_workflow(cluster.api, &once).await;
    let retried = execute(cluster.api, &retried, &json!({})).await;
    let once = execute(cluster.api, &once, &json!({})).await;
    receiver.wait_for_requests(2).await;

    let stopped_at = Instant::now();
    cluster.signal(1);
    let exit = exit_of(&mut cluster, 1, Duration::from_secs(15)).await;
    let exited_after = stopped_at.elapsed();
    cluster.add_worker();
    let retried = finished_within(cluster.api, &retried, Duration::from_secs(30)).await;
    let once = finished_within(cluster.api, &once, Duration::from_secs(30)).await;
    let attempts = |execution: &Value| {
        let run = crate::cluster::run(execution, "n1");
        (
            run["status"].as_str().unwrap_or_default().to_owned(),
            run["retry_count"].as_i64().unwrap_or(-1),
        )
    };
    let received = receiver.received();

    assert!(exit.success(), "{exit}");
    assert!(
        exited_after < Duration::from_secs(10),
        "the worker waited {exited_after:?} for nodes that run 20 s"
    );
    assert_eq!(retried["status"], "success", "{retried:#}");
    assert_eq!(
        attempts(&retried),
        ("success".to_owned(), 1),
        "the stopped attempt counts: one result, on the second attempt"
    );
    assert_eq!(once["status"], "failed", "{once:#}");
    let error = crate::cluster::run(&once, "n1")["error_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("gave up after 1 attempt;"), "{once:#}");
    assert_eq!(
        received.len(),
        3,
        "sent again after the stop only where an attempt was left: {received:?}"
    );
    let again: Vec<_> = received
        .iter()
        .filter(|r| r.idempotency_key == received[2].idempotency_key)
        .collect();
    assert_eq!(again.len(), 2, "{received:?}");
}

/// Starts a worker on `db` that logs JSON at info to a pipe, and waits until it is ready.
async fn logging_worker(db: &TestDb) -> std::process::Child {
    logging_worker_on(&db.url()).await
}

/// [`logging_worker`] on the database at `url`.
async fn logging_worker_on(url: &str) -> std::process::Child {
    let admin = free_address();
    let mut worker = quantumflow()
        .args(["--log-format", "json", "worker", "--admin-listen"])
        .arg(admin.to_string())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut worker, admin).await;
    worker
}

/// Stops a worker from [`logging_worker`] and returns how it exited and its log lines.
fn stop_logging(mut worker: std::process::Child) -> (std::process::ExitStatus, Vec<Value>, String) {
    let exit = terminate(&mut worker);
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut logs).unwrap();
    let lines = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (exit, lines, logs)
}

#[tokio::test]
async fn a_stopping_worker_logs_its_shutdown_as_a_worker() {
    let db = TestDb::new().await;
    let worker = logging_worker(&db).await;

    let (exit, lines, logs) = stop_logging(worker);
    let shutdown = lines.iter().find(|line| line["message"] == "shutting down");

    assert!(exit.success(), "{exit}");
    let shutdown = shutdown.unwrap_or_else(|| panic!("no shutdown line: {logs}"));
    assert_eq!(
        shutdown["target"], "quantumflow::commands::worker",
        "{logs}"
    );
    assert_eq!(shutdown["role"], "worker", "{logs}");
    assert!(
        lines
            .iter()
            .all(|line| line["target"] != "quantumflow::commands::serve"),
        "a worker logged as the control plane: {logs}"
    );
}

#[tokio::test]
async fn the_jobs_of_a_dead_worker_are_rescued_naming_it() {
    let db = TestDb::new().await;
    // A worker that took a job and has been silent for two minutes, past the heartbeat
    // timeout; the job's node run does not exist, so running it does nothing.
    let job = quantumflow_queue::NodeRunJob {
        execution_id: uuid::Uuid::now_v7(),
        node_run_id: uuid::Uuid::now_v7(),
    };
    let mut conn = db.pool().acquire().await.unwrap();
    quantumflow_queue::push_node_runs(&mut conn, &[(job, Duration::ZERO)])
        .await
        .unwrap();
    drop(conn);
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen) \
         VALUES ('gone-1', $1, 'PgStorage', now() - interval '2 minutes')",
    )
    .bind(quantumflow_queue::NODE_RUN_QUEUE)
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE apalis.jobs SET status = 'Running', lock_by = 'gone-1', lock_at = now()")
        .execute(db.pool())
        .await
        .unwrap();

    // A worker rescues what dead ones held as it registers.
    let worker = logging_worker(&db).await;
    let (exit, lines, logs) = stop_logging(worker);
    let rescue = lines
        .iter()
        .find(|line| line["message"] == "re-queued the jobs of a worker that stopped beating");

    assert!(exit.success(), "{exit}");
    let rescue = rescue.unwrap_or_else(|| panic!("no rescue logged: {logs}"));
    assert_eq!(rescue["dead_worker"], "gone-1", "{logs}");
    assert_eq!(rescue["jobs"], 1, "{logs}");
}

#[tokio::test]
async fn a_job_that_cannot_make_progress_is_logged_as_going_back_to_the_queue() {
    let db = TestDb::new().await;
    admin(&db).await;
    let (mut server, api) = control_plane(&db, &[]).await;
    let workflow = create_workflow(api, &chain(free_address(), 1)).await;
    let execution = execute(api, &workflow, &json!({})).await;
    terminate(&mut server);
    // A snapshot the engine cannot read fails every attempt before anything is recorded.
    sqlx::query("UPDATE executions SET workflow_snapshot = '{\"broken\": true}' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&execution).unwrap())
        .execute(db.pool())
        .await
        .unwrap();

    let worker = logging_worker(&db).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM apalis.jobs WHERE last_result IS NOT NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the job was never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (exit, lines, logs) = stop_logging(worker);
    let warned = lines.iter().find(|line| {
        line["message"] == "cannot record the node run's progress; its job will be delivered again"
    });

    assert!(exit.success(), "{exit}");
    let warned = warned.unwrap_or_else(|| panic!("no redelivery logged: {logs}"));
    assert_eq!(warned["level"], "WARN", "{logs}");
    assert_eq!(warned["execution.id"], execution.as_str(), "{logs}");
    assert!(warned["error.message"].is_string(), "{logs}");
    // This error has no cause, so the line has no `error.source`, not a debug-printed "None".
    assert!(warned.get("error.source").is_none(), "{logs}");
}

#[tokio::test]
async fn a_node_that_fails_for_good_is_logged_with_its_error() {
    let db = TestDb::new().await;
    admin(&db).await;
    let (mut server, api) = control_plane(&db, &[]).await;
    let document = json!({"name": "failing", "status": "active",
        "trigger_config": {"type": "manual"},
        "nodes": [{"name": "start", "type": "trigger"},
                  {"name": "explode", "type": "transform",
                   "config": {"script": "throw \"boom\";"}}],
        "edges": [{"source": "start", "target": "explode"}]});
    let workflow = create_workflow(api, &document).await;
    let worker = logging_worker(&db).await;

    let execution = execute(api, &workflow, &json!({})).await;
    let finished = finished_within(api, &execution, Duration::from_secs(20)).await;
    terminate(&mut server);
    let (exit, lines, logs) = stop_logging(worker);
    let failed = lines
        .iter()
        .find(|line| line["message"] == "node failed; no retry left");

    assert_eq!(finished["status"], "failed", "{finished}");
    assert!(exit.success(), "{exit}");
    let failed = failed.unwrap_or_else(|| panic!("no failure logged: {logs}"));
    assert!(
        failed["error.message"]
            .as_str()
            .is_some_and(|m| m.contains("boom")),
        "{logs}"
    );
    assert_eq!(failed["retryable"], false, "{logs}");
}

/// A throwaway PostgreSQL server of this test's own, which it may stop and start, migrated:
/// its directory (kept until dropped), options, the running server and its URL.
async fn migrated_private_server() -> (tempfile::TempDir, Options, LocalPg, String) {
    let dir = scratch_dir();
    let options = Options {
        durable: false,
        ..Options::new(dir.path(), "quantumflow")
    };
    let server = LocalPg::start(&options).await.unwrap();
    let url = server.url();
    let migrated = run(quantumflow()
        .args(["migrate", "up"])
        .env("DATABASE_URL", &url));
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    (dir, options, server, url)
}

#[tokio::test]
async fn an_idle_worker_logs_each_spaced_attempt_to_reach_a_database_that_went_away() {
    let (_dir, options, server, url) = migrated_private_server().await;
    let worker = logging_worker_on(&url).await;

    // The private server listens on a unix socket, which is gone while it is down: every
    // attempt to connect fails at once.
    server.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = LocalPg::start(&options).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (exit, lines, logs) = stop_logging(worker);
    server.stop().await.unwrap();
    let retries = |operation: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|line| line["operation"] == operation && line["level"] == "WARN")
            .collect()
    };
    let (listen, fetch) = (retries("listen"), retries("fetch"));

    assert!(exit.success(), "{exit}");
    for (operation, retries) in [("listen", &listen), ("fetch", &fetch)] {
        assert!(!retries.is_empty(), "no {operation} retries logged: {logs}");
        assert!(
            retries
                .iter()
                .all(|line| line["attempt"].is_u64() && line["retry_in"].is_string()),
            "{logs}"
        );
        // Spaced by a growing backoff: a handful in three seconds, not a flood.
        assert!(
            retries.len() < 15,
            "{} {operation} lines: {logs}",
            retries.len()
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "listening for jobs again"),
        "{logs}"
    );
}

/// What one webhook delivery got back.
#[derive(Debug, Clone)]
struct Sent {
    status: u16,
    retry_after: Option<String>,
    execution_id: Option<String>,
}

/// Sends webhooks to `api` until `stop` is set, recording the status, `Retry-After` and
/// execution id of each; a request that takes longer than the server's own 30 s request
/// timeout is recorded as status 0.
async fn send_webhooks(api: SocketAddr, stop: Arc<AtomicBool>, sent: Arc<Mutex<Vec<Sent>>>) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = json!({ "n": n });
        let request = exchange(api, "POST", "/webhook/load", &[], Some(&body));
        let outcome = match tokio::time::timeout(Duration::from_secs(35), request).await {
            Ok((status, headers, body)) => {
                let retry_after = headers
                    .iter()
                    .find(|(name, _)| name == "retry-after")
                    .map(|(_, value)| value.clone());
                let execution_id = body["execution_id"].as_str().map(ToOwned::to_owned);
                Sent {
                    status,
                    retry_after,
                    execution_id,
                }
            }
            Err(_) => Sent {
                status: 0,
                retry_after: None,
                execution_id: None,
            },
        };
        sent.lock().unwrap().push(outcome);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn accepted(sent: &Mutex<Vec<Sent>>) -> usize {
    sent.lock()
        .unwrap()
        .iter()
        .filter(|s| s.status == 202)
        .count()
}

async fn wait_accepted(sent: &Mutex<Vec<Sent>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted(sent) < count {
        assert!(
            Instant::now() < deadline,
            "only {} accepted",
            accepted(sent)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_rides_out_a_database_restart_under_load() {
    let (_dir, options, server, url) = migrated_private_server().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    admin_in(&pool).await;
    pool.close().await;
    let mut cluster = Cluster::on(url, 2, &[]).await;
    // Slow enough that nodes are in flight when the database goes, and finish during the
    // outage: their results, and the fetches that follow, meet the missing database.
    let receiver = Receiver::start_with(Arc::new(|_, _| (200, Duration::from_millis(300)))).await;
    let document = json!({
        "name": "load", "status": "active",
        "trigger_config": {"type": "webhook",
                           "config": {"method": "POST", "path": "/webhook/load"}},
        "nodes": [{"name": "hook", "type": "trigger"},
                  {"name": "call", "type": "action", "config": {
                      "connector": "http", "method": "POST",
                      "url": format!("http://{}/load", receiver.address)}}],
        "edges": [{"source": "hook", "target": "call"}]
    });
    create_workflow(cluster.api, &document).await;
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let sender = tokio::spawn(send_webhooks(cluster.api, stop.clone(), sent.clone()));
    wait_accepted(&sent, 20).await;
    receiver.wait_for_requests(8).await;

    server.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unready = get(cluster.api, "/readyz").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = LocalPg::start(&options).await.unwrap();
    let before = accepted(&sent);
    wait_accepted(&sent, before + 20).await;
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let sent = sent.lock().unwrap().clone();
    let mut unfinished = Vec::new();
    for id in sent.iter().filter_map(|s| s.execution_id.as_ref()) {
        let execution = finished_within(cluster.api, id, Duration::from_secs(60)).await;
        if execution["status"] != "success" {
            unfinished.push(execution);
        }
    }
    let running: Vec<bool> = (0..3).map(|i| cluster.exited(i).is_none()).collect();
    let ready = get(cluster.api, "/readyz").await.map(|(status, _)| status);
    drop(cluster);
    server.stop().await.unwrap();

    let statuses: Vec<u16> = sent.iter().map(|s| s.status).collect();
    assert!(
        statuses.iter().all(|s| matches!(s, 202 | 503)),
        "only 202 and 503: {statuses:?}"
    );
    let refused: Vec<_> = sent.iter().filter(|s| s.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "no request met the outage: {statuses:?}"
    );
    assert!(
        refused.iter().all(|s| s.retry_after.is_some()),
        "a 503 without Retry-After: {refused:?}"
    );
    assert_eq!(unready.map(|(status, _)| status), Some(503));
    assert!(unfinished.is_empty(), "{unfinished:#?}");
    assert_eq!(running, [true, true, true], "no process stopped");
    assert_eq!(ready, Some(200));
}

#[tokio::test]
async fn sigterm_makes_the_control_plane_unready_and_it_finishes_the_request_in_flight() {
    let db = TestDb::new().await;
    admin(&db).await;
    let (mut server, api) = control_plane(&db, &["--shutdown-delay", "2"]).await;
    let body = json!({"name": "slow upload", "status": "active",
                      "trigger_config": {"type": "manual"},
                      "nodes": [{"name": "start", "type": "trigger"}], "edges": []})
    .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut upload = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /api/v1/workflows HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}",
        crate::support::ADMIN_TOKEN,
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = nix::unistd::Pid::from_raw(server.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    let unready = loop {
        match get(api, "/readyz").await {
            Some((503, body)) => break Some(body),
            _ if Instant::now() > deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let alive = get(api, "/healthz").await.map(|(status, _)| status);
    // Past the delay the listener is closed, and only the upload is left.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refused = get(api, "/healthz").await;
    upload.write_all(rest.as_bytes()).await.unwrap();
    let mut response = String::new();
    upload.read_to_string(&mut response).await.unwrap();
    let exit = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM workflows WHERE name = 'slow upload'")
            .fetch_one(db.pool())
            .await
            .unwrap();

    let unready = unready.expect("/readyz turned 503 within a second of SIGTERM");
    assert!(unready.contains("draining"), "{unready}");
    assert_eq!(alive, Some(200));
    assert_eq!(refused, None, "a new connection was served after the delay");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(stored, 1);
    assert!(exit.success(), "{exit}");
}

/// Polls a worker's admin `/readyz` until it stops answering 200, for at most 5 s, and returns
/// its last answer.
async fn unready(admin: SocketAddr) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = send(admin, "GET", "/readyz", &[], None).await;
        if status != 200 || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
