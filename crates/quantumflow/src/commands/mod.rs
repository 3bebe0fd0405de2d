//! One module per subcommand.

mod accounts;
mod keys;
mod migrate;
mod seed;
mod serve;
mod up;
mod worker;

use crate::cli::{Cli, Command};
use crate::database::{self, ACQUIRE_TIMEOUT};

/// Runs the chosen subcommand to completion.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(database::default_data_dir);
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Up(args) => up::run(url, &data_dir, &args).await,
        Command::Serve(args) => {
            let keyring = keys::configured(&args.keys, &data_dir, url)?;
            let pool = database::connect_configured(
                url,
                &data_dir,
                args.db_pool_size,
                args.db_acquire_timeout(),
            )
            .await?;
            serve::check_schema(&pool).await?;
            serve::run(pool, Vec::new(), &args, keyring, serve::shutdown_signal()).await
        }
        Command::Worker(args) => {
            let keyring = keys::configured(&args.keys, &data_dir, url)?;
            // One connection per node in flight, plus the queue's heartbeat and listener.
            let size = args.concurrency + 4;
            let pool = database::connect_configured(url, &data_dir, size, ACQUIRE_TIMEOUT).await?;
            worker::run(pool, &args, keyring).await
        }
        Command::Migrate(args) => {
            let pool = database::connect_configured(url, &data_dir, 2, ACQUIRE_TIMEOUT).await?;
            migrate::run(&pool, &args.action).await
        }
        Command::Seed(args) => {
            let keyring = keys::configured(&args.keys, &data_dir, url)?;
            let pool = database::connect_configured(url, &data_dir, 2, ACQUIRE_TIMEOUT).await?;
            seed::run(&pool, &args, keyring.as_deref()).await
        }
        Command::User(args) => {
            let pool = database::connect_configured(url, &data_dir, 2, ACQUIRE_TIMEOUT).await?;
            accounts::user(&pool, args.action).await
        }
        Command::Token(args) => {
            let pool = database::connect_configured(url, &data_dir, 2, ACQUIRE_TIMEOUT).await?;
            accounts::token(&pool, args.action).await
        }
        Command::Keys(args) => keys::run(&args.action, &data_dir, url).await,
    }
}

/// Completes on Ctrl-C or SIGTERM, whichever comes first. Each command logs its own shutdown,
/// so that the line names the process's role and is filed under its command's target.
pub(crate) async fn signalled() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
