//! API tokens: every `/api/v1` route refuses callers without a valid one, and a caller sees
//! only what they own.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use quantumflow_api::auth;
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Response, admin, create_workflow, document, get, post_json, problem_detail,
    put_json, send, send_anonymous, token_of, user, with_token,
};

/// Every `/api/v1` route, with a body where it takes one. Ids are of objects that exist.
fn routes(
    workflow: &str,
    execution: &str,
    token: &str,
    connector: &str,
) -> Vec<(Method, String, Option<Value>)> {
    let connector_body = json!({"name": "c", "type": "http"});
    vec![
        (Method::POST, "/api/v1/workflows".into(), Some(document())),
        (Method::GET, "/api/v1/workflows".into(), None),
        (Method::GET, format!("/api/v1/workflows/{workflow}"), None),
        (
            Method::PUT,
            format!("/api/v1/workflows/{workflow}"),
            Some(document()),
        ),
        (
            Method::GET,
            format!("/api/v1/workflows/{workflow}/versions"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/workflows/{workflow}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/pause"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/activate"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/archive"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/workflows/{workflow}/executions"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/api/v1/workflows/{workflow}/executions"),
            None,
        ),
        (Method::GET, format!("/api/v1/executions/{execution}"), None),
        (Method::GET, "/api/v1/users/me".into(), None),
        (Method::GET, "/api/v1/tokens".into(), None),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/api/v1/tokens/{token}"), None),
        (Method::GET, "/api/v1/connectors".into(), None),
        (
            Method::POST,
            "/api/v1/connectors".into(),
            Some(connector_body.clone()),
        ),
        (Method::GET, format!("/api/v1/connectors/{connector}"), None),
        (
            Method::PUT,
            format!("/api/v1/connectors/{connector}"),
            Some(connector_body),
        ),
        (
            Method::DELETE,
            format!("/api/v1/connectors/{connector}"),
            None,
        ),
    ]
}

fn request(method: &Method, path: &str, body: Option<&Value>) -> Request<Body> {
    let builder = Request::builder().method(method.clone()).uri(path);
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

/// Rows of `table`, which may end in a `WHERE` clause; only literals of these tests reach it.
async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// What every refused request must look like: 401, a challenge, a problem body.
fn assert_refused(response: &Response, challenge: &str, case: &str) {
    let detail = problem_detail(response, StatusCode::UNAUTHORIZED);
    assert!(!detail.is_empty(), "{case}");
    let sent = response.header(header::WWW_AUTHENTICATE).unwrap_or("");
    assert!(
        sent.starts_with("Bearer realm=\"quantumflow\""),
        "{case}: {sent}"
    );
    assert!(sent.contains(challenge), "{case}: {sent}");
}

#[tokio::test]
async fn every_api_route_refuses_a_missing_malformed_unknown_revoked_or_expired_token() {
    let db = TestDb::new().await;
    admin(&db).await;
    let workflow = create_workflow(&db).await;
    let workflow_id = workflow["id"].as_str().unwrap();
    let path = format!("/api/v1/workflows/{workflow_id}/executions");
    let started = send(&db, post_json(&path, &json!({}))).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let execution_id = started.body["execution_id"].as_str().unwrap().to_owned();
    let connector = send(
        &db,
        post_json("/api/v1/connectors", &json!({"name": "c", "type": "http"})),
    )
    .await;
    assert_eq!(connector.status, StatusCode::CREATED, "{}", connector.body);
    let connector_id = connector.body["id"].as_str().unwrap();

    let owner = user(&db, "ada", false).await;
    let revoked = token_of(&db, &owner).await;
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1")
        .bind(auth::digest(&revoked).as_slice())
        .execute(db.pool())
        .await
        .unwrap();
    let expired = token_of(&db, &owner).await;
    sqlx::query(
        "UPDATE api_tokens SET created_at = now() - interval '2 days', \
         expires_at = now() - interval '1 day' WHERE token_hash = $1",
    )
    .bind(auth::digest(&expired).as_slice())
    .execute(db.pool())
    .await
    .unwrap();
    let inactive = user(&db, "gone", false).await;
    let inactive_token = token_of(&db, &inactive).await;
    sqlx::query("UPDATE users SET is_active = false WHERE id = $1")
        .bind(inactive.id)
        .execute(db.pool())
        .await
        .unwrap();
    let unknown = format!("qf_{}", "ab".repeat(32));
    let token_id: String = sqlx::query_scalar("SELECT id::text FROM api_tokens LIMIT 1")
        .fetch_one(db.pool())
        .await
        .unwrap();

    let before = (
        count(&db, "workflows").await,
        count(&db, "executions").await,
        count(&db, "api_tokens WHERE revoked_at IS NULL").await,
        count(&db, "connectors").await,
    );
    let presented: [(&str, Option<String>, &str); 7] = [
        ("no header", None, ""),
        (
            "not bearer",
            Some(format!("Basic {ADMIN_TOKEN}")),
            "invalid_request",
        ),
        (
            "not our shape",
            Some("Bearer abc".into()),
            "invalid_request",
        ),
        (
            "unknown",
            Some(format!("Bearer {unknown}")),
            "invalid_token",
        ),
        (
            "revoked",
            Some(format!("Bearer {revoked}")),
            "invalid_token",
        ),
        (
            "expired",
            Some(format!("Bearer {expired}")),
            "invalid_token",
        ),
        (
            "inactive user",
            Some(format!("Bearer {inactive_token}")),
            "invalid_token",
        ),
    ];
    for (method, path, body) in routes(workflow_id, &execution_id, &token_id, connector_id) {
        for (case, authorization, challenge) in &presented {
            let mut request = request(&method, &path, body.as_ref());
            if let Some(value) = authorization {
                request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, value.parse().unwrap());
            }

            let response = send_anonymous(&db, request).await;

            assert_refused(&response, challenge, &format!("{method} {path}, {case}"));
        }
    }

    let after = (
        count(&db, "workflows").await,
        count(&db, "executions").await,
        count(&db, "api_tokens WHERE revoked_at IS NULL").await,
        count(&db, "connectors").await,
    );
    assert_eq!(after, before, "a refused request changed something");
}

#[tokio::test]
async fn another_users_objects_are_not_found_and_a_superuser_sees_them() {
    let db = TestDb::new().await;
    admin(&db).await;
    let ada = user(&db, "ada", false).await;
    let ada_token = token_of(&db, &ada).await;
    let bob = user(&db, "bob", false).await;
    let bob_token = token_of(&db, &bob).await;
    let created = send(
        &db,
        with_token(post_json("/api/v1/workflows", &document()), &ada_token),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["owner_id"], ada.id.to_string());
    let workflow = created.body["id"].as_str().unwrap().to_owned();
    let start = format!("/api/v1/workflows/{workflow}/executions");
    let started = send(&db, with_token(post_json(&start, &json!({})), &ada_token)).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let execution = started.body["execution_id"].as_str().unwrap().to_owned();
    let ada_token_id: String =
        sqlx::query_scalar("SELECT id::text FROM api_tokens WHERE user_id = $1")
            .bind(ada.id)
            .fetch_one(db.pool())
            .await
            .unwrap();

    let as_bob = [
        get(&format!("/api/v1/workflows/{workflow}")),
        put_json(&format!("/api/v1/workflows/{workflow}"), &document()),
        get(&format!("/api/v1/workflows/{workflow}/versions")),
        post_json(&start, &json!({})),
        post_json(&format!("/api/v1/workflows/{workflow}/archive"), &json!({})),
        Request::delete(format!("/api/v1/workflows/{workflow}"))
            .body(Body::empty())
            .unwrap(),
        get(&start),
        get(&format!("/api/v1/executions/{execution}")),
        Request::delete(format!("/api/v1/tokens/{ada_token_id}"))
            .body(Body::empty())
            .unwrap(),
    ];
    for request in as_bob {
        let target = format!("{} {}", request.method(), request.uri());
        let response = send(&db, with_token(request, &bob_token)).await;
        let detail = problem_detail(&response, StatusCode::NOT_FOUND);
        assert!(detail.ends_with("not found"), "{target}: {detail}");
    }
    let executions: i64 = count(&db, "executions").await;
    assert_eq!(executions, 1, "bob started an execution of ada's workflow");

    for request in [
        get(&format!("/api/v1/workflows/{workflow}")),
        get(&format!("/api/v1/executions/{execution}")),
    ] {
        let target = request.uri().to_string();
        assert_eq!(
            send(&db, with_token(request, &ada_token)).await.status,
            StatusCode::OK,
            "the owner reads {target}"
        );
    }
    for request in [
        get(&format!("/api/v1/workflows/{workflow}")),
        get(&format!("/api/v1/executions/{execution}")),
    ] {
        let target = request.uri().to_string();
        let response = send(&db, request).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "the superuser reads {target}"
        );
    }
    let me = send(&db, with_token(get("/api/v1/users/me"), &ada_token)).await;
    assert_eq!(me.body["id"], ada.id.to_string());
    assert_eq!(me.body.get("hashed_password"), None);
}

#[tokio::test]
async fn a_token_is_shown_once_works_until_revoked_and_is_stored_only_as_a_digest() {
    let db = TestDb::new().await;
    let ada = user(&db, "ada", false).await;
    let first = token_of(&db, &ada).await;

    let created = send(
        &db,
        with_token(
            post_json(
                "/api/v1/tokens",
                &json!({"name": "ci-deploy", "expires_in_days": 30}),
            ),
            &first,
        ),
    )
    .await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("qf_") && secret.len() == 67, "{secret}");
    assert_eq!(created.body["name"], "ci-deploy");
    assert!(secret.starts_with(created.body["prefix"].as_str().unwrap()));
    assert!(created.body["expires_at"].is_string());
    assert_eq!(
        created.header(header::LOCATION),
        Some(&*format!("/api/v1/tokens/{id}"))
    );
    let me = send(&db, with_token(get("/api/v1/users/me"), &secret)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["username"], "ada");

    let listed = send(&db, with_token(get("/api/v1/tokens"), &secret)).await;
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["id"], id.as_str(), "newest first");
    assert!(tokens[0]["last_used_at"].is_string(), "{}", tokens[0]);
    assert!(
        !listed.body.to_string().contains(&secret[7..]),
        "a listing shows a secret"
    );
    let rows: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_tokens AS t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(!rows.contains(&secret[7..]), "a token is stored in clear");
    assert!(!rows.contains(&first[7..]), "a token is stored in clear");

    let revoke = Request::delete(format!("/api/v1/tokens/{id}"))
        .body(Body::empty())
        .unwrap();
    let revoked = send(&db, with_token(revoke, &first)).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);

    let refused = send(&db, with_token(get("/api/v1/users/me"), &secret)).await;
    assert_refused(&refused, "invalid_token", "a revoked token");
    let still = send(&db, with_token(get("/api/v1/users/me"), &first)).await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "revoking one token revoked another"
    );
    let again = Request::delete(format!("/api/v1/tokens/{id}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&db, with_token(again, &first)).await.status,
        StatusCode::NO_CONTENT,
        "revoking twice answers the same"
    );
}

#[tokio::test]
async fn token_requests_with_bad_fields_are_refused_and_create_nothing() {
    let db = TestDb::new().await;
    admin(&db).await;
    let before = count(&db, "api_tokens").await;

    for (body, expected) in [
        (json!({"name": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"name": "x".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "ok", "expires_in_days": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "ok", "expires_in_days": 100_000}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"name": "ok", "scopes": ["all"]}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({}), StatusCode::BAD_REQUEST),
    ] {
        let response = send(&db, post_json("/api/v1/tokens", &body)).await;
        problem_detail(&response, expected);
    }
    let filtered = send(&db, get("/api/v1/tokens?name=ci")).await;

    assert_eq!(count(&db, "api_tokens").await, before);
    let detail = problem_detail(&filtered, StatusCode::BAD_REQUEST);
    assert!(detail.contains("unknown field `name`"), "{detail}");
}
