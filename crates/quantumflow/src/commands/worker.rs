//! `quantumflow worker`: a process that runs node jobs.

use anyhow::bail;
use sqlx::PgPool;

use crate::cli::WorkerArgs;
use crate::commands::serve;

pub(crate) async fn run(pool: &PgPool, args: &WorkerArgs) -> anyhow::Result<()> {
    serve::check_schema(pool).await?;
    bail!(
        "this build has no node-run engine yet, so a worker (concurrency {}) would have \
         nothing to run; use `quantumflow up` or `quantumflow serve`",
        args.concurrency
    )
}
