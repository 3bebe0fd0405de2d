//! Developer tasks, run as `cargo xtask <task>`:
//!
//! - `test [ARGS…]`: the whole test suite. Uses the server in `DATABASE_URL`; without one it
//!   starts a private PostgreSQL server for the run and stops it afterwards. Runs
//!   cargo-nextest when installed, `cargo test` otherwise; ARGS go to the runner.
//! - `sqlx-prepare`: rebuilds the storage crate's `.sqlx` query cache against a scratch
//!   database migrated from `migrations/`.
//! - `openapi`: writes the API's OpenAPI document to `docs/openapi.json`, the committed copy a
//!   test compares with the document the server generates.
//! - `loadtest [ARGS…]`: builds QuantumFlow and the load-test harness in release mode and runs
//!   the harness (`qf-load`) with ARGS against the freshly built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::str::FromStr;

use anyhow::{Context, bail};
use quantumflow_localpg::{LocalPg, Options};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.context("cannot start a runtime").and_then(|rt| {
        rt.block_on(async {
            match args.first().map(String::as_str) {
                Some("test") => test(&args[1..]).await,
                Some("sqlx-prepare") => sqlx_prepare().await,
                Some("openapi") => openapi(),
                Some("loadtest") => loadtest(&args[1..]),
                _ => bail!(
                    "usage: cargo xtask test [ARGS…] | cargo xtask sqlx-prepare | \
                     cargo xtask openapi | cargo xtask loadtest [ARGS…]"
                ),
            }
        })
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            report(&format!("error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stderr,
    reason = "a developer tool reports on its own stderr"
)]
fn report(line: &str) {
    eprintln!("{line}");
}

/// The document comes from an example of the API crate rather than from linking the crate
/// here: xtask must build even when the API does not, e.g. before `sqlx-prepare` has refreshed
/// the query cache.
fn openapi() -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let output = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["run", "--quiet", "--package", "quantumflow-api"])
        .args(["--example", "openapi"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo run")?;
    if !output.status.success() {
        bail!("generating the document failed");
    }
    let path = root.join("docs/openapi.json");
    std::fs::write(&path, &output.stdout)
        .with_context(|| format!("cannot write {}", path.display()))?;
    report("wrote docs/openapi.json");
    Ok(ExitCode::SUCCESS)
}

/// Benchmarks measure release builds only: a debug build's numbers say nothing about the product.
fn loadtest(args: &[String]) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let built = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--package", "quantumflow"])
        .args(["--package", "quantumflow-loadtest"])
        .status()
        .context("cannot run cargo build")?;
    if !built.success() {
        bail!("the release build failed");
    }
    // The harness runs the `quantumflow` binary built next to it.
    let status = Command::new(root.join("target/release/qf-load"))
        .current_dir(&root)
        .args(args)
        .status()
        .context("cannot run target/release/qf-load")?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server for the duration of a task: the one in `DATABASE_URL`, or a private one.
struct Server {
    url: String,
    private: Option<LocalPg>,
}

impl Server {
    async fn acquire() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self { url, private: None });
        }
        report("DATABASE_URL is not set: starting a private PostgreSQL server for this run");
        let mut options = Options::new(
            workspace_root().join("target/quantumflow-test-pg"),
            "postgres",
        );
        // A throw-away cluster: durability only costs time here.
        options.durable = false;
        let server = LocalPg::start(&options)
            .await
            .context("cannot start a private server")?;
        Ok(Self {
            url: server.url(),
            private: Some(server),
        })
    }

    async fn release(self) -> anyhow::Result<()> {
        if let Some(server) = self.private {
            server.stop().await?;
        }
        Ok(())
    }
}

async fn test(args: &[String]) -> anyhow::Result<ExitCode> {
    let server = Server::acquire().await?;
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = Command::new("cargo");
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cmd.args(args)
        .env("DATABASE_URL", &server.url)
        .current_dir(workspace_root());
    let status = cmd.status().context("cannot run cargo");
    server.release().await?;
    let status = status?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn sqlx_prepare() -> anyhow::Result<ExitCode> {
    // One scratch database per run: two checkouts preparing against one server at once must
    // not drop each other's database halfway through.
    let scratch_name = format!("quantumflow_sqlx_prepare_{}", std::process::id());
    let server = Server::acquire().await?;
    let admin = PgConnectOptions::from_str(&server.url)?;
    let result = async {
        let mut conn = admin
            .connect()
            .await
            .context("cannot connect to the server")?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)"),
            format!("CREATE DATABASE {scratch_name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;

        let scratch = admin.clone().database(&scratch_name);
        let mut conn = scratch.connect().await?;
        let root = workspace_root();
        let mut ups: Vec<PathBuf> = std::fs::read_dir(root.join("migrations"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        ups.retain(|p| p.to_string_lossy().ends_with(".up.sql"));
        ups.sort();
        for up in &ups {
            let sql = std::fs::read_to_string(up)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .with_context(|| format!("applying {}", up.display()))?;
        }
        conn.close().await?;

        let cache = root.join("crates/storage/.sqlx");
        if cache.exists() {
            std::fs::remove_dir_all(&cache)?;
        }
        std::fs::create_dir_all(&cache)?;
        // Macros only run when the crate is rebuilt; a fresh mtime forces that.
        let lib = root.join("crates/storage/src/lib.rs");
        std::fs::File::options()
            .append(true)
            .open(&lib)?
            .set_modified(std::time::SystemTime::now())?;
        let status = Command::new("cargo")
            .args(["check", "--package", "quantumflow-storage"])
            .env("SQLX_OFFLINE", "false")
            .env("DATABASE_URL", scratch.to_url_lossy().as_str())
            .env("SQLX_OFFLINE_DIR", &cache)
            .current_dir(&root)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cargo check failed while preparing the cache"
        );
        let count = std::fs::read_dir(&cache)?.count();
        report(&format!(
            "wrote {count} query descriptions to {}",
            cache.display()
        ));
        anyhow::Ok(())
    }
    .await;
    let dropped = async {
        let mut conn = admin.connect().await?;
        let sql = format!("DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        conn.close().await
    }
    .await;
    server.release().await?;
    result?;
    dropped.context("cannot drop the scratch database")?;
    Ok(ExitCode::SUCCESS)
}
