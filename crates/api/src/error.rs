//! The API's one error type, and its RFC 9457 `application/problem+json` body.
//!
//! Handlers return `Result<_, ApiError>`. The status of each case is decided in
//! [`ApiError::status`], an exhaustive match, so a new case cannot silently become a 500.
//! Server-side failures are logged once, here, inside the request's span; their details never
//! reach the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quantumflow_storage::StorageError;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The resource does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// The request conflicts with the current state, e.g. a duplicate name.
    #[error("{0}")]
    Conflict(String),

    /// The request is well-formed but its content is invalid.
    #[error("{0}")]
    Unprocessable(String),

    /// A dependency (the database) cannot serve right now; the client may retry.
    #[error("{0}")]
    Unavailable(String),

    /// A bug or unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An RFC 9457 problem body.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` means the status says it all.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
}

impl ApiError {
    /// The status code of each case.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound { entity } => Self::NotFound(entity),
            StorageError::Conflict { constraint } => Self::Conflict(format!(
                "conflicts with an existing resource ({constraint})"
            )),
            StorageError::Invalid { constraint } => {
                Self::Unprocessable(format!("violates the rule {constraint}"))
            }
            StorageError::Unavailable(_) => {
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            err @ (StorageError::Corrupt { .. } | StorageError::Other(_)) => {
                Self::Internal(Box::new(err))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Internal(source) => {
                tracing::error!(error.message = %source, error.source = ?source.source(), "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
