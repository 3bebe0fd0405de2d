//! Requests no route answers: unknown paths (404) and methods a path does not accept (405)
//! get problem bodies like every other error.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use quantumflow_testkit::TestDb;

use crate::support::{get, problem_detail, send_anonymous};

fn request(method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_unknown_path_is_a_problem_naming_the_method_and_path() {
    let db = TestDb::new().await;

    for path in ["/api/v1/no-such-thing", "/api/v2/workflows", "/"] {
        let response = send_anonymous(&db, get(path)).await;

        let detail = problem_detail(&response, StatusCode::NOT_FOUND);
        assert!(detail.contains(&format!("GET {path}")), "{detail}");
        assert!(detail.contains("/api/v1/openapi.json"), "{detail}");
    }
}

#[tokio::test]
async fn a_method_the_path_does_not_take_is_a_problem_with_allow() {
    let db = TestDb::new().await;

    let tokens = send_anonymous(&db, request(Method::PUT, "/api/v1/tokens")).await;
    let health = send_anonymous(&db, request(Method::DELETE, "/healthz")).await;

    let detail = problem_detail(&tokens, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        detail.contains("/api/v1/tokens does not accept PUT"),
        "{detail}"
    );
    let allow = tokens.header(header::ALLOW).unwrap();
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "HEAD", "POST"]);

    problem_detail(&health, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(health.header(header::ALLOW), Some("GET,HEAD"));
}

#[tokio::test]
async fn a_wrong_method_is_refused_before_the_token_is_asked_for() {
    let db = TestDb::new().await;

    let response = send_anonymous(&db, request(Method::PATCH, "/api/v1/workflows")).await;

    problem_detail(&response, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.header(header::WWW_AUTHENTICATE), None);
}
