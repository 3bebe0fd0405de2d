//! The control plane's HTTP server, shared by `serve` and `up`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use quantumflow_api::AppState;
use quantumflow_secrets::{KEYS_VAR, Keyring};
use quantumflow_storage::schema;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::observe;

/// Serves the API as `args` say until `shutdown` completes, then drains: `/readyz` answers 503
/// at once, the listener keeps accepting for `--shutdown-delay`, and the requests in flight
/// finish.
/// `other_pools` are the process's pools besides the API's, which `/metrics` reports with it.
pub(crate) async fn run(
    pool: PgPool,
    other_pools: Vec<PgPool>,
    args: &ServeArgs,
    keyring: Option<Arc<Keyring>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = args.listen;
    let max_body_bytes = usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; free the address or pass --listen"))?;
    match &keyring {
        Some(keyring) => tracing::info!(
            address = %listen,
            credential_kid = keyring.active_kid(),
            "control plane listening"
        ),
        None => tracing::warn!(
            address = %listen,
            "control plane listening without {KEYS_VAR}: connectors cannot be given credentials"
        ),
    }
    let folding = tokio::spawn(quantumflow_engine::fold_counts(pool.clone()));
    let upkeep = tokio::spawn(observe::upkeep());
    let metrics = observe::metrics_router(pool.clone(), other_pools);
    let state = AppState::new(pool)
        .with_keyring(keyring)
        .with_max_body_bytes(max_body_bytes);
    let draining = state.draining.clone();
    let delay = Duration::from_secs(args.shutdown_delay);
    let drain = async move {
        shutdown.await;
        draining.begin();
        tracing::info!(
            delay = ?delay,
            "draining: /readyz answers 503; still accepting requests until the delay ends"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("no longer accepting requests; finishing those in flight");
    };
    // `/metrics` is the operator's, not the API's: it is left out of the OpenAPI document.
    let app = quantumflow_api::router(state).merge(metrics);
    let served = quantumflow_api::serve(listener, app, drain).await;
    folding.abort();
    upkeep.abort();
    served.context("the HTTP server failed")?;
    tracing::info!("control plane stopped");
    Ok(())
}

/// Refuses to serve a database whose schema is not the one this binary was built for.
pub(crate) async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    for set in quantumflow_queue::migration_sets() {
        let report = schema::inspect(pool, set)
            .await
            .context("cannot read the schema version")?;
        if !report.unknown.is_empty() {
            bail!(
                "the database has {} migrations {:?} that this binary does not know; it was \
                 migrated by a newer QuantumFlow, so upgrade this one",
                set.name,
                report.unknown
            );
        }
        if let Some(pending) = report.pending().next() {
            bail!(
                "the database lacks {} migration {} ({}); run `quantumflow migrate up` first",
                set.name,
                pending.version,
                pending.description
            );
        }
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM, for the control plane of `serve`.
pub(crate) async fn shutdown_signal() {
    super::signalled().await;
    tracing::info!(role = "serve", "shutting down");
}
