//! `quantumflow worker`: a process that runs node jobs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quantumflow_netguard::Policy;
use quantumflow_secrets::Keyring;
use quantumflow_worker::{WorkerConfig, WorkerStatus};
use sqlx::PgPool;

use crate::cli::WorkerArgs;
use crate::commands::serve;
use crate::observe;

pub(crate) async fn run(
    pool: PgPool,
    args: &WorkerArgs,
    keyring: Option<Arc<Keyring>>,
) -> anyhow::Result<()> {
    serve::check_schema(&pool).await?;
    let admin = observe::bind_admin(args.admin_listen).await?;
    // The address bound, which differs from the one asked for when that had port 0.
    let address = admin.local_addr().map_or(args.admin_listen, |bound| bound);
    tracing::info!(%address, "worker admin listening");
    let status = WorkerStatus::default();
    let config = WorkerConfig {
        concurrency: args.concurrency as usize,
        outbound: Policy::allowing(args.outbound.allow.iter().copied()),
        keyring,
        status: status.clone(),
        shutdown_grace: Duration::from_secs(args.shutdown_grace.seconds),
        ..WorkerConfig::default()
    };

    // The admin listener outlives the worker's drain, so probes keep answering until the
    // process exits.
    let (stopped, admin_stop) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(observe::serve_admin(admin, pool.clone(), status, async {
        let _ = admin_stop.await;
    }));
    let shutdown = async {
        super::signalled().await;
        tracing::info!(role = "worker", "shutting down");
    };
    let worked = quantumflow_worker::run(pool, &config, shutdown)
        .await
        .context("the worker failed");
    let _ = stopped.send(());
    let served = admin.await.context("the admin listener panicked")?;
    worked?;
    served
}
