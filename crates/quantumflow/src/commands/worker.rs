//! `quantumflow worker`: a process that runs node jobs.

use std::sync::Arc;

use anyhow::Context;
use quantumflow_netguard::Policy;
use quantumflow_secrets::Keyring;
use quantumflow_worker::WorkerConfig;
use sqlx::PgPool;

use crate::cli::WorkerArgs;
use crate::commands::serve;

pub(crate) async fn run(
    pool: PgPool,
    args: &WorkerArgs,
    keyring: Option<Arc<Keyring>>,
) -> anyhow::Result<()> {
    serve::check_schema(&pool).await?;
    let config = WorkerConfig {
        concurrency: args.concurrency as usize,
        outbound: Policy::allowing(args.outbound.allow.iter().copied()),
        keyring,
        ..WorkerConfig::default()
    };
    quantumflow_worker::run(pool, &config, serve::shutdown_signal())
        .await
        .context("the worker failed")
}
