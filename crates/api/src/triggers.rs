//! Triggers: webhooks and API calls that start executions.
//!
//! `{METHOD} /webhook/...` starts the active workflow whose `trigger_config` claims that method
//! and path; `POST /api/v1/workflows/{id}/executions` starts a workflow by id with the request
//! body as its input. Both answer `202 Accepted` with the new execution's id and where to watch
//! it, once the execution, its node runs and its first jobs are committed together (with other
//! triggers accepted at the same moment, see [`crate::starter`]).
//!
//! A workflow may require signed deliveries ([`crate::signature`]); the signature is checked
//! over the raw body before anything parses it. A signed delivery whose id was accepted before
//! is answered `200` with `"duplicate": true` and the first execution's id, and starts nothing.
//!
//! Bodies are read by content type: form-encoded into an object (a repeated key into an array
//! of its values, in order), `text/*` into a string, anything else as JSON. What PostgreSQL
//! cannot store, a NUL character, and JSON nested deeper than [`MAX_JSON_DEPTH`] are 400s
//! that say where, so they never reach the database as a 500.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use quantumflow_domain::WorkflowStatus;
use quantumflow_engine::{EngineError, Start, Trigger};
use quantumflow_storage::StorageError;
use quantumflow_storage::workflows::{self, Workflow};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::RawBody;
use crate::openapi::{
    BadRequest, BadSignature, Conflict, DatabaseErrors, MethodNotAllowed, NotFound,
    PayloadTooLarge, TokenErrors, Unprocessable,
};
use crate::signature::{self, SecretsError, SignatureConfig};
use crate::starter::{StartError, Started};
use crate::workflows::WorkflowId;
use crate::{ApiError, AppState};

/// Request headers never copied into `trigger_data`: they carry credentials.
const HIDDEN_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Plan(plan) => Self::Unprocessable(plan.to_string()),
            EngineError::Storage(storage) => storage.into(),
            EngineError::Queue(queue) => Self::Internal(Box::new(queue)),
            batch @ EngineError::Batch(_) => Self::Internal(Box::new(batch)),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(err: StartError) -> Self {
        match err {
            StartError::Engine(engine) => engine.into(),
            busy @ (StartError::Busy | StartError::Unavailable | StartError::Stopped) => {
                Self::Unavailable(busy.to_string())
            }
        }
    }
}

/// The execution is recorded and queued: its id, and where to watch it.
#[derive(Debug, Serialize, utoipa::ToSchema, utoipa::ToResponse)]
#[response(headers(("Location" = String, description = "The execution's URL.")))]
pub struct Accepted {
    /// The new execution's id.
    pub execution_id: Uuid,
    /// Where the execution can be read: `/api/v1/executions/{execution_id}`.
    pub status_url: String,
    /// Present, and `true`, when the delivery was accepted before: nothing new was started
    /// and `execution_id` is the execution the first copy started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub duplicate: bool,
}

/// `{METHOD} /webhook/{*path}`: starts the active workflow whose webhook trigger claims this
/// method and path; the body is its input.
///
/// Each workflow chooses its own path under `/webhook/` and its method. JSON bodies are read as
/// JSON, form bodies as an object of strings, `text/*` as a string, and no body as `{}`.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/webhook/{path}",
    operation_id = "triggerWebhook",
    tag = "triggers",
    params((
        "path" = String,
        Path,
        description = "The rest of the path a workflow's webhook trigger claims, e.g. `signup` for \
            `/webhook/signup`; it may contain slashes.",
    )),
    request_body(
        description = "What the sender posts; it becomes the execution's input.",
        content(("application/json"), ("application/x-www-form-urlencoded"), ("text/plain")),
    ),
    responses(
        (status = ACCEPTED, response = Accepted),
        (
            status = OK,
            description = "A signed delivery whose id was accepted before: nothing was started, \
                and the body names the execution the first copy started.",
            body = Accepted,
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = UNAUTHORIZED, response = BadSignature),
        (status = NOT_FOUND, response = NotFound),
        (status = METHOD_NOT_ALLOWED, response = MethodNotAllowed),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        DatabaseErrors,
    ),
)]
pub async fn webhook(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let Some(workflow) = workflows::find_active_webhook(&state.pool, method.as_str(), path).await?
    else {
        let methods = workflows::webhook_methods(&state.pool, path).await?;
        if methods.is_empty() {
            return Err(ApiError::NotFound("active webhook workflow at this path"));
        }
        return Ok(method_not_allowed(&method, path, &methods));
    };

    // The signature covers the bytes as sent, so it is checked before anything reads them.
    let delivery = check_signature(&state, &workflow, &headers, &body).await?;
    let input = parse_body(&headers, &body)?;
    let trigger_data = json!({
        "method": method.as_str(),
        "path": path,
        "query": query_map(&uri)?,
        "headers": header_map(&headers),
    });
    let trigger = Trigger {
        trigger_type: "webhook",
        trigger_data,
        input,
        triggered_by: None,
    };
    accept(&state, &workflow, trigger, delivery).await
}

/// `POST /api/v1/workflows/{id}/executions`: starts an active workflow; the body is its input,
/// read as a webhook's is.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/executions",
    operation_id = "executeWorkflow",
    tag = "triggers",
    security(("bearer" = [])),
    params(WorkflowId),
    request_body(
        description = "The execution's input.",
        content(("application/json"), ("application/x-www-form-urlencoded"), ("text/plain")),
    ),
    responses(
        (status = ACCEPTED, response = Accepted),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = CONFLICT, response = Conflict),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        TokenErrors,
    ),
)]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound("workflow"))?;
    let workflow = caller.workflow(&state.pool, id).await?;
    if workflow.status != WorkflowStatus::Active {
        return Err(ApiError::Conflict(format!(
            "the workflow is {}; only active workflows can be executed",
            workflow.status
        )));
    }
    let input = parse_body(&headers, &body)?;
    let trigger_data = json!({"headers": header_map(&headers)});
    let trigger = Trigger {
        trigger_type: "api",
        trigger_data,
        input,
        triggered_by: Some(caller.user_id),
    };
    accept(&state, &workflow, trigger, None).await
}

/// Checks a delivery against the workflow's signature settings, if it has any, and returns
/// the delivery's id for replay detection.
async fn check_signature(
    state: &AppState,
    workflow: &Workflow,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, ApiError> {
    let config = SignatureConfig::of(&workflow.trigger_config)
        .map_err(|err| ApiError::Internal(Box::new(err)))?;
    let Some(config) = config else {
        return Ok(None);
    };
    let scheme = config.scheme().ok_or_else(|| {
        ApiError::Internal(format!("unknown signature scheme {:?}", config.scheme).into())
    })?;
    let keyring = state.keyring.as_deref();
    let secrets = signature::signing_secrets(&state.pool, keyring, config.connector_id)
        .await
        .map_err(|err| match err {
            SecretsError::Storage(storage @ StorageError::Unavailable(_)) => storage.into(),
            // The sender cannot fix a missing connector or secret; the owner sees it logged.
            other => ApiError::Internal(Box::new(other)),
        })?;
    let now = chrono::Utc::now().timestamp();
    match signature::verify(scheme, &secrets, headers, body, now) {
        Ok(verified) => Ok(verified.delivery_id),
        Err(err) => {
            tracing::info!(workflow.id = %workflow.id, reason = %err, "webhook signature refused");
            Err(ApiError::BadSignature(err))
        }
    }
}

/// Starts the execution, committed with whatever other triggers are being accepted, and
/// answers 202; or, for a delivery already accepted, 200 with the execution it started.
async fn accept(
    state: &AppState,
    workflow: &Workflow,
    trigger: Trigger,
    delivery: Option<String>,
) -> Result<Response, ApiError> {
    let doc = state.documents.of(&state.pool, workflow).await?;
    let start = Start::prepare(&doc, trigger)?;
    let execution_id = start.execution_id();
    let started = state.starter.start(start, delivery).await?;

    let (status, execution_id) = match started {
        Started::New => (StatusCode::ACCEPTED, execution_id),
        Started::Duplicate(original) => (StatusCode::OK, original),
    };
    let duplicate = status == StatusCode::OK;
    let url = status_url(execution_id);
    tracing::info!(
        execution.id = %execution_id,
        workflow.id = %workflow.id,
        duplicate,
        "execution accepted"
    );
    let accepted = Accepted {
        execution_id,
        status_url: url.clone(),
        duplicate,
    };
    let mut response = (status, Json(accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

fn status_url(execution_id: Uuid) -> String {
    format!("/api/v1/executions/{execution_id}")
}

fn method_not_allowed(method: &Method, path: &str, methods: &[String]) -> Response {
    let detail = format!(
        "{path} does not accept {method}; it accepts {}",
        methods.join(", ")
    );
    let mut response = ApiError::MethodNotAllowed(detail).into_response();
    if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// The payload as JSON: JSON bodies parsed, form bodies as an object of strings (arrays for
/// repeated keys), text as a string, nothing as `{}`.
///
/// What PostgreSQL cannot store (a NUL character anywhere) and JSON nested deeper than
/// [`MAX_JSON_DEPTH`] are refused here with a 400 saying where, rather than failing later.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|err| {
        ApiError::BadRequest(format!(
            "the body is not valid UTF-8: the byte at offset {} is not part of a character",
            err.valid_up_to()
        ))
    })?;
    let value = if content_type.starts_with("application/x-www-form-urlencoded") {
        form_object(text.as_bytes())
    } else if content_type.starts_with("text/") {
        Value::String(text.to_owned())
    } else {
        check_depth(text)?;
        serde_json::from_str(text).map_err(|err| {
            ApiError::BadRequest(format!(
                "the body is not valid JSON: {err} (column {} is character {} of that line)",
                err.column(),
                char_column(text, err.line(), err.column())
            ))
        })?
    };
    if let Some(found) = nul_in(&value, &mut String::new()) {
        return Err(ApiError::BadRequest(format!(
            "the body holds a NUL character (\\u0000) {found}; it cannot be stored"
        )));
    }
    Ok(value)
}

/// The deepest nesting of arrays and objects accepted in a JSON body. Real payloads stay far
/// shallower; the limit keeps a hostile one from costing recursion in every later step.
pub const MAX_JSON_DEPTH: usize = 64;

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], counting brackets outside strings, so
/// that the answer names the limit whatever the parser would have said.
fn check_depth(text: &str) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, byte) in text.bytes().enumerate() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::BadRequest(format!(
                        "the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels \
                         (at byte offset {offset})"
                    )));
                }
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// serde_json counts columns in bytes; people count characters.
fn char_column(text: &str, line: usize, byte_column: usize) -> usize {
    let line = text.split('\n').nth(line.saturating_sub(1)).unwrap_or("");
    let end = byte_column.min(line.len());
    let end = (0..=end)
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    line[..end].chars().count()
}

/// Where the first NUL character in `value` is, described for a message: "in the key at
/// /a/b" or "in the value at /a/b". `pointer` is the path so far.
fn nul_in(value: &Value, pointer: &mut String) -> Option<String> {
    let len = pointer.len();
    let found = match value {
        Value::String(s) if s.contains('\0') => Some(format!("in the value at {}", at(pointer))),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            pointer.truncate(len);
            pointer.push_str(&format!("/{i}"));
            nul_in(item, pointer)
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            pointer.truncate(len);
            pointer.push('/');
            pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            if key.contains('\0') {
                return Some(format!("in the key at {}", at(pointer)));
            }
            nul_in(item, pointer)
        }),
        _ => None,
    };
    pointer.truncate(len);
    found
}

/// An RFC 6901 pointer for a message; the whole document is `""`, shown as `/`.
fn at(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// Form-encoded pairs as an object. A key sent once maps to its string; a key sent several
/// times maps to an array of its strings in the order sent, so no value is lost. Escapes that
/// decode to bytes which are not UTF-8 become U+FFFD.
fn form_object(encoded: &[u8]) -> Value {
    let mut map = Map::new();
    for (key, value) in form_urlencoded::parse(encoded) {
        let value = Value::String(value.into_owned());
        match map.get_mut(key.as_ref()) {
            None => {
                map.insert(key.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(map)
}

/// The query string, decoded like a form body.
fn query_map(uri: &Uri) -> Result<Value, ApiError> {
    let query = form_object(uri.query().unwrap_or("").as_bytes());
    if let Some(found) = nul_in(&query, &mut String::new()) {
        return Err(ApiError::BadRequest(format!(
            "the query string holds a NUL character (%00) {found}; it cannot be stored"
        )));
    }
    Ok(query)
}

fn header_map(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        if HIDDEN_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.insert(name.as_str().to_owned(), Value::String(value));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_escapes_and_keep_every_repeated_value() {
        let form = form_object(b"name=Ada+Lovelace&email=ada%40example.com&flag&tag=a&tag=b%26c");

        assert_eq!(
            form,
            json!({
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "flag": "",
                "tag": ["a", "b&c"],
            })
        );
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = "[".repeat(MAX_JSON_DEPTH + 1);
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        let brackets_in_strings = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));

        assert!(check_depth(&deep).is_err());
        assert!(check_depth(&at_limit).is_ok());
        assert!(check_depth(&brackets_in_strings).is_ok());
    }

    #[test]
    fn nul_characters_are_found_in_keys_and_values_with_their_pointer() {
        let in_value = json!({"a": [1, {"b/c": "x\u{0}y"}]});
        let in_key = json!({"a": {"k\u{0}": 1}});

        assert_eq!(
            nul_in(&in_value, &mut String::new()).as_deref(),
            Some("in the value at /a/1/b~1c")
        );
        assert_eq!(
            nul_in(&in_key, &mut String::new()).as_deref(),
            Some("in the key at /a/k\u{0}")
        );
        assert_eq!(nul_in(&json!({"a": "b"}), &mut String::new()), None);
    }

    #[test]
    fn credentials_never_reach_trigger_data() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("x-github-event", HeaderValue::from_static("push"));

        let map = header_map(&headers);

        assert_eq!(map, json!({"x-github-event": "push"}));
    }
}
