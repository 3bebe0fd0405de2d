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
    let traceparent = headers.get("traceparent")?;
    // The SDK's parser is lenient: it reads `00-1-1-01` or upper-case hex as a trace id of its
    // own making, which would put the request on a trace the caller never had.
    if !traceparent.to_str().is_ok_and(valid_traceparent) {
        return Some(opentelemetry::Context::new());
    }
    Some(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
}

/// Whether `value` is a `traceparent` as W3C Trace Context defines it: lower-case hex fields
/// of fixed width, a version other than `ff`, ids not all zero, and exactly four fields in
/// version `00`. A later version may add fields after the flags, each after a `-`.
fn valid_traceparent(value: &str) -> bool {
    let mut fields = value.split('-');
    let mut next = |width: usize| {
        fields.next().filter(|f| {
            f.len() == width && f.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    };
    let (Some(version), Some(trace_id), Some(span_id), Some(_flags)) =
        (next(2), next(32), next(16), next(2))
    else {
        return false;
    };
    let zero = |id: &str| id.bytes().all(|b| b == b'0');
    version != "ff"
        && !zero(trace_id)
        && !zero(span_id)
        && (version != "00" || fields.next().is_none())
}

/// The caller's trace context as it arrived, for an execution that has no span of its own on a
/// trace (export is off): stored and passed on unchanged, as OpenTelemetry does without an
/// exporter, so the services its nodes call still join the caller's trace. None without a
/// readable `traceparent`.
pub fn caller_context(headers: &HeaderMap) -> Option<TraceContext> {
    TraceContext::of_context(&remote_parent(headers)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn parent(traceparent: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        caller_context(&headers).map(|cx| cx.traceparent)
    }

    #[test]
    fn a_well_formed_traceparent_is_continued() {
        assert_eq!(parent(VALID).as_deref(), Some(VALID));
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert_eq!(parent(unsampled).as_deref(), Some(unsampled));
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-whatever";
        assert!(valid_traceparent(later));
        assert!(valid_traceparent(&later[..55]));
        assert!(parent(later).is_some());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let malformed = [
            "00-1-1-01",
            // A 31-digit trace id, a 15-digit span id.
            "00-af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-7ad6b7169203331-01",
            "+0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            // Version 00 has exactly four fields.
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
            "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "",
        ];
        for value in malformed {
            assert!(!valid_traceparent(value), "{value:?} passed");
            assert_eq!(parent(value), None, "{value:?} was continued");
        }
    }
}
