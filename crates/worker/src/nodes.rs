//! Running one node: what each node type does with its rendered config and input.
//!
//! - `trigger`: its output is the trigger payload (normally recorded when the execution starts).
//! - `transform`: `config.template`, already rendered, is the output; or `config.script`, a
//!   sandboxed Rhai script (see [`crate::script`]).
//! - `condition`: evaluates `config` as a condition (see
//!   [`quantumflow_domain::expr::condition_holds`]); the output is `{"result": bool, "value":
//!   input}`, and conditional edges choose the branch from it.
//! - `delay`: passes its input on and holds its successors back for `config.seconds` through
//!   the queue's scheduled run time; it never sleeps in a worker slot.
//! - `action` with `config.connector` = `http` or `slack`: an HTTP request (see [`http`]),
//!   through a [`Client`] that refuses internal addresses unless the worker's policy allows
//!   them.
//!
//! Every node runs under a deadline (`config.timeout` seconds, 30 by default), and a panic in a
//! node is caught and reported as a failure of that attempt.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use quantumflow_domain::NodeKind;
use quantumflow_domain::{expr, graph};
use quantumflow_engine::{Attempt, NodeFailure};
use quantumflow_netguard::Client;
use serde_json::{Map, Value, json};

/// A node's deadline when its config sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response body an http node reads; larger ones fail the node.
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// What a node produced.
#[derive(Debug)]
pub struct Done {
    /// Its output.
    pub output: Value,
    /// How long its successors wait before they run.
    pub hold: Option<Duration>,
}

impl Done {
    fn output(output: Value) -> Self {
        Self { output, hold: None }
    }
}

fn fail(message: impl Into<String>, retryable: bool) -> NodeFailure {
    NodeFailure {
        message: message.into(),
        retryable,
    }
}

/// Runs the attempt's node under its deadline.
pub async fn run(attempt: &Attempt, http: &Client) -> Result<Done, NodeFailure> {
    let timeout = match attempt.config.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(seconds) => graph::node_seconds(seconds)
            .map_err(|detail| fail(format!("config.timeout {detail}"), false))?,
    };
    let work = AssertUnwindSafe(execute(attempt, http)).catch_unwind();
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(fail("the node panicked", true)),
        Err(_) => Err(fail(
            format!("the node timed out after {} s", timeout.as_secs_f64()),
            true,
        )),
    }
}

async fn execute(attempt: &Attempt, http: &Client) -> Result<Done, NodeFailure> {
    let config = &attempt.config;
    match attempt.node().kind {
        NodeKind::Trigger => Ok(Done::output(attempt.input.clone())),
        NodeKind::Transform => match (config.get("template"), config.get("script")) {
            (Some(template), _) => Ok(Done::output(template.clone())),
            (None, Some(Value::String(source))) => {
                // Scripts are CPU work: they run off the async threads, under the node's
                // deadline as their own.
                let (source, input) = (source.clone(), attempt.input.clone());
                let trigger = attempt.scope.get("trigger").cloned().unwrap_or_default();
                let deadline = config
                    .get("timeout")
                    .and_then(|seconds| graph::node_seconds(seconds).ok())
                    .unwrap_or(DEFAULT_TIMEOUT);
                let output = tokio::task::spawn_blocking(move || {
                    crate::script::run(&source, &input, &trigger, deadline)
                })
                .await
                .map_err(|_| fail("the script panicked", false))?
                .map_err(|message| fail(message, false))?;
                Ok(Done::output(output))
            }
            (None, Some(_)) => Err(fail("config.script must be a string", false)),
            (None, None) => Err(fail(
                "a transform node needs config.template or config.script",
                false,
            )),
        },

        NodeKind::Condition => {
            let held = expr::condition_holds(config, &attempt.scope)
                .map_err(|e| fail(e.to_string(), false))?;
            Ok(Done::output(
                json!({"result": held, "value": attempt.input}),
            ))
        }
        NodeKind::Delay => {
            let amount = config
                .get("seconds")
                .ok_or_else(|| fail("a delay node needs config.seconds", false))?;
            let hold = graph::node_seconds(amount)
                .map_err(|detail| fail(format!("config.seconds {detail}"), false))?;
            Ok(Done {
                output: attempt.input.clone(),
                hold: Some(hold),
            })
        }
        NodeKind::Action => match config.get("connector").and_then(Value::as_str) {
            Some("http") => http::call(attempt, http).await.map(Done::output),
            Some("slack") => http::slack(attempt, http).await.map(Done::output),
            Some(other) => Err(fail(
                format!("unknown connector {other:?}; expected http or slack"),
                false,
            )),
            None => Err(fail("an action node needs config.connector", false)),
        },
    }
}

/// The http and slack actions.
pub mod http {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_http::HeaderInjector;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use quantumflow_engine::TraceContext;
    use quantumflow_netguard::{Client, Error, Refused};
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{Attempt, MAX_RESPONSE_BYTES, Map, NodeFailure, Value, fail, json};

    /// Tells the author of a refused node what the operator can do about it.
    const ALLOW_HINT: &str = "workers reach internal addresses only in the CIDR blocks listed \
                              by their --allow-outbound flag (QUANTUMFLOW_ALLOW_OUTBOUND)";

    /// `config`: `url`, `method` (default `GET`, or `POST` with a body), `headers` (an object
    /// of strings), `body` (JSON, or a string sent as it is), `accept_status` (extra statuses
    /// that count as success, or `"any"`). The output is `{"status", "headers", "body"}`,
    /// with the body parsed as JSON when it is JSON.
    pub async fn call(attempt: &Attempt, http: &Client) -> Result<Value, NodeFailure> {
        let config = &attempt.config;
        let url = config
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("config.url is required", false))?;
        let body = config.get("body").filter(|b| !b.is_null());
        let method = match config.get("method").and_then(Value::as_str) {
            Some(m) => m.to_ascii_uppercase(),
            None if body.is_some() => "POST".to_owned(),
            None => "GET".to_owned(),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
            fail(
                format!("config.method {method:?} is not an HTTP method"),
                false,
            )
        })?;

        let mut headers = HeaderMap::new();
        if let Some(map) = config.get("headers").and_then(Value::as_object) {
            for (name, value) in map {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| fail(format!("header name {name:?} is invalid"), false))?;
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let value = HeaderValue::from_str(&text)
                    .map_err(|_| fail(format!("header {name} has an invalid value"), false))?;
                headers.insert(name, value);
            }
        }
        // Stable for one node of one execution: a receiver sees the same key on a retry.
        let key = HeaderValue::from_str(&attempt.idempotency_key())
            .map_err(|_| fail("bad key", false))?;
        headers.insert("idempotency-key", key);
        let span = client_span(&method, url);
        add_trace_headers(&span, attempt.trace.as_ref(), &mut headers);

        let target = shown(url);
        let mut request = http
            .request(method, url)
            .map_err(|e| match e {
                Error::InvalidUrl(e) => fail(format!("config.url is not a valid URL: {e}"), false),
                other => not_sent(&other, &target),
            })?
            .headers(headers);
        request = match body {
            Some(Value::String(text)) => request.body(text.clone()),
            Some(json) => request.json(json),
            None => request,
        };
        let accepted = |status: u16| match config.get("accept_status") {
            Some(Value::String(any)) if any == "any" => true,
            Some(Value::Array(list)) => list.iter().any(|s| s.as_u64() == Some(u64::from(status))),
            _ => false,
        };
        async {
            let response = request.send().await.map_err(|e| {
                tracing::Span::current().record("otel.status_code", "error");
                send_failed(&e, &target)
            })?;
            read(response, &target, accepted).await
        }
        .instrument(span)
        .await
    }

    /// `config`: `channel` and `message`; the incoming-webhook URL comes from the connector's
    /// credentials (`config.connector_id`, key `webhook_url`).
    pub async fn slack(attempt: &Attempt, http: &Client) -> Result<Value, NodeFailure> {
        let url = attempt
            .secrets
            .as_ref()
            .and_then(|s| s.get("webhook_url"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                fail(
                    "the Slack connector (config.connector_id) has no webhook_url credential",
                    false,
                )
            })?;
        let text = attempt
            .config
            .get("message")
            .cloned()
            .unwrap_or(Value::Null);
        let mut payload = json!({"text": text});
        if let Some(channel) = attempt.config.get("channel") {
            payload["channel"] = channel.clone();
        }
        // The webhook URL is a credential: no message here may quote it.
        let target = "the Slack webhook";
        let span = client_span(&reqwest::Method::POST, url);
        let mut trace_headers = HeaderMap::new();
        add_trace_headers(&span, attempt.trace.as_ref(), &mut trace_headers);
        let request = http
            .request(reqwest::Method::POST, url)
            .map_err(|e| match e {
                Error::InvalidUrl(e) => fail(
                    format!("the Slack connector's webhook_url is not a valid URL: {e}"),
                    false,
                ),
                other => not_sent(&other, target),
            })?
            .header("idempotency-key", attempt.idempotency_key())
            .headers(trace_headers)
            .json(&payload);
        async {
            let response = request.send().await.map_err(|e| {
                tracing::Span::current().record("otel.status_code", "error");
                send_failed(&e, target)
            })?;
            read(response, target, |_| false).await
        }
        .instrument(span)
        .await
    }

    /// The span of one outgoing request, named and with fields as OpenTelemetry's HTTP client
    /// conventions have them. Of the URL only the host and port are kept: the path or query of
    /// a webhook URL is often its credential.
    fn client_span(method: &reqwest::Method, url: &str) -> tracing::Span {
        let url = reqwest::Url::parse(url).ok();
        let host = url.as_ref().and_then(reqwest::Url::host_str).unwrap_or("");
        // Integers go out as i64: tracing-opentelemetry exports an unsigned one as a string.
        let port = url
            .as_ref()
            .and_then(reqwest::Url::port_or_known_default)
            .map(i64::from);
        tracing::info_span!(
            "http.client",
            otel.name = method.as_str(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method.as_str(),
            server.address = host,
            server.port = port,
            http.response.status_code = tracing::field::Empty,
        )
    }

    /// Adds `span`'s W3C trace context to `headers`, so the receiver can join the trace. A
    /// `traceparent` the node's config sets wins, with whatever `tracestate` the config sets
    /// beside it: the workflow's author chose to continue another trace. A config that sets
    /// only `tracestate` keeps it next to ours. When `span` is on no trace (this process
    /// exports none), the execution's stored context is passed on as it is, so the receiver
    /// still joins the trace the execution was started on.
    fn add_trace_headers(
        span: &tracing::Span,
        stored: Option<&TraceContext>,
        headers: &mut HeaderMap,
    ) {
        if headers.contains_key("traceparent") {
            return;
        }
        let mut ours = HeaderMap::new();
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut ours));
        } else if let Some(stored) = stored {
            for (name, value) in [
                ("traceparent", Some(&stored.traceparent)),
                ("tracestate", stored.tracestate.as_ref()),
            ] {
                if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                    ours.insert(name, value);
                }
            }
        }
        for (name, value) in ours {
            if let Some(name) = name {
                headers.entry(name).or_insert(value);
            }
        }
    }

    /// A request that was never started: its host is a refused address.
    fn not_sent(err: &Error, target: &str) -> NodeFailure {
        match err {
            Error::Refused(refused) => refused_failure(refused, target),
            other => fail(format!("request to {target} failed: {other}"), false),
        }
    }

    /// A request that failed after it started: a refused name or redirect is final, anything
    /// else may pass.
    fn send_failed(err: &reqwest::Error, target: &str) -> NodeFailure {
        match quantumflow_netguard::find_refusal(err) {
            Some(refused) => refused_failure(refused, target),
            None => fail(describe(err, target), true),
        }
    }

    /// Refusals are not retried: the same address is refused again until an operator allows
    /// it.
    fn refused_failure(refused: &Refused, target: &str) -> NodeFailure {
        tracing::warn!(reason = %refused, "refused an outbound request to an internal address");
        fail(
            format!("request to {target} was refused: {refused}; {ALLOW_HINT}"),
            false,
        )
    }

    async fn read(
        mut response: reqwest::Response,
        target: &str,
        accepted: impl Fn(u16) -> bool,
    ) -> Result<Value, NodeFailure> {
        let status = response.status();
        let span = tracing::Span::current();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            span.record("otel.status_code", "error");
        }
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            headers.insert(
                name.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into()),
            );
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(describe(&e, target), true))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(fail(
                    format!("the response from {target} exceeds {MAX_RESPONSE_BYTES} bytes"),
                    false,
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));

        if status.is_success() || accepted(status.as_u16()) {
            return Ok(json!({"status": status.as_u16(), "headers": headers, "body": body}));
        }
        let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        // Server trouble and throttling may pass; a 4xx will fail the same way again.
        let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        Err(fail(
            format!("{target} answered {status}: {snippet}"),
            retryable,
        ))
    }

    /// `url` as failures name it: without credentials, query or fragment, which often carry
    /// tokens, since failures are stored, logged and exported with traces.
    fn shown(url: &str) -> String {
        let Ok(mut url) = reqwest::Url::parse(url) else {
            return "config.url".to_owned();
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }

    fn describe(err: &reqwest::Error, target: &str) -> String {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "refused or unreachable"
        } else {
            "failed"
        };
        let mut message = format!("request to {target} {what}");
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }
}
