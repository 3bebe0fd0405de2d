//! `quantumflow keys`: generating entries, and rotating every connector onto the active key.

use quantumflow_secrets::{KEYS_VAR, Keyring, StoredForm};
use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::users::{self, NewUser};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{quantumflow, run, stderr, stdout};

async fn owner(db: &TestDb) -> Uuid {
    let new = NewUser {
        email: "owner@example.com",
        username: "owner",
        hashed_password: "x",
        full_name: None,
        is_superuser: false,
    };
    users::insert(db.pool(), &new).await.unwrap().id
}

/// A connector whose credentials column holds `stored(id)` as it is.
async fn connector(db: &TestDb, owner: Uuid, stored: impl Fn(Uuid) -> Value) -> Uuid {
    let id = Uuid::now_v7();
    let new = NewConnector {
        id,
        name: "c",
        kind: "http",
        description: None,
        config: &json!({}),
        credentials: &stored(id),
        is_active: true,
        test_status: None,
        owner_id: owner,
    };
    connectors::insert(db.pool(), &new).await.unwrap();
    id
}

async fn stored(db: &TestDb, id: Uuid) -> Value {
    connectors::credentials(db.pool(), id).await.unwrap()
}

fn rotate(db: &TestDb, keys: &str) -> std::process::Output {
    run(quantumflow()
        .args(["keys", "rotate", "--batch-size", "1"])
        .env(KEYS_VAR, keys)
        .env("DATABASE_URL", db.url()))
}

#[tokio::test]
async fn rotation_seals_clear_rows_and_moves_old_ones_to_the_new_key() {
    let db = TestDb::new().await;
    let owner = owner(&db).await;
    let (a, b) = (Keyring::generate_entry(), Keyring::generate_entry());
    let key_a = Keyring::parse(&a).unwrap();
    let key_b = Keyring::parse(&b).unwrap();
    let by_a = connector(&db, owner, |id| {
        key_a.seal(id, &json!({"t": "sealed-by-a"})).unwrap()
    })
    .await;
    let clear = connector(&db, owner, |_| json!({"t": "legacy-in-clear"})).await;
    let empty = connector(&db, owner, |_| json!({})).await;

    let first = rotate(&db, &format!("{b},{a}"));
    let again = rotate(&db, &format!("{b},{a}"));

    assert!(first.status.success(), "{}", stderr(&first));
    let report = stdout(&first);
    assert!(report.contains("1 connectors re-encrypted"), "{report}");
    assert!(
        report.contains("1 encrypted for the first time"),
        "{report}"
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("0 connectors re-encrypted"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("0 encrypted"), "{}", stdout(&again));
    for (id, secret) in [(by_a, "sealed-by-a"), (clear, "legacy-in-clear")] {
        let row = stored(&db, id).await;
        assert_eq!(
            quantumflow_secrets::stored_form(&row),
            StoredForm::Sealed {
                kid: key_b.active_kid()
            }
        );
        assert_eq!(key_b.open(id, &row).unwrap(), json!({ "t": secret }));
    }
    assert_eq!(stored(&db, empty).await, json!({}));
}

#[tokio::test]
async fn a_row_of_a_key_not_given_is_reported_and_the_others_are_rotated() {
    let db = TestDb::new().await;
    let owner = owner(&db).await;
    let (lost, b) = (Keyring::generate_entry(), Keyring::generate_entry());
    let key_lost = Keyring::parse(&lost).unwrap();
    let key_b = Keyring::parse(&b).unwrap();
    let orphan = connector(&db, owner, |id| {
        key_lost.seal(id, &json!({"t": "x"})).unwrap()
    })
    .await;
    let clear = connector(&db, owner, |_| json!({"t": "legacy"})).await;

    let output = rotate(&db, &b);

    assert!(!output.status.success(), "{}", stdout(&output));
    let errors = stderr(&output);
    assert!(errors.contains(&orphan.to_string()), "{errors}");
    assert!(errors.contains(key_lost.active_kid()), "{errors}");
    assert!(key_b.is_current(&stored(&db, clear).await));
    assert!(key_lost.is_current(&stored(&db, orphan).await));
}

#[test]
fn generated_entries_are_printed_alone_and_parse() {
    let output = run(quantumflow().args(["keys", "generate"]));

    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    Keyring::parse(printed.trim()).unwrap();
}
