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

/// Sends `head` (a request line and headers, without the blank line) over a real socket, so
/// that hyper's own parsing and limits are in play, and returns the whole answer.
async fn over_socket(db: &TestDb, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = quantumflow_api::router(quantumflow_api::AppState::new(db.pool().clone()));
    let server = tokio::spawn(quantumflow_api::serve(
        listener,
        app,
        std::future::pending(),
    ));
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    server.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_oversized_target_or_header_section_is_a_problem_saying_what_to_shorten() {
    let db = TestDb::new().await;
    let long_query = format!("GET /webhook/x?q={} HTTP/1.1", "a".repeat(9 * 1024));
    let many_fields: String = (0..70).map(|i| format!("\r\nX-Field-{i}: {i}")).collect();
    let big_field = format!("\r\nX-Big: {}", "b".repeat(33 * 1024));
    let cases = [
        ("a long target", long_query, "414", "at most 8192"),
        (
            "many fields",
            format!("GET /healthz HTTP/1.1{many_fields}"),
            "431",
            "at most 64 fields",
        ),
        (
            "a large field",
            format!("GET /api/v1/tokens HTTP/1.1{big_field}"),
            "431",
            "32768 bytes",
        ),
    ];

    for (case, head, status, expected) in cases {
        let answer = over_socket(&db, &head).await;

        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{case}: {answer}"
        );
        assert!(
            answer.contains("application/problem+json"),
            "{case}: {answer}"
        );
        assert!(answer.contains(expected), "{case}: {answer}");
    }
    let within = over_socket(
        &db,
        &format!("GET /healthz?q={} HTTP/1.1", "a".repeat(8000)),
    )
    .await;
    assert!(within.starts_with("HTTP/1.1 200"), "{within}");
}
