//! Signed webhooks: which deliveries start an execution, which are refused before anything is
//! written, and how repeats of one delivery are answered.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use quantumflow_api::starter::{DELIVERY_RETENTION, Started, Starter};
use quantumflow_api::{AppState, router};
use quantumflow_engine::{Start, Trigger};
use quantumflow_secrets::Keyring;
use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::{deliveries, workflows};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::support::{
    Response, admin, counts, document, post_json, problem_detail, put_json, send, send_to, user,
};

const GITHUB_OLD: &str = "it's-a-secret-to-everybody";
const GITHUB_NEW: &str = "rotated-secret";
const STANDARD_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_NEW: &str = "whsec_cm90YXRlZC1zdGFuZGFyZC1zZWNyZXQ=";
const BODY: &str = r#"{"action": "opened", "number": 12345678901234567890123}"#;

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn github_signature(secret: &str, body: &str) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret.as_bytes(), &[body.as_bytes()]))
    )
}

fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let content = [
        id.as_bytes(),
        b".",
        timestamp.as_bytes(),
        b".",
        body.as_bytes(),
    ];
    format!("v1,{}", BASE64.encode(mac(&key, &content)))
}

/// The credential key every control plane of these tests shares, as a cluster's would.
const KEYS: &str = "signing-test:FefitGSHgrRjI0vsrIaAKwkChqXtgH3uxIBTJIzvl5s=";

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::parse(KEYS).unwrap())
}

/// A control plane that can open the signing connectors' sealed credentials.
fn control_plane(db: &TestDb) -> axum::Router {
    router(AppState::new(db.pool().clone()).with_keyring(Some(keyring())))
}

/// A connector of `owner` holding `secrets`, sealed as the API stores them.
async fn signing_connector(db: &TestDb, owner: Uuid, secrets: &[&str]) -> Uuid {
    let id = Uuid::now_v7();
    let credentials = keyring().seal(id, &json!({ "secrets": secrets })).unwrap();
    let new = NewConnector {
        id,
        name: "signing",
        kind: "http",
        description: None,
        config: &json!({}),
        credentials: &credentials,
        is_active: true,
        test_status: None,
        owner_id: owner,
    };
    connectors::insert(db.pool(), &new).await.unwrap().id
}

/// The test document at `/webhook/signed`, with `signature` as its signature settings.
fn signed_document(signature: &Value) -> Value {
    let mut doc = document();
    doc["trigger_config"]["config"] = json!({
        "method": "POST",
        "path": "/webhook/signed",
        "signature": signature,
    });
    doc
}

/// An admin, a connector of theirs with an old and a new secret, and an active workflow
/// checking `scheme` with it.
async fn signed_workflow(db: &TestDb, scheme: &str, secrets: &[&str]) {
    let owner = admin(db).await;
    let connector = signing_connector(db, owner.id, secrets).await;
    let signature = json!({"scheme": scheme, "connector_id": connector});
    let created = send(
        db,
        post_json("/api/v1/workflows", &signed_document(&signature)),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

fn delivery(headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request =
        Request::post("/webhook/signed").header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

/// Headers replacing the defaults of a test delivery; an empty value removes the header.
type Overrides<'a> = Vec<(&'a str, String)>;

/// Asserts a 401 problem whose detail contains `expected`, and that it shows no secret.
fn assert_refused(case: &str, response: &Response, expected: &str) {
    let detail = problem_detail(response, StatusCode::UNAUTHORIZED);
    assert!(detail.contains(expected), "{case}: {detail}");
    for secret in [GITHUB_OLD, GITHUB_NEW, STANDARD_OLD, STANDARD_NEW] {
        assert!(!detail.contains(secret), "{case}: {detail}");
    }
    assert!(
        response.header(header::WWW_AUTHENTICATE).is_some(),
        "{case}"
    );
}

#[tokio::test]
async fn github_deliveries_start_only_with_a_matching_signature_and_once_per_delivery() {
    let db = TestDb::new().await;
    signed_workflow(&db, "github", &[GITHUB_OLD, GITHUB_NEW]).await;
    let app = control_plane(&db);
    let valid = github_signature(GITHUB_OLD, BODY);
    let changed = BODY.replacen('1', "2", 1);
    let refused = [
        (
            "wrong key",
            github_signature("guess", BODY),
            BODY,
            "no signature matches",
        ),
        (
            "one body byte changed",
            valid.clone(),
            &*changed,
            "no signature matches",
        ),
        (
            "not sha256=",
            valid.replace("sha256=", "sha1="),
            BODY,
            "malformed",
        ),
        ("not hex", "sha256=xyz".to_owned(), BODY, "malformed"),
    ];

    for (case, signature, body, expected) in &refused {
        let response = send_to(
            &app,
            delivery(
                &[
                    ("x-hub-signature-256", signature),
                    ("x-github-delivery", "d-1"),
                ],
                body,
            ),
        )
        .await;
        assert_refused(case, &response, expected);
    }
    let missing = send_to(&app, delivery(&[("x-github-delivery", "d-1")], BODY)).await;
    assert_refused("missing", &missing, "x-hub-signature-256 is missing");
    assert_eq!(counts(&db).await, (0, 0, 0, 0));

    let headers = [
        ("x-hub-signature-256", &*valid),
        ("x-github-delivery", "d-1"),
    ];
    let first = send_to(&app, delivery(&headers, BODY)).await;
    let again = send_to(&app, delivery(&headers, BODY)).await;
    let rotated = github_signature(GITHUB_NEW, BODY);
    let second = send_to(
        &app,
        delivery(
            &[
                ("x-hub-signature-256", &rotated),
                ("x-github-delivery", "d-2"),
            ],
            BODY,
        ),
    )
    .await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["execution_id"], first.body["execution_id"]);
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    assert_ne!(second.body["execution_id"], first.body["execution_id"]);
    assert_eq!(counts(&db).await.0, 2);

    // Past the retention the id is forgotten, and the same delivery starts again.
    sqlx::query(
        "UPDATE webhook_deliveries SET received_at = now() - interval '25 hours' \
         WHERE delivery_id = 'd-1'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let retention = chrono::Duration::from_std(DELIVERY_RETENTION).unwrap();
    let pruned = deliveries::prune(db.pool(), chrono::Utc::now() - retention)
        .await
        .unwrap();
    let later = send_to(&app, delivery(&headers, BODY)).await;
    assert_eq!(pruned, 1);
    assert_eq!(later.status, StatusCode::ACCEPTED, "{}", later.body);
}

#[tokio::test]
async fn standard_webhooks_deliveries_are_checked_for_signature_and_timestamp() {
    let db = TestDb::new().await;
    signed_workflow(&db, "standard-webhooks", &[STANDARD_OLD, STANDARD_NEW]).await;
    let app = control_plane(&db);
    let now = chrono::Utc::now().timestamp();
    let (fresh, stale, future) = (
        now.to_string(),
        (now - 600).to_string(),
        (now + 600).to_string(),
    );
    let sign =
        |secret: &str, id: &str, ts: &str, body: &str| standard_signature(secret, id, ts, body);
    let changed = BODY.replacen('1', "2", 1);
    let refused: Vec<(&str, Overrides<'_>, &str, &str)> = vec![
        (
            "wrong key",
            vec![(
                "webhook-signature",
                sign("whsec_Z3Vlc3M=", "m1", &fresh, BODY),
            )],
            BODY,
            "no signature matches",
        ),
        (
            "one body byte changed",
            vec![("webhook-signature", sign(STANDARD_OLD, "m1", &fresh, BODY))],
            &changed,
            "no signature matches",
        ),
        (
            "stale",
            vec![
                ("webhook-timestamp", stale.clone()),
                ("webhook-signature", sign(STANDARD_OLD, "m1", &stale, BODY)),
            ],
            BODY,
            "behind",
        ),
        (
            "future",
            vec![
                ("webhook-timestamp", future.clone()),
                ("webhook-signature", sign(STANDARD_OLD, "m1", &future, BODY)),
            ],
            BODY,
            "ahead of",
        ),
        (
            "missing signature",
            vec![("webhook-signature", String::new())],
            BODY,
            "missing",
        ),
        (
            "malformed signature",
            vec![("webhook-signature", "v1,***".to_owned())],
            BODY,
            "malformed",
        ),
        (
            "malformed timestamp",
            vec![("webhook-timestamp", "yesterday".to_owned())],
            BODY,
            "malformed",
        ),
    ];

    for (case, overrides, body, expected) in &refused {
        let mut headers = vec![
            ("webhook-id", "m1".to_owned()),
            ("webhook-timestamp", fresh.clone()),
            ("webhook-signature", sign(STANDARD_OLD, "m1", &fresh, BODY)),
        ];
        for (name, value) in overrides {
            headers.retain(|(n, _)| n != name);
            if !value.is_empty() {
                headers.push((name, value.clone()));
            }
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = send_to(&app, delivery(&headers, body)).await;
        assert_refused(case, &response, expected);
    }
    assert_eq!(counts(&db).await, (0, 0, 0, 0));

    let first_signature = sign(STANDARD_OLD, "m1", &fresh, BODY);
    let first_headers = [
        ("webhook-id", "m1"),
        ("webhook-timestamp", &*fresh),
        ("webhook-signature", &*first_signature),
    ];
    let first = send_to(&app, delivery(&first_headers, BODY)).await;
    let replay = send_to(&app, delivery(&first_headers, BODY)).await;
    let rotated_signature = sign(STANDARD_NEW, "m2", &fresh, BODY);
    let rotated = send_to(
        &app,
        delivery(
            &[
                ("webhook-id", "m2"),
                ("webhook-timestamp", &*fresh),
                ("webhook-signature", &*rotated_signature),
            ],
            BODY,
        ),
    )
    .await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    assert_eq!(replay.body["execution_id"], first.body["execution_id"]);
    assert_eq!(rotated.status, StatusCode::ACCEPTED, "{}", rotated.body);
    let stored: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT delivery_id::text, execution_id FROM webhook_deliveries ORDER BY delivery_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let ids: Vec<Value> = stored.iter().map(|(_, e)| json!(e)).collect();
    assert_eq!(
        stored.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    assert_eq!(
        ids,
        [
            first.body["execution_id"].clone(),
            rotated.body["execution_id"].clone()
        ]
    );
    assert_eq!(counts(&db).await.0, 2);
}

/// Sends `copies` of one signed delivery at once, through `apps` in turn, and returns the
/// answers.
async fn at_once(apps: &[axum::Router], copies: usize) -> Vec<Response> {
    let signature = github_signature(GITHUB_OLD, BODY);
    let sends = (0..copies).map(|i| {
        let request = delivery(
            &[
                ("x-hub-signature-256", &signature),
                ("x-github-delivery", "same"),
            ],
            BODY,
        );
        let app = apps[i % apps.len()].clone();
        async move { send_to(&app, request).await }
    });
    futures_util::future::join_all(sends).await
}

fn assert_one_started(answers: &[Response]) {
    let started: Vec<&Response> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    let original = &started[0].body["execution_id"];
    for answer in answers.iter().filter(|a| a.status != StatusCode::ACCEPTED) {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["duplicate"], true);
        assert_eq!(&answer.body["execution_id"], original);
    }
}

#[tokio::test]
async fn identical_deliveries_arriving_together_start_one_execution() {
    let db = TestDb::new().await;
    signed_workflow(&db, "github", &[GITHUB_OLD]).await;
    let one = control_plane(&db);

    let answers = at_once(&[one], 8).await;

    assert_one_started(&answers);
    assert_eq!(counts(&db).await.0, 1);
}

#[tokio::test]
async fn identical_deliveries_to_two_control_planes_start_one_execution() {
    let db = TestDb::new().await;
    signed_workflow(&db, "github", &[GITHUB_OLD]).await;
    // Two states have two sets of writers, so the copies are committed by racing transactions.
    let apps = [control_plane(&db), control_plane(&db)];

    let answers = at_once(&apps, 6).await;

    assert_one_started(&answers);
    assert_eq!(counts(&db).await.0, 1);
}

#[tokio::test]
async fn signature_settings_are_checked_when_the_workflow_is_created() {
    let db = TestDb::new().await;
    admin(&db).await;
    let other = user(&db, "other", false).await;
    let theirs = signing_connector(&db, other.id, &["s"]).await;
    let pointer = "/trigger_config/config/signature";
    let cases = [
        (json!({"scheme": "md5", "connector_id": theirs}), "/scheme"),
        (
            json!({"scheme": "github", "connector_id": "nope"}),
            "/connector_id",
        ),
        (
            json!({"scheme": "github", "connector_id": Uuid::new_v4()}),
            "/connector_id",
        ),
        (
            json!({"scheme": "github", "connector_id": theirs}),
            "/connector_id",
        ),
        (
            json!({"scheme": "github", "connector_id": theirs, "extra": 1}),
            "/extra",
        ),
        (
            json!({"scheme": "standard-webhooks", "connector_id": theirs, "tolerance_seconds": 0}),
            "/tolerance_seconds",
        ),
    ];

    for (signature, field) in cases {
        let refused = send(
            &db,
            post_json("/api/v1/workflows", &signed_document(&signature)),
        )
        .await;

        problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
        let pointers: Vec<&str> = refused.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(
            pointers.contains(&&*format!("{pointer}{field}")),
            "{signature}: {pointers:?}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM workflows")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// An active GitHub-signed workflow, the control plane, and what replacing it takes.
struct Replaceable {
    db: TestDb,
    app: axum::Router,
    id: Uuid,
    /// A replace that makes version 2: the same document, sent again.
    replace: Request<Body>,
}

impl Replaceable {
    async fn new() -> Self {
        let db = TestDb::new().await;
        signed_workflow(&db, "github", &[GITHUB_OLD]).await;
        let app = control_plane(&db);
        let (id, trigger): (Uuid, Value) =
            sqlx::query_as("SELECT id, trigger_config FROM workflows WHERE is_latest")
                .fetch_one(db.pool())
                .await
                .unwrap();
        let document = signed_document(&trigger["config"]["signature"]);
        let replace = put_json(&format!("/api/v1/workflows/{id}"), &document);
        Self {
            db,
            app,
            id,
            replace,
        }
    }

    /// Delivery `id` of [`BODY`], correctly signed.
    fn delivery(id: &str) -> Request<Body> {
        let signed = github_signature(GITHUB_OLD, BODY);
        delivery(
            &[("x-hub-signature-256", &signed), ("x-github-delivery", id)],
            BODY,
        )
    }
}

#[tokio::test]
async fn a_delivery_stays_a_duplicate_after_its_workflow_gets_a_new_version() {
    let Replaceable {
        db, app, replace, ..
    } = Replaceable::new().await;

    let first = send_to(&app, Replaceable::delivery("d-1")).await;
    let replaced = send_to(&app, replace).await;
    let replay = send_to(&app, Replaceable::delivery("d-1")).await;

    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(
        replaced.body["version"], 2,
        "the replace must make a new version"
    );
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    assert_eq!(replay.body["execution_id"], first.body["execution_id"]);
    assert_eq!(counts(&db).await.0, 1);
}

#[tokio::test]
async fn a_delivery_to_the_old_version_committed_after_a_replace_is_still_a_duplicate() {
    let Replaceable {
        db,
        app,
        id,
        replace,
    } = Replaceable::new().await;
    // What a webhook handler read just before the replace committed: the old version, active.
    let stale = workflows::read_document(db.pool(), id).await.unwrap();

    let replaced = send_to(&app, replace).await;
    let start = Start::prepare(
        &stale,
        Trigger {
            trigger_type: "webhook",
            trigger_data: json!({}),
            input: json!({}),
            triggered_by: None,
        },
    )
    .unwrap();
    let first = start.execution_id();
    let started = Starter::spawn(db.pool())
        .start(start, Some("d-late".to_owned()), None)
        .await
        .unwrap();
    let replay = send_to(&app, Replaceable::delivery("d-late")).await;

    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(started, Started::New);
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    assert_eq!(replay.body["execution_id"], first.to_string());
    assert_eq!(counts(&db).await.0, 1);
}

/// Log lines written while it is the current thread's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_signed_workflow_whose_secrets_are_gone_is_a_500_logged_with_its_id() {
    let db = TestDb::new().await;
    signed_workflow(&db, "github", &[GITHUB_OLD]).await;
    let workflow: Uuid = sqlx::query_scalar("SELECT id FROM workflows WHERE is_latest")
        .fetch_one(db.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE connectors SET credentials = '{}'")
        .execute(db.pool())
        .await
        .unwrap();
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _current = tracing::subscriber::set_default(subscriber);

    let refused = send_to(&control_plane(&db), Replaceable::delivery("d-gone")).await;

    let detail = problem_detail(&refused, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!detail.contains(&workflow.to_string()), "{detail}");
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains(&format!(
            "cannot read the signing secrets of workflow {workflow}"
        )),
        "{log}"
    );
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}
