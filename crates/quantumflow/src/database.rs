//! Finding and connecting to the database: the one in `DATABASE_URL`, or the private server
//! that `quantumflow up` runs in its data directory.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::Uid;
use quantumflow_localpg::LocalPg;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// The database `up` creates in its private server.
pub(crate) const PRIVATE_DATABASE: &str = "quantumflow";

/// How long a worker or a command waits for a pooled connection before giving up. The control
/// plane waits far less (`--db-acquire-timeout-ms`): a webhook sender is better served by a
/// quick 503 and a retry than by a hang.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The data directory when none is configured: the system's state directory for root (the
/// server's own account must be able to reach it), the user's data directory otherwise.
pub(crate) fn default_data_dir() -> PathBuf {
    if Uid::effective().is_root() {
        return PathBuf::from("/var/lib/quantumflow");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("quantumflow")
}

/// Parses a database URL, saying what is wrong with a bad one.
pub(crate) fn parse_url(url: &str) -> anyhow::Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "DATABASE_URL {} is not a valid PostgreSQL URL: it must start with postgres://",
            redact(url)
        );
    }
    PgConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL {} is not a valid PostgreSQL URL", redact(url)))
}

/// Opens a pool whose callers wait at most `acquire_timeout` for a connection, failing with a
/// message that says what to check.
pub(crate) async fn pool(
    options: PgConnectOptions,
    size: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<PgPool> {
    // One plain connection first: a pool reports a refused connection only as a timeout, while
    // a direct attempt says why it failed.
    let probe = options.connect().await.with_context(|| {
        format!(
            "cannot connect to the database at {}; check DATABASE_URL and that PostgreSQL is \
             running",
            describe(&options)
        )
    })?;
    let _ = probe.close().await;
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(acquire_timeout)
        // Each connection handed out emits an event with the caller's wait, which
        // `observe::pool_waits` turns into a histogram; the trace level keeps it out of logs.
        .acquire_time_level(log::LevelFilter::Trace)
        .connect_with(options)
        .await
        .context("cannot open the database connection pool")
}

/// Where `options` point, for messages: user, host or socket, port and database.
fn describe(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_owned(),
    };
    let database = options.get_database().unwrap_or(options.get_username());
    format!(
        "postgres://{}@{host}:{}/{database}",
        options.get_username(),
        options.get_port()
    )
}

/// Connects to the configured database, or to the private server of a running `up`.
pub(crate) async fn connect_configured(
    url: Option<&str>,
    data_dir: &Path,
    size: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<PgPool> {
    if let Some(url) = url {
        return pool(parse_url(url)?, size, acquire_timeout).await;
    }
    if !quantumflow_localpg::is_running(data_dir) {
        bail!(
            "no database: set DATABASE_URL, or start `quantumflow up`, which runs a private \
             PostgreSQL server in {}",
            data_dir.display()
        );
    }
    pool(
        quantumflow_localpg::connect_options(data_dir, PRIVATE_DATABASE),
        size,
        acquire_timeout,
    )
    .await
}

/// Creates the database a URL names if the server does not have it yet, so `up` works against
/// a fresh server.
pub(crate) async fn ensure_exists(url: &str) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;

    parse_url(url)?;
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the database server at {}; check DATABASE_URL and that \
             PostgreSQL is running",
                redact(url)
            )
        })?;
    if !exists {
        sqlx::Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create the database {}", redact(url)))?;
        tracing::info!(database = %redact(url), "created the database");
    }
    Ok(())
}

/// Starts the private server for `up`.
pub(crate) async fn start_private(data_dir: &Path) -> anyhow::Result<LocalPg> {
    let options = quantumflow_localpg::Options::new(data_dir, PRIVATE_DATABASE);
    LocalPg::start(&options)
        .await
        .context("cannot start the private PostgreSQL server")
}

/// A URL with its password replaced, safe for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://qf:s3cret@db:5432/qf"),
            "postgres://qf:***@db:5432/qf"
        );
        assert_eq!(redact("postgres://qf@db/qf"), "postgres://qf@db/qf");
        assert_eq!(redact("not a url"), "not a url");
    }
}
