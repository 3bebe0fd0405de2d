//! What every mode shares: the database server, the QuantumFlow binary, the loopback receiver
//! and the HTTP client ([`Bench`]); a freshly set-up cluster per run ([`Deployment`]); and the
//! before-and-after readings around a measured phase ([`Phase`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::Common;
use crate::cluster::{Cluster, ClusterSample, Product};
use crate::database::{self, PgServer, RUN_DATABASE};
use crate::error::{HarnessError, Result};
use crate::pgstats::{self, Counters, Delta};
use crate::procstat;
use crate::receiver::Receiver;

/// How long the postmaster gets to reap the backends of stopped processes before the
/// server-wide CPU and statistics are read.
const REAP_PAUSE: Duration = Duration::from_millis(300);

/// How long worker processes may take to register with the queue.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The long-lived parts of a harness run.
#[derive(Debug)]
pub(crate) struct Bench {
    /// The database server.
    pub(crate) pg: PgServer,
    /// The QuantumFlow binary.
    pub(crate) product: Product,
    /// The loopback service http nodes call.
    pub(crate) receiver: Receiver,
    /// The load generators' client.
    pub(crate) client: reqwest::Client,
    /// Where the report and logs go.
    pub(crate) out: PathBuf,
    /// `serve --db-pool-size`.
    pub(crate) db_pool_size: u32,
    /// Whether the last run's database stays on a server given by URL.
    keep_database: bool,
    /// The PostgreSQL server's main process, when this machine can see it.
    postmaster: Option<u32>,
    /// Numbers each run's log directory.
    runs: usize,
}

impl Bench {
    /// Starts or connects to the database server and starts the receiver.
    pub(crate) async fn start(common: &Common, out: &Path) -> Result<Self> {
        let product = Product::locate(common.quantumflow.as_deref())?;
        std::fs::create_dir_all(out).map_err(HarnessError::io("create", out))?;
        let pg_dir = common
            .pg_dir
            .clone()
            .unwrap_or_else(|| crate::target_dir().join("qf-load").join("pg"));
        crate::note(format_args!(
            "database: {}",
            match &common.database_url {
                Some(_) => "the server given by --database-url".to_owned(),
                None => format!("private server in {}", pg_dir.display()),
            }
        ));
        let pg = PgServer::start(common.database_url.as_deref(), &pg_dir).await?;
        let postmaster = pg.postmaster_pid().await;
        Ok(Self {
            pg,
            product,
            receiver: Receiver::start().await?,
            client: crate::drive::http_client()?,
            out: out.to_owned(),
            db_pool_size: common.db_pool_size,
            keep_database: common.keep_database,
            postmaster,
            runs: 0,
        })
    }

    /// A fresh database, migrated and seeded, with `serve` running on it and `documents`
    /// created as workflows. Workers are started by the caller.
    pub(crate) async fn deploy(&mut self, label: &str, documents: &[Value]) -> Result<Deployment> {
        self.runs += 1;
        let logs = self
            .out
            .join("logs")
            .join(format!("{:03}-{label}", self.runs));
        std::fs::create_dir_all(&logs).map_err(HarnessError::io("create", &logs))?;

        self.pg.recreate(RUN_DATABASE).await?;
        let url = self.pg.url_for(RUN_DATABASE);
        let token = self.product.prepare(&url, &logs).await?;
        let pool = database::pool(&url, 4).await?;
        // Loaded here so the first reading of a run already includes it.
        pgstats::has_statements(&pool)
            .await
            .map_err(HarnessError::db("loading pg_stat_statements"))?;
        let cluster =
            Cluster::start(&self.product, &url, self.db_pool_size, &logs, &self.client).await?;
        let mut workflows = Vec::with_capacity(documents.len());
        for document in documents {
            workflows.push(
                cluster
                    .create_workflow(&self.client, &token, document)
                    .await?,
            );
        }
        Ok(Deployment {
            cluster: Some(cluster),
            pool,
            workflows,
        })
    }

    /// Takes the readings that open a measured phase.
    pub(crate) async fn begin(&self, deployment: &Deployment) -> Result<Phase> {
        Ok(Phase {
            counters: Counters::read(&deployment.pool)
                .await
                .map_err(HarnessError::db("reading pg_stat_database"))?,
            cluster: deployment.sample(),
            postgres_cpu: self.postmaster.and_then(procstat::postgres_cpu_seconds),
            harness_cpu: own_cpu(),
            started: tokio::time::Instant::now(),
        })
    }

    /// Ends a phase: samples the processes, stops them (their backends then flush their
    /// statistics as they exit), and reads the database's counters.
    pub(crate) async fn end(&self, deployment: &mut Deployment, phase: &Phase) -> Result<Usage> {
        let wall_seconds = phase.started.elapsed().as_secs_f64();
        let sample = deployment.sample();
        let harness_cpu = own_cpu() - phase.harness_cpu;
        deployment.stop_processes().await;
        tokio::time::sleep(REAP_PAUSE).await;

        let counters = Counters::read(&deployment.pool)
            .await
            .map_err(HarnessError::db("reading pg_stat_database"))?;
        let postgres = self.postmaster.and_then(procstat::postgres_cpu_seconds);
        let workers_cpu: f64 = sample
            .workers
            .iter()
            .enumerate()
            .map(|(i, now)| {
                let then = phase.cluster.workers.get(i).map_or(0.0, |s| s.cpu_seconds);
                now.cpu_seconds - then
            })
            .sum();
        Ok(Usage {
            wall_seconds,
            db: counters.since(&phase.counters),
            cpu: CpuUsage {
                workers_cpu_seconds: workers_cpu,
                workers_peak_rss_mb: sample
                    .workers
                    .iter()
                    .map(|s| s.peak_rss_kb as f64 / 1024.0)
                    .fold(0.0, f64::max),
                control_plane_cpu_seconds: sample.control_plane.cpu_seconds
                    - phase.cluster.control_plane.cpu_seconds,
                control_plane_peak_rss_mb: sample.control_plane.peak_rss_kb as f64 / 1024.0,
                postgres_cpu_seconds: match (postgres, phase.postgres_cpu) {
                    (Some(now), Some(then)) => Some(now - then),
                    _ => None,
                },
                harness_cpu_seconds: harness_cpu,
            },
        })
    }

    /// Stops the private server, or drops the harness's database from a given one.
    pub(crate) async fn finish(self) -> Result<()> {
        if !self.pg.is_private() && !self.keep_database {
            self.pg.drop_database(RUN_DATABASE).await?;
            // Normally dropped by the push baseline itself, unless it was interrupted.
            self.pg.drop_database(crate::anchors::PUSH_DATABASE).await?;
        }
        self.pg.stop().await
    }
}

/// One run's database and processes.
#[derive(Debug)]
pub(crate) struct Deployment {
    cluster: Option<Cluster>,
    /// The harness's own connections to the run's database.
    pub(crate) pool: PgPool,
    /// The workflows created, in the order of the documents.
    pub(crate) workflows: Vec<Uuid>,
}

impl Deployment {
    /// The control plane's base URL.
    pub(crate) fn base_url(&self) -> String {
        self.cluster
            .as_ref()
            .map(|c| c.base_url().to_owned())
            .unwrap_or_default()
    }

    /// Starts `count` worker processes.
    pub(crate) fn add_workers(&mut self, count: usize, concurrency: usize) -> Result<()> {
        match &mut self.cluster {
            Some(cluster) => cluster.add_workers(count, concurrency),
            None => Err(HarnessError::Invalid(
                "the cluster is already stopped".to_owned(),
            )),
        }
    }

    /// Starts `count` worker processes and waits until each has registered with the queue,
    /// so that their start-up is not measured as the cluster's latency.
    pub(crate) async fn start_workers(&mut self, count: usize, concurrency: usize) -> Result<()> {
        self.add_workers(count, concurrency)?;
        let deadline = tokio::time::Instant::now() + WORKER_START_TIMEOUT;
        while crate::measure::registered_workers(&self.pool).await? < count as u64 {
            self.check_alive()?;
            if tokio::time::Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "{count} workers did not register with the queue within \
                     {WORKER_START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Fails if a process of the cluster has died.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match &mut self.cluster {
            Some(cluster) => cluster.check_alive(),
            None => Ok(()),
        }
    }

    fn sample(&self) -> ClusterSample {
        self.cluster
            .as_ref()
            .map(Cluster::sample)
            .unwrap_or_default()
    }

    async fn stop_processes(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
    }

    /// Waits until `expected` executions have finished, checking on the processes; gives up
    /// after `timeout`. Returns how many finished.
    pub(crate) async fn wait_finished(&mut self, expected: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = crate::measure::finished_executions(&self.pool).await?;
            if done >= expected || tokio::time::Instant::now() > deadline {
                return Ok(done);
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the processes and closes the harness's connections.
    pub(crate) async fn close(mut self) {
        self.stop_processes().await;
        self.pool.close().await;
    }
}

/// Readings at the start of a measured phase.
#[derive(Debug)]
pub(crate) struct Phase {
    counters: Counters,
    cluster: ClusterSample,
    postgres_cpu: Option<f64>,
    harness_cpu: f64,
    started: tokio::time::Instant,
}

/// What a phase cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// The phase's length by the harness's clock.
    pub(crate) wall_seconds: f64,
    /// Database work.
    pub(crate) db: Delta,
    /// Processor time and memory.
    pub(crate) cpu: CpuUsage,
}

/// Processor time used in a phase, and peak memory.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CpuUsage {
    /// All worker processes together, CPU seconds.
    pub(crate) workers_cpu_seconds: f64,
    /// The largest peak RSS of one worker process, MiB.
    pub(crate) workers_peak_rss_mb: f64,
    /// The control plane, CPU seconds.
    pub(crate) control_plane_cpu_seconds: f64,
    /// The control plane's peak RSS, MiB.
    pub(crate) control_plane_peak_rss_mb: f64,
    /// The whole PostgreSQL server, CPU seconds; `None` when its processes are not visible.
    pub(crate) postgres_cpu_seconds: Option<f64>,
    /// The harness itself (load generation and polling), CPU seconds.
    pub(crate) harness_cpu_seconds: f64,
}

fn own_cpu() -> f64 {
    procstat::sample(std::process::id()).map_or(0.0, |s| s.cpu_seconds)
}
