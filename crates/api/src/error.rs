//! The API's one error type, and its RFC 9457 `application/problem+json` body.
//!
//! Handlers return `Result<_, ApiError>`. The status of each case is decided in
//! [`ApiError::status`], an exhaustive match, so a new case cannot silently become a 500.
//! Server-side failures are logged once, here, inside the request's span; their details never
//! reach the client.
//!
//! A request body with several invalid parts is answered once, listing every part in the
//! problem's `errors` extension member (RFC 9457 §3.2), each with a JSON pointer into the body,
//! so a client can fix all of them in one round trip.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quantumflow_storage::StorageError;
use serde::Serialize;

use crate::auth::AuthProblem;
use crate::signature::SignatureError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request cannot be read: malformed JSON, a body of the wrong shape, a malformed id.
    #[error("{0}")]
    BadRequest(String),

    /// The request body is not in a media type the endpoint reads.
    #[error("{0}")]
    UnsupportedMediaType(String),

    /// The request body is larger than the endpoint accepts.
    #[error("{0}")]
    PayloadTooLarge(String),

    /// The request's target (path and query) is longer than the server reads.
    #[error("{0}")]
    UriTooLong(String),

    /// The request's header section is larger than the server reads.
    #[error("{0}")]
    HeadersTooLarge(String),

    /// The request carries no valid API token.
    #[error("{0}")]
    Unauthorized(AuthProblem),

    /// A webhook delivery's signature is missing or does not verify.
    #[error("{0}")]
    BadSignature(SignatureError),

    /// The resource does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// No route answers this path; the detail names the method and path asked for, and
    /// where the listener's routes are told.
    #[error("{0}")]
    UnknownRoute(String),

    /// The resource exists but does not accept this method; the caller adds an `Allow`
    /// header.
    #[error("{0}")]
    MethodNotAllowed(String),

    /// The request conflicts with the current state, e.g. a duplicate name.
    #[error("{0}")]
    Conflict(String),

    /// The request is well-formed but its content is invalid.
    #[error("{0}")]
    Unprocessable(String),

    /// The request body is well-formed but some of its parts are invalid; each is listed.
    #[error("{}", invalid_summary(.0))]
    Invalid(Vec<FieldError>),

    /// The request, body included, did not finish in the time allowed.
    #[error("the request did not finish within {0:?}; send it again, with its body at once")]
    RequestTimeout(std::time::Duration),

    /// A dependency (the database) cannot serve right now; the client may retry.
    #[error("{0}")]
    Unavailable(String),

    /// A bug or unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An RFC 9457 problem body, sent as `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` means the status says it all.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// Every invalid part of the request body, when a 422 lists them; absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid part of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// RFC 6901 pointer to the part, e.g. `/nodes/2/type`; `""` is the whole body.
    pub pointer: String,
    /// What is wrong with it, in words a user can act on.
    pub detail: String,
}

impl FieldError {
    /// A problem with the part of the body at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

fn invalid_summary(errors: &[FieldError]) -> String {
    match errors.len() {
        1 => "the request has 1 invalid part, listed in `errors`".to_owned(),
        n => format!("the request has {n} invalid parts, listed in `errors`"),
    }
}

impl ApiError {
    /// The status code of each case.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized(_) | Self::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::UnknownRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) | Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The detail of a 503 when the pool handed out no connection within the acquire timeout.
/// Either every connection stayed busy, or none could be opened: sqlx retries a connection the
/// server refuses until the timeout, so the error alone cannot tell which. `/readyz` finds out
/// (see [`crate::health::begin_probe`]).
pub const POOL_EXHAUSTED: &str = "no database connection became free in time: every connection \
     of this server is busy, or the database refuses new ones; retry shortly";

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
            StorageError::Unstorable { detail } => Self::BadRequest(format!(
                "the request holds a value that cannot be stored ({detail}): text may not \
                 contain NUL (\\u0000), and numbers must stay within PostgreSQL's numeric range"
            )),
            err @ StorageError::Unavailable(_) if err.is_pool_exhausted() => {
                Self::Unavailable(POOL_EXHAUSTED.into())
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

impl From<sqlx::Error> for ApiError {
    /// Errors of the pool itself, such as beginning or committing a transaction, mean what
    /// they mean for any storage call.
    fn from(err: sqlx::Error) -> Self {
        StorageError::from(err).into()
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
        let challenge = match &self {
            Self::Unauthorized(problem) => Some(problem.challenge()),
            // A 401 must name a way to authenticate; for a webhook that is its signature.
            Self::BadSignature(_) => Some(r#"Signature realm="webhooks""#),
            _ => None,
        };
        let errors = match self {
            Self::Invalid(errors) => errors,
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::openapi::PROBLEM_JSON),
        );
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
