//! QuantumFlow's control plane: the HTTP API, built as an axum [`Router`].
//!
//! [`router`] builds the whole application from an [`AppState`], so tests drive it without a
//! socket and the binary serves it with [`serve`]. Every error leaves through [`ApiError`],
//! which maps each case to its status and an RFC 9457 problem body; so do requests no route
//! answers (404) and methods a route does not accept (405, with `Allow`).
//!
//! The routes and the OpenAPI document are built together by [`routes`]: each handler's
//! `#[utoipa::path]` annotation names its path and methods, and `routes!` registers the handler
//! with axum and its operation with the document in one step.
//!
//! # Layout
//!
//! - [`auth`]: API tokens, the `Caller` every `/api/v1` handler takes, password hashing.
//! - [`connectors`]: connectors and their sealed credentials (`/api/v1/connectors`).
//! - [`docs`]: the interactive API page (`/api/v1/docs`) and its vendored files.
//! - [`documents`]: workflow documents cached for starting executions.
//! - [`error`]: `ApiError` and the problem+json body.
//! - [`extract`]: request extractors that reject with `ApiError`.
//! - [`health`]: liveness and readiness probes.
//! - [`limits`]: the request body limit.
//! - [`meters`]: metrics of the trigger routes.
//! - [`openapi`]: the OpenAPI document (`/api/v1/openapi.json`) and its shared parts.
//! - [`paging`]: the `limit` and page cutting shared by the listings.
//! - [`signature`]: checking signed webhook deliveries.
//! - [`starter`]: committing accepted triggers in groups.
//! - [`tokens`]: the caller's account and API tokens (`/api/v1/users/me`, `/api/v1/tokens`).
//! - [`trace`]: reading the W3C trace context a request arrives with.
//! - [`workflows`]: creating, listing, reading and replacing workflows (`/api/v1/workflows`).
//! - [`executions`]: reading executions and their node runs (`/api/v1/executions`).

pub mod auth;
pub mod connectors;
pub mod docs;
pub mod documents;
pub mod error;
pub mod executions;
pub mod extract;
pub mod health;
pub mod limits;
pub mod meters;
pub mod openapi;
pub mod paging;
pub mod signature;
pub mod starter;
pub mod tokens;
pub mod trace;
pub mod triggers;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{Method, Request, Response, Uri};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::any;
use quantumflow_secrets::Keyring;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

/// How long one request may take before it is answered with 408, unless the state says
/// otherwise; keeps a graceful shutdown from waiting forever on a stuck client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Workflow documents for starting executions.
    pub documents: Arc<documents::Documents>,
    /// Where accepted triggers go to be committed.
    pub starter: starter::Starter,
    /// Seals connector credentials; without it, non-empty credentials cannot be stored.
    pub keyring: Option<Arc<Keyring>>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long one request may take, body included, before it is answered with 408.
    pub request_timeout: Duration,
    /// Set when the process begins to shut down, making `/readyz` answer 503.
    pub draining: health::Draining,
}

impl AppState {
    /// State for handlers using `pool`, with an empty document cache, the writers of accepted
    /// triggers spawned on the current runtime, and bodies of up to
    /// [`limits::DEFAULT_MAX_BODY_BYTES`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            starter: starter::Starter::spawn(&pool),
            pool,
            documents: Arc::default(),
            keyring: None,
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            request_timeout: REQUEST_TIMEOUT,
            draining: health::Draining::default(),
        }
    }

    /// The state with `keyring` for sealing connector credentials.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// The same state, accepting request bodies of up to `bytes`.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The same state, giving each request `timeout` to finish.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// Every route, with its operation in the OpenAPI document.
///
/// A route is added here once, as `.routes(routes!(handler))`, with its path and methods in the
/// handler's `#[utoipa::path]`; handlers sharing a path go in one `routes!`. A test fails when
/// the router serves a path or method the document does not describe.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(workflows::list, workflows::create))
        .routes(routes!(
            workflows::show,
            workflows::replace,
            workflows::remove
        ))
        .routes(routes!(workflows::versions))
        .routes(routes!(workflows::activate))
        .routes(routes!(workflows::pause))
        .routes(routes!(workflows::archive))
        .routes(routes!(executions::list, triggers::execute))
        .routes(routes!(executions::show))
        .routes(routes!(connectors::list, connectors::create))
        .routes(routes!(
            connectors::show,
            connectors::replace,
            connectors::remove
        ))
        .routes(routes!(tokens::me))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(openapi::serve_document))
        .routes(routes!(docs::page))
        .routes(routes!(docs::asset))
        // Webhooks answer any method, which an OpenAPI path item cannot express, so this route
        // is registered by hand; `openapi::ApiDoc` documents it with the methods a trigger may
        // listen for.
        .route("/webhook/{*path}", any(triggers::webhook))
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let request_timeout = state.request_timeout;
    let (router, _) = routes().split_for_parts();
    router
        .fallback(unknown_route)
        // Applies to the routes added so far, so it comes after all of them.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Extractors that read a body stop at the limit, which covers bodies sent without a
        // length; the middleware refuses a declared length over it before reading anything.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            limits::refuse_oversized,
        ))
        .layer(middleware::from_fn(limits::refuse_oversized_head))
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        // Outside the limits, so triggers answered 408 or 413 are counted too.
        .layer(middleware::from_fn(meters::measure))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status)
                // A 503 while draining or during an outage is expected, and a 500 is logged
                // once, with its cause, by `ApiError`; an ERROR line per answer would bury it.
                .on_failure(()),
        )
}

/// Routes that orchestrators call on a timer.
const PROBE_ROUTES: [&str; 2] = ["/healthz", "/readyz"];

/// The span of one request, named and with fields as OpenTelemetry's HTTP server conventions
/// have them. A W3C `traceparent` sent with the request becomes its parent; one that cannot be
/// read is ignored, and the request starts a trace of its own.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    // A span's level is fixed where it is written, hence one callsite per level.
    macro_rules! span_at {
        ($level:expr) => {
            tracing::span!(
                $level,
                "http.request",
                otel.name = name,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = method,
                http.route = route.unwrap_or("unmatched"),
                http.response.status_code = tracing::field::Empty,
                user.id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            )
        };
    }
    // Probes come every few seconds from every orchestrator and load balancer: at
    // debug level they are neither exported as traces nor logged, unless RUST_LOG asks.
    let span = if route.is_some_and(|route| PROBE_ROUTES.contains(&route)) {
        span_at!(tracing::Level::DEBUG)
    } else {
        span_at!(tracing::Level::INFO)
    };
    if let Some(parent) = trace::remote_parent(request.headers()) {
        // Fails only when no OpenTelemetry layer is installed, and then there is no trace to
        // join.
        let _ = span.set_parent(parent);
    }
    quantumflow_engine::trace::record_trace_id(&span);
    span
}

/// Records the status on the request's span; server errors mark the span as failed, client
/// errors do not, as the conventions say.
fn record_status<B>(response: &Response<B>, _latency: Duration, span: &tracing::Span) {
    let status = response.status();
    // As i64: tracing-opentelemetry has no unsigned form and would export a u16 as a string.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// Gives up on a request that takes longer than `limit`, body included, and answers 408 with
/// a problem body; tower-http's timeout answers with an empty one.
///
/// A trigger whose execution is being committed when the limit comes is not cut off: its
/// sender is told the outcome, since a 408 would make it send again what was written. The
/// request's [`starter::Ticket`] settles which side answers.
async fn time_limit(
    State(limit): State<Duration>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let ticket = starter::Ticket::new(std::time::Instant::now() + limit);
    request.extensions_mut().insert(ticket.clone());
    let response = next.run(request);
    tokio::pin!(response);
    match tokio::time::timeout(limit, &mut response).await {
        Ok(response) => response,
        Err(_) if !ticket.abandon() => response.await,
        Err(_) => ApiError::RequestTimeout(limit).into_response(),
    }
}

/// Answers a request that no route matches.
async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::UnknownRoute(format!(
        "no route answers {method} {}; the API's routes are listed at /api/v1/openapi.json",
        uri.path()
    ))
}

/// Answers a request whose path a route matches but whose method it does not accept; axum adds
/// the `Allow` header listing the methods it does.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not accept {method}; the Allow header lists the methods it does",
        uri.path()
    ))
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
