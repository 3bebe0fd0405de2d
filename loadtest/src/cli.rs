//! Command-line flags of `qf-load`, one subcommand per mode.
//!
//! The flags every mode shares are flattened into each mode rather than declared global, so
//! that the hidden `internal` subcommand receives its arguments verbatim.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::scenario::Scenario;

/// qf-load: drives a QuantumFlow cluster and raw queue baselines side by side on this machine
/// and reports throughput, latency, database work and CPU, with ratios to the baselines.
#[derive(Debug, Parser)]
#[command(name = "qf-load", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Queue N executions with no worker running, then start the workers and time the drain.
    BurnDown(BurnDownArgs),
    /// Send webhooks on a fixed schedule and measure latency from each intended send time.
    OpenLoop(OpenLoopArgs),
    /// Raise the offered rate step by step until the cluster stops keeping up.
    FindMax(FindMaxArgs),
    /// One execution of a long chain of ~10 ms http tasks on one worker process.
    Sequential(SequentialArgs),
    /// Baselines and every engine scenario, repeated, then the report.
    Suite(SuiteArgs),
    /// The whole pipeline with tiny numbers, to check that it works.
    Smoke(SmokeArgs),
    /// Entry point of the harness's own helper processes.
    #[command(hide = true, disable_help_flag = true, disable_version_flag = true)]
    Internal {
        /// Passed on untouched.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// Flags every mode takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// PostgreSQL server to use instead of a private one. Its user must be allowed to create
    /// and drop databases: each run drops and recreates the database `qf_load` (and
    /// `qf_load_*` for the baselines) on it.
    #[arg(long, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// The QuantumFlow binary to run. [default: `quantumflow` next to this executable]
    #[arg(long)]
    pub(crate) quantumflow: Option<PathBuf>,

    /// Directory for report.json, report.md, the charts and the processes' logs.
    /// [default: target/qf-load/<UTC date and time>]
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,

    /// Data directory of the private PostgreSQL server. [default: target/qf-load/pg]
    #[arg(long)]
    pub(crate) pg_dir: Option<PathBuf>,

    /// Leave the last run's database (`qf_load`) on a server given by --database-url, for
    /// inspection; a private server's data directory always keeps it.
    #[arg(long)]
    pub(crate) keep_database: bool,

    /// Database connections `quantumflow serve` may open (its --db-pool-size).
    #[arg(long, default_value_t = 16)]
    pub(crate) db_pool_size: u32,
}

/// Worker processes and their concurrency.
#[derive(Debug, Clone, Args)]
pub(crate) struct Workers {
    /// Worker processes; a comma-separated list runs the measurement once per count.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub(crate) workers: Vec<usize>,

    /// Node runs each worker process executes at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BurnDownArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// The workflow to run.
    #[arg(long, value_enum, default_value_t = Scenario::Chain10)]
    pub(crate) scenario: Scenario,

    /// Executions queued before the workers start.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) executions: u64,

    #[command(flatten)]
    pub(crate) workers: Workers,

    /// Webhook requests in flight while queueing.
    #[arg(long, default_value_t = 32)]
    pub(crate) senders: usize,

    /// Give up when the drain takes longer than this.
    #[arg(long, value_parser = parse_duration, default_value = "60m")]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct OpenLoopArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// The workflow to run.
    #[arg(long, value_enum, default_value_t = Scenario::OneNode)]
    pub(crate) scenario: Scenario,

    #[command(flatten)]
    pub(crate) load: Load,

    #[command(flatten)]
    pub(crate) workers: Workers,
}

/// An open-loop arrival schedule.
#[derive(Debug, Clone, Args)]
pub(crate) struct Load {
    /// Webhooks per second.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,

    /// How long the measured part of the schedule lasts, e.g. 30s or 2m.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) duration: Duration,

    /// Sent on the same schedule before the measured part, and left out of the figures.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) warmup: Duration,

    /// Requests in flight at most; a send that would exceed it is counted as an error.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_in_flight: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct FindMaxArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// The workflow to run.
    #[arg(long, value_enum, default_value_t = Scenario::OneNode)]
    pub(crate) scenario: Scenario,

    #[command(flatten)]
    pub(crate) search: Search,

    #[command(flatten)]
    pub(crate) workers: Workers,
}

/// How `find-max` steps the rate.
#[derive(Debug, Clone, Args)]
pub(crate) struct Search {
    /// Rate of the first step, webhooks per second.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) start_rate: f64,

    /// Each step offers this many times the rate of the one before.
    #[arg(long, default_value_t = 1.25)]
    pub(crate) factor: f64,

    /// Length of one step.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) step: Duration,

    /// Webhook accept p99 and trigger-to-completion p99 a step must both stay under.
    #[arg(long, value_parser = parse_duration, default_value = "250ms")]
    pub(crate) slo: Duration,

    /// Stop raising the rate here even if the cluster keeps up.
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) max_rate: f64,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SequentialArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    #[command(flatten)]
    pub(crate) shape: SequentialShape,
}

/// The Windmill-study-shaped single execution.
#[derive(Debug, Clone, Args)]
pub(crate) struct SequentialShape {
    /// Tasks in the chain.
    #[arg(long, default_value_t = 400)]
    pub(crate) tasks: usize,

    /// How long the loopback receiver takes to answer each task's request.
    #[arg(long, default_value_t = 10)]
    pub(crate) sleep_ms: u64,

    /// Concurrency of the single worker process (a chain runs one task at a time anyway).
    #[arg(long, default_value_t = 16)]
    pub(crate) task_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SuiteArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Times every measurement is repeated; the report shows medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) repeat: usize,

    #[command(flatten)]
    pub(crate) workers: Workers,

    /// Executions of the chain10 burn-down, and jobs of the drain baselines.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) executions: u64,

    #[command(flatten)]
    pub(crate) load: Load,

    #[command(flatten)]
    pub(crate) search: Search,

    /// Leave out the find-max search, the longest part of the suite.
    #[arg(long)]
    pub(crate) skip_find_max: bool,

    #[command(flatten)]
    pub(crate) shape: SequentialShape,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SmokeArgs {
    #[command(flatten)]
    pub(crate) common: Common,
}

impl Command {
    /// The flags shared by every mode, for the modes that have them.
    pub(crate) fn common(&self) -> Option<&Common> {
        match self {
            Self::BurnDown(a) => Some(&a.common),
            Self::OpenLoop(a) => Some(&a.common),
            Self::FindMax(a) => Some(&a.common),
            Self::Sequential(a) => Some(&a.common),
            Self::Suite(a) => Some(&a.common),
            Self::Smoke(a) => Some(&a.common),
            Self::Internal { .. } => None,
        }
    }
}

/// Reads `250ms`, `30s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 30s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn internal_arguments_are_passed_on_verbatim() {
        let cli = Cli::try_parse_from([
            "qf-load",
            "internal",
            "drain-worker",
            "--database-url",
            "postgres://x",
            "--help",
        ])
        .unwrap();

        let Command::Internal { args } = cli.command else {
            panic!("not the internal subcommand");
        };
        assert_eq!(
            args,
            ["drain-worker", "--database-url", "postgres://x", "--help"]
        );
    }

    #[test]
    fn worker_counts_are_a_list() {
        let cli = Cli::try_parse_from(["qf-load", "burn-down", "--workers", "1,4"]).unwrap();

        let Command::BurnDown(args) = cli.command else {
            panic!("not burn-down");
        };
        assert_eq!(args.workers.workers, [1, 4]);
    }
}
