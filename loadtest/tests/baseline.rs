//! The baselines end to end through `qf-load internal baseline`: each drains a small backlog in
//! a scratch database on the server `DATABASE_URL` names and prints its result as JSON.

use std::process::Command;

use serde_json::Value;

/// Small enough for a test, large enough that several fetch batches and clients take part.
const JOBS: u64 = 500;

fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must name a PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/postgres); \
         the baselines create and drop scratch databases on it",
    )
}

/// Runs one baseline and returns its result, failing the test with the harness's stderr if the
/// run failed.
fn run_baseline(kind: &str, workers: usize, concurrency: usize) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_qf-load"))
        .args(["internal", "baseline", "--kind", kind])
        .args(["--database-url", &database_url()])
        .args(["--workers", &workers.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--jobs", &JOBS.to_string()])
        .output()
        .expect("cannot run qf-load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "qf-load failed: {stderr}");

    let stdout = String::from_utf8(output.stdout).expect("stdout is not UTF-8");
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON result on stdout: {stdout:?}; stderr: {stderr}"));
    serde_json::from_str(line).expect("the result is not JSON")
}

fn assert_consistent(result: &Value, name: &str) {
    assert_eq!(result["name"], name);
    assert_eq!(
        result["jobs"].as_u64(),
        Some(JOBS),
        "not every job was drained"
    );

    let seconds = result["seconds"].as_f64().expect("seconds");
    let rate = result["jobs_per_sec"].as_f64().expect("jobs_per_sec");
    assert!(seconds > 0.0 && rate > 0.0, "{result}");
    let implied = JOBS as f64 / seconds;
    assert!((rate - implied).abs() <= 1e-6 * implied, "{result}");

    let commits = result["commits_per_job"].as_f64().expect("commits_per_job");
    assert!(commits > 0.0, "{result}");
    // Present only when the server loads pg_stat_statements; then it cannot be below the
    // commits, each of which took at least one statement.
    if let Some(statements) = result["statements_per_job"].as_f64() {
        assert!(statements >= commits, "{result}");
    }
}

#[test]
fn apalis_workers_in_processes_drain_the_whole_backlog() {
    let result = run_baseline("apalis", 2, 4);

    assert_consistent(&result, "apalis 2x4 batch 10");
    // apalis fetches 10 jobs a transaction and acknowledges them in batches, so a job costs
    // well under one commit.
    let commits = result["commits_per_job"].as_f64().unwrap();
    assert!(commits < 1.0, "{result}");
}

#[test]
fn skip_locked_clients_drain_the_whole_backlog_at_two_commits_a_job() {
    let result = run_baseline("skip-locked", 2, 4);

    assert_consistent(&result, "skip-locked 8 clients");
    // Claim and complete commit separately; each client's last, empty claim and the readings'
    // own transactions add a little.
    let commits = result["commits_per_job"].as_f64().unwrap();
    assert!((2.0..2.1).contains(&commits), "{result}");
}

#[test]
fn a_bad_database_url_fails_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_qf-load"))
        .args(["internal", "baseline", "--kind", "skip-locked"])
        .args(["--database-url", "not a url", "--jobs", "10"])
        .output()
        .expect("cannot run qf-load");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database URL"), "stderr: {stderr}");
}
