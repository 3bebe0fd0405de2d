//! A loopback HTTP service that the workflows' http nodes call, standing in for the outside
//! services real workflows talk to.
//!
//! - `GET /flaky` answers 503 to the first request carrying a given `Idempotency-Key` and 200
//!   to every later one, so each flaky node fails once and succeeds on its retry.
//! - `GET /sleep?ms=N` answers 200 after N milliseconds (at most ten seconds), a task of known
//!   length.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{HarnessError, Result};

/// The longest `/sleep` the receiver honours, so a typo cannot park a node past its timeout.
const MAX_SLEEP: Duration = Duration::from_secs(10);

/// What the receiver has seen, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct ReceiverCounts {
    /// `/flaky` requests answered 503 (first attempts).
    pub(crate) flaky_failed: u64,
    /// `/flaky` requests answered 200 (retries).
    pub(crate) flaky_succeeded: u64,
    /// `/flaky` requests without an `Idempotency-Key`, answered 400.
    pub(crate) flaky_without_key: u64,
    /// `/sleep` requests answered.
    pub(crate) sleeps: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Keys already failed once.
    seen: Mutex<HashSet<String>>,
    flaky_failed: AtomicU64,
    flaky_succeeded: AtomicU64,
    flaky_without_key: AtomicU64,
    sleeps: AtomicU64,
}

/// The running receiver; it stops when dropped.
#[derive(Debug)]
pub(crate) struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts the receiver on a free loopback port.
    pub(crate) async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("listen on", "127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("read the address of", "the receiver"))?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/flaky", get(flaky))
            .route("/sleep", get(sleep))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            // The receiver lives as long as the harness; an accept error ends it, and the
            // http nodes that need it then fail visibly in the results.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counts so far.
    pub(crate) fn counts(&self) -> ReceiverCounts {
        let s = &self.shared;
        ReceiverCounts {
            flaky_failed: s.flaky_failed.load(Ordering::Relaxed),
            flaky_succeeded: s.flaky_succeeded.load(Ordering::Relaxed),
            flaky_without_key: s.flaky_without_key.load(Ordering::Relaxed),
            sleeps: s.sleeps.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> StatusCode {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        shared.flaky_without_key.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let first = shared
        .seen
        .lock()
        .map(|mut seen| seen.insert(key.to_owned()))
        .unwrap_or(false);
    if first {
        shared.flaky_failed.fetch_add(1, Ordering::Relaxed);
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        shared.flaky_succeeded.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    }
}

#[derive(Debug, Deserialize)]
struct SleepQuery {
    ms: u64,
}

async fn sleep(State(shared): State<Arc<Shared>>, Query(query): Query<SleepQuery>) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(query.ms).min(MAX_SLEEP)).await;
    shared.sleeps.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flaky_fails_each_key_once_then_succeeds() {
        let receiver = Receiver::start().await.unwrap();
        let client = crate::drive::http_client().unwrap();
        let url = format!("{}/flaky", receiver.base_url());
        let get = |key: &'static str| client.get(&url).header("idempotency-key", key).send();

        let first = get("a").await.unwrap().status();
        let retry = get("a").await.unwrap().status();
        let other = get("b").await.unwrap().status();

        assert_eq!(first, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry, reqwest::StatusCode::OK);
        assert_eq!(other, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(receiver.counts().flaky_failed, 2);
        assert_eq!(receiver.counts().flaky_succeeded, 1);
    }

    #[tokio::test]
    async fn sleep_answers_after_the_requested_time() {
        let receiver = Receiver::start().await.unwrap();
        let started = std::time::Instant::now();

        let client = crate::drive::http_client().unwrap();
        let status = client
            .get(format!("{}/sleep?ms=30", receiver.base_url()))
            .send()
            .await
            .unwrap()
            .status();

        assert_eq!(status, reqwest::StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(receiver.counts().sleeps, 1);
    }
}
