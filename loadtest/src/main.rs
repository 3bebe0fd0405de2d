//! `qf-load`: the QuantumFlow load-test harness.
//!
//! It starts a private PostgreSQL server (or uses one given by URL), runs QuantumFlow's
//! control plane and workers as child processes on a fresh database per run, drives them
//! with webhooks, and measures raw queue baselines in the same process, so that the engine's
//! figures can be stated as ratios taken side by side. `loadtest/README.md` says how to run
//! it and what each figure means.
//!
//! # Layout
//!
//! - [`cli`]: the flags; [`suite`]: what each subcommand runs, and the smoke test's checks.
//! - [`bench`]: the server, binary, receiver and client every mode shares, a fresh
//!   deployment per run, and the readings around a measured phase.
//! - [`database`], [`cluster`]: the PostgreSQL server; the QuantumFlow child processes.
//! - [`scenario`]: the workflow documents and the webhooks that start them.
//! - [`receiver`]: the loopback service the workflows' http nodes call.
//! - [`drive`]: the load generators; [`modes`]: the engine measurements; [`anchors`]: the
//!   baselines as the suite runs them (the drains themselves live in [`baseline`]).
//! - [`measure`], [`procstat`], [`pgstats`]: figures from the database, `/proc` and
//!   PostgreSQL's statistics.
//! - [`report`], [`targets`], [`markdown`], [`charts`] (drawn by [`plot`]): the report.
//! - [`error`]: the error type of everything below `main`.

mod anchors;
mod baseline;
mod bench;
mod charts;
mod cli;
mod cluster;
mod database;
mod drive;
mod error;
mod markdown;
mod measure;
mod modes;
mod pgstats;
mod plot;
mod procstat;
mod receiver;
mod report;
mod scenario;
mod suite;
mod targets;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use clap::Parser;

use crate::bench::Bench;
use crate::cli::{Cli, Command};
use crate::report::{Machine, Report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Helper processes of the baselines: no runtime, report or server of ours.
        Command::Internal { args } => baseline::internal_main(args),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
            let _ = writeln!(std::io::stderr().lock(), "error: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let common = command
        .common()
        .context("this subcommand takes no harness flags")?
        .clone();
    let started = Utc::now();
    let out = common.out.clone().unwrap_or_else(|| {
        let stamp = started.format("%Y%m%dT%H%M%SZ").to_string();
        target_dir().join("qf-load").join(stamp)
    });

    let mut bench = Bench::start(&common, &out).await?;
    let mut report = Report {
        machine: machine(&bench, started).await,
        ..Report::default()
    };
    // Dropping the measurement on Ctrl-C kills the cluster's processes (their handles kill on
    // drop); the report keeps what was measured before, and the server is stopped below.
    let outcome = tokio::select! {
        result = suite::run(&command, &mut bench, &mut report) => result.map_err(anyhow::Error::from),
        () = interrupted() => Err(anyhow!("interrupted")),
    };
    let written = report::write(&mut report, &out);
    let stopped = bench.finish().await;
    if written.is_ok() {
        note(format_args!("report: {}", out.join("report.md").display()));
    }

    outcome?;
    written.context("cannot write the report")?;
    stopped.context("cannot stop the database server")?;
    if matches!(command, Command::Smoke(_)) {
        suite::check_smoke(&report)?;
        note(format_args!("smoke test passed"));
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    note(format_args!("stopping: killing the cluster's processes"));
}

/// One progress line on stderr, prefixed with the time of day (UTC).
pub(crate) fn note(args: std::fmt::Arguments<'_>) {
    let now = Utc::now().format("%H:%M:%S");
    let _ = writeln!(std::io::stderr().lock(), "[{now}] {args}");
}

/// The cargo target directory the harness was built into, when it runs from one; `target`
/// in the working directory otherwise.
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let profile_dir = exe.as_deref().and_then(Path::parent);
    match profile_dir.and_then(|dir| Some((dir.file_name()?.to_str()?, dir.parent()?))) {
        Some(("release" | "debug", target)) => target.to_owned(),
        _ => PathBuf::from("target"),
    }
}

async fn machine(bench: &Bench, started: DateTime<Utc>) -> Machine {
    let settings = bench.pg.settings().await.unwrap_or_default();
    let statements = settings
        .iter()
        .any(|(k, v)| k == "shared_preload_libraries" && v.contains("pg_stat_statements"));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let version = bench.pg.version().await;
    let server = if bench.pg.is_private() {
        "private"
    } else {
        "external"
    };
    Machine {
        command_line: command_line(),
        date: started.to_rfc3339(),
        git_dirty: commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain"]))
            .map(|s| !s.is_empty()),
        git_commit: commit,
        nproc: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: read_field("/proc/cpuinfo", "model name"),
        memory_gib: read_field("/proc/meminfo", "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0 / 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned()),
        postgres_version: version.unwrap_or_else(|_| "unknown".to_owned()),
        postgres_server: server.to_owned(),
        postgres_settings: settings.into_iter().collect(),
        pg_stat_statements: statements,
        quantumflow_binary: bench.product.path().display().to_string(),
    }
}

/// The value of the first `name: value` line of a `/proc` file.
fn read_field(path: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_once(':')?.1.trim().to_owned())
}

/// The command line as typed, with any password in a database URL masked.
fn command_line() -> String {
    let mut words = Vec::new();
    let mut next_is_url = false;
    for arg in std::env::args() {
        let word = if next_is_url {
            mask_password(&arg)
        } else if let Some(url) = arg.strip_prefix("--database-url=") {
            format!("--database-url={}", mask_password(url))
        } else {
            arg.clone()
        };
        next_is_url = arg == "--database-url";
        let quoted = if word.contains(' ') {
            format!("'{word}'")
        } else {
            word
        };
        words.push(quoted);
    }
    words.join(" ")
}

fn mask_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_database_urls_are_masked() {
        assert_eq!(
            mask_password("postgres://qf:secret@127.0.0.1:5432/qf"),
            "postgres://qf:***@127.0.0.1:5432/qf"
        );
        assert_eq!(
            mask_password("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }
}
