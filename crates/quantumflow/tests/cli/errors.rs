//! Bad input gets one line that says what to do, and a non-zero exit; never a panic.

use crate::support::{quantumflow, run, stderr};

fn assert_one_line_without_panic(text: &str) {
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
}

#[test]
fn an_unknown_flag_is_named_with_a_pointer_to_help() {
    let output = run(quantumflow().args(["up", "--wokers", "3"]));

    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_one_line_without_panic(&err);
    assert!(
        err.contains("'--wokers'") && err.contains("--help"),
        "{err}"
    );
}

#[test]
fn an_out_of_range_worker_count_is_refused() {
    let output = run(quantumflow().args(["up", "--workers", "0"]));

    assert_eq!(output.status.code(), Some(2));
    assert_one_line_without_panic(&stderr(&output));
}

#[test]
fn an_unreachable_database_is_reported_with_what_to_check() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let output = run(quantumflow()
        .args(["migrate", "status"])
        .env("DATABASE_URL", "postgres://qf:hunter2@127.0.0.1:1/qf"));

    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_one_line_without_panic(&err);
    assert!(err.contains("check DATABASE_URL"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

#[test]
fn a_malformed_database_url_is_reported() {
    let output = run(quantumflow()
        .args(["migrate", "status"])
        .env("DATABASE_URL", "mysql://x"));

    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_one_line_without_panic(&err);
    assert!(err.contains("not a valid PostgreSQL URL"), "{err}");
}

#[test]
fn commands_without_any_database_say_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();

    let output = run(quantumflow().args(["seed", "--data-dir"]).arg(dir.path()));

    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_one_line_without_panic(&err);
    assert!(
        err.contains("set DATABASE_URL") && err.contains("quantumflow up"),
        "{err}"
    );
}
