//! `quantumflow user create` and `quantumflow token …`: bootstrapping API access.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use quantumflow_testkit::TestDb;

use crate::cluster::Cluster;
use crate::support::{quantumflow, run, send, stderr, stdout};

fn on(db: &TestDb) -> Command {
    let mut cmd = quantumflow();
    cmd.env("DATABASE_URL", db.url());
    cmd
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `GET /api/v1/users/me` with `authorization` as given.
async fn whoami(api: SocketAddr, authorization: &str) -> (u16, serde_json::Value) {
    let headers = [("Authorization", authorization)];
    send(api, "GET", "/api/v1/users/me", &headers, None).await
}

#[tokio::test]
async fn a_user_and_token_made_on_the_command_line_work_against_the_api_until_revoked() {
    let db = TestDb::new().await;

    let created = run_with_stdin(
        on(&db).args([
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--username",
            "ada",
            "--password-stdin",
        ]),
        "correct horse battery\n",
    );
    let issued = run(on(&db).args(["token", "create", "--user", "ada", "--name", "ci"]));

    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).starts_with("Created user ada <ada@example.com>"),
        "{}",
        stdout(&created)
    );
    assert!(!stdout(&created).contains("correct horse"));
    let hash: String = sqlx::query_scalar("SELECT hashed_password FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(issued.status.success(), "{}", stderr(&issued));
    let token = stdout(&issued).trim().to_owned();
    assert!(token.starts_with("qf_") && token.len() == 67, "{token:?}");
    assert!(stderr(&issued).contains("shown only this once"));

    let cluster = Cluster::with_workers(&db, 0).await;
    let bearer = format!("Bearer {token}");
    let (status, me) = whoami(cluster.api, &bearer).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "ada");

    let listed = run(on(&db).args(["token", "list", "--user", "ada@example.com"]));
    assert!(listed.status.success(), "{}", stderr(&listed));
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains(" ci ") && lines[1].ends_with("active"),
        "{lines:?}"
    );
    assert!(
        !stdout(&listed).contains(&token[7..]),
        "the listing shows the secret"
    );
    let id = lines[1].split_whitespace().next().unwrap().to_owned();

    let revoked = run(on(&db).args(["token", "revoke", &id]));
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let (status, _) = whoami(cluster.api, &bearer).await;
    assert_eq!(status, 401, "a revoked token still works");
    let relisted = run(on(&db).args(["token", "list", "--user", "ada"]));
    assert!(
        stdout(&relisted).contains("revoked"),
        "{}",
        stdout(&relisted)
    );
}

#[tokio::test]
async fn account_commands_say_what_to_fix_and_change_nothing() {
    let db = TestDb::new().await;
    let first = run(on(&db).args([
        "user",
        "create",
        "--email",
        "ada@example.com",
        "--username",
        "ada",
    ]));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("(generated)"), "{}", stdout(&first));

    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (
            &[
                "user",
                "create",
                "--email",
                "ada@example.com",
                "--username",
                "bob",
            ],
            None,
            "already exists",
        ),
        (
            &[
                "user",
                "create",
                "--email",
                "not-an-email",
                "--username",
                "bob",
            ],
            None,
            "not a valid e-mail address",
        ),
        (
            &[
                "user",
                "create",
                "--email",
                "bob@example.com",
                "--username",
                "bob",
                "--password-stdin",
            ],
            Some("short\n"),
            "at least 8 characters",
        ),
        (
            &["token", "create", "--user", "nobody", "--name", "ci"],
            None,
            "no user with e-mail or username \"nobody\"",
        ),
        (
            &["token", "create", "--user", "ada", "--name", "   "],
            None,
            "1 to 100 characters",
        ),
        (
            &["token", "revoke", "01920a5c-5d4e-7c3a-9f1e-2b3c4d5e6f70"],
            None,
            "there is no token",
        ),
    ];
    for (args, input, expected) in cases {
        let output = match input {
            Some(input) => run_with_stdin(on(&db).args(args), input),
            None => run(on(&db).args(args)),
        };
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    let counts: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM api_tokens)")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(counts, (1, 0));
}
