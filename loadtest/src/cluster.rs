//! The QuantumFlow processes under test: `migrate`, `seed` and `token create` run once per
//! `serve` and any number of `worker` processes run as children of the harness.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches only the
//! harness, which then stops them itself; they are also killed when their handles are
//! dropped, so an error or an interrupted run leaves no process behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::error::{HarnessError, Result};
use crate::procstat::{self, ProcSample};

/// How long `serve` may take to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long processes may take to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Quiet logs: the control plane logs every accepted execution at `info`, which would cost
/// it noticeable CPU and fill the disk under load.
const RUST_LOG: &str = "warn";

/// The QuantumFlow executable and where its processes' logs go.
#[derive(Debug, Clone)]
pub(crate) struct Product {
    exe: PathBuf,
}

impl Product {
    /// The binary at `given`, or `quantumflow` next to the harness's own executable.
    pub(crate) fn locate(given: Option<&Path>) -> Result<Self> {
        let exe = match given {
            Some(path) => path.to_owned(),
            None => std::env::current_exe()
                .map_err(HarnessError::io("find", "the harness's own executable"))?
                .with_file_name("quantumflow"),
        };
        if !exe.is_file() {
            return Err(HarnessError::Invalid(format!(
                "no QuantumFlow binary at {}; build it with `cargo build --release -p \
                 quantumflow` or pass --quantumflow PATH",
                exe.display()
            )));
        }
        Ok(Self { exe })
    }

    /// The binary's path.
    pub(crate) fn path(&self) -> &Path {
        &self.exe
    }

    /// Applies every migration, creates the `admin` user, who owns the workflows the harness
    /// creates through the API, and returns an API token of theirs.
    pub(crate) async fn prepare(&self, database_url: &str, logs: &Path) -> Result<String> {
        self.run_to_end(&["migrate", "up"], database_url, &[], logs, "migrate")
            .await?;
        // Passwords nobody needs later: the harness authenticates with a token.
        let admin = uuid::Uuid::new_v4().simple().to_string();
        let demo = uuid::Uuid::new_v4().simple().to_string();
        let env = [
            ("QUANTUMFLOW_SEED_ADMIN_PASSWORD", admin.as_str()),
            ("QUANTUMFLOW_SEED_DEMO_PASSWORD", demo.as_str()),
        ];
        self.run_to_end(&["seed"], database_url, &env, logs, "seed")
            .await?;
        let args = ["token", "create", "--user", "admin", "--name", "loadtest"];
        let log = logs.join("token.log");
        let mut cmd = self.command(&args, database_url, &log)?;
        let output = cmd
            .stdout(Stdio::piped())
            .output()
            .await
            .map_err(HarnessError::io("run", &self.exe))?;
        if !output.status.success() {
            return Err(exited("quantumflow token create", output.status, &log));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    async fn run_to_end(
        &self,
        args: &[&str],
        database_url: &str,
        env: &[(&str, &str)],
        logs: &Path,
        name: &str,
    ) -> Result<()> {
        let log = logs.join(format!("{name}.log"));
        let mut cmd = self.command(args, database_url, &log)?;
        cmd.envs(env.iter().copied());
        let what = format!("quantumflow {}", args.join(" "));
        let status = cmd
            .status()
            .await
            .map_err(HarnessError::io("run", &self.exe))?;
        if !status.success() {
            return Err(exited(&what, status, &log));
        }
        Ok(())
    }

    fn command(&self, args: &[&str], database_url: &str, log: &Path) -> Result<Command> {
        let file = std::fs::File::create(log).map_err(HarnessError::io("create", log))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args);
        // Settings the operator may have exported for their own cluster must not leak into
        // the one under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUANTUMFLOW_") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("DATABASE_URL", database_url)
            .env("QUANTUMFLOW_LOG_FORMAT", "text")
            .env("RUST_LOG", RUST_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
    }
}

/// What a child process does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `quantumflow serve`.
    ControlPlane,
    /// `quantumflow worker`, numbered from 1.
    Worker(usize),
}

/// A running child process.
#[derive(Debug)]
struct Proc {
    role: Role,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// CPU and memory of the cluster's processes at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterSample {
    /// The control plane.
    pub(crate) control_plane: ProcSample,
    /// Each worker process.
    pub(crate) workers: Vec<ProcSample>,
}

/// One `serve` and its workers, all on one database.
#[derive(Debug)]
pub(crate) struct Cluster {
    product: Product,
    database_url: String,
    logs: PathBuf,
    serve: Proc,
    workers: Vec<Proc>,
    base_url: String,
}

impl Cluster {
    /// Starts `serve` on a free loopback port and waits until it is ready.
    pub(crate) async fn start(
        product: &Product,
        database_url: &str,
        db_pool_size: u32,
        logs: &Path,
        client: &reqwest::Client,
    ) -> Result<Self> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let pool = db_pool_size.to_string();
        let args = ["serve", "--listen", &listen, "--db-pool-size", &pool];
        let serve = spawn(product, &args, database_url, logs, Role::ControlPlane)?;
        let mut cluster = Self {
            product: product.clone(),
            database_url: database_url.to_owned(),
            logs: logs.to_owned(),
            serve,
            workers: Vec::new(),
            base_url: format!("http://{listen}"),
        };
        cluster.wait_ready(client).await?;
        Ok(cluster)
    }

    /// The control plane's base URL.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Starts `count` more worker processes with `concurrency` each.
    pub(crate) fn add_workers(&mut self, count: usize, concurrency: usize) -> Result<()> {
        let concurrency = concurrency.to_string();
        for _ in 0..count {
            let role = Role::Worker(self.workers.len() + 1);
            // Each worker's admin listener needs a port of its own: the default is one port.
            // Port 0 lets the system pick one as the worker binds. A port found free here
            // beforehand could be taken, by the local end of one of the many connections a
            // run opens, before the worker binds it.
            let admin = "127.0.0.1:0";
            // The receiver the scenarios call listens on 127.0.0.1, which workers refuse
            // unless told otherwise.
            let args = [
                "worker",
                "--concurrency",
                &concurrency,
                "--admin-listen",
                admin,
                "--allow-outbound",
                "127.0.0.1/32",
            ];
            let worker = spawn(&self.product, &args, &self.database_url, &self.logs, role)?;
            self.workers.push(worker);
        }
        Ok(())
    }

    /// Fails if any process has exited, naming it and quoting its log.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        for proc in std::iter::once(&mut self.serve).chain(self.workers.iter_mut()) {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(exited(&describe(proc.role), status, &proc.log));
            }
        }
        Ok(())
    }

    /// Current CPU time and peak memory of every process.
    pub(crate) fn sample(&self) -> ClusterSample {
        ClusterSample {
            control_plane: procstat::sample(self.serve.pid).unwrap_or_default(),
            workers: self
                .workers
                .iter()
                .map(|w| procstat::sample(w.pid).unwrap_or_default())
                .collect(),
        }
    }

    /// Creates a workflow from its document, as the owner of `token`, and returns its id.
    pub(crate) async fn create_workflow(
        &self,
        client: &reqwest::Client,
        token: &str,
        document: &Value,
    ) -> Result<uuid::Uuid> {
        let request = "POST /api/v1/workflows".to_owned();
        let response = client
            .post(format!("{}/api/v1/workflows", self.base_url))
            .bearer_auth(token)
            .json(document)
            .send()
            .await
            .map_err(|source| HarnessError::Http {
                request: request.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status != 201 {
            let body: String = body.chars().take(2000).collect();
            return Err(HarnessError::Api {
                request,
                status,
                body,
            });
        }
        let created: Value = serde_json::from_str(&body)?;
        created["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| HarnessError::Api {
                request,
                status,
                body: "the created workflow has no id".to_owned(),
            })
    }

    /// Stops every process: SIGTERM, then SIGKILL for those still running after a while.
    pub(crate) async fn stop(mut self) {
        let all = std::iter::once(&mut self.serve).chain(self.workers.iter_mut());
        let procs: Vec<&mut Proc> = all.collect();
        for proc in &procs {
            let _ = kill(Pid::from_raw(proc.pid as i32), Signal::SIGTERM);
        }
        for proc in procs {
            if tokio::time::timeout(STOP_TIMEOUT, proc.child.wait())
                .await
                .is_err()
            {
                let _ = proc.child.kill().await;
            }
        }
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) -> Result<()> {
        let url = format!("{}/readyz", self.base_url);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let ready = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(HarnessError::Product {
                    what: "quantumflow serve".to_owned(),
                    detail: format!(
                        "not ready within {READY_TIMEOUT:?}; see {}",
                        self.serve.log.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(
    product: &Product,
    args: &[&str],
    database_url: &str,
    logs: &Path,
    role: Role,
) -> Result<Proc> {
    let log = logs.join(match role {
        Role::ControlPlane => "serve.log".to_owned(),
        Role::Worker(n) => format!("worker-{n}.log"),
    });
    let child = product
        .command(args, database_url, &log)?
        .spawn()
        .map_err(HarnessError::io("start", product.path()))?;
    let pid = child.id().ok_or_else(|| HarnessError::Product {
        what: describe(role),
        detail: "exited as soon as it started".to_owned(),
    })?;
    Ok(Proc {
        role,
        child,
        pid,
        log,
    })
}

fn describe(role: Role) -> String {
    match role {
        Role::ControlPlane => "quantumflow serve".to_owned(),
        Role::Worker(n) => format!("quantumflow worker {n}"),
    }
}

/// Asks the kernel for a free loopback port. Another process could take it before `serve`
/// binds it; `serve` then fails to start and says so.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(HarnessError::io("find a free port on", "127.0.0.1"))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("find a free port on", "127.0.0.1"))?;
    Ok(addr.port())
}

fn exited(what: &str, status: ExitStatus, log: &Path) -> HarnessError {
    HarnessError::Product {
        what: what.to_owned(),
        detail: format!("exited with {status}: {}", tail(log)),
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let joined = lines.into_iter().rev().collect::<Vec<_>>().join(" | ");
    if joined.is_empty() {
        format!("its log {} is empty", path.display())
    } else {
        joined
    }
}
