//! What a webhook body may be, how large, and what happens when the database is out of
//! connections; every refusal writes nothing.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_testkit::TestDb;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    counts, db_with_workflow, get, post_bytes, post_json, problem_detail, send, send_to, stored,
};

const PATH: &str = "/webhook/signup";

#[tokio::test]
async fn malformed_and_unstorable_bodies_are_400s_saying_what_is_wrong() {
    let db = db_with_workflow().await;
    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let cases: [(&str, &str, &[u8], &str); 7] = [
        (
            "invalid JSON",
            "application/json",
            b"{\"a\": 1,\n \"b\": }",
            "line 2 column",
        ),
        (
            "JSON not UTF-8",
            "application/json",
            b"{\"a\": \"\xff\"}",
            "offset 7",
        ),
        ("text not UTF-8", "text/plain", b"caf\xe9", "offset 3"),
        (
            "NUL in a value",
            "application/json",
            br#"{"a": {"b": "x\u0000"}}"#,
            "value at /a/b",
        ),
        (
            "NUL in a key",
            "application/json",
            br#"{"a\u0000": 1}"#,
            "in the key at /a",
        ),
        ("NUL in text", "text/plain", b"a\0b", "value at /"),
        (
            "too deep",
            "application/json",
            deep.as_bytes(),
            "deeper than 64 levels",
        ),
    ];

    for (case, content_type, body, expected) in cases {
        let refused = send(&db, post_bytes(PATH, content_type, body)).await;

        let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
        assert!(detail.contains(expected), "{case}: {detail}");
    }
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn form_text_and_empty_bodies_are_recorded_faithfully() {
    let db = db_with_workflow().await;
    let form_type = "application/x-www-form-urlencoded";

    let form = send(
        &db,
        post_bytes(PATH, form_type, b"q=a%26b%3Dc+d&tag=x&tag=%C3%A9&tag="),
    )
    .await;
    let text = send(
        &db,
        post_bytes(
            PATH,
            "text/plain; charset=utf-8",
            "é {not json}\n".as_bytes(),
        ),
    )
    .await;
    let empty = send(&db, post_bytes(PATH, "application/json", b"")).await;
    let query = send(
        &db,
        post_bytes("/webhook/signup?k=1&k=2&one=%2B", "application/json", b"{}"),
    )
    .await;

    assert_eq!(
        stored(&db, &form).await.0,
        json!({"q": "a&b=c d", "tag": ["x", "é", ""]})
    );
    assert_eq!(stored(&db, &text).await.0, json!("é {not json}\n"));
    assert_eq!(stored(&db, &empty).await.0, json!({}));
    assert_eq!(
        stored(&db, &query).await.1["query"],
        json!({"k": ["1", "2"], "one": "+"})
    );
}

#[tokio::test]
async fn big_numbers_keep_every_digit_through_postgresql() {
    let db = db_with_workflow().await;
    let body = r#"{"big": 9007199254740993123, "neg": -123456789012345678901234567890,
                   "long": 3.14159265358979323846264338327950288419716939937510}"#;

    let accepted = send(&db, post_bytes(PATH, "application/json", body.as_bytes())).await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let id = accepted.body["execution_id"].as_str().unwrap();
    let texts: (String, String, String) = sqlx::query_as(
        "SELECT input_data->>'big', input_data->>'neg', input_data->>'long' \
         FROM executions WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        texts,
        (
            "9007199254740993123".to_owned(),
            "-123456789012345678901234567890".to_owned(),
            "3.14159265358979323846264338327950288419716939937510".to_owned()
        )
    );
}

/// A database with the test workflow, and a router on it that accepts bodies of 1 KiB.
async fn limited() -> (TestDb, axum::Router) {
    let db = db_with_workflow().await;
    let app = router(AppState::new(db.pool().clone()).with_max_body_bytes(1024));
    (db, app)
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body_is_read() {
    let (db, app) = limited().await;
    let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(2000));
    let small = format!(r#"{{"a": "{}"}}"#, "x".repeat(100));

    let refused = send_to(&app, post_bytes(PATH, "application/json", big.as_bytes())).await;
    let api = send_to(
        &app,
        post_bytes("/api/v1/workflows", "application/json", big.as_bytes()),
    )
    .await;
    let accepted = send_to(&app, post_bytes(PATH, "application/json", small.as_bytes())).await;

    let detail = problem_detail(&refused, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail.contains("1024 bytes"), "{detail}");
    problem_detail(&api, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    assert_eq!(counts(&db).await.0, 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_writes_nothing() {
    let (db, app) = limited().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(quantumflow_api::serve(
        listener,
        app,
        std::future::pending(),
    ));

    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut body = format!(r#"{{"a": "{}"}}"#, "x".repeat(3000)).into_bytes();
    let mut sent = Vec::new();
    for chunk in body.chunks(500) {
        sent.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        sent.extend_from_slice(chunk);
        sent.extend_from_slice(b"\r\n");
    }
    sent.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything; that is the point.
    let _ = stream.write_all(&sent).await;
    body.clear();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    server.abort();

    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn an_exhausted_pool_is_answered_503_with_retry_after() {
    let db = db_with_workflow().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect_with(db.connect_options())
        .await
        .unwrap();
    let app = router(AppState::new(pool.clone()));
    let held = pool.acquire().await.unwrap();

    let refused = send_to(
        &app,
        Request::post(PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "none")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    drop(held);

    problem_detail(&refused, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = refused
        .header(header::RETRY_AFTER)
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_with_a_problem_body_and_writes_nothing() {
    let db = db_with_workflow().await;
    let app =
        router(AppState::new(db.pool().clone()).with_request_timeout(Duration::from_millis(300)));
    // Half a JSON document, then nothing more, as from a client that stalls mid-upload.
    let first = futures_util::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"email\": "))
    });
    let stalled = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let request = Request::post(PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();

    let refused = send_to(&app, request).await;

    let detail = problem_detail(&refused, StatusCode::REQUEST_TIMEOUT);
    assert!(detail.contains("did not finish within 300ms"), "{detail}");
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_not_written_by_its_time_limit_is_never_written() {
    let db = db_with_workflow().await;
    let app =
        router(AppState::new(db.pool().clone()).with_request_timeout(Duration::from_millis(500)));
    // The lock holds the group's insert until well after the request's time limit.
    let mut lock = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE node_runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let answered = send_to(&app, post_json(PATH, &json!({"email": "late@example.com"}))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.commit().await.unwrap();
    // Time for a write that was left running to land, as one did when the limit only answered
    // 408 and the group went on to commit.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = answered.status;
    assert!(
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status}"
    );
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
}

#[tokio::test]
async fn values_postgresql_cannot_hold_are_400s_on_every_route_and_write_nothing() {
    let db = db_with_workflow().await;
    let tokens_before: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let requests = [
        (
            "a number beyond numeric's range in an API body",
            post_bytes(
                "/api/v1/connectors",
                "application/json",
                br#"{"name": "big", "type": "http", "config": {"n": 1e131072}}"#,
            ),
        ),
        (
            "a NUL in an API body",
            post_json("/api/v1/tokens", &json!({"name": "nul\u{0}x"})),
        ),
        ("a NUL in a query", get("/api/v1/workflows?q=%00")),
    ];

    for (case, request) in requests {
        let refused = send(&db, request).await;

        let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
        assert!(detail.contains("cannot be stored"), "{case}: {detail}");
    }
    let tokens_after: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let connectors: i64 = sqlx::query_scalar("SELECT count(*) FROM connectors")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(counts(&db).await, (0, 0, 0, 0));
    assert_eq!(tokens_after, tokens_before);
    assert_eq!(connectors, 0);
}

#[tokio::test]
async fn numbers_that_would_print_far_larger_than_sent_are_400s_and_write_nothing() {
    let db = db_with_workflow().await;
    let many = format!(r#"{{"n": [{}]}}"#, vec!["1e300"; 300].join(","));
    let cases: [(&str, &[u8], &str); 3] = [
        ("one huge exponent", br#"{"amount": 1e131071}"#, "/amount"),
        ("a tiny one", br#"{"a": [0.5E-400]}"#, "/a/0"),
        (
            "many that add up",
            many.as_bytes(),
            "more than 65536 digits",
        ),
    ];

    for (case, body, expected) in cases {
        let refused = send(&db, post_bytes(PATH, "application/json", body)).await;

        let detail = problem_detail(&refused, StatusCode::BAD_REQUEST);
        assert!(detail.contains(expected), "{case}: {detail}");
        assert!(
            detail.contains("as strings") || detail.contains("as a string"),
            "{detail}"
        );
    }
    assert_eq!(counts(&db).await, (0, 0, 0, 0));

    let accepted = send(
        &db,
        post_bytes(PATH, "application/json", br#"{"a": 1.7e308}"#),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
}
