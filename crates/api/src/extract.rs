//! Extractors whose rejections are [`ApiError`]s, so a bad request body or path is answered
//! with a problem+json body like every other error, never with axum's plain-text rejection.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{ApiError, AppState, limits};

/// A request body as sent, read up to the body limit.
///
/// A body that passes the limit while it is being read (one sent without a `Content-Length`)
/// is a 413 like one that declares too large a length.
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(limits::too_large(state.max_body_bytes))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// A JSON request body read into `T`.
///
/// A body that is not JSON, or JSON of the wrong shape, is a 400 whose detail says what was
/// wrong and where (serde's message with the path to the offending field).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(detail),
        // axum answers a body of the wrong shape with 422; here 422 is kept for documents
        // that parse but break a rule, so every shape error is a 400.
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest(detail)
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(detail)
        }
        _ => ApiError::BadRequest(detail),
    }
}

/// The `{id}` segment of a path, which must be a UUID.
///
/// Anything else is a 400 saying so, rather than a 404: the client made a mistake in writing
/// the URL, and no resource could ever have that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId(pub Uuid);

impl<S> FromRequestParts<S> for PathId
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        Uuid::try_parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::BadRequest(format!("the id {raw:?} in the path is not a UUID")))
    }
}
