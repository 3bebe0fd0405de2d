//! The probes.

use axum::http::{StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_storage::schema::MigrationSet;
use quantumflow_testkit::TestDb;

use crate::support::{get, problem_detail, send, send_to};

#[tokio::test]
async fn a_migrated_database_is_ready() {
    let db = TestDb::new().await;
    let newest = MigrationSet::quantumflow()
        .migrator
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();

    let ready = send(&db, get("/readyz")).await;

    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["schema"]["quantumflow"], newest);
}

#[tokio::test]
async fn an_unmigrated_database_is_not_ready_and_says_what_to_run() {
    let db = TestDb::empty().await;

    let ready = send(&db, get("/readyz")).await;

    let detail = problem_detail(&ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("quantumflow migrate up"), "{detail}");
}

#[tokio::test]
async fn an_unreachable_database_is_not_ready_but_the_process_is_alive() {
    let db = TestDb::new().await;
    db.pool().close().await;

    let ready = send(&db, get("/readyz")).await;
    let alive = send(&db, get("/healthz")).await;

    let detail = problem_detail(&ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("unavailable"), "{detail}");
    assert_eq!(alive.status, StatusCode::OK);
}

#[tokio::test]
async fn a_draining_process_is_not_ready_but_still_serves() {
    let db = TestDb::new().await;
    let state = AppState::new(db.pool().clone());
    let draining = state.draining.clone();
    let app = router(state);
    let before = send_to(&app, get("/readyz")).await;

    draining.begin();
    let ready = send_to(&app, get("/readyz")).await;
    let alive = send_to(&app, get("/healthz")).await;

    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(ready.header(header::RETRY_AFTER), Some("5"));
    let detail = problem_detail(&ready, StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("draining"), "{detail}");
    assert_eq!(alive.status, StatusCode::OK);
}
