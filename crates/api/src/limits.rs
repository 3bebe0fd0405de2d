//! The request body limit.
//!
//! Every route accepts bodies of at most [`crate::AppState::max_body_bytes`]
//! (`--max-body-bytes`, 2 MiB unless configured). A request that declares a larger
//! `Content-Length` is answered 413 before any of its body is read; a body sent without a
//! length (chunked) is read only up to the limit, and answered 413 as soon as it passes it.
//! Either way the handler never runs, so nothing is written.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The body limit when none is configured: 2 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

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
