//! Starts real private servers from the machine's PostgreSQL binaries.

use std::os::unix::fs::PermissionsExt;

use quantumflow_localpg::{LocalPg, LocalPgError, Options, Stopped};
use sqlx::{ConnectOptions, Connection};

/// A scratch directory that the server's account can enter even when the tests run as root.
fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn options(dir: &tempfile::TempDir) -> Options {
    let mut options = Options::new(dir.path().join("data"), "qf_test");
    options.durable = false;
    options
}

#[tokio::test]
async fn a_restarted_server_finds_its_data_again() {
    let dir = scratch_dir();
    let server = LocalPg::start(&options(&dir)).await.unwrap();
    let mut conn = server.connect_options().connect().await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    server.stop().await.unwrap();

    let server = LocalPg::start(&options(&dir)).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&server.url()).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    server.stop().await.unwrap();

    assert_eq!(v, 42);
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_with_a_clear_error() {
    let dir = scratch_dir();
    let server = LocalPg::start(&options(&dir)).await.unwrap();

    let err = LocalPg::start(&options(&dir)).await.unwrap_err();
    server.stop().await.unwrap();

    assert!(matches!(err, LocalPgError::InUse(_)), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
}

#[tokio::test]
async fn a_server_left_running_by_a_killed_owner_is_taken_over() {
    let dir = scratch_dir();
    let server = LocalPg::start(&options(&dir)).await.unwrap();
    // Forgetting the handle models an owner that died without stopping its server; the lock
    // goes with it, as it would with the process.
    drop(server);

    let server = LocalPg::start(&options(&dir)).await.unwrap();
    let mut conn = server.connect_options().connect().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    server.stop().await.unwrap();

    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_data_dir_the_server_account_cannot_enter_is_explained() {
    if !nix::unistd::Uid::effective().is_root() {
        // Only root hands the server to another account; as anyone else there is no second
        // account whose access could be missing.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    let err = LocalPg::start(&options(&dir)).await.unwrap_err();

    assert!(matches!(err, LocalPgError::Unreachable { .. }), "{err}");
}

/// Runs `pg_ctl` on the cluster in `data_dir` as an operator would: as the server's account.
fn pg_ctl(data_dir: &std::path::Path, args: &[&str]) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt;

    let program = quantumflow_localpg::find_program("pg_ctl").expect("pg_ctl is installed");
    let mut command = std::process::Command::new(program);
    command
        .arg("--pgdata")
        .arg(data_dir.join("pgdata"))
        // The server must not hold this process's pipes open.
        .args(["--log", "/dev/null", "--wait"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if nix::unistd::Uid::effective().is_root() {
        let user = nix::unistd::User::from_name(quantumflow_localpg::SUPERUSER)
            .unwrap()
            .expect("the server's account exists");
        command
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .current_dir("/");
    }
    command.status().unwrap()
}

#[tokio::test]
async fn a_server_restarted_by_hand_is_reported_as_still_running() {
    let dir = scratch_dir();
    let options = options(&dir);
    let server = LocalPg::start(&options).await.unwrap();
    // The postmaster this handle started stops; pg_ctl starts another in its place.
    let restarted = pg_ctl(&options.data_dir, &["restart", "--mode", "fast"]);

    let stopped = server.stop().await.unwrap();
    let reachable = server_answers(&options).await;
    let cleaned_up = pg_ctl(&options.data_dir, &["stop", "--mode", "fast"]);

    assert!(restarted.success(), "{restarted}");
    assert!(
        matches!(stopped, Stopped::OtherStillRunning { .. }),
        "{stopped:?}"
    );
    assert!(reachable, "the other server was stopped too");
    assert!(cleaned_up.success(), "{cleaned_up}");
}

#[tokio::test]
async fn a_stopped_server_is_reported_as_stopped() {
    let dir = scratch_dir();
    let options = options(&dir);
    let server = LocalPg::start(&options).await.unwrap();

    let stopped = server.stop().await.unwrap();

    assert_eq!(stopped, Stopped::Stopped);
    assert!(!server_answers(&options).await);
}

/// Whether a server in the data directory of `options` takes connections.
async fn server_answers(options: &Options) -> bool {
    let connect = quantumflow_localpg::connect_options(&options.data_dir, "postgres");
    match connect.connect().await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(_) => false,
    }
}
