//! Connectors as resources: `GET`/`POST /api/v1/connectors` and `GET`/`PUT`/`DELETE
//! /api/v1/connectors/{id}`.
//!
//! Credentials go in and never come out. They are sealed with the control plane's active key
//! before they are written, with the connector's id as associated data, which is why the id is
//! chosen here rather than by the database. Responses say only whether credentials are set. A
//! control plane without keys still serves every connector route, but refuses to store
//! non-empty credentials (503), since it could only store them in clear.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use quantumflow_storage::connectors::{self, Connector, ConnectorUpdate, NewConnector};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::FieldError;
use crate::extract::{JsonBody, PathId};
use crate::openapi::{
    BadRequest, NotFound, PayloadTooLarge, TokenErrors, Unavailable, Unprocessable,
    UnsupportedMediaType,
};
use crate::{ApiError, AppState};

/// Where connectors live; the `Location` of a created one is this followed by its id.
const COLLECTION: &str = "/api/v1/connectors";

/// Longest connector name, in characters (`VARCHAR(255)` in the schema).
const NAME_MAX_CHARS: usize = 255;

/// Longest connector type, in characters (`VARCHAR(50)` in the schema).
const TYPE_MAX_CHARS: usize = 50;

/// The body of `POST /api/v1/connectors` and `PUT /api/v1/connectors/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDocument {
    /// Display name: not blank, at most 255 characters.
    pub name: String,
    /// The kind of service, e.g. `slack`: lowercase letters, digits, `_` and `-`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: Option<String>,
    /// Non-secret settings, an object; `{}` when absent.
    pub config: Option<Value>,
    /// Secret settings, an object. Absent on create means none; absent on replace keeps the
    /// stored ones.
    pub credentials: Option<Value>,
    /// Whether nodes may use it; `true` when absent.
    pub is_active: Option<bool>,
}

/// The query of `GET /api/v1/connectors`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only connectors of this type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// The body of `GET /api/v1/connectors`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorList {
    /// Newest first.
    pub connectors: Vec<Connector>,
}

/// The `{id}` of a connector's routes, as the OpenAPI document describes it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct ConnectorId(
    /// The connector's id.
    pub Uuid,
);

/// A document that passed [`check`].
struct Checked<'a> {
    config: Value,
    /// `None` when absent; `Some({})` clears them.
    credentials: Option<&'a Value>,
}

/// `GET /api/v1/connectors`: the caller's connectors (everyone's, for a superuser), newest
/// first, optionally of one `type`.
#[utoipa::path(
    get,
    path = "/api/v1/connectors",
    operation_id = "listConnectors",
    tag = "connectors",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = OK, description = "The connectors, newest first.", body = ConnectorList),
        (status = BAD_REQUEST, response = BadRequest),
        TokenErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConnectorList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let connectors =
        connectors::list(&state.pool, caller.owner_filter(), query.kind.as_deref()).await?;
    Ok(Json(ConnectorList { connectors }))
}

/// `POST /api/v1/connectors`: creates a connector owned by the caller. Answers 201 with it and
/// its `Location`.
#[utoipa::path(
    post,
    path = "/api/v1/connectors",
    operation_id = "createConnector",
    tag = "connectors",
    security(("bearer" = [])),
    request_body = ConnectorDocument,
    responses(
        (
            status = CREATED,
            description = "The stored connector, without its credentials.",
            body = Connector,
            headers(("Location" = String, description = "Where the connector can be read.")),
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNSUPPORTED_MEDIA_TYPE, response = UnsupportedMediaType),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        (status = SERVICE_UNAVAILABLE, response = Unavailable),
        TokenErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(document): JsonBody<ConnectorDocument>,
) -> Result<impl IntoResponse, ApiError> {
    let checked = check(&document).map_err(ApiError::Invalid)?;
    let id = Uuid::now_v7();
    let credentials = match checked.credentials {
        Some(clear) => seal(&state, id, clear)?,
        None => Value::Object(Map::new()),
    };
    let connector = connectors::insert(
        &state.pool,
        &NewConnector {
            id,
            name: document.name.trim(),
            kind: &document.kind,
            description: document.description.as_deref(),
            config: &checked.config,
            credentials: &credentials,
            is_active: document.is_active.unwrap_or(true),
            test_status: None,
            owner_id: caller.user_id,
        },
    )
    .await?;
    tracing::info!(connector.id = %id, connector.r#type = %connector.kind, "connector created");
    let location = format!("{COLLECTION}/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(connector),
    ))
}

/// `GET /api/v1/connectors/{id}`: one connector, without its credentials.
#[utoipa::path(
    get,
    path = "/api/v1/connectors/{id}",
    operation_id = "getConnector",
    tag = "connectors",
    security(("bearer" = [])),
    params(ConnectorId),
    responses(
        (status = OK, description = "The connector, without its credentials.", body = Connector),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<Connector>, ApiError> {
    Ok(Json(caller.connector(&state.pool, id).await?))
}

/// `PUT /api/v1/connectors/{id}`: replaces a connector's settings; credentials left out of
/// the body stay as they are.
#[utoipa::path(
    put,
    path = "/api/v1/connectors/{id}",
    operation_id = "replaceConnector",
    tag = "connectors",
    security(("bearer" = [])),
    params(ConnectorId),
    request_body = ConnectorDocument,
    responses(
        (
            status = OK,
            description = "The stored connector, without its credentials.",
            body = Connector,
        ),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        (status = PAYLOAD_TOO_LARGE, response = PayloadTooLarge),
        (status = UNSUPPORTED_MEDIA_TYPE, response = UnsupportedMediaType),
        (status = UNPROCESSABLE_ENTITY, response = Unprocessable),
        (status = SERVICE_UNAVAILABLE, response = Unavailable),
        TokenErrors,
    ),
)]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonBody(document): JsonBody<ConnectorDocument>,
) -> Result<Json<Connector>, ApiError> {
    caller.connector(&state.pool, id).await?;
    let checked = check(&document).map_err(ApiError::Invalid)?;
    let credentials = checked
        .credentials
        .map(|clear| seal(&state, id, clear))
        .transpose()?;
    let connector = connectors::update(
        &state.pool,
        id,
        &ConnectorUpdate {
            name: document.name.trim(),
            kind: &document.kind,
            description: document.description.as_deref(),
            config: &checked.config,
            credentials: credentials.as_ref(),
            is_active: document.is_active.unwrap_or(true),
            updated_by: caller.user_id,
        },
    )
    .await?;
    tracing::info!(
        connector.id = %id,
        credentials_replaced = credentials.is_some(),
        "connector replaced"
    );
    Ok(Json(connector))
}

/// `DELETE /api/v1/connectors/{id}`: removes a connector. Answers 204; nodes naming it fail
/// from then on.
#[utoipa::path(
    delete,
    path = "/api/v1/connectors/{id}",
    operation_id = "deleteConnector",
    tag = "connectors",
    security(("bearer" = [])),
    params(ConnectorId),
    responses(
        (status = NO_CONTENT, description = "The connector is deleted."),
        (status = BAD_REQUEST, response = BadRequest),
        (status = NOT_FOUND, response = NotFound),
        TokenErrors,
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    caller.connector(&state.pool, id).await?;
    connectors::delete(&state.pool, id).await?;
    tracing::info!(connector.id = %id, "connector deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// What to store for `clear` credentials of the connector `id`: `{}` as it is, anything else
/// sealed with the active key, which this control plane must have.
fn seal(state: &AppState, id: Uuid, clear: &Value) -> Result<Value, ApiError> {
    if quantumflow_secrets::is_empty(clear) {
        return Ok(Value::Object(Map::new()));
    }
    let keyring = state.keyring.as_deref().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "this control plane has no key to encrypt credentials with; set {} to a \
             `kid:base64-key` entry (print one with `quantumflow keys generate`) and restart it",
            quantumflow_secrets::KEYS_VAR
        ))
    })?;
    keyring
        .seal(id, clear)
        .map_err(|err| ApiError::Internal(Box::new(err)))
}

/// Checks a document and returns every problem found, in body order.
fn check(document: &ConnectorDocument) -> Result<Checked<'_>, Vec<FieldError>> {
    let mut problems = Vec::new();

    let name = document.name.trim();
    if name.is_empty() {
        problems.push(FieldError::new("/name", "must not be empty"));
    } else if name.chars().count() > NAME_MAX_CHARS {
        problems.push(FieldError::new(
            "/name",
            format!("must be at most {NAME_MAX_CHARS} characters long"),
        ));
    }
    let kind = &document.kind;
    let kind_ok = (1..=TYPE_MAX_CHARS).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !kind_ok {
        problems.push(FieldError::new(
            "/type",
            format!(
                "must be 1 to {TYPE_MAX_CHARS} characters of lowercase letters, digits, `_` and \
                 `-`, such as \"slack\" or \"http\""
            ),
        ));
    }
    let config = match &document.config {
        None => Value::Object(Map::new()),
        Some(config @ Value::Object(_)) => config.clone(),
        Some(_) => {
            problems.push(FieldError::new("/config", "must be an object"));
            Value::Null
        }
    };
    let credentials = document.credentials.as_ref();
    match credentials {
        None | Some(Value::Object(_)) => {}
        Some(_) => problems.push(FieldError::new(
            "/credentials",
            "must be an object of named secrets, such as {\"token\": \"…\"}",
        )),
    }
    if let Some(Value::Object(map)) = credentials
        && map.keys().any(|name| name.trim().is_empty())
    {
        problems.push(FieldError::new(
            "/credentials",
            "every credential needs a non-blank name",
        ));
    }

    if problems.is_empty() {
        Ok(Checked {
            config,
            credentials,
        })
    } else {
        Err(problems)
    }
}
