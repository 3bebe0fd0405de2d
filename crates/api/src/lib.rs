//! QuantumFlow's control plane: the HTTP API, built as an axum [`Router`].
//!
//! [`router`] builds the whole application from an [`AppState`], so tests drive it without a
//! socket and the binary serves it with [`serve`]. Every error leaves through [`ApiError`],
//! which maps each case to its status and an RFC 9457 problem body.
//!
//! # Layout
//!
//! - [`auth`]: API tokens, the `Caller` every `/api/v1` handler takes, password hashing.
//! - [`connectors`]: connectors and their sealed credentials (`/api/v1/connectors`).
//! - [`documents`]: workflow documents cached for starting executions.
//! - [`error`]: `ApiError` and the problem+json body.
//! - [`extract`]: request extractors that reject with `ApiError`.
//! - [`health`]: liveness and readiness probes.
//! - [`limits`]: the request body limit.
//! - [`paging`]: the `limit` and page cutting shared by the listings.
//! - [`signature`]: checking signed webhook deliveries.
//! - [`starter`]: committing accepted triggers in groups.
//! - [`tokens`]: the caller's account and API tokens (`/api/v1/users/me`, `/api/v1/tokens`).
//! - [`workflows`]: creating, listing, reading and replacing workflows (`/api/v1/workflows`).
//! - [`executions`]: reading executions and their node runs (`/api/v1/executions`).

pub mod auth;
pub mod connectors;
pub mod documents;
pub mod error;
pub mod executions;
pub mod extract;
pub mod health;
pub mod limits;
pub mod paging;
pub mod signature;
pub mod starter;
pub mod tokens;
pub mod triggers;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::Request;
use axum::middleware;
use axum::routing::{any, delete, get, post};
use quantumflow_secrets::Keyring;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// How long one request may take before it is answered with 408; keeps a graceful shutdown
/// from waiting forever on a stuck client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/workflows",
            get(workflows::list).post(workflows::create),
        )
        .route(
            "/api/v1/workflows/{id}",
            get(workflows::show)
                .put(workflows::replace)
                .delete(workflows::remove),
        )
        .route("/api/v1/workflows/{id}/versions", get(workflows::versions))
        .route("/api/v1/workflows/{id}/activate", post(workflows::activate))
        .route("/api/v1/workflows/{id}/pause", post(workflows::pause))
        .route("/api/v1/workflows/{id}/archive", post(workflows::archive))
        .route(
            "/api/v1/workflows/{id}/executions",
            get(executions::list).post(triggers::execute),
        )
        .route("/api/v1/executions/{id}", get(executions::show))
        .route(
            "/api/v1/connectors",
            get(connectors::list).post(connectors::create),
        )
        .route(
            "/api/v1/connectors/{id}",
            get(connectors::show)
                .put(connectors::replace)
                .delete(connectors::remove),
        )
        .route("/api/v1/users/me", get(tokens::me))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route("/webhook/{*path}", any(triggers::webhook))
        .with_state(state)
        // Extractors that read a body stop at the limit, which covers bodies sent without a
        // length; the middleware refuses a declared length over it before reading anything.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            limits::refuse_oversized,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str);
                tracing::info_span!(
                    "http.request",
                    http.method = %request.method(),
                    http.route = route.unwrap_or("unmatched"),
                    http.status = tracing::field::Empty,
                    user.id = tracing::field::Empty,
                )
            }),
        )
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
