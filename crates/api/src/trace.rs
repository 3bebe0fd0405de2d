//! Reading the W3C trace context (`traceparent`, `tracestate`) a request arrives with.

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use quantumflow_engine::TraceContext;

/// The caller's span, when the request names one. Without a `traceparent` header nothing is
/// parsed, which keeps the common case free; a header that cannot be read gives an empty
/// context, under which the request's span starts a new trace.
pub fn remote_parent(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    Some(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
}

/// The caller's trace context as it arrived, for an execution that has no span of its own on a
/// trace (export is off): stored and passed on unchanged, as OpenTelemetry does without an
/// exporter, so the services its nodes call still join the caller's trace. None without a
/// readable `traceparent`.
pub fn caller_context(headers: &HeaderMap) -> Option<TraceContext> {
    TraceContext::of_context(&remote_parent(headers)?)
}
