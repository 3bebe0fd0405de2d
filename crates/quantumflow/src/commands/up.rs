//! `quantumflow up`: the whole system in one process on one machine.

use std::path::Path;

use quantumflow_localpg::LocalPg;
use sqlx::postgres::PgConnectOptions;

use crate::cli::UpArgs;
use crate::commands::{migrate, serve};
use crate::database;

pub(crate) async fn run(url: Option<&str>, data_dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
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
    let result = serve_until_signal(options, private.as_ref(), args).await;
    if let Some(server) = private {
        server.stop().await?;
    }
    result
}

async fn serve_until_signal(
    options: PgConnectOptions,
    private: Option<&LocalPg>,
    args: &UpArgs,
) -> anyhow::Result<()> {
    let pool = database::pool(options, args.serve.db_pool_size).await?;
    migrate::apply_all(&pool).await?;
    if let Some(server) = private {
        tracing::info!(url = %server.url(), "connect to the private database with this URL");
    }
    tracing::info!(workers = args.workers, "worker slots configured");

    serve::run(pool, args.serve.listen, serve::shutdown_signal()).await
}
