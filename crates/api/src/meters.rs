//! Metrics of the routes that accept triggers: how many requests each answered with which
//! status, and how long accepting took.
//!
//! The route label is the route's template (`/webhook/{*path}`), never the path a sender
//! used, so a sender cannot create series. Handles are made once per route and status and
//! cached: a request costs two atomic updates.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram, Unit};

/// Trigger requests answered, by `route` and `status`.
pub const REQUESTS: &str = "quantumflow_webhook_requests_total";
/// Time from a trigger request's arrival to its answer, by `route` and `status`.
pub const ACCEPT_DURATION: &str = "quantumflow_webhook_accept_duration_seconds";

/// Buckets of [`ACCEPT_DURATION`], in seconds: an accepted trigger waits for one group commit,
/// a few milliseconds when idle; the top buckets catch a database that is struggling.
pub const ACCEPT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The routes that take triggers, with the method that starts an execution.
const TRIGGER_ROUTES: [(&str, Option<Method>); 2] = [
    // Webhooks answer whatever method their workflow listens for.
    ("/webhook/{*path}", None),
    ("/api/v1/workflows/{id}/executions", Some(Method::POST)),
];

/// Statuses from 100 to 599 each get a slot.
const STATUSES: usize = 500;

/// One route's handles, by status.
struct RouteHandles {
    by_status: Vec<OnceLock<(Counter, Histogram)>>,
}

static HANDLES: OnceLock<Vec<RouteHandles>> = OnceLock::new();

/// Gives the metrics their help texts; call once, after installing the recorder.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests to the routes that start executions, by route template and status."
    );
    metrics::describe_histogram!(
        ACCEPT_DURATION,
        Unit::Seconds,
        "Time from a trigger request's arrival to its answer, by route template and status."
    );
}

/// Middleware: measures requests to the trigger routes, and passes every other one through.
pub(crate) async fn measure(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().and_then(|path| {
        TRIGGER_ROUTES.iter().position(|(route, method)| {
            *route == path.as_str() && method.as_ref().is_none_or(|m| m == request.method())
        })
    });
    let Some(route) = route else {
        return next.run(request).await;
    };
    let arrived = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if let Some((requests, duration)) = handles(route, status) {
        requests.increment(1);
        duration.record(arrived.elapsed().as_secs_f64());
    }
    response
}

fn handles(route: usize, status: u16) -> Option<&'static (Counter, Histogram)> {
    let routes = HANDLES.get_or_init(|| {
        TRIGGER_ROUTES
            .iter()
            .map(|_| RouteHandles {
                by_status: (0..STATUSES).map(|_| OnceLock::new()).collect(),
            })
            .collect()
    });
    let slot = usize::from(status).checked_sub(100)?;
    let cell = routes.get(route)?.by_status.get(slot)?;
    Some(cell.get_or_init(|| {
        let template = TRIGGER_ROUTES[route].0;
        let status = status.to_string();
        (
            metrics::counter!(REQUESTS, "route" => template, "status" => status.clone()),
            metrics::histogram!(ACCEPT_DURATION, "route" => template, "status" => status),
        )
    }))
}
