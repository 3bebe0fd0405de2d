//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! [`crate::routes`] registers each handler with axum and with the document in one step, so a
//! route's path and methods are written once, in its annotation. This module adds what is
//! shared by all of them: the document's header, the bearer security scheme, and the error
//! responses every route refers to by name, each an RFC 9457 [`Problem`] sent as
//! `application/problem+json`, and on every operation the answers any request may get whatever
//! its route ([`answers_of_every_route`]).
//!
//! Types only ever serialized mark their `Option` fields `#[schema(required = true)]`: serde
//! writes `None` as `null`, so the field is always there, while utoipa would call it optional.
//!
//! The document is served at `GET /api/v1/openapi.json` and committed as `docs/openapi.json`
//! (written by `cargo xtask openapi`); a test fails when the two differ.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{self, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};

use crate::error::{FieldError, Problem};

/// The name routes use to require an API token: `security(("bearer" = []))`.
pub const BEARER: &str = "bearer";

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What the document says before its paths: title, version, the security scheme and the
/// shared error responses. The paths come from [`crate::routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "QuantumFlow API",
        description = "Workflows, their executions, connectors and API tokens. Every `/api/v1` \
            route but this document and its page needs `Authorization: Bearer <token>`; errors \
            are RFC 9457 problem bodies (`application/problem+json`).",
    ),
    paths(crate::triggers::webhook),
    components(
        schemas(Problem, FieldError),
        responses(
            crate::triggers::Accepted,
            BadRequest,
            Unauthorized,
            BadSignature,
            NotFound,
            MethodNotAllowed,
            Conflict,
            RequestTimeout,
            PayloadTooLarge,
            UriTooLong,
            HeadersTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Internal,
            Unavailable,
        ),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "workflows", description = "Workflow definitions and their lifecycle."),
        (name = "executions", description = "Runs of workflows and of their nodes."),
        (name = "connectors", description = "Access to services, with sealed credentials."),
        (name = "tokens", description = "The caller's account and API tokens."),
        (name = "triggers", description = "Starting executions by webhook or by id."),
        (name = "health", description = "Liveness and readiness probes."),
        (name = "documentation", description = "This document and its interactive page."),
    ),
)]
pub struct ApiDoc;

/// Adds the bearer security scheme that protected routes name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API token (`qf_` and 64 hexadecimal digits), created with `quantumflow token \
             create` or `POST /api/v1/tokens`."
                .to_owned(),
        );
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// The whole document, built once.
pub fn document() -> &'static openapi::OpenApi {
    static DOCUMENT: OnceLock<openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = crate::routes().into_openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        one_id_per_method(&mut doc);
        answers_of_every_route(&mut doc);
        doc
    })
}

/// Gives each method of a handler that serves several its own operation id, since OpenAPI wants
/// ids unique: the webhook's `triggerWebhook` becomes `triggerWebhookGet`, `triggerWebhookPost`
/// and so on.
fn one_id_per_method(doc: &mut openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let mut operations = operations_mut(item);
        let ids: Vec<String> = operations
            .iter()
            .filter_map(|(_, op)| op.as_ref()?.operation_id.clone())
            .collect();
        for (method, operation) in &mut operations {
            let Some(id) = operation.as_mut().and_then(|op| op.operation_id.as_mut()) else {
                continue;
            };
            if ids.iter().filter(|other| *other == id).count() > 1 {
                id.push_str(method);
            }
        }
    }
}

/// Each operation slot of a path item, with its method's name as it ends an operation id.
fn operations_mut(
    item: &mut openapi::PathItem,
) -> [(&'static str, &mut Option<openapi::path::Operation>); 8] {
    [
        ("Get", &mut item.get),
        ("Put", &mut item.put),
        ("Post", &mut item.post),
        ("Delete", &mut item.delete),
        ("Options", &mut item.options),
        ("Head", &mut item.head),
        ("Patch", &mut item.patch),
        ("Trace", &mut item.trace),
    ]
}

/// Adds to every operation the answers that come from the layers around all routes rather than
/// from its handler: another method on the path (405), a request that runs out of time (408),
/// a body over the limit (413), and a target or header section over the limits (414, 431).
fn answers_of_every_route(doc: &mut openapi::OpenApi) {
    let shared = [
        refer::<MethodNotAllowed>("405"),
        refer::<RequestTimeout>("408"),
        refer::<PayloadTooLarge>("413"),
        refer::<UriTooLong>("414"),
        refer::<HeadersTooLarge>("431"),
    ];
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item)
            .into_iter()
            .filter_map(|(_, op)| op.as_mut())
        {
            for (status, response) in &shared {
                operation
                    .responses
                    .responses
                    .entry(status.clone())
                    .or_insert_with(|| response.clone());
            }
        }
    }
}

/// The document as served and committed: pretty-printed JSON ending in a newline.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document()
            .to_pretty_json()
            .expect("an OpenAPI document always serializes");
        text.push('\n');
        text
    })
}

/// `GET /api/v1/openapi.json`: this document. Public, so tools can read it without a token.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "documentation",
    responses((
        status = OK,
        description = "The OpenAPI 3.1 document.",
        content_type = "application/json",
    )),
)]
pub async fn serve_document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

/// The request cannot be read: malformed JSON, a body or query of the wrong shape, or an id in
/// the path that is not a UUID.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(pub Problem);

/// The request carries no valid API token.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "The bearer challenge (RFC 6750)."))
)]
pub struct Unauthorized(pub Problem);

/// A signed webhook's signature is missing, malformed, stale or matches no secret.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Signature realm=\"webhooks\"`."))
)]
pub struct BadSignature(pub Problem);

/// The resource does not exist, or belongs to another user.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The path exists but does not accept this method.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Allow" = String, description = "The methods the path accepts."))
)]
pub struct MethodNotAllowed(pub Problem);

/// The request conflicts with the resource's current state.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// The request, body included, did not arrive in full within the time allowed (30 s).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct RequestTimeout(pub Problem);

/// The request body is larger than the server accepts (`--max-body-bytes`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The path and query are longer than the server reads (8 KiB).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UriTooLong(pub Problem);

/// The header section has more fields (64) or bytes (32 KiB) than the server reads.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct HeadersTooLarge(pub Problem);

/// The request body is not `application/json`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The request is well-formed but its content breaks a rule; a body with several invalid
/// parts lists each in `errors`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Unprocessable(pub Problem);

/// An unexpected failure; its details are in the server's log only.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Internal(pub Problem);

/// The database cannot serve right now, or too many triggers are waiting; retry later.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
)]
pub struct Unavailable(pub Problem);

/// The errors any route that reads the database may answer: 500 and 503.
pub struct DatabaseErrors;

impl IntoResponses for DatabaseErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        BTreeMap::from([refer::<Internal>("500"), refer::<Unavailable>("503")])
    }
}

/// The errors any route behind a token may answer: 401, and those of [`DatabaseErrors`],
/// since the token is looked up in the database.
pub struct TokenErrors;

impl IntoResponses for TokenErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        let mut responses = DatabaseErrors::responses();
        responses.extend([refer::<Unauthorized>("401")]);
        responses
    }
}

/// A reference to the shared response `R` under `status`.
fn refer<'r, R: ToResponse<'r>>(status: &str) -> (String, RefOr<openapi::Response>) {
    let (name, _) = R::response();
    (status.to_owned(), RefOr::Ref(Ref::from_response_name(name)))
}
