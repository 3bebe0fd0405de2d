//! Sending requests to the router, and the users and documents the tests start from.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use quantumflow_api::{AppState, auth, router};
use quantumflow_storage::tokens::{self, NewToken};
use quantumflow_storage::users::{self, NewUser, User};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A response with its body read as JSON (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Response {
    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn content_type(&self) -> Option<&str> {
        self.header(header::CONTENT_TYPE)
    }
}

/// The API token of the user [`admin`] creates. Tests choose it, as a client would keep
/// one, so that requests can carry it without reading it back from anywhere.
pub(crate) const ADMIN_TOKEN: &str =
    "qf_00000000000000000000000000000000000000000000000000000000000000ad";

/// Sends one request to a router on `db`, as the server would. Requests without an
/// `Authorization` header are sent as the admin, the caller most tests act as; use
/// [`send_anonymous`] to send none.
pub(crate) async fn send(db: &TestDb, request: Request<Body>) -> Response {
    send_to(&router(AppState::new(db.pool().clone())), request).await
}

/// Sends one request to `app`, which keeps its state (the document cache) between requests;
/// as the admin unless the request says otherwise, like [`send`].
pub(crate) async fn send_to(app: &axum::Router, mut request: Request<Body>) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        request = with_token(request, ADMIN_TOKEN);
    }
    read(app.clone().oneshot(request).await.unwrap()).await
}

/// Sends one request to a router on `db` exactly as given, without any token.
pub(crate) async fn send_anonymous(db: &TestDb, request: Request<Body>) -> Response {
    let app = router(AppState::new(db.pool().clone()));
    read(app.oneshot(request).await.unwrap()).await
}

/// Sends one request to a router on `db` exactly as given, without any token, and returns the
/// body as bytes: for the routes that do not answer JSON.
pub(crate) async fn send_for_bytes(
    db: &TestDb,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, Bytes) {
    let app = router(AppState::new(db.pool().clone()));
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 8 << 20)
        .await
        .unwrap();
    (status, headers, bytes)
}

async fn read(response: axum::response::Response) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Response {
        status,
        headers,
        body,
    }
}

pub(crate) fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub(crate) fn post_json(path: &str, body: &Value) -> Request<Body> {
    post_raw(path, "application/json", &body.to_string())
}

pub(crate) fn put_json(path: &str, body: &Value) -> Request<Body> {
    Request::put(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub(crate) fn post_raw(path: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// The superuser `admin`, as `quantumflow seed` creates it, holding [`ADMIN_TOKEN`].
pub(crate) async fn admin(db: &TestDb) -> User {
    let admin = user(db, "admin", true).await;
    let token = NewToken {
        user_id: admin.id,
        name: "tests",
        hash: &auth::digest(ADMIN_TOKEN),
        prefix: &ADMIN_TOKEN[..7],
        expires_at: None,
    };
    tokens::insert(db.pool(), &token).await.unwrap();
    admin
}

/// A user named `username`, with no token.
pub(crate) async fn user(db: &TestDb, username: &str, is_superuser: bool) -> User {
    let email = format!("{username}@example.com");
    let new = NewUser {
        email: &email,
        username,
        hashed_password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        full_name: None,
        is_superuser,
    };
    users::insert(db.pool(), &new).await.unwrap()
}

/// A new token of `user`, as `POST /api/v1/tokens` would issue it.
pub(crate) async fn token_of(db: &TestDb, user: &User) -> String {
    auth::issue(db.pool(), user.id, "tests", None)
        .await
        .unwrap()
        .secret
}

/// `request` sent with `token`.
pub(crate) fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let bearer = format!("Bearer {token}");
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, bearer.parse().unwrap());
    request
}

/// A valid workflow document: a webhook trigger, a fetch that notifies on success and reports
/// on failure, with every optional field used somewhere.
pub(crate) fn document() -> Value {
    json!({
        "name": "Notify on signup",
        "description": "Tells the team about each new user",
        "status": "active",
        "trigger_config": {
            "type": "webhook",
            "config": {"method": "POST", "path": "/webhook/signup"}
        },
        "settings": {
            "timeout": 60,
            "retry_policy": {"max_retries": 2, "retry_delay": 5},
            "error_handling": "continue"
        },
        "nodes": [
            {"name": "signup", "type": "trigger", "position": {"x": 0, "y": 0}},
            {
                "name": "fetch",
                "type": "action",
                "description": "Looks the user up",
                "config": {"connector": "http", "url": "http://127.0.0.1:9/profile"},
                "input_mapping": {"user": "{{input.username}}"},
                "output_mapping": {},
                "position": {"x": 200, "y": 0},
                "is_enabled": true
            },
            {"name": "notify", "type": "action", "config": {"connector": "slack"}},
            {"name": "report", "type": "action", "is_enabled": false}
        ],
        "edges": [
            {"source": "signup", "target": "fetch"},
            {
                "source": "fetch",
                "target": "notify",
                "type": "conditional",
                "condition": {"expression": "{{output.status}} == 200"},
                "label": "found"
            },
            {"source": "fetch", "target": "report", "type": "error", "label": null}
        ]
    })
}

/// Creates [`document`] through the API, owned by an `admin` that must already exist.
pub(crate) async fn create_workflow(db: &TestDb) -> Value {
    let created = send(db, post_json("/api/v1/workflows", &document())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body
}

/// Asserts that `response` is an RFC 9457 problem with `status`, and returns its detail.
pub(crate) fn problem_detail(response: &Response, status: StatusCode) -> String {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.content_type(), Some("application/problem+json"));
    assert_eq!(response.body["status"], status.as_u16());
    response.body["detail"].as_str().unwrap().to_owned()
}

/// Rows of each kind in the database: executions, node runs, queued jobs, and the executions
/// counted on the workflow's row (which counts them as they end, and later).
pub(crate) async fn counts(db: &TestDb) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM node_runs), \
                (SELECT count(*) FROM apalis.jobs), \
                (SELECT coalesce(sum(total_executions), 0)::int8 FROM workflows)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// A POST of `body`'s bytes, exactly as given, with `content_type`.
pub(crate) fn post_bytes(path: &str, content_type: &str, body: &[u8]) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

/// The stored `input_data` and `trigger_data` of the execution that `accepted`, a 202, started.
pub(crate) async fn stored(db: &TestDb, accepted: &Response) -> (Value, Value) {
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.body["execution_id"].as_str().unwrap();
    sqlx::query_as("SELECT input_data, trigger_data FROM executions WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A database holding the admin and their active [`document`] workflow.
pub(crate) async fn db_with_workflow() -> TestDb {
    let db = TestDb::new().await;
    admin(&db).await;
    create_workflow(&db).await;
    db
}
