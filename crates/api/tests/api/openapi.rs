//! The OpenAPI document: served without a token, valid OpenAPI 3.1, equal to the committed copy,
//! and true to the server: it lists exactly the routes and methods the router serves, asks for
//! a token exactly where the server does, and describes the bodies the server really sends.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use quantumflow_api::{AppState, router};
use quantumflow_testkit::TestDb;
use serde_json::{Value, json};

use crate::support::{
    admin, create_workflow, get, post_json, post_raw, send, send_anonymous, send_for_bytes,
};

/// Where the committed copy lives, relative to this crate.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// Methods an OpenAPI path item can hold, as they appear in the document.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn served_document(db: &TestDb) -> Value {
    let response = send_anonymous(db, get("/api/v1/openapi.json")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.content_type(), Some("application/json"));
    response.body
}

/// Every operation of `doc`: path, method and operation object.
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let paths = doc["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter_map(move |method| Some((path.as_str(), *method, item.get(*method)?)))
        })
        .collect()
}

/// `value` with every `$ref` into `components` followed.
fn resolve<'d>(doc: &'d Value, value: &'d Value) -> &'d Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap();
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference}")),
            )
        }
        None => value,
    }
}

/// Every `$ref` in `value`.
fn collect_refs<'d>(value: &'d Value, into: &mut Vec<&'d str>) {
    match value {
        Value::Object(fields) => {
            into.extend(fields.get("$ref").and_then(Value::as_str));
            fields.values().for_each(|field| collect_refs(field, into));
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

/// A concrete path for a route template: a UUID for each parameter, a word for a tail.
fn sample(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment.strip_prefix('{') {
            Some(name) if name.starts_with('*') => "probe",
            Some(_) => "00000000-0000-0000-0000-000000000000",
            None => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_public_openapi_3_1_with_the_bearer_scheme_and_problem_schema() {
    let db = TestDb::new().await;

    let doc = served_document(&db).await;

    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut references = Vec::new();
    collect_refs(&doc, &mut references);
    for reference in references {
        let target = reference.strip_prefix('#').and_then(|p| doc.pointer(p));
        assert!(target.is_some(), "{reference} points nowhere");
    }
    for (path, method, operation) in operations(&doc) {
        assert!(!operation["responses"].as_object().unwrap().is_empty());
        // Each `{name}` of the path needs a path parameter of that name, and nothing else may
        // claim to be one.
        let in_template: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        assert_eq!(in_template, declared, "{method} {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["type"],
        "http"
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = problem["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["type", "title", "status", "detail"])
    );
    assert!(problem["properties"]["errors"].is_object());
}

#[tokio::test]
async fn the_committed_copy_is_the_generated_document() {
    let db = TestDb::new().await;
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();

    let (_, _, served) = send_for_bytes(&db, get("/api/v1/openapi.json")).await;

    assert!(
        committed == quantumflow_api::openapi::json(),
        "docs/openapi.json differs from the document the server generates; \
         run `cargo xtask openapi` and commit the result"
    );
    assert_eq!(served, quantumflow_api::openapi::json().as_bytes());
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_paths_and_methods() {
    let db = TestDb::new().await;
    let doc = served_document(&db).await;
    let app = router(AppState::new(db.pool().clone()));

    // axum has no way to list a router's routes but its Debug output, whose `paths` map holds
    // every path registered; reading it needs no list kept by hand next to the router.
    let debug = format!("{app:?}");
    let table = debug
        .split("fallback_router")
        .next()
        .and_then(|served| served.split("paths: {").nth(1))
        .expect("axum's Debug output of a router changed; update how this test reads it");
    let served: BTreeSet<String> = table
        .split(": \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|path| path.replace("{*", "{"))
        .collect();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(!served.is_empty(), "no route read from {debug}");
    assert_eq!(
        served, documented,
        "routes served (left) and documented (right)"
    );

    let probe = Method::from_bytes(b"PROBE").unwrap();
    for path in &served {
        let request = Request::builder()
            .method(probe.clone())
            .uri(sample(path))
            .body(Body::empty())
            .unwrap();
        let response = crate::support::send_to(&app, request).await;
        let documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|method| doc["paths"][path.as_str()].get(**method).is_some())
            .map(|method| method.to_uppercase())
            .collect();
        if response.status != StatusCode::METHOD_NOT_ALLOWED {
            // The route takes any method, as webhooks do; the document lists those it uses.
            assert!(!documented.is_empty(), "{path}");
            continue;
        }
        let allow = response.header(header::ALLOW).unwrap();
        // axum answers HEAD wherever it answers GET; the document leaves that implied.
        let served: BTreeSet<String> = allow
            .split(',')
            .map(|method| method.trim().to_owned())
            .filter(|method| method != "HEAD")
            .collect();
        assert_eq!(
            served, documented,
            "methods of {path}: served (left), documented"
        );
    }
}

#[tokio::test]
async fn exactly_the_operations_that_refuse_anonymous_callers_require_the_bearer_token() {
    let db = TestDb::new().await;
    let doc = served_document(&db).await;

    for (path, method, operation) in operations(&doc) {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(sample(path))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send_for_bytes(&db, request).await;

        let refused = status == StatusCode::UNAUTHORIZED;
        let secured = operation["security"] == json!([{"bearer": []}]);
        assert_eq!(refused, secured, "{method} {path}: answered {status}");
        // A webhook's 401 is a refused signature, not a missing token.
        let token_refusal = json!("#/components/responses/Unauthorized");
        assert_eq!(
            secured,
            operation["responses"]["401"]["$ref"] == token_refusal,
            "{method} {path}"
        );
        if path.starts_with("/api/v1/") {
            let tag = operation["tags"][0].as_str();
            assert!(secured || tag == Some("documentation"), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn every_error_response_is_a_problem_and_operation_ids_are_unique() {
    let db = TestDb::new().await;
    let doc = served_document(&db).await;
    let mut ids = BTreeMap::new();

    for (path, method, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap();
        if let Some(other) = ids.insert(id, format!("{method} {path}")) {
            panic!("{id} names both {other} and {method} {path}");
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let content = &resolve(&doc, response)["content"];
            assert_eq!(
                content,
                &json!({"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}
                }}),
                "{status} of {method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn bodies_the_server_sends_match_the_documented_schemas() {
    let db = TestDb::new().await;
    admin(&db).await;
    let doc = served_document(&db).await;
    let workflow = create_workflow(&db).await;
    let id = workflow["id"].as_str().unwrap();
    let executions = format!("/api/v1/workflows/{id}/executions");
    let accepted = send(&db, post_json(&executions, &json!({"username": "ada"}))).await;
    let execution = accepted.body["status_url"].as_str().unwrap().to_owned();
    let mut invalid = crate::support::document();
    invalid["nodes"][0]["type"] = json!("teleport");
    invalid["status"] = json!("paused");

    let cases = [
        ("/api/v1/workflows", "post", "201", workflow),
        (
            "/api/v1/workflows",
            "post",
            "422",
            send(&db, post_json("/api/v1/workflows", &invalid))
                .await
                .body,
        ),
        (
            "/api/v1/workflows/{id}/executions",
            "post",
            "202",
            accepted.body,
        ),
        (
            "/api/v1/workflows/{id}/executions",
            "get",
            "200",
            send(&db, get(&executions)).await.body,
        ),
        (
            "/api/v1/executions/{id}",
            "get",
            "200",
            send(&db, get(&execution)).await.body,
        ),
        (
            "/api/v1/tokens",
            "post",
            "201",
            send(&db, post_json("/api/v1/tokens", &json!({"name": "ci"})))
                .await
                .body,
        ),
        (
            "/api/v1/tokens",
            "get",
            "200",
            send(&db, get("/api/v1/tokens")).await.body,
        ),
        (
            "/api/v1/users/me",
            "get",
            "200",
            send(&db, get("/api/v1/users/me")).await.body,
        ),
        (
            "/api/v1/tokens",
            "post",
            "400",
            send(&db, post_raw("/api/v1/tokens", "application/json", "{"))
                .await
                .body,
        ),
        (
            "/healthz",
            "get",
            "200",
            send(&db, get("/healthz")).await.body,
        ),
        (
            "/readyz",
            "get",
            "200",
            send(&db, get("/readyz")).await.body,
        ),
    ];

    for (path, method, status, body) in cases {
        let response = resolve(&doc, &doc["paths"][path][method]["responses"][status]);
        let content = response["content"].as_object().unwrap();
        let (_, media) = content.iter().next().unwrap();
        let mut problems = Vec::new();
        conform(&doc, &media["schema"], &body, "", &mut problems);
        assert!(
            problems.is_empty(),
            "{status} of {method} {path} breaks its schema: {problems:#?}\n{body:#}"
        );
    }
}

/// Checks `value` against `schema` as far as this document uses JSON Schema: types, nullable
/// types, enums, required properties, no undocumented properties, items and `allOf`. Appends
/// a line to `problems` for each mismatch, with a JSON pointer to it.
fn conform(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = |kind: &str| kind == actual || (kind == "number" && actual == "integer");
    if !kinds.is_empty() && !kinds.iter().copied().any(fits) {
        problems.push(format!("{at}: a {actual}, documented as {kinds:?}"));
        return;
    }

    if let Value::Array(items) = value {
        for (i, item) in items.iter().enumerate() {
            conform(doc, &schema["items"], item, &format!("{at}/{i}"), problems);
        }
    }
    let Value::Object(fields) = value else {
        return;
    };
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    let parts = schema["allOf"].as_array().cloned().unwrap_or_default();
    for part in parts.iter().chain([schema]) {
        let part = resolve(doc, part);
        if let Some(declared) = part["properties"].as_object() {
            properties.extend(declared.clone());
        }
        required.extend(part["required"].as_array().cloned().unwrap_or_default());
    }
    if properties.is_empty() {
        // A free-form object, such as a node's `config`.
        return;
    }
    for name in required.iter().filter_map(Value::as_str) {
        if !fields.contains_key(name) {
            problems.push(format!("{at}/{name}: documented as required, not sent"));
        }
    }
    for (name, field) in fields {
        match properties.get(name) {
            Some(property) => conform(doc, property, field, &format!("{at}/{name}"), problems),
            None => problems.push(format!("{at}/{name}: sent, not documented")),
        }
    }
}
