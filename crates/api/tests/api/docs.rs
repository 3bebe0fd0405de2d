//! The interactive API page and the files it loads: public, self-contained, and locked to this
//! server by its Content-Security-Policy.

use axum::http::{HeaderMap, StatusCode, header};
use quantumflow_api::docs::CONTENT_SECURITY_POLICY;
use quantumflow_testkit::TestDb;

use crate::support::{get, problem_detail, send_anonymous, send_for_bytes};

fn header<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> Option<&'h str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

/// The values of every `src="…"` and `href="…"` attribute in `html`.
fn linked(html: &str) -> Vec<&str> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attribute| html.split(attribute).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_only_trusts_this_server() {
    let db = TestDb::new().await;

    let (status, headers, body) = send_for_bytes(&db, get("/api/v1/docs")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, &header::CONTENT_TYPE),
        Some("text/html; charset=utf-8")
    );
    let policy = header(&headers, &header::CONTENT_SECURITY_POLICY).unwrap();
    assert_eq!(policy, CONTENT_SECURITY_POLICY);
    let sources: Vec<&str> = policy
        .split(';')
        .flat_map(|directive| directive.split_whitespace().skip(1))
        .collect();
    assert!(!sources.is_empty());
    assert!(sources.iter().all(|source| *source == "'self'"), "{policy}");
    let html = std::str::from_utf8(&body).unwrap();
    assert!(!html.contains("://"), "the page names another host: {html}");
    assert!(
        !html.contains("<script>"),
        "inline scripts break the policy: {html}"
    );
}

#[tokio::test]
async fn every_file_the_page_loads_is_served_with_its_media_type_and_the_policy() {
    let db = TestDb::new().await;
    let (_, _, page) = send_for_bytes(&db, get("/api/v1/docs")).await;
    let page = String::from_utf8(page.to_vec()).unwrap();
    let files = linked(&page);
    assert!(files.len() >= 3, "{page}");

    for file in files {
        let (status, headers, body) = send_for_bytes(&db, get(file)).await;

        assert_eq!(status, StatusCode::OK, "{file}");
        let expected = if file.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(
            header(&headers, &header::CONTENT_TYPE),
            Some(expected),
            "{file}"
        );
        assert_eq!(
            header(&headers, &header::CONTENT_SECURITY_POLICY),
            Some(CONTENT_SECURITY_POLICY)
        );
        assert_eq!(
            header(&headers, &header::X_CONTENT_TYPE_OPTIONS),
            Some("nosniff")
        );
        assert!(!body.is_empty(), "{file}");
    }
}

#[tokio::test]
async fn the_page_script_reads_this_servers_document() {
    let db = TestDb::new().await;

    let (status, _, script) = send_for_bytes(&db, get("/api/v1/docs/docs.js")).await;

    assert_eq!(status, StatusCode::OK);
    let script = std::str::from_utf8(&script).unwrap();
    assert!(script.contains("\"/api/v1/openapi.json\""), "{script}");
    assert!(script.contains("validatorUrl: null"), "{script}");
    assert!(!script.contains("://"), "{script}");
}

#[tokio::test]
async fn an_unknown_file_of_the_page_is_a_problem() {
    let db = TestDb::new().await;

    let response = send_anonymous(&db, get("/api/v1/docs/swagger-ui.js.map")).await;

    problem_detail(&response, StatusCode::NOT_FOUND);
}
