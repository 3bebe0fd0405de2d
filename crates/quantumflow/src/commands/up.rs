//! `quantumflow up`: the whole system in one process on one machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quantumflow_localpg::LocalPg;
use quantumflow_netguard::{LOOPBACK, Policy};
use quantumflow_secrets::Keyring;
use quantumflow_worker::WorkerConfig;
use sqlx::postgres::PgConnectOptions;

use crate::cli::UpArgs;
use crate::commands::{keys, migrate, serve};
use crate::database;

pub(crate) async fn run(url: Option<&str>, data_dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    let keyring = keys::for_up(&args.serve.keys, data_dir)?;
    let (options, private) = match url {
        Some(url) => {
            let options = database::parse_url(url)?;
            database::ensure_exists(url).await?;
            (options, None)
        }
        None => {
            let server = database::start_private(data_dir).await?;
            (server.connect_options(), Some(server))
        }
    };

    // Whatever happens next, a private server we started is stopped before we return.
    let result = serve_until_signal(options, private.as_ref(), args, keyring).await;
    if let Some(server) = private {
        server.stop().await?;
    }
    result
}

async fn serve_until_signal(
    options: PgConnectOptions,
    private: Option<&LocalPg>,
    args: &UpArgs,
    keyring: Arc<Keyring>,
) -> anyhow::Result<()> {
    // Each half has its own pool: requests wait only briefly for a connection and are refused
    // with 503 when none comes, while nodes wait longer; and neither can starve the other.
    let pool = database::pool(
        options.clone(),
        args.serve.db_pool_size,
        args.serve.db_acquire_timeout(),
    )
    .await?;
    let worker_pool = database::pool(options, args.workers + 4, database::ACQUIRE_TIMEOUT).await?;
    migrate::apply_all(&worker_pool).await?;
    if let Some(server) = private {
        tracing::info!(url = %server.url(), "connect to the private database with this URL");
    }

    // One signal stops both halves: the control plane stops accepting, the worker stops
    // fetching, and each finishes what it has in flight. Either half ending on its own (an
    // address in use, say) stops the other too.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = std::sync::Arc::new(stop);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&stop| stop).await;
    };
    let signal = {
        let (stop, stopped) = (stop.clone(), stopped.clone());
        async move {
            tokio::select! {
                () = super::signalled() => {
                    tracing::info!(role = "up", "shutting down");
                }
                () = until_stopped(stopped) => {}
            }
            let _ = stop.send(true);
        }
    };
    let server = {
        let stop = stop.clone();
        let stopped = until_stopped(stopped.clone());
        let pool = pool.clone();
        // `/metrics` reports the workers' connections with the API's: both are this process's.
        let others = vec![worker_pool.clone()];
        let keyring = Some(Arc::clone(&keyring));
        async move {
            let result = serve::run(pool, others, &args.serve, keyring, stopped).await;
            let _ = stop.send(true);
            result
        }
    };
    let config = WorkerConfig {
        concurrency: args.workers as usize,
        outbound: outbound_policy(args),
        keyring: Some(keyring),
        shutdown_grace: Duration::from_secs(args.shutdown_grace.seconds),
        ..WorkerConfig::default()
    };
    let worker = async {
        let result = quantumflow_worker::run(worker_pool, &config, until_stopped(stopped)).await;
        let _ = stop.send(true);
        result
    };
    let (server, worker, ()) = tokio::join!(server, worker, signal);
    server?;
    worker.context("the worker failed")?;
    Ok(())
}

/// On one machine the services a workflow calls often run beside it, so `up` lets nodes reach
/// loopback; it says so, because that also opens whatever else listens on this machine.
fn outbound_policy(args: &UpArgs) -> Policy {
    let blocks: Vec<String> = LOOPBACK.iter().map(ToString::to_string).collect();
    tracing::warn!(
        allowed = %blocks.join(","),
        "http and slack nodes may reach loopback addresses, and so every service on this \
         machine; run `quantumflow worker` without --allow-outbound to keep them out"
    );
    Policy::allowing(
        LOOPBACK
            .into_iter()
            .chain(args.outbound.allow.iter().copied()),
    )
}
