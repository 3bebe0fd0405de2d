//! `quantumflow migrate` and `seed` against real databases.

use std::process::Stdio;

use quantumflow_secrets::Keyring;
use quantumflow_testkit::TestDb;

use crate::support::{quantumflow, run, stderr, stdout};

/// The binary pointed at a test database.
fn quantumflow_on(db: &TestDb) -> std::process::Command {
    let mut cmd = quantumflow();
    cmd.env("DATABASE_URL", db.url());
    cmd
}

#[tokio::test]
async fn two_concurrent_migrations_both_succeed_and_the_second_run_is_a_no_op() {
    let db = TestDb::empty().await;
    let spawn = || {
        quantumflow_on(&db)
            .args(["migrate", "up"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let again = run(quantumflow_on(&db).args(["migrate", "up"]));

    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&a), stdout(&again));
    assert!(
        stdout(&again).starts_with("quantumflow: version 11\n"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test]
async fn down_to_zero_empties_the_database_and_up_restores_it() {
    let db = TestDb::new().await;

    let down = run(quantumflow_on(&db).args(["migrate", "down", "--to", "0"]));
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'apalis') \
         AND tablename <> '_sqlx_migrations'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let status = run(quantumflow_on(&db).args(["migrate", "status"]));
    let up = run(quantumflow_on(&db).args(["migrate", "up"]));

    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(tables, 0);
    assert!(
        stdout(&status).contains("pending  users and connectors"),
        "{}",
        stdout(&status)
    );
    assert!(up.status.success(), "{}", stderr(&up));
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database() {
    let db = TestDb::empty().await;

    let output = run(quantumflow_on(&db).args(["serve"]));

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("run `quantumflow migrate up`"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn seed_loads_the_demo_once_with_generated_passwords() {
    let db = TestDb::new().await;

    let first = run(quantumflow_on(&db).args(["seed"]));
    let second = run(quantumflow_on(&db).args(["seed"]));
    let counts: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM connectors), \
                (SELECT count(*) FROM nodes), (SELECT count(*) FROM edges)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE username = 'admin'")
            .fetch_one(db.pool())
            .await
            .unwrap();

    assert!(first.status.success(), "{}", stderr(&first));
    let printed = stdout(&first);
    assert!(printed.contains("(generated)"), "{printed}");
    assert!(
        printed.contains("listens on POST /webhook/new-user"),
        "{printed}"
    );
    assert!(second.status.success());
    assert!(stdout(&second).contains("already there"));
    assert_eq!(counts, (2, 2, 3, 2));
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let password = printed
        .split("password: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(!hash.contains(password));
}

#[tokio::test]
async fn seed_takes_given_secrets_and_activates_connectors() {
    let db = TestDb::new().await;

    let output = run(quantumflow()
        .args(["seed", "--admin-password", "correct horse battery"])
        .env(
            "QUANTUMFLOW_SEED_SLACK_WEBHOOK_URL",
            "http://127.0.0.1:9/hook",
        )
        .env(quantumflow_secrets::KEYS_VAR, Keyring::generate_entry())
        .env("DATABASE_URL", db.url()));
    let active: Vec<(String, bool)> =
        sqlx::query_as("SELECT type::text, is_active FROM connectors ORDER BY type")
            .fetch_all(db.pool())
            .await
            .unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains("correct horse"),
        "a given password was echoed"
    );
    assert_eq!(
        active,
        [("email".to_owned(), false), ("slack".to_owned(), true)]
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT credentials::text FROM connectors")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        stored.iter().all(|text| !text.contains("/hook")),
        "the webhook URL is stored in clear: {stored:?}"
    );
    assert!(stored.iter().any(|text| text.contains("xchacha20poly1305")));
}

#[tokio::test]
async fn seed_refuses_secrets_it_cannot_seal() {
    let db = TestDb::new().await;

    let output = run(quantumflow()
        .args(["seed", "--slack-webhook-url", "http://127.0.0.1:9/hook"])
        .env_remove(quantumflow_secrets::KEYS_VAR)
        .env("DATABASE_URL", db.url()));

    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(quantumflow_secrets::KEYS_VAR),
        "{}",
        stderr(&output)
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(users, 0);
}
