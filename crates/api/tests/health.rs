//! The probes, driven through the router without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_testkit::TestDb;
use serde_json::Value;
use tower::ServiceExt;

async fn get(db: &TestDb, path: &str) -> (StatusCode, Option<String>, Value) {
    let app = router(AppState {
        pool: db.pool().clone(),
    });
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
async fn a_migrated_database_is_ready() {
    let db = TestDb::new().await;

    let (status, _, body) = get(&db, "/readyz").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["schema"]["quantumflow"], 3);
}

#[tokio::test]
async fn an_unmigrated_database_is_not_ready_and_says_what_to_run() {
    let db = TestDb::empty().await;

    let (status, content_type, body) = get(&db, "/readyz").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["status"], 503);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("quantumflow migrate up"),
        "{body}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_not_ready_but_the_process_is_alive() {
    let db = TestDb::new().await;
    db.pool().close().await;

    let (ready, _, body) = get(&db, "/readyz").await;
    let (alive, _, _) = get(&db, "/healthz").await;

    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    assert_eq!(alive, StatusCode::OK);
}
