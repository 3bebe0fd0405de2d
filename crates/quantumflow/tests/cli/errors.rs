//! Bad input gets one line that says what to do, and a non-zero exit; never a panic.

use std::process::Output;

use crate::support::{quantumflow, run, stderr};

/// Checks the exit code and that stderr is one `error:` line with no panic; returns that line.
fn one_line_failure(output: &Output, code: i32) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "expected one line: {text:?}"
    );
    assert!(text.starts_with("error: "), "{text:?}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text:?}"
    );
    text
}

#[test]
fn an_unknown_flag_is_named_with_a_pointer_to_help() {
    let output = run(quantumflow().args(["up", "--wokers", "3"]));

    let err = one_line_failure(&output, 2);
    assert!(
        err.contains("'--wokers'") && err.contains("--help"),
        "{err}"
    );
}

#[test]
fn missing_arguments_are_named() {
    let output = run(quantumflow().args(["token", "create", "--name", "ci"]));

    let err = one_line_failure(&output, 2);
    assert!(
        err.contains("required arguments were not provided: --user <USER>"),
        "{err}"
    );
}

#[test]
fn a_command_without_its_subcommand_shows_help_and_fails() {
    for args in [&[][..], &["migrate"][..]] {
        let output = run(quantumflow().args(args));

        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

#[test]
fn an_out_of_range_worker_count_is_refused() {
    let output = run(quantumflow().args(["up", "--workers", "0"]));

    one_line_failure(&output, 2);
}

#[test]
fn an_outbound_block_that_is_not_cidr_is_refused_by_name() {
    let flag = run(quantumflow().args(["worker", "--allow-outbound", "10.0.0.0/33"]));
    let env = run(quantumflow()
        .arg("worker")
        .env("QUANTUMFLOW_ALLOW_OUTBOUND", "10.1.2.0/24,intranet"));

    let err = one_line_failure(&flag, 2);
    assert!(
        err.contains("'--allow-outbound <CIDR>'") && err.contains("\"10.0.0.0/33\""),
        "{err}"
    );
    assert!(err.contains("is not a CIDR block"), "{err}");
    // The variable is split on commas: the first block passes, the second is named.
    let err = one_line_failure(&env, 2);
    assert!(
        err.contains("invalid value 'intranet' for '--allow-outbound <CIDR>'"),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_is_reported_with_what_to_check() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let output = run(quantumflow()
        .args(["migrate", "status"])
        .env("DATABASE_URL", "postgres://qf:hunter2@127.0.0.1:1/qf"));

    let err = one_line_failure(&output, 1);
    assert!(err.contains("check DATABASE_URL"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

#[test]
fn a_malformed_database_url_is_reported() {
    let output = run(quantumflow()
        .args(["migrate", "status"])
        .env("DATABASE_URL", "mysql://x"));

    let err = one_line_failure(&output, 1);
    assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
}

#[test]
fn commands_without_any_database_say_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();

    let output = run(quantumflow().args(["seed", "--data-dir"]).arg(dir.path()));

    let err = one_line_failure(&output, 1);
    assert!(
        err.contains("set DATABASE_URL") && err.contains("quantumflow up"),
        "{err}"
    );
}
