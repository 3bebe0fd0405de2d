//! Triggers: webhooks and API calls that start executions.
//!
//! `{METHOD} /webhook/...` starts the active workflow whose `trigger_config` claims that method
//! and path; `POST /api/v1/workflows/{id}/executions` starts a workflow by id with the request
//! body as its input. Both answer `202 Accepted` with the new execution's id and where to watch
//! it, once the execution, its node runs and its first jobs are committed together (with other
//! triggers accepted at the same moment, see [`crate::starter`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use quantumflow_domain::WorkflowStatus;
use quantumflow_engine::{EngineError, Start, Trigger};
use quantumflow_storage::workflows::{self, Workflow};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::starter::StartError;
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

/// `{METHOD} /webhook/{*path}`.
pub async fn webhook(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
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

    let input = parse_body(&headers, &body)?;
    let trigger_data = json!({
        "method": method.as_str(),
        "path": path,
        "query": query_map(&uri),
        "headers": header_map(&headers),
    });
    let trigger = Trigger {
        trigger_type: "webhook",
        trigger_data,
        input,
        triggered_by: None,
    };
    accept(&state, &workflow, trigger).await
}

/// `POST /api/v1/workflows/{id}/executions`: the body is the input.
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
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
    accept(&state, &workflow, trigger).await
}

/// Starts the execution, committed with whatever other triggers are being accepted, and
/// answers 202.
async fn accept(
    state: &AppState,
    workflow: &Workflow,
    trigger: Trigger,
) -> Result<Response, ApiError> {
    let doc = state.documents.of(&state.pool, workflow).await?;
    let start = Start::prepare(&doc, trigger)?;
    let execution_id = start.execution_id();
    state.starter.start(start).await?;

    let status_url = format!("/api/v1/executions/{execution_id}");
    tracing::info!(execution.id = %execution_id, workflow.id = %workflow.id, "execution accepted");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({"execution_id": execution_id, "status_url": status_url})),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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

/// The payload as JSON: JSON bodies parsed, form bodies as an object of strings, text as a
/// string, nothing as `{}`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Map<String, Value> = form_pairs(body)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(Value::Object(pairs));
    }
    if content_type.starts_with("text/") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the text body is not valid UTF-8".into()))?;
        return Ok(Value::String(text.to_owned()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn query_map(uri: &Uri) -> Value {
    let pairs = uri
        .query()
        .map(|q| form_pairs(q.as_bytes()))
        .unwrap_or_default();
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
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
    fn form_bodies_decode_plus_and_percent_escapes() {
        let pairs = form_pairs(b"name=Ada+Lovelace&email=ada%40example.com&flag");

        assert_eq!(
            pairs,
            [
                ("name".to_owned(), "Ada Lovelace".to_owned()),
                ("email".to_owned(), "ada@example.com".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
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
