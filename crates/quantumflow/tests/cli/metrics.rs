//! `/metrics` of every process, checked against the database, and the worker's admin probes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::cluster::{
    Cluster, admin, control_plane, control_plane_on, create_workflow, execute, finished,
};
use crate::receiver::Receiver;
use crate::support::{exchange, get, send, terminate};

/// One scrape, or several summed: every sample with its name and labels.
pub(crate) struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Reads the Prometheus text format; comment lines are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = parse_series(series);
                (
                    name,
                    labels,
                    value.parse().expect("a sample's value is a number"),
                )
            })
            .collect();
        Self { samples }
    }

    /// The samples of all `scrapes` together, so sums run over every process.
    fn merge(scrapes: Vec<Self>) -> Self {
        Self {
            samples: scrapes.into_iter().flat_map(|s| s.samples).collect(),
        }
    }

    /// The sum of the samples of `series` (written as the format writes it); 0 when absent.
    pub(crate) fn value(&self, series: &str) -> f64 {
        let (name, labels) = parse_series(series);
        self.samples
            .iter()
            .filter(|(n, l, _)| *n == name && *l == labels)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether any process reported `series`, zero or not.
    fn has(&self, series: &str) -> bool {
        let (name, labels) = parse_series(series);
        self.samples
            .iter()
            .any(|(n, l, _)| *n == name && *l == labels)
    }

    /// `name`'s samples summed by the values of `keys`, leaving out zeros.
    fn by(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut sums = BTreeMap::new();
        for (_, labels, value) in self.samples.iter().filter(|(n, _, _)| n == name) {
            let key = keys
                .iter()
                .map(|k| labels.get(*k).cloned().unwrap_or_default())
                .collect();
            *sums.entry(key).or_insert(0.0) += value;
        }
        sums.retain(|_, v| *v != 0.0);
        sums
    }
}

/// Splits `name{a="x",b="y"}` into the name and its labels; values may hold `{`, `}` and `,`.
fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), BTreeMap::new());
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').to_owned();
        if key.is_empty() || key == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} of {series}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    (name.to_owned(), labels)
}

async fn scrape(address: SocketAddr) -> Scrape {
    let (status, text) = get(address, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("quantile="),
        "a histogram became a summary: {text}"
    );
    Scrape::parse(&text)
}

async fn scrape_all(cluster: &Cluster) -> Scrape {
    let mut scrapes = vec![scrape(cluster.api).await];
    for admin in &cluster.admins {
        scrapes.push(scrape(*admin).await);
    }
    Scrape::merge(scrapes)
}

/// Rows of `(labels..., count)` as a map like [`Scrape::by`]'s.
async fn counted(db: &TestDb, sql: &str) -> BTreeMap<Vec<String>, f64> {
    let rows: Vec<(Vec<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(db.pool())
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (k, n as f64))
        .collect()
}

/// What the metrics and the database say, side by side.
#[derive(Debug, PartialEq)]
struct Books {
    started: BTreeMap<Vec<String>, f64>,
    finished: BTreeMap<Vec<String>, f64>,
    node_runs: BTreeMap<Vec<String>, f64>,
    attempts: BTreeMap<Vec<String>, f64>,
    retries: f64,
    exhausted: f64,
}

impl Books {
    fn from_metrics(scraped: &Scrape) -> Self {
        let total = |name: &str| scraped.by(name, &[]).values().sum::<f64>();
        Self {
            started: scraped.by("quantumflow_executions_started_total", &["workflow_id"]),
            finished: scraped.by(
                "quantumflow_executions_finished_total",
                &["workflow_id", "status"],
            ),
            node_runs: scraped.by("quantumflow_node_runs_total", &["node_type", "status"]),
            attempts: scraped.by(
                "quantumflow_node_run_duration_seconds_count",
                &["node_type"],
            ),
            retries: total("quantumflow_node_retries_scheduled_total"),
            exhausted: total("quantumflow_node_attempts_exhausted_total"),
        }
    }

    async fn from_database(db: &TestDb) -> Self {
        let one = |sql: &'static str| async move {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap();
            n as f64
        };
        Self {
            started: counted(
                db,
                "SELECT ARRAY[workflow_id::text], count(*) FROM executions GROUP BY 1",
            )
            .await,
            finished: counted(
                db,
                "SELECT ARRAY[workflow_id::text, status::text], count(*) FROM executions \
                 GROUP BY 1",
            )
            .await,
            node_runs: counted(
                db,
                "SELECT ARRAY[node_type::text, status::text], count(*) FROM node_runs GROUP BY 1",
            )
            .await,
            // Every attempt of a node that ran, the trigger aside, was timed once.
            attempts: counted(
                db,
                "SELECT ARRAY[node_type::text], sum(retry_count + 1)::int8 FROM node_runs \
                 WHERE status IN ('success', 'failed') AND node_type <> 'trigger' GROUP BY 1",
            )
            .await,
            retries: one("SELECT coalesce(sum(retry_count), 0)::int8 FROM node_runs").await,
            exhausted: one("SELECT count(*) FROM node_runs \
                 WHERE status = 'failed' AND max_retries > 0 AND retry_count = max_retries")
            .await,
        }
    }
}

fn branches() -> Value {
    json!({
        "name": "branches", "status": "active", "trigger_config": {"type": "manual"},
        "nodes": [
            {"name": "start", "type": "trigger"},
            {"name": "check", "type": "condition",
             "config": {"expression": "{{input.amount}} > 100"}},
            {"name": "big", "type": "transform", "config": {"template": {"size": "big"}}},
            {"name": "small", "type": "transform", "config": {"template": {"size": "small"}}},
            {"name": "after_small", "type": "transform", "config": {"template": {"x": 1}}}
        ],
        "edges": [
            {"source": "start", "target": "check"},
            {"source": "check", "target": "big", "type": "conditional",
             "condition": {"expression": "{{output.result}} == true"}},
            {"source": "check", "target": "small", "type": "conditional",
             "condition": {"expression": "{{output.result}} == false"}},
            {"source": "small", "target": "after_small"}
        ]
    })
}

fn notify(receiver: SocketAddr) -> Value {
    json!({
        "name": "notify", "status": "active",
        "trigger_config": {"type": "webhook",
                           "config": {"method": "POST", "path": "/webhook/metered"}},
        "nodes": [
            {"name": "hook", "type": "trigger"},
            {"name": "shape", "type": "transform",
             "config": {"template": {"text": "{{input.text}}"}}},
            {"name": "post", "type": "action", "config": {
                "connector": "http", "method": "POST", "url": format!("http://{receiver}/ok"),
                "body": {"text": "{{input.text}}"}}}
        ],
        "edges": [{"source": "hook", "target": "shape"}, {"source": "shape", "target": "post"}]
    })
}

/// Its action keeps getting 503s, is retried twice, and fails; the node after it never runs.
fn flaky(receiver: SocketAddr) -> Value {
    json!({
        "name": "flaky", "status": "active", "trigger_config": {"type": "manual"},
        "settings": {"retry_policy": {"max_retries": 2, "retry_delay": 1, "backoff": "fixed"}},
        "nodes": [
            {"name": "start", "type": "trigger"},
            {"name": "call", "type": "action", "config": {
                "connector": "http", "method": "POST", "url": format!("http://{receiver}/fail")}},
            {"name": "after", "type": "transform", "config": {"template": {"x": 1}}}
        ],
        "edges": [{"source": "start", "target": "call"}, {"source": "call", "target": "after"}]
    })
}

#[tokio::test]
async fn counters_summed_over_every_process_match_the_database() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start_with(Arc::new(|request, _| {
        let status = if request.path == "/fail" { 503 } else { 200 };
        (status, Duration::ZERO)
    }))
    .await;
    let cluster = Cluster::start(&db).await;
    let branches = create_workflow(cluster.api, &branches()).await;
    create_workflow(cluster.api, &notify(receiver.address)).await;
    let flaky = create_workflow(cluster.api, &flaky(receiver.address)).await;

    let mut executions = Vec::new();
    for amount in [500, 50] {
        executions.push(execute(cluster.api, &branches, &json!({"amount": amount})).await);
    }
    for _ in 0..2 {
        executions.push(execute(cluster.api, &flaky, &json!({})).await);
    }
    for text in ["one", "two"] {
        let body = json!({"text": text});
        let (status, accepted) =
            send(cluster.api, "POST", "/webhook/metered", &[], Some(&body)).await;
        assert_eq!(status, 202, "{accepted}");
        executions.push(accepted["execution_id"].as_str().unwrap().to_owned());
    }
    let mut statuses = Vec::new();
    for id in &executions {
        statuses.push(finished(cluster.api, id).await["status"].clone());
    }

    // Counters are published right after their transaction commits, which may be a moment
    // after the API already shows the execution as ended.
    let expected = Books::from_database(&db).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (scraped, books) = loop {
        let scraped = scrape_all(&cluster).await;
        let books = Books::from_metrics(&scraped);
        let settled = scraped.value("quantumflow_queue_runnable_jobs") == 0.0
            && scraped.value("quantumflow_queue_oldest_runnable_age_seconds") == 0.0
            && scraped.value("quantumflow_worker_slots{state=\"busy\"}") == 0.0;
        if (books == expected && settled) || Instant::now() > deadline {
            break (scraped, books);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let ended = |s: &str| statuses.iter().filter(|status| *status == s).count();
    assert_eq!((ended("success"), ended("failed")), (4, 2), "{statuses:?}");
    // The scenario reaches every kind of count, so agreement below is not agreement on zeros.
    assert_eq!(expected.retries, 4.0, "{expected:#?}");
    assert_eq!(expected.exhausted, 2.0, "{expected:#?}");
    assert_eq!(
        expected
            .node_runs
            .get(&vec!["transform".to_owned(), "skipped".to_owned()]),
        Some(&5.0),
        "{expected:#?}"
    );
    assert_eq!(books, expected);
    assert_eq!(
        scraped
            .value("quantumflow_webhook_requests_total{route=\"/webhook/{*path}\",status=\"202\"}"),
        2.0
    );
    let api_starts = "quantumflow_webhook_requests_total\
        {route=\"/api/v1/workflows/{id}/executions\",status=\"202\"}";
    assert_eq!(scraped.value(api_starts), 4.0);
    let accepted = "quantumflow_webhook_accept_duration_seconds_count\
        {route=\"/webhook/{*path}\",status=\"202\"}";
    assert_eq!(scraped.value(accepted), 2.0);
    let routes = scraped.by("quantumflow_webhook_requests_total", &["route"]);
    assert!(
        routes.keys().all(|route| !route[0].contains("metered")),
        "a raw path became a label: {routes:?}"
    );
    // Histograms come with the explicit buckets, ending in +Inf.
    let fastest =
        "quantumflow_node_run_duration_seconds_bucket{node_type=\"action\",le=\"0.0005\"}";
    assert!(scraped.has(fastest));
    let all = "quantumflow_node_run_duration_seconds_bucket{node_type=\"action\",le=\"+Inf\"}";
    assert_eq!(scraped.value(all), 8.0);
    // Gauges read from the queue are the same from every process: three processes, all zero.
    assert_eq!(scraped.value("quantumflow_queue_runnable_jobs"), 0.0);
    assert_eq!(
        scraped.value("quantumflow_queue_oldest_runnable_age_seconds"),
        0.0
    );
    assert_eq!(
        scraped.value("quantumflow_worker_slots{state=\"busy\"}"),
        0.0
    );
    assert_eq!(
        scraped.value("quantumflow_worker_slots{state=\"free\"}"),
        8.0
    );
    assert!(scraped.value("quantumflow_db_pool_max_connections") > 0.0);
}

/// Polls `/readyz` until it answers `want`, or gives the last answer after 15 s.
async fn readiness(address: SocketAddr, want: u16) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get(address, "/readyz").await;
        if let Some((status, body)) = &answer
            && (*status == want || Instant::now() > deadline)
        {
            return (*status, serde_json::from_str(body).unwrap_or(Value::Null));
        }
        assert!(Instant::now() < deadline, "no answer from {address}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_is_ready_only_with_a_reachable_migrated_database() {
    let db = TestDb::new().await;
    let cluster = Cluster::with_workers(&db, 1).await;
    let address = cluster.admins[0];

    let (status, ready) = readiness(address, 200).await;
    let health = get(address, "/healthz").await;
    let metrics = get(address, "/metrics").await;
    let name = ready["worker"].as_str().unwrap_or_default().to_owned();
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.workers WHERE id = $1")
        .bind(&name)
        .fetch_one(db.pool())
        .await
        .unwrap();

    // Schema behind: the newest migration is not recorded as applied.
    sqlx::query(
        "CREATE TABLE newest AS SELECT * FROM _sqlx_migrations \
         WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version IN (SELECT version FROM newest)")
        .execute(db.pool())
        .await
        .unwrap();
    let behind = readiness(address, 503).await;
    sqlx::query("INSERT INTO _sqlx_migrations SELECT * FROM newest")
        .execute(db.pool())
        .await
        .unwrap();
    let caught_up = readiness(address, 200).await;

    // Unreachable: the database takes no new connections, and the pool's are closed. The
    // worker's LISTEN connection is spared: losing it wakes the worker to fetch, and a fetch
    // failing can stop the worker process, which is not what this test is about.
    let server = sqlx::PgPool::connect_with(quantumflow_testkit::server_options())
        .await
        .unwrap();
    let lock = format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name());
    sqlx::query(sqlx::AssertSqlSafe(lock))
        .execute(&server)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND query NOT LIKE 'LISTEN%'",
    )
    .bind(db.name())
    .execute(&server)
    .await
    .unwrap();
    let unreachable = readiness(address, 503).await;
    let still_alive = get(address, "/healthz").await;
    let unlock = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name());
    sqlx::query(sqlx::AssertSqlSafe(unlock))
        .execute(&server)
        .await
        .unwrap();

    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert!(ready["schema"]["quantumflow"].is_i64(), "{ready}");
    assert_eq!(
        registered, 1,
        "worker {name:?} has no row in apalis.workers"
    );
    assert_eq!(health, Some((200, r#"{"status":"ok"}"#.to_owned())));
    let (code, text) = metrics.unwrap();
    assert_eq!(code, 200);
    let scraped = Scrape::parse(&text);
    assert_eq!(
        scraped.value("quantumflow_worker_slots{state=\"free\"}"),
        4.0
    );
    // Reported before any timeout, so `increase()` sees the first one.
    assert!(
        scraped.has("quantumflow_db_pool_acquire_timeouts_total"),
        "{text}"
    );

    assert_eq!(behind.0, 503, "{}", behind.1);
    assert_eq!(behind.1["status"], 503);
    let detail = behind.1["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("lacks quantumflow migration"), "{detail}");
    assert_eq!(caught_up.0, 200, "{}", caught_up.1);

    assert_eq!(unreachable.0, 503, "{}", unreachable.1);
    let detail = unreachable.1["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("database"), "{detail}");
    assert_eq!(still_alive.map(|(status, _)| status), Some(200));
}

/// Waits until `expected` backends of the test's database wait for a lock, for at most 15 s;
/// returns how many do.
async fn lock_waiters(db: &TestDb, expected: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if waiting == expected || Instant::now() > deadline {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_pool_is_told_apart_from_an_outage() {
    let db = TestDb::new().await;
    admin(&db).await;
    let flags = ["--db-pool-size", "1", "--db-acquire-timeout-ms", "300"];
    let (mut server, api) = control_plane(&db, &flags).await;

    // A listing blocked on a lock the test holds keeps the pool's one connection busy.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE workflows IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let held = tokio::spawn(async move { send(api, "GET", "/api/v1/workflows", &[], None).await });
    assert_eq!(lock_waiters(&db, 1).await, 1, "the listing never blocked");
    let refused = exchange(api, "GET", "/api/v1/workflows", &[], None).await;
    let unready = get(api, "/readyz").await.unwrap();
    // Each scrape's backlog query waits for the pool in vain too, and counts that.
    let (_, first) = get(api, "/metrics").await.unwrap();
    let (_, second) = get(api, "/metrics").await.unwrap();
    blocker.commit().await.unwrap();
    let (held, _) = held.await.unwrap();
    terminate(&mut server);

    assert_eq!(held, 200);
    let (status, headers, body) = refused;
    assert_eq!(status, 503, "{body}");
    assert!(
        headers.contains(&("retry-after".to_owned(), "5".to_owned())),
        "{headers:?}"
    );
    let busy = "no database connection became free in time";
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(busy), "{body}");
    assert!(!detail.contains("unavailable"), "{body}");
    assert_eq!(unready.0, 503, "{}", unready.1);
    assert!(
        unready.1.contains("at its connection limit"),
        "{}",
        unready.1
    );
    let timeouts = "quantumflow_db_pool_acquire_timeouts_total";
    let (first, second) = (Scrape::parse(&first), Scrape::parse(&second));
    assert!(first.value(timeouts) >= 3.0, "{}", first.value(timeouts));
    assert!(
        second.value(timeouts) > first.value(timeouts),
        "a scrape's own timeout went uncounted"
    );
}

/// A TCP port that forwards to the test database's server until [`Relay::close`], after which
/// connections to it are refused, as they are by a server that went down.
struct Relay {
    url: String,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn to(db: &TestDb) -> Self {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr as _;

        let server = PgConnectOptions::from_str(&db.url()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "postgres://{}@{}/{}",
            server.get_username(),
            listener.local_addr().unwrap(),
            server.get_database().unwrap()
        );
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepting = {
            let tasks = Arc::clone(&tasks);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = server.clone();
                    let relay = tokio::spawn(async move {
                        // The server is reached as the tests reach it: by its socket or by TCP.
                        let port = server.get_port();
                        match server.get_socket() {
                            Some(dir) => {
                                let path = dir.join(format!(".s.PGSQL.{port}"));
                                pipe(client, tokio::net::UnixStream::connect(path).await).await;
                            }
                            None => {
                                let address = (server.get_host(), port);
                                pipe(client, tokio::net::TcpStream::connect(address).await).await;
                            }
                        }
                    });
                    tasks.lock().unwrap().push(relay);
                }
            })
        };
        tasks.lock().unwrap().push(accepting);
        Self { url, tasks }
    }

    /// Closes the port and every connection through it.
    fn close(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Copies between `client` and `upstream` until either side closes.
async fn pipe<S>(mut client: tokio::net::TcpStream, upstream: std::io::Result<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Ok(mut upstream) = upstream {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_refuses_connections_is_not_called_a_busy_pool() {
    let db = TestDb::new().await;
    let relay = Relay::to(&db).await;
    let flags = ["--db-acquire-timeout-ms", "300"];
    let (mut server, api) = control_plane_on(&relay.url, &flags).await;
    assert_eq!(get(api, "/readyz").await.unwrap().0, 200);

    relay.close();
    // The pool's idle connections were cut; the first caller finds that out and closes them.
    let _ = get(api, "/readyz").await;
    let unready = get(api, "/readyz").await.unwrap();
    terminate(&mut server);

    assert_eq!(unready.0, 503, "{}", unready.1);
    assert!(
        unready.1.contains("the database is unreachable"),
        "{}",
        unready.1
    );
    assert!(!unready.1.contains("connection limit"), "{}", unready.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_behind_a_lock_do_not_pin_the_pools_connections() {
    let db = TestDb::new().await;
    let cluster = Cluster::with_workers(&db, 1).await;
    let worker = cluster.admins[0];
    readiness(worker, 200).await;

    // Every probe reads the migrations table; a lock on it holds them all up, as a long
    // migration or a stuck transaction would.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // More probes at once than the worker's pool has connections (--concurrency 4, so 8).
    let probes: Vec<_> = (0..10)
        .map(|i| {
            let address = if i % 2 == 0 { worker } else { cluster.api };
            tokio::spawn(async move { get(address, "/readyz").await })
        })
        .collect();
    let mut answers = Vec::new();
    for probe in probes {
        answers.push(probe.await.unwrap());
    }
    // Each probe's statement is cancelled by the server soon after the probe gave up, so no
    // connection stays behind the lock.
    let waiting = lock_waiters(&db, 0).await;
    let (_, text) = get(worker, "/metrics").await.unwrap();
    blocker.commit().await.unwrap();
    let after = readiness(worker, 200).await;

    assert_eq!(waiting, 0, "probes left connections waiting for the lock");
    for answer in &answers {
        let (status, body) = answer.as_ref().expect("every probe is answered");
        assert_eq!(*status, 503, "{body}");
    }
    let scraped = Scrape::parse(&text);
    assert!(
        scraped.value("quantumflow_db_pool_connections{state=\"in_use\"}")
            < scraped.value("quantumflow_db_pool_max_connections"),
        "{text}"
    );
    assert_eq!(after.0, 200, "{}", after.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_too_small_for_its_callers_shows_their_waits_and_give_ups() {
    let db = TestDb::new().await;
    admin(&db).await;
    let flags = ["--db-pool-size", "1", "--db-acquire-timeout-ms", "2000"];
    let (mut server, api) = control_plane(&db, &flags).await;
    let list =
        move || tokio::spawn(async move { send(api, "GET", "/api/v1/workflows", &[], None).await });

    // A listing blocked on a lock the test holds keeps the pool's one connection busy.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE workflows IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let held = list();
    assert_eq!(
        lock_waiters(&db, 1).await,
        1,
        "the listing never blocked on the lock"
    );
    // One caller waits out the whole timeout; the next gets the connection once the lock goes,
    // after waiting a few hundred milliseconds for it.
    let (gave_up, _) = list().await.unwrap();
    let waited = list();
    tokio::time::sleep(Duration::from_millis(400)).await;
    blocker.commit().await.unwrap();
    let (held, _) = held.await.unwrap();
    let (waited, _) = waited.await.unwrap();
    let (_, text) = get(api, "/metrics").await.unwrap();
    terminate(&mut server);

    assert_eq!((held, gave_up, waited), (200, 503, 200));
    let scraped = Scrape::parse(&text);
    assert!(
        scraped.value("quantumflow_db_pool_acquire_timeouts_total") >= 1.0,
        "{text}"
    );
    let waits = scraped.value("quantumflow_db_pool_acquire_wait_seconds_count");
    let quick = scraped.value("quantumflow_db_pool_acquire_wait_seconds_bucket{le=\"0.25\"}");
    assert!(waits > quick, "no wait over 0.25 s was recorded: {text}");
    assert!(
        scraped.value("quantumflow_db_pool_acquire_wait_seconds_sum") >= 0.3,
        "{text}"
    );
}

#[tokio::test]
async fn the_operators_routes_answer_wrong_methods_and_paths_with_problems() {
    let db = TestDb::new().await;
    let cluster = Cluster::with_workers(&db, 1).await;
    let admin = cluster.admins[0];
    readiness(admin, 200).await;

    let answers = [
        (
            cluster.api,
            "DELETE",
            "/metrics",
            405,
            "does not accept DELETE",
        ),
        (admin, "POST", "/readyz", 405, "does not accept POST"),
        (
            admin,
            "GET",
            "/status",
            404,
            "admin listener serves GET /healthz",
        ),
    ];
    for (address, method, path, status, detail) in answers {
        let (got, problem) = send(address, method, path, &[], None).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(problem["status"], status, "{method} {path}: {problem}");
        let text = problem["detail"].as_str().unwrap_or_default();
        assert!(text.contains(detail), "{method} {path}: {text}");
    }
}
