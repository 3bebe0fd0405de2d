//! The caller's own account: `GET /api/v1/users/me`, and their API tokens under
//! `/api/v1/tokens` (list, create, revoke).
//!
//! A token's secret is in the response that creates it and nowhere else; listings show its
//! name, its first characters and when it was last used, so an owner can tell which one to
//! revoke. A superuser may revoke anyone's token (to cut off a leaked one) but lists only
//! their own.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{Duration, Utc};
use quantumflow_storage::tokens::{self, Token};
use quantumflow_storage::users::{self, User};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Caller};
use crate::extract::{JsonBody, PathId};
use crate::openapi::{
    BadRequest, NotFound, PayloadTooLarge, TokenErrors, Unprocessable, UnsupportedMediaType,
};
use crate::{ApiError, AppState};

/// Longest lifetime a token may be given, in days: ten years, far enough for any real use and
/// short of where date arithmetic could overflow.
const MAX_EXPIRY_DAYS: i64 = 3650;

/// `GET /api/v1/users/me`: the caller's user.
#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    operation_id = "getCurrentUser",
    tag = "tokens",
    security(("bearer" = [])),
    responses((status = OK, description = "The caller's user.", body = User), TokenErrors),
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<User>, ApiError> {
    Ok(Json(users::get(&state.pool, caller.user_id).await?))
}

/// `GET /api/v1/tokens`: the caller's tokens, newest first, revoked ones included.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = OK, description = "The caller's tokens.", body = TokenList),
        (status = BAD_REQUEST, response = BadRequest),
        TokenErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<NoParameters>, QueryRejection>,
) -> Result<Json<TokenList>, ApiError> {
    query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let tokens = tokens::list_for_user(&state.pool, caller.user_id).await?;
    Ok(Json(TokenList { tokens }))
}

/// The query of a listing that takes no parameters: refusing unknown ones, as the other
/// listings do, tells a caller that a filter it relies on does not exist.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

/// The body of `GET /api/v1/tokens`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Newest first.
    pub tokens: Vec<Token>,
}

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for, e.g. `ci-deploy`: 1 to 100 characters.
    pub name: String,
    /// Days until the token stops working by itself; never when absent.
    pub expires_in_days: Option<i64>,
}

/// A token just created, secret included.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token to send as `Authorization: Bearer …`; shown this once.
    pub token: String,
    /// The stored token, as listings show it.
    #[serde(flatten)]
    pub stored: Token,
}

/// `POST /api/v1/tokens`: a new token for the caller. Answers 201 with the secret.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "createToken",
    tag = "tokens",
    security(("bearer" = [])),
    request_body = CreateToken,
    responses(
        (
            status = CREATED,
            description = "The token, with its secret shown this once.",
            body = CreatedToken,
            headers(("Location" = String, description = "Where the token is revoked.")),
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNSUPPORTED_MEDIA_TYPE, response = UnsupportedMediaType),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        TokenErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<impl IntoResponse, ApiError> {
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_EXPIRY_DAYS) => Some(Utc::now() + Duration::days(days)),
        Some(_) => {
            return Err(ApiError::Unprocessable(format!(
                "expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}"
            )));
        }
    };
    let issued = auth::issue(&state.pool, caller.user_id, &body.name, expires_at).await?;
    tracing::info!(token.id = %issued.token.id, "API token created");
    let location = format!("/api/v1/tokens/{}", issued.token.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedToken {
            token: issued.secret,
            stored: issued.token,
        }),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens (anyone's, for a
/// superuser). Answers 204, also for a token revoked before; another user's token is a 404.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    operation_id = "revokeToken",
    tag = "tokens",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The token's id.")),
    responses(
        (status = NO_CONTENT, description = "The token no longer works."),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    tokens::revoke(&state.pool, id, caller.owner_filter()).await?;
    tracing::info!(token.id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
