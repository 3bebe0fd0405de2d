//! The PostgreSQL server under test: a private one the harness starts (durable, tuned as the
//! performance study's cluster, with `pg_stat_statements` loaded), or one given by URL.
//!
//! Every run gets a freshly created database on it, so runs never see each other's rows,
//! queue backlog or dead tuples.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use quantumflow_localpg::{LocalPg, Options};
use reqwest::Url;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::{HarnessError, Result};

/// The database each engine run gets, dropped and recreated per run.
pub(crate) const RUN_DATABASE: &str = "qf_load";

/// Settings of the private server: the performance study's (its section 2.1), plus room for
/// the connections of many worker processes and the statement counter.
const PRIVATE_SETTINGS: [(&str, &str); 20] = [
    ("shared_buffers", "2GB"),
    ("effective_cache_size", "12GB"),
    ("work_mem", "16MB"),
    ("maintenance_work_mem", "512MB"),
    ("wal_buffers", "64MB"),
    ("max_wal_size", "8GB"),
    ("min_wal_size", "1GB"),
    ("checkpoint_timeout", "15min"),
    ("checkpoint_completion_target", "0.9"),
    ("wal_compression", "on"),
    ("synchronous_commit", "on"),
    ("fsync", "on"),
    ("full_page_writes", "on"),
    ("autovacuum_naptime", "10s"),
    ("autovacuum_vacuum_scale_factor", "0.05"),
    ("autovacuum_vacuum_cost_limit", "2000"),
    ("random_page_cost", "1.1"),
    ("max_connections", "300"),
    ("shared_preload_libraries", "pg_stat_statements"),
    ("pg_stat_statements.track", "top"),
];

/// The server, and how to reach its databases.
#[derive(Debug)]
pub(crate) struct PgServer {
    /// Present when the harness started the server and must stop it.
    private: Option<LocalPg>,
    /// A URL of the server's maintenance database; others are made by swapping the path.
    admin_url: Url,
    admin: PgPool,
}

impl PgServer {
    /// Connects to `database_url`, or starts the private server in `pg_dir`.
    pub(crate) async fn start(database_url: Option<&str>, pg_dir: &Path) -> Result<Self> {
        let (private, url) = match database_url {
            Some(url) => (None, url.to_owned()),
            None => {
                let mut options = Options::new(pg_dir, "postgres");
                options.durable = true;
                options.settings = PRIVATE_SETTINGS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                let server = LocalPg::start(&options).await?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let admin_url = Url::parse(&url)
            .map_err(|e| HarnessError::Invalid(format!("the database URL is not a URL: {e}")))?;
        let admin = pool(admin_url.as_str(), 2).await?;
        Ok(Self {
            private,
            admin_url,
            admin,
        })
    }

    /// Whether the harness started this server itself.
    pub(crate) fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// The URL of database `name` on this server.
    pub(crate) fn url_for(&self, name: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// The URL of the database the server was reached through, for the baselines, which
    /// create scratch databases of their own next to it.
    pub(crate) fn admin_url(&self) -> String {
        self.admin_url.to_string()
    }

    /// Drops database `name` if it exists, with its connections, and creates it afresh.
    pub(crate) async fn recreate(&self, name: &str) -> Result<()> {
        let quoted = name.replace('"', "\"\"");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{quoted}\""),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&self.admin)
                .await
                .map_err(HarnessError::db("recreating the run's database"))?;
        }
        Ok(())
    }

    /// Drops database `name` if it exists.
    pub(crate) async fn drop_database(&self, name: &str) -> Result<()> {
        let quoted = name.replace('"', "\"\"");
        let sql = format!("DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .map_err(HarnessError::db("dropping a run's database"))?;
        Ok(())
    }

    /// The server's version string, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub(crate) async fn version(&self) -> Result<String> {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.admin)
            .await
            .map_err(HarnessError::db("reading the server version"))
    }

    /// The settings that shape the figures, as the server reports them.
    pub(crate) async fn settings(&self) -> Result<Vec<(String, String)>> {
        let names: Vec<String> = PRIVATE_SETTINGS
            .iter()
            .map(|(k, _)| (*k).to_owned())
            .collect();
        sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings \
             WHERE name = ANY($1) ORDER BY name",
        )
        .bind(&names)
        .fetch_all(&self.admin)
        .await
        .map_err(HarnessError::db("reading the server settings"))
    }

    /// The postmaster's process id, found as the parent of this connection's backend; `None`
    /// when the server runs where this process cannot see it.
    pub(crate) async fn postmaster_pid(&self) -> Option<u32> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&self.admin)
            .await
            .ok()?;
        let parent = crate::procstat::parent(u32::try_from(backend).ok()?)?;
        // A backend's parent is the postmaster only if the backend is on this machine; a pid
        // of 1 means it belongs to a container or host we cannot see into.
        (parent > 1).then_some(parent)
    }

    /// Stops the private server; a server given by URL is left alone.
    pub(crate) async fn stop(self) -> Result<()> {
        self.admin.close().await;
        if let Some(server) = self.private {
            server.stop().await?;
        }
        Ok(())
    }
}

/// A small pool for the harness's own queries, which must not compete with the cluster.
pub(crate) async fn pool(url: &str, size: u32) -> Result<PgPool> {
    let options =
        PgConnectOptions::from_str(url).map_err(HarnessError::db("reading the database URL"))?;
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(HarnessError::db("connecting to the database"))
}
