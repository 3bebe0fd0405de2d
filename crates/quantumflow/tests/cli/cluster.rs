//! A control plane and two worker processes on one test database, and helpers to drive them.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::users::{self, NewUser};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, free_address, quantumflow, send, terminate, wait_ready};

/// How the tests' workers are allowed to reach the loopback receivers the tests start, the
/// way an operator allows a service of their own; workers refuse loopback otherwise.
const ALLOW_RECEIVERS: &[&str] = &["--allow-outbound", "127.0.0.1/32"];

/// A control plane and worker processes on `db`, stopped when dropped.
pub(crate) struct Cluster {
    pub(crate) api: SocketAddr,
    /// The admin listener of each worker started, in order.
    pub(crate) admins: Vec<SocketAddr>,
    url: String,
    worker_flags: Vec<&'static str>,
    /// `QUANTUMFLOW_CREDENTIAL_KEYS` of every process, if any.
    keys: Option<String>,
    processes: Vec<Child>,
}

impl Cluster {
    /// A control plane and two workers.
    pub(crate) async fn start(db: &TestDb) -> Self {
        Self::with_workers(db, 2).await
    }

    /// A control plane and `workers` workers.
    pub(crate) async fn with_workers(db: &TestDb, workers: usize) -> Self {
        Self::launch(db, workers, ALLOW_RECEIVERS, None).await
    }

    /// A control plane and two workers, all with the credential keys `keys`.
    pub(crate) async fn with_keys(db: &TestDb, keys: &str) -> Self {
        Self::launch(db, 2, ALLOW_RECEIVERS, Some(keys.to_owned())).await
    }

    /// A control plane and two workers that allow no internal address, as a worker started
    /// without flags.
    pub(crate) async fn refusing_loopback(db: &TestDb) -> Self {
        Self::launch(db, 2, &[], None).await
    }

    /// A control plane and `workers` workers on the database at `url`, the workers started with
    /// `flags` besides those letting them reach the tests' receivers.
    pub(crate) async fn on(url: String, workers: usize, flags: &[&'static str]) -> Self {
        let mut worker_flags = ALLOW_RECEIVERS.to_vec();
        worker_flags.extend_from_slice(flags);
        Self::launch_on(url, workers, worker_flags, None).await
    }

    async fn launch(
        db: &TestDb,
        workers: usize,
        worker_flags: &'static [&'static str],
        keys: Option<String>,
    ) -> Self {
        Self::launch_on(db.url(), workers, worker_flags.to_vec(), keys).await
    }

    async fn launch_on(
        url: String,
        workers: usize,
        worker_flags: Vec<&'static str>,
        keys: Option<String>,
    ) -> Self {
        let api = free_address();
        let listen = api.to_string();
        let mut server = spawn(&url, keys.as_deref(), &["serve", "--listen", &listen]);
        wait_ready(&mut server, api).await;
        let mut cluster = Self {
            api,
            admins: Vec::new(),
            url,
            worker_flags,
            keys,
            processes: vec![server],
        };
        for _ in 0..workers {
            cluster.add_worker();
        }
        cluster
    }

    /// Starts one more worker; returns its index for [`Cluster::kill`]. Workers run four nodes
    /// at once unless the cluster's flags say otherwise.
    pub(crate) fn add_worker(&mut self) -> usize {
        let admin = free_address();
        let listen = admin.to_string();
        self.admins.push(admin);
        let mut args = vec!["worker", "--admin-listen", &listen];
        if !self.worker_flags.contains(&"--concurrency") {
            args.extend(["--concurrency", "4"]);
        }
        args.extend_from_slice(&self.worker_flags);
        self.processes
            .push(spawn(&self.url, self.keys.as_deref(), &args));
        self.processes.len() - 1
    }

    /// Stops process `index` with SIGTERM and returns how it exited.
    pub(crate) fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        terminate(&mut self.processes[index])
    }

    /// Sends SIGTERM to process `index` without waiting for it to exit.
    pub(crate) fn signal(&self, index: usize) {
        let pid = nix::unistd::Pid::from_raw(self.processes[index].id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// How process `index` exited, if it has.
    pub(crate) fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.processes[index].try_wait().unwrap()
    }

    /// Kills process `index` with SIGKILL: no shutdown, no goodbye to the queue.
    pub(crate) fn kill(&mut self, index: usize) {
        self.processes[index].kill().unwrap();
        self.processes[index].wait().unwrap();
    }
}

/// A control plane alone, started with `flags` besides its address, and ready.
pub(crate) async fn control_plane(db: &TestDb, flags: &[&str]) -> (Child, SocketAddr) {
    control_plane_on(&db.url(), flags).await
}

/// [`control_plane`] on the database at `url`.
pub(crate) async fn control_plane_on(url: &str, flags: &[&str]) -> (Child, SocketAddr) {
    let api = free_address();
    let listen = api.to_string();
    let mut args = vec!["serve", "--listen", &listen];
    args.extend_from_slice(flags);
    let mut server = spawn(url, None, &args);
    wait_ready(&mut server, api).await;
    (server, api)
}

fn spawn(url: &str, keys: Option<&str>, args: &[&str]) -> Child {
    let mut command = quantumflow();
    if let Some(keys) = keys {
        command.env(quantumflow_secrets::KEYS_VAR, keys);
    }
    command
        .args(args)
        .env("DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.processes {
            if child.try_wait().ok().flatten().is_none() {
                terminate(child);
            }
        }
    }
}

/// The `admin` superuser that owns workflows created through the API, holding
/// [`ADMIN_TOKEN`], which `send` presents.
pub(crate) async fn admin(db: &TestDb) {
    admin_in(db.pool()).await;
}

/// [`admin`] in the database of `pool`.
pub(crate) async fn admin_in(pool: &sqlx::PgPool) {
    let new = NewUser {
        email: "admin@example.com",
        username: "admin",
        hashed_password: "x",
        full_name: None,
        is_superuser: true,
    };
    let admin = users::insert(pool, &new).await.unwrap();
    grant_admin_token(pool, admin.id).await;
}

/// Gives user `id` the token [`ADMIN_TOKEN`], as `quantumflow token create` would give one.
pub(crate) async fn grant_admin_token(pool: &sqlx::PgPool, id: uuid::Uuid) {
    sqlx::query(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix) \
         VALUES ($1, 'tests', sha256(convert_to($2, 'UTF8')), left($2, 7))",
    )
    .bind(id)
    .bind(ADMIN_TOKEN)
    .execute(pool)
    .await
    .unwrap();
}

/// An active Slack connector of the `admin` user that posts to `webhook_url`; returns its id.
pub(crate) async fn slack_connector(db: &TestDb, webhook_url: &str) -> uuid::Uuid {
    let owner = users::find_by_login(db.pool(), "admin")
        .await
        .unwrap()
        .expect("the admin user exists");
    let connector = connectors::insert(
        db.pool(),
        &NewConnector {
            id: uuid::Uuid::now_v7(),
            name: "Slack",
            kind: "slack",
            description: None,
            config: &json!({}),
            credentials: &json!({ "webhook_url": webhook_url }),
            is_active: true,
            test_status: None,
            owner_id: owner.id,
        },
    )
    .await
    .unwrap();
    connector.id
}

/// Polls an execution until it has ended.
pub(crate) async fn finished(api: SocketAddr, id: &str) -> Value {
    finished_within(api, id, Duration::from_secs(60)).await
}

/// Polls an execution until it has ended, for at most `limit`.
pub(crate) async fn finished_within(api: SocketAddr, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, execution) =
            send(api, "GET", &format!("/api/v1/executions/{id}"), &[], None).await;
        assert_eq!(status, 200, "{execution}");
        if !matches!(execution["status"].as_str(), Some("pending" | "running")) {
            return execution;
        }
        assert!(
            Instant::now() < deadline,
            "execution {id} did not finish: {execution:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a workflow through the API and returns its id.
pub(crate) async fn create_workflow(api: SocketAddr, document: &Value) -> String {
    let (status, workflow) = send(api, "POST", "/api/v1/workflows", &[], Some(document)).await;
    assert_eq!(status, 201, "{workflow:#}");
    workflow["id"].as_str().unwrap().to_owned()
}

/// Starts an execution of a workflow by id and returns the execution's id.
pub(crate) async fn execute(api: SocketAddr, workflow: &str, input: &Value) -> String {
    let path = format!("/api/v1/workflows/{workflow}/executions");
    let (status, accepted) = send(api, "POST", &path, &[], Some(input)).await;
    assert_eq!(status, 202, "{accepted:#}");
    accepted["execution_id"].as_str().unwrap().to_owned()
}

/// The node run called `name` in an execution as the API shows it.
pub(crate) fn run<'a>(execution: &'a Value, name: &str) -> &'a Value {
    execution["node_runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["node_name"] == name))
        .unwrap_or_else(|| panic!("no node run {name}: {execution:#}"))
}
