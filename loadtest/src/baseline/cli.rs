//! `qf-load internal …`: processes the harness starts itself, and one baseline run from the
//! command line, which is how the integration tests reach the baselines.

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{DrainConfig, apalis_drain, raw_apalis, skip_locked_cycle};

#[derive(Debug, Parser)]
#[command(
    name = "qf-load internal",
    about = "Entry points for processes qf-load starts itself; not a stable interface"
)]
struct InternalCli {
    #[command(subcommand)]
    command: InternalCommand,
}

#[derive(Debug, Subcommand)]
enum InternalCommand {
    /// One apalis worker of an apalis drain: prints `ready`, consumes after reading `go` on
    /// stdin, and stops when stdin closes.
    ApalisWorker(ApalisWorkerArgs),
    /// Runs one baseline drain and prints its result as one line of JSON.
    Baseline(BaselineArgs),
}

#[derive(Debug, Args)]
struct ApalisWorkerArgs {
    /// The database holding apalis's schema and the backlog.
    #[arg(long)]
    database_url: String,
    /// The queue (apalis job type) to consume.
    #[arg(long)]
    queue: String,
    /// Jobs in flight at once.
    #[arg(long, value_parser = at_least_one)]
    concurrency: usize,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    /// Which baseline to run.
    #[arg(long, value_enum)]
    kind: BaselineKind,
    /// The server to create the scratch database on.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// apalis worker processes; for SKIP LOCKED, multiplies the client count.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    workers: usize,
    /// Jobs in flight per apalis worker; for SKIP LOCKED, clients per worker.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    concurrency: usize,
    /// The backlog to drain.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BaselineKind {
    /// Raw apalis 1.0 with its default config, workers in processes of their own.
    Apalis,
    /// The plain `FOR UPDATE SKIP LOCKED` queue, one job per claim.
    SkipLocked,
}

/// Runs `qf-load internal <args>`; `args` are the words after `internal`. It starts a Tokio
/// runtime of its own, so it must be called outside one.
pub(crate) fn internal_main(args: Vec<String>) -> anyhow::Result<()> {
    let cli = InternalCli::parse_from(std::iter::once("qf-load internal".to_owned()).chain(args));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            InternalCommand::ApalisWorker(args) => {
                raw_apalis::run_worker(&args.database_url, &args.queue, args.concurrency).await
            }
            InternalCommand::Baseline(args) => run_baseline(args).await,
        }
    })
}

async fn run_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let cfg = DrainConfig {
        database_url: args.database_url,
        workers: args.workers,
        concurrency: args.concurrency,
        jobs: args.jobs,
        harness_exe: std::env::current_exe().context("cannot find the harness's own executable")?,
    };
    let result = match args.kind {
        BaselineKind::Apalis => apalis_drain(&cfg).await?,
        BaselineKind::SkipLocked => skip_locked_cycle(&cfg).await?,
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &result)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        InternalCli::command().debug_assert();
    }

    #[test]
    fn baseline_arguments_parse_with_defaults() {
        let cli = InternalCli::try_parse_from([
            "qf-load internal",
            "baseline",
            "--kind",
            "skip-locked",
            "--database-url",
            "postgres://postgres@127.0.0.1/qf",
        ])
        .unwrap();

        let InternalCommand::Baseline(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(matches!(args.kind, BaselineKind::SkipLocked));
        assert_eq!((args.workers, args.concurrency, args.jobs), (1, 16, 20_000));
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let parsed = InternalCli::try_parse_from([
            "qf-load internal",
            "apalis-worker",
            "--database-url",
            "postgres://postgres@127.0.0.1/qf",
            "--queue",
            "q",
            "--concurrency",
            "0",
        ]);

        assert!(parsed.is_err());
    }
}
