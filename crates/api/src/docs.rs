//! The interactive API page: `GET /api/v1/docs`, Swagger UI reading `/api/v1/openapi.json`.
//!
//! Every file the page loads is compiled into the binary (Swagger UI is vendored from the npm
//! package `swagger-ui-dist`, see `assets/swagger-ui/README.md`), so the page works on a
//! server without internet access. Its Content-Security-Policy allows this server only: the
//! page cannot load or send anything elsewhere, whatever a document it renders contains.

use axum::extract::Path;
use axum::http::{HeaderName, header};
use axum::response::IntoResponse;

use crate::ApiError;

/// Allows scripts, styles, images and requests from this server only, and no framing by
/// others.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'self'; \
     form-action 'self'; frame-ancestors 'self'";

const PAGE: &[u8] = include_bytes!("../assets/docs.html");

/// The files the page loads, by the name it loads them with, with their media types.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/docs.js"),
    ),
];

/// `GET /api/v1/docs`: the interactive page. Public, like the document it shows.
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    operation_id = "getDocsPage",
    tag = "documentation",
    responses((status = OK, description = "The page.", content_type = "text/html")),
)]
pub async fn page() -> impl IntoResponse {
    file("text/html; charset=utf-8", PAGE)
}

/// `GET /api/v1/docs/{file}`: a script or stylesheet of the page.
#[utoipa::path(
    get,
    path = "/api/v1/docs/{file}",
    operation_id = "getDocsAsset",
    tag = "documentation",
    params(("file" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css` or \
        `docs.js`.")),
    responses(
        (status = OK, description = "The file.", content(("text/javascript"), ("text/css"))),
        (status = NOT_FOUND, response = crate::openapi::NotFound),
    ),
)]
pub async fn asset(Path(name): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let (_, media_type, bytes) = ASSETS
        .iter()
        .find(|(known, _, _)| *known == name)
        .ok_or(ApiError::NotFound("documentation file"))?;
    Ok(file(media_type, bytes))
}

fn file(media_type: &'static str, bytes: &'static [u8]) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 3] = [
        (header::CONTENT_TYPE, media_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, bytes)
}
