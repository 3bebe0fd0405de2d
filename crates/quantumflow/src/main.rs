//! The `quantumflow` binary: one executable for every role.
//!
//! - `up`: everything on one machine, with a private PostgreSQL when no database is given.
//! - `serve`: the control plane alone; `worker`: a worker process alone.
//! - `migrate`: apply, revert or inspect the schema; `seed`: load the demo data.
//!
//! This crate owns the process edge: it reads flags and the environment, installs the log
//! subscriber, listens for signals, and turns every error into one line on stderr.

mod cli;
mod commands;
mod database;
mod observe;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let telemetry = match telemetry::init(cli.log_format, cli.command.service_name()) {
        Ok(telemetry) => telemetry,
        Err(err) => return fail(&err),
    };
    if let Err(err) = observe::install() {
        return fail(&err);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::new(err).context("cannot start the runtime")),
    };
    let ran = runtime.block_on(commands::run(cli));
    // The runtime goes first: its tasks may still end spans while they are dropped.
    drop(runtime);
    telemetry.shutdown();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// Prints a failure as one line, its causes joined by colons, and exits 1.
fn fail(err: &anyhow::Error) -> ExitCode {
    // Some errors repeat their source in their own message; print each text once.
    let mut line = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if !line.ends_with(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    let _ = writeln!(std::io::stderr(), "error: {line}");
    ExitCode::FAILURE
}

/// Help and version go to stdout as clap prints them; a usage mistake becomes one line that
/// names the mistake and where to read more.
fn usage_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        // `quantumflow` or `quantumflow migrate` alone: the help says what could follow, but
        // nothing ran, and a script must not take that for success.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    // clap's message, on one line: its first paragraph (what is wrong, and what is missing,
    // one per line) without the usage and hint paragraphs that follow it.
    let text = err.to_string();
    let what: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let what = what.join(" ");
    let what = what.strip_prefix("error: ").unwrap_or(&what);
    let what = what.trim_end_matches(':');
    let _ = writeln!(
        std::io::stderr(),
        "error: {what}; run 'quantumflow --help' for usage"
    );
    ExitCode::from(2)
}
