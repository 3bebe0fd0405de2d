//! The W3C trace context an execution runs under.
//!
//! The control plane opens a span for each execution it starts and stores that span's context
//! on the execution's row. Workers read it back for every node run, so node runs on any
//! worker, retries and successors included, become children of that one span, however long
//! the execution takes and however its jobs move between processes.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The longest `tracestate` kept; the W3C recommendation is that carriers propagate at least
/// this much, and the column holds no more.
pub const MAX_TRACESTATE: usize = 512;

/// Records the trace id of `span` in its `trace_id` field, which it must declare, so that log
/// lines written under it name the trace. Does nothing when the span is on no trace.
pub fn record_trace_id(span: &tracing::Span) {
    let cx = span.context();
    let trace = cx.span();
    let trace = trace.span_context();
    if trace.is_valid() {
        span.record("trace_id", tracing::field::display(trace.trace_id()));
    }
}

/// A span's context in its W3C text form: the `traceparent` and `tracestate` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `version-traceid-spanid-flags`, as in the `traceparent` header.
    pub traceparent: String,
    /// Vendor entries inherited from the caller, as in the `tracestate` header.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of `span`; none when the span is on no trace, which is always the case when
    /// trace export is off.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        Self::of_context(&span.context())
    }

    /// The span context `cx` carries, such as a caller's remote one; none when it is on no
    /// trace.
    pub fn of_context(cx: &opentelemetry::Context) -> Option<Self> {
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut carrier);
        let traceparent = carrier.remove("traceparent")?;
        // A longer state is dropped rather than cut, since cutting could split an entry.
        let tracestate = carrier
            .remove("tracestate")
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE);
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// Stored columns back as a context; none without a `traceparent`.
    pub fn from_columns(traceparent: Option<String>, tracestate: Option<String>) -> Option<Self> {
        Some(Self {
            traceparent: traceparent?,
            tracestate,
        })
    }

    /// The remote parent this context describes, for [`OpenTelemetrySpanExt::set_parent`]. A
    /// malformed `traceparent` gives an empty context, under which a span starts a new trace.
    pub fn parent(&self) -> opentelemetry::Context {
        let mut carrier = HashMap::with_capacity(2);
        carrier.insert("traceparent".to_owned(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            carrier.insert("tracestate".to_owned(), state.clone());
        }
        TraceContextPropagator::new().extract(&carrier)
    }
}
