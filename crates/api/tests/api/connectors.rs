//! Connectors: credentials go in sealed and never come out; owners see only their own.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_secrets::{KEYS_VAR, Keyring, StoredForm};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Response, admin, get, post_json, problem_detail, send_to, token_of, user};

/// A secret no response, dump or envelope may contain.
const SECRET: &str = "tok-7f3a9c-distinctive-secret";

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::parse(&Keyring::generate_entry()).unwrap())
}

fn app(db: &TestDb, keyring: Option<Arc<Keyring>>) -> axum::Router {
    router(AppState::new(db.pool().clone()).with_keyring(keyring))
}

fn json_request(method: Method, path: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn delete(path: &str) -> Request<Body> {
    Request::delete(path).body(Body::empty()).unwrap()
}

fn as_user(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

fn connector(credentials: &Value) -> Value {
    json!({
        "name": "Billing API",
        "type": "http",
        "description": "Talks to billing",
        "config": {"base_url": "https://billing.example"},
        "credentials": credentials,
    })
}

async fn stored_credentials(db: &TestDb, id: &str) -> Value {
    sqlx::query_scalar("SELECT credentials FROM connectors WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

fn assert_no_secret(response: &Response, case: &str) {
    let text = response.body.to_string();
    assert!(!text.contains(SECRET), "{case} shows the secret: {text}");
    assert!(
        !text.contains("ciphertext"),
        "{case} shows the envelope: {text}"
    );
}

#[tokio::test]
async fn connectors_round_trip_with_credentials_sealed_and_never_shown() {
    let db = TestDb::new().await;
    admin(&db).await;
    let keys = keyring();
    let app = app(&db, Some(Arc::clone(&keys)));

    let created = send_to(
        &app,
        post_json("/api/v1/connectors", &connector(&json!({"token": SECRET}))),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_no_secret(&created, "create");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/connectors/{id}");
    assert_eq!(created.header(header::LOCATION), Some(path.as_str()));
    assert_eq!(created.body["has_credentials"], true);
    assert_eq!(created.body["type"], "http");
    assert_eq!(created.body["is_active"], true);
    assert!(
        created.body.get("credentials").is_none(),
        "{}",
        created.body
    );

    let stored = stored_credentials(&db, &id).await;
    assert_eq!(
        quantumflow_secrets::stored_form(&stored),
        StoredForm::Sealed {
            kid: keys.active_kid()
        }
    );
    assert!(!stored.to_string().contains(SECRET), "{stored}");
    let uuid: Uuid = id.parse().unwrap();
    assert_eq!(keys.open(uuid, &stored).unwrap(), json!({"token": SECRET}));

    let shown = send_to(&app, get(&path)).await;
    let listed = send_to(&app, get("/api/v1/connectors?type=http")).await;
    let other_type = send_to(&app, get("/api/v1/connectors?type=slack")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body, created.body);
    assert_eq!(listed.body["connectors"], json!([created.body]));
    assert_eq!(other_type.body["connectors"], json!([]));
    assert_no_secret(&shown, "show");
    assert_no_secret(&listed, "list");

    // Replacing without credentials keeps them, byte for byte.
    let mut renamed = connector(&Value::Null);
    renamed.as_object_mut().unwrap().remove("credentials");
    renamed["name"] = json!("Billing API v2");
    renamed["is_active"] = json!(false);
    let replaced = send_to(&app, json_request(Method::PUT, &path, &renamed)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["name"], "Billing API v2");
    assert_eq!(replaced.body["is_active"], false);
    assert_eq!(replaced.body["has_credentials"], true);
    assert_eq!(stored_credentials(&db, &id).await, stored);

    // New credentials are sealed afresh.
    let rotated = format!("{SECRET}-2");
    let body = connector(&json!({"token": rotated}));
    let replaced = send_to(&app, json_request(Method::PUT, &path, &body)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_no_secret(&replaced, "replace");
    let restored = stored_credentials(&db, &id).await;
    assert_eq!(
        keys.open(uuid, &restored).unwrap(),
        json!({"token": rotated})
    );

    // Empty credentials clear them.
    let body = connector(&json!({}));
    let cleared = send_to(&app, json_request(Method::PUT, &path, &body)).await;
    assert_eq!(cleared.body["has_credentials"], false, "{}", cleared.body);
    assert_eq!(stored_credentials(&db, &id).await, json!({}));

    let deleted = send_to(&app, delete(&path)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = send_to(&app, get(&path)).await;
    problem_detail(&gone, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_users_connector_is_not_found_and_a_superuser_sees_it() {
    let db = TestDb::new().await;
    admin(&db).await;
    let ada = user(&db, "ada", false).await;
    let ada_token = token_of(&db, &ada).await;
    let bob = user(&db, "bob", false).await;
    let bob_token = token_of(&db, &bob).await;
    let app = app(&db, Some(keyring()));
    let body = connector(&json!({"token": SECRET}));

    let created = send_to(
        &app,
        as_user(post_json("/api/v1/connectors", &body), &ada_token),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["owner_id"], ada.id.to_string());
    let path = format!(
        "/api/v1/connectors/{}",
        created.body["id"].as_str().unwrap()
    );

    for request in [
        get(&path),
        json_request(Method::PUT, &path, &body),
        delete(&path),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let response = send_to(&app, as_user(request, &bob_token)).await;
        let detail = problem_detail(&response, StatusCode::NOT_FOUND);
        assert_eq!(detail, "connector not found", "{what}");
    }
    let bobs = send_to(&app, as_user(get("/api/v1/connectors"), &bob_token)).await;
    let adas = send_to(&app, as_user(get("/api/v1/connectors"), &ada_token)).await;
    let everyone = send_to(&app, get("/api/v1/connectors")).await;
    let by_admin = send_to(&app, get(&path)).await;

    assert_eq!(bobs.body["connectors"], json!([]));
    assert_eq!(adas.body["connectors"], json!([created.body]));
    assert_eq!(everyone.body["connectors"], json!([created.body]));
    assert_eq!(by_admin.status, StatusCode::OK);
    assert_eq!(
        send_to(&app, as_user(get(&path), &ada_token)).await.status,
        StatusCode::OK,
        "bob's failed attempts changed ada's connector"
    );
}

#[tokio::test]
async fn every_invalid_part_is_reported_at_once_and_nothing_is_written() {
    let db = TestDb::new().await;
    admin(&db).await;
    let app = app(&db, Some(keyring()));
    let body = json!({
        "name": "  ",
        "type": "Not A Type",
        "config": ["not", "an", "object"],
        "credentials": "a bare string",
    });

    let refused = send_to(&app, post_json("/api/v1/connectors", &body)).await;

    problem_detail(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/name", "/type", "/config", "/credentials"]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM connectors")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn without_keys_credentials_are_refused_with_a_503_and_the_rest_works() {
    let db = TestDb::new().await;
    admin(&db).await;
    let app = app(&db, None);

    let refused = send_to(
        &app,
        post_json("/api/v1/connectors", &connector(&json!({"token": SECRET}))),
    )
    .await;
    let plain = send_to(
        &app,
        post_json("/api/v1/connectors", &connector(&json!({}))),
    )
    .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    let path = format!("/api/v1/connectors/{}", plain.body["id"].as_str().unwrap());
    let body = connector(&json!({"token": SECRET}));
    let refused_update = send_to(&app, json_request(Method::PUT, &path, &body)).await;
    let listed = send_to(&app, get("/api/v1/connectors")).await;

    let detail = problem_detail(&refused, StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains(KEYS_VAR), "{detail}");
    assert!(detail.contains("quantumflow keys generate"), "{detail}");
    problem_detail(&refused_update, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(listed.body["connectors"].as_array().unwrap().len(), 1);
    let stored: Vec<Value> = sqlx::query_scalar("SELECT credentials FROM connectors")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(stored, [json!({})]);
}

#[tokio::test]
async fn a_database_dump_holds_the_connector_but_not_its_secret() {
    let db = TestDb::new().await;
    admin(&db).await;
    let app = app(&db, Some(keyring()));
    let created = send_to(
        &app,
        post_json("/api/v1/connectors", &connector(&json!({"token": SECRET}))),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let pg_dump = quantumflow_localpg::find_program("pg_dump").expect("pg_dump is installed");
    // The test URL carries sqlx's own parameters, which libpq refuses; pass the parts instead.
    let options = db.connect_options();
    let dump = tokio::process::Command::new(pg_dump)
        .arg("--data-only")
        .arg("--table=connectors")
        .arg(format!("--host={}", options.get_host()))
        .arg(format!("--port={}", options.get_port()))
        .arg(format!("--username={}", options.get_username()))
        .arg(format!("--dbname={}", db.name()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&dump.stdout);

    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(text.contains("Billing API"), "the dump lacks the connector");
    assert!(
        text.contains("xchacha20poly1305"),
        "the dump lacks the envelope"
    );
    assert!(!text.contains(SECRET), "the dump holds the secret");
}
