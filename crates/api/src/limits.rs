//! Limits on the size of a request: its body, its target and its headers.
//!
//! Every route accepts bodies of at most [`crate::AppState::max_body_bytes`]
//! (`--max-body-bytes`, 2 MiB unless configured). A request that declares a larger
//! `Content-Length` is answered 413 before any of its body is read; a body sent without a
//! length (chunked) is read only up to the limit, and answered 413 as soon as it passes it.
//! Either way the handler never runs, so nothing is written.
//!
//! The target (path and query) may be at most [`MAX_URI_BYTES`] long and the header section at
//! most [`MAX_HEADER_COUNT`] fields and [`MAX_HEADER_BYTES`] bytes; longer ones get 414 and 431.
//! hyper has limits of its own, which it answers before any route runs and without a body, but
//! they are far higher (a 64 KiB target, 100 fields, about 400 KiB of head), so that every
//! request a real client might send is answered here, with a problem body that says what to
//! shorten.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The body limit when none is configured: 2 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The longest request target, path and query together, that is read: what common proxies
/// accept by default, so a request that passed one is not refused here.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header fields a request may carry.
pub const MAX_HEADER_COUNT: usize = 64;

/// The most bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Middleware: refuses a request whose target or header section is over the limits above.
pub async fn refuse_oversized_head(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        tracing::info!(target_bytes = target, "request refused: target too long");
        return ApiError::UriTooLong(format!(
            "the request's path and query are {target} bytes long; this server reads at most \
             {MAX_URI_BYTES}: send large data in the body instead"
        ))
        .into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        tracing::info!(
            header_count = headers.len(),
            header_bytes = bytes,
            "request refused: headers too large"
        );
        return ApiError::HeadersTooLarge(format!(
            "the request has {} header fields of {bytes} bytes in all; this server reads at \
             most {MAX_HEADER_COUNT} fields and {MAX_HEADER_BYTES} bytes",
            headers.len()
        ))
        .into_response();
    }
    next.run(request).await
}

/// Middleware: refuses a request whose `Content-Length` exceeds `limit`.
pub async fn refuse_oversized(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > limit as u64
    {
        tracing::info!(
            content_length = length,
            limit,
            "request body refused: too large"
        );
        return too_large(limit).into_response();
    }
    next.run(request).await
}

/// The error for a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the request body is larger than the {limit} bytes this server accepts"
    ))
}
