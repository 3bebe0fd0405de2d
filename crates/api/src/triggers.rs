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
//! cannot store (a NUL character), JSON nested deeper than [`MAX_JSON_DEPTH`], and numbers
//! whose exponents would make them print far longer than they were sent are 400s that say
//! where, so they never reach the database as a 500 or come back a hundred times larger.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use quantumflow_domain::WorkflowStatus;
use quantumflow_engine::{EngineError, Start, TraceContext, Trigger};
use quantumflow_storage::StorageError;
use quantumflow_storage::workflows::{self, Workflow};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::RawBody;
use crate::openapi::{
    BadRequest, BadSignature, Conflict, DatabaseErrors, MethodNotAllowed, NotFound,
    PayloadTooLarge, TokenErrors, Unprocessable,
};
use crate::signature::{self, SecretsError, SignatureConfig};
use crate::starter::{StartError, Started, Ticket};
use crate::trace;
use crate::workflows::WorkflowId;
use crate::{ApiError, AppState};

/// Request headers never copied into `trigger_data`: they carry credentials. Signature headers
/// are left out too (see [`crate::signature::SIGNATURE_HEADERS`]).
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
            busy @ (StartError::Busy
            | StartError::Unavailable
            | StartError::Stopped
            | StartError::OutOfTime) => Self::Unavailable(busy.to_string()),
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
    ticket: Option<Extension<Ticket>>,
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
    let ticket = ticket.map(|Extension(ticket)| ticket);
    accept(&state, &workflow, trigger, &headers, delivery, ticket).await
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
    ticket: Option<Extension<Ticket>>,
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
    let ticket = ticket.map(|Extension(ticket)| ticket);
    accept(&state, &workflow, trigger, &headers, None, ticket).await
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
            source => ApiError::Internal(Box::new(UnreadableSecrets {
                workflow_id: workflow.id,
                source,
            })),
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

/// A signed workflow whose secrets cannot be read: logged with the workflow's id, so that its
/// owner can be told which workflow refuses every delivery.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the signing secrets of workflow {workflow_id}")]
struct UnreadableSecrets {
    workflow_id: Uuid,
    #[source]
    source: SecretsError,
}

/// Starts the execution, committed with whatever other triggers are being accepted, and
/// answers 202; or, for a delivery already accepted, 200 with the execution it started.
async fn accept(
    state: &AppState,
    workflow: &Workflow,
    trigger: Trigger,
    headers: &HeaderMap,
    delivery: Option<String>,
    ticket: Option<Ticket>,
) -> Result<Response, ApiError> {
    let doc = state.documents.of(&state.pool, workflow).await?;
    let start = Start::prepare(&doc, trigger)?;
    let execution_id = start.execution_id();
    // The execution's own span: its node runs, on whatever worker, become its children
    // through the context stored with the execution.
    let span = tracing::info_span!(
        "execution",
        execution.id = %execution_id,
        workflow.id = %workflow.id,
    );
    let trace = TraceContext::of_span(&span).or_else(|| trace::caller_context(headers));
    let start = start.with_trace(trace);
    let started = state
        .starter
        .start(start, delivery, ticket)
        .instrument(span)
        .await?;

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
/// What PostgreSQL cannot store (a NUL character anywhere), JSON nested deeper than
/// [`MAX_JSON_DEPTH`] and numbers with outsized exponents ([`MAX_EXPONENT`]) are refused here
/// with a 400 saying where, rather than failing or swelling later.
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
    if let Some((flaw, pointer)) = flaw_in(&value) {
        return Err(flaw_error("body", &flaw, &pointer));
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

/// The largest power of ten a number may be written with, either way: what an IEEE double
/// reaches, so any JSON reader can take every number we accept.
pub const MAX_EXPONENT: u64 = 308;

/// The most digits that the exponents of all numbers in one payload may add. PostgreSQL
/// stores `1e300` in a few bytes but prints it as 301 digits, so without a budget a 2 MiB body
/// of such numbers would come back as a 100 MB execution.
pub const MAX_EXPONENT_DIGITS: u64 = 64 * 1024;

/// Why a parsed payload cannot be stored as sent.
#[derive(Debug, PartialEq)]
enum Flaw {
    /// A NUL character, which PostgreSQL's text and jsonb cannot hold; `in_key` says where.
    Nul { in_key: bool },
    /// A number written with an exponent beyond [`MAX_EXPONENT`].
    Exponent,
    /// Numbers whose exponents add up to more than [`MAX_EXPONENT_DIGITS`].
    Expansion,
}

/// The first flaw in `value` and the RFC 6901 pointer to it.
fn flaw_in(value: &Value) -> Option<(Flaw, String)> {
    let mut walk = FlawWalk {
        pointer: String::new(),
        exponent_digits: 0,
    };
    walk.visit(value)
        .map(|flaw| (flaw, at(&walk.pointer).to_owned()))
}

struct FlawWalk {
    /// Where the walk is, and where it stopped if it found a flaw.
    pointer: String,
    exponent_digits: u64,
}

impl FlawWalk {
    fn visit(&mut self, value: &Value) -> Option<Flaw> {
        let len = self.pointer.len();
        match value {
            Value::String(s) if s.contains('\0') => return Some(Flaw::Nul { in_key: false }),
            Value::Number(n) => {
                let exponent = written_exponent(n.as_str());
                if exponent > MAX_EXPONENT {
                    return Some(Flaw::Exponent);
                }
                self.exponent_digits += exponent;
                if self.exponent_digits > MAX_EXPONENT_DIGITS {
                    return Some(Flaw::Expansion);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.pointer.truncate(len);
                    self.pointer.push_str(&format!("/{i}"));
                    if let Some(flaw) = self.visit(item) {
                        return Some(flaw);
                    }
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.pointer.truncate(len);
                    self.pointer.push('/');
                    self.pointer
                        .push_str(&key.replace('~', "~0").replace('/', "~1"));
                    if key.contains('\0') {
                        return Some(Flaw::Nul { in_key: true });
                    }
                    if let Some(flaw) = self.visit(item) {
                        return Some(flaw);
                    }
                }
            }
            _ => {}
        }
        self.pointer.truncate(len);
        None
    }
}

/// The magnitude of the exponent a JSON number is written with (`2.5e-7` gives 7), saturating
/// rather than overflowing for absurd ones.
fn written_exponent(number: &str) -> u64 {
    let Some(at) = number.find(['e', 'E']) else {
        return 0;
    };
    number[at + 1..]
        .trim_start_matches(['+', '-'])
        .bytes()
        .fold(0u64, |sum, digit| {
            sum.saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        })
}

/// A 400 for a flaw found in the body or the query string, saying where and what to do.
fn flaw_error(part: &str, flaw: &Flaw, pointer: &str) -> ApiError {
    ApiError::BadRequest(match flaw {
        Flaw::Nul { in_key } => format!(
            "the {part} holds a NUL character ({}) in the {} at {pointer}; it cannot be stored",
            if part == "body" { "\\u0000" } else { "%00" },
            if *in_key { "key" } else { "value" },
        ),
        Flaw::Exponent => format!(
            "the number at {pointer} in the {part} has an exponent beyond ±{MAX_EXPONENT}, \
             outside what a double can hold; send it as a string"
        ),
        Flaw::Expansion => format!(
            "the numbers in the {part} are written with exponents adding up to more than \
             {MAX_EXPONENT_DIGITS} digits (the last at {pointer}); send such numbers as strings"
        ),
    })
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
    if let Some((flaw, pointer)) = flaw_in(&query) {
        return Err(flaw_error("query string", &flaw, &pointer));
    }
    Ok(query)
}

fn header_map(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        if HIDDEN_HEADERS.contains(&name.as_str())
            || crate::signature::SIGNATURE_HEADERS.contains(&name.as_str())
        {
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
            flaw_in(&in_value),
            Some((Flaw::Nul { in_key: false }, "/a/1/b~1c".to_owned()))
        );
        assert_eq!(
            flaw_in(&in_key),
            Some((Flaw::Nul { in_key: true }, "/a/k\u{0}".to_owned()))
        );
        assert_eq!(flaw_in(&json!({"a": "b"})), None);
    }

    #[test]
    fn exponents_are_capped_one_by_one_and_in_total() {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        let at_limit = parse(r#"{"max": 1.5e308, "min": -2E-308, "plain": 12345678901234567890}"#);
        let beyond = parse(r#"{"a": [1e2, 1e309]}"#);
        let absurd = parse(r#"[1e99999999999999999999999999]"#);
        let many = parse(&format!("[{}]", vec!["1e300"; 219].join(",")));

        assert_eq!(flaw_in(&at_limit), None);
        assert_eq!(flaw_in(&beyond), Some((Flaw::Exponent, "/a/1".to_owned())));
        assert_eq!(flaw_in(&absurd), Some((Flaw::Exponent, "/0".to_owned())));
        assert_eq!(flaw_in(&many), Some((Flaw::Expansion, "/218".to_owned())));
        assert_eq!(written_exponent("-2E-308"), 308);
        assert_eq!(written_exponent("12e+3"), 3);
    }

    #[test]
    fn credentials_never_reach_trigger_data() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("x-github-event", HeaderValue::from_static("push"));
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_static("sha256=0f1e"),
        );
        headers.insert("webhook-signature", HeaderValue::from_static("v1,K5oZ"));
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));

        let map = header_map(&headers);

        assert_eq!(
            map,
            json!({"x-github-event": "push", "webhook-id": "msg_1"})
        );
    }
}
