//! Load generators: a closed-loop burst that queues work as fast as a fixed number of senders
//! can, and an open loop that sends on a fixed arrival schedule.
//!
//! The open loop measures each request from the moment the schedule *intended* to send it,
//! not from when it was actually sent. A server that stalls therefore shows the stall in the
//! latency of every request that should have gone out during it, instead of hiding it by
//! holding the sender back (coordinated omission). The time from intended to actual send is
//! recorded separately as the generator's own lag.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{HarnessError, Result};
use crate::measure::new_histogram;
use crate::scenario::Scenario;

/// How long one webhook request may take before it counts as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a send did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    /// An HTTP status other than the expected one.
    Status(u16),
    /// The connection could not be made.
    Connect,
    /// No answer within the request timeout.
    Timeout,
    /// The in-flight cap was reached, so the request was never sent.
    Dropped,
    /// Anything else: a reset connection, an unreadable body, a database error.
    Other,
}

impl Failure {
    /// The key the report counts it under.
    pub(crate) fn label(self) -> String {
        match self {
            Self::Status(code) => format!("http {code}"),
            Self::Connect => "connect".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Dropped => "dropped at the in-flight cap".to_owned(),
            Self::Other => "other".to_owned(),
        }
    }
}

/// Errors by kind.
pub(crate) type Errors = BTreeMap<String, u64>;

/// What one successful send started: the execution's id, when the target says.
pub(crate) type Started = Option<Uuid>;

/// The future one send returns.
pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Result<Started, Failure>> + Send>>;

/// Sends request number `seq`.
pub(crate) type Sender = Arc<dyn Fn(u64) -> SendFuture + Send + Sync>;

/// The HTTP client of every load generator: keep-alive connections, no proxy (everything is
/// on loopback), a timeout per request.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    // reqwest is built without a default TLS provider; installing one twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
        .map_err(|source| HarnessError::Http {
            request: "building the HTTP client".to_owned(),
            source,
        })
}

/// A sender that posts the scenario's webhooks to the control plane and expects 202.
pub(crate) fn webhook_sender(
    client: &reqwest::Client,
    base_url: &str,
    scenario: Scenario,
) -> Sender {
    let client = client.clone();
    let url = format!("{base_url}{}", scenario.webhook_path());
    Arc::new(move |seq| {
        let request = scenario.request(seq);
        let mut builder = client
            .post(&url)
            .header("content-type", "application/json")
            .body(request.body);
        if let Some(event) = request.github_event {
            builder = builder
                .header("x-github-event", event)
                .header("x-github-delivery", Uuid::new_v4().to_string());
        }
        Box::pin(async move {
            match builder.send().await {
                Ok(response) if response.status().as_u16() == 202 => {
                    let body = response.bytes().await.map_err(|_| Failure::Other)?;
                    Ok(execution_id(&body))
                }
                Ok(response) => Err(Failure::Status(response.status().as_u16())),
                Err(e) if e.is_timeout() => Err(Failure::Timeout),
                Err(e) if e.is_connect() => Err(Failure::Connect),
                Err(_) => Err(Failure::Other),
            }
        })
    })
}

/// The `execution_id` of a 202 answer.
fn execution_id(body: &[u8]) -> Started {
    #[derive(serde::Deserialize)]
    struct Accepted {
        execution_id: Uuid,
    }
    serde_json::from_slice::<Accepted>(body)
        .ok()
        .map(|a| a.execution_id)
}

/// What a burst did.
#[derive(Debug)]
pub(crate) struct BurstResult {
    /// Requests that succeeded.
    pub(crate) ok: u64,
    /// Requests that failed, by kind.
    pub(crate) errors: Errors,
    /// Latency of each request, µs; closed loop, so not corrected for omission.
    pub(crate) latency: Histogram<u64>,
    /// How long the whole burst took.
    pub(crate) seconds: f64,
}

/// Sends requests `0..n` with `concurrency` requests in flight, each sender starting its next
/// request when its last one ends.
pub(crate) async fn burst(send: &Sender, n: u64, concurrency: usize) -> BurstResult {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (send, next) = (Arc::clone(send), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latency = new_histogram();
            let mut errors = Errors::new();
            let mut ok = 0;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    break;
                }
                let sent = Instant::now();
                match send(seq).await {
                    Ok(_) => ok += 1,
                    Err(failure) => *errors.entry(failure.label()).or_default() += 1,
                }
                latency.saturating_record(micros(sent.elapsed()));
            }
            (ok, errors, latency)
        });
    }

    let mut result = BurstResult {
        ok: 0,
        errors: Errors::new(),
        latency: new_histogram(),
        seconds: 0.0,
    };
    while let Some(joined) = tasks.join_next().await {
        let Ok((ok, errors, latency)) = joined else {
            *result
                .errors
                .entry("sender panicked".to_owned())
                .or_default() += 1;
            continue;
        };
        result.ok += ok;
        merge_errors(&mut result.errors, errors);
        let _ = result.latency.add(latency);
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// A fixed arrival schedule: `rate` sends a second for `warmup + duration`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Sends per second.
    pub(crate) rate: f64,
    /// Sent but not measured.
    pub(crate) warmup: Duration,
    /// Sent and measured.
    pub(crate) duration: Duration,
}

impl Schedule {
    /// How many sends the schedule holds.
    pub(crate) fn total(&self) -> u64 {
        ((self.warmup + self.duration).as_secs_f64() * self.rate).round() as u64
    }

    /// When send `seq` is due, from the start of the schedule.
    pub(crate) fn intended(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq as f64 / self.rate)
    }

    /// Whether a send due at `offset` falls in the measured part.
    pub(crate) fn is_measured(&self, offset: Duration) -> bool {
        offset >= self.warmup
    }
}

/// The latency a request counts with: from when it was due to when it was answered.
pub(crate) fn corrected_latency(intended: Duration, answered: Duration) -> Duration {
    answered.saturating_sub(intended)
}

/// One second of an open loop, by intended send time.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SecondStats {
    /// Seconds since the measured part began.
    pub(crate) second: u64,
    /// Requests due in this second.
    pub(crate) sent: u64,
    /// Of those, answered as expected.
    pub(crate) ok: u64,
    /// Median latency, ms.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency, ms.
    pub(crate) p99_ms: f64,
}

/// What an open loop did; latencies are µs and cover the measured part only.
#[derive(Debug)]
pub(crate) struct OpenLoopResult {
    /// The schedule it followed.
    pub(crate) schedule: Schedule,
    /// Requests due in the measured part.
    pub(crate) measured: u64,
    /// Of those, answered as expected.
    pub(crate) ok: u64,
    /// Requests answered as expected over the whole schedule, warm-up included.
    pub(crate) ok_total: u64,
    /// Failures in the measured part, by kind.
    pub(crate) errors: Errors,
    /// Latency from intended send to answer.
    pub(crate) latency: Histogram<u64>,
    /// Latency from actual send to answer.
    pub(crate) service: Histogram<u64>,
    /// How late the generator itself sent, intended to actual.
    pub(crate) lag: Histogram<u64>,
    /// Per second of the measured part.
    pub(crate) per_second: Vec<SecondStats>,
    /// The executions started by the measured part, each with the second (of the measured
    /// part) its request was due in.
    pub(crate) started: Vec<(Uuid, u64)>,
}

impl OpenLoopResult {
    /// Answered requests per second of the measured part.
    pub(crate) fn achieved_rate(&self) -> f64 {
        self.ok as f64 / self.schedule.duration.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// One send's outcome, as the collector sees it.
struct Sample {
    intended: Duration,
    lag: Duration,
    latency: Duration,
    outcome: Result<Started, Failure>,
}

/// Runs `schedule`, never holding more than `max_in_flight` requests open.
pub(crate) async fn open_loop(
    send: &Sender,
    schedule: Schedule,
    max_in_flight: usize,
) -> OpenLoopResult {
    let (tx, rx) = mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(collect(rx, schedule));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();

    for seq in 0..schedule.total() {
        let intended = schedule.intended(seq);
        let due = start + intended;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            let _ = tx.send(Sample {
                intended,
                lag: Duration::ZERO,
                latency: Duration::ZERO,
                outcome: Err(Failure::Dropped),
            });
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (send, tx, in_flight) = (Arc::clone(send), tx.clone(), Arc::clone(&in_flight));
        tokio::spawn(async move {
            let lag = start.elapsed().saturating_sub(intended);
            let outcome = send(seq).await;
            let latency = corrected_latency(intended, start.elapsed());
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Sample {
                intended,
                lag,
                latency,
                outcome,
            });
        });
    }
    drop(tx);

    collector.await.unwrap_or_else(|_| empty_result(schedule))
}

fn empty_result(schedule: Schedule) -> OpenLoopResult {
    OpenLoopResult {
        schedule,
        measured: 0,
        ok: 0,
        ok_total: 0,
        errors: Errors::new(),
        latency: new_histogram(),
        service: new_histogram(),
        lag: new_histogram(),
        per_second: Vec::new(),
        started: Vec::new(),
    }
}

/// Aggregates samples until every sender has dropped its end of the channel.
async fn collect(mut rx: mpsc::UnboundedReceiver<Sample>, schedule: Schedule) -> OpenLoopResult {
    let mut result = empty_result(schedule);
    let seconds = schedule.duration.as_secs_f64().ceil() as usize;
    let mut per_second: Vec<(u64, u64, Histogram<u64>)> =
        (0..seconds).map(|_| (0, 0, new_histogram())).collect();

    while let Some(sample) = rx.recv().await {
        if sample.outcome.is_ok() {
            result.ok_total += 1;
        }
        if !schedule.is_measured(sample.intended) {
            continue;
        }
        result.measured += 1;
        let second =
            ((sample.intended - schedule.warmup).as_secs() as usize).min(seconds.saturating_sub(1));
        let bucket = per_second.get_mut(second);
        match sample.outcome {
            Ok(started) => {
                result.ok += 1;
                if let Some(id) = started {
                    result.started.push((id, second as u64));
                }
                let latency = micros(sample.latency);
                result.latency.saturating_record(latency);
                result
                    .service
                    .saturating_record(micros(sample.latency.saturating_sub(sample.lag)));
                result.lag.saturating_record(micros(sample.lag));
                if let Some((sent, ok, histogram)) = bucket {
                    *sent += 1;
                    *ok += 1;
                    histogram.saturating_record(latency);
                }
            }
            Err(failure) => {
                *result.errors.entry(failure.label()).or_default() += 1;
                if let Some((sent, _, _)) = bucket {
                    *sent += 1;
                }
            }
        }
    }

    result.per_second = per_second
        .into_iter()
        .enumerate()
        .map(|(second, (sent, ok, h))| SecondStats {
            second: second as u64,
            sent,
            ok,
            p50_ms: quantile_ms(&h, 0.5),
            p99_ms: quantile_ms(&h, 0.99),
        })
        .collect();
    result
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Adds `more` into `into`.
pub(crate) fn merge_errors(into: &mut Errors, more: Errors) {
    for (kind, count) in more {
        *into.entry(kind).or_default() += count;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_sends_evenly_and_measures_after_the_warmup() {
        let schedule = Schedule {
            rate: 500.0,
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(30),
        };

        assert_eq!(schedule.total(), 17_500);
        assert_eq!(schedule.intended(1), Duration::from_millis(2));
        assert_eq!(schedule.intended(2_500), Duration::from_secs(5));
        assert!(!schedule.is_measured(schedule.intended(2_499)));
        assert!(schedule.is_measured(schedule.intended(2_500)));
    }

    /// A server that answers in 1 ms but stalls for one second: a naive closed-loop client
    /// waits out the stall and records one slow request, the schedule-based measure records
    /// every request that was due during it.
    #[test]
    fn a_stall_shows_in_every_request_due_during_it() {
        let schedule = Schedule {
            rate: 100.0,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(3),
        };
        let service = Duration::from_millis(1);
        let stall_start = Duration::from_secs(1);
        let stall = Duration::from_secs(1);

        let mut corrected = new_histogram();
        let mut server_free = Duration::ZERO;
        for seq in 0..schedule.total() {
            let intended = schedule.intended(seq);
            let mut begin = intended.max(server_free);
            if begin >= stall_start && begin < stall_start + stall {
                begin = stall_start + stall;
            }
            let answered = begin + service;
            server_free = answered;
            corrected.saturating_record(micros(corrected_latency(intended, answered)));
        }

        // A third of the requests were due during the stall, waiting from up to a second
        // down to nothing.
        assert!(corrected.value_at_quantile(0.5) < 2_000);
        assert!(corrected.value_at_quantile(0.9) > 500_000);
        assert!(corrected.max() >= 990_000);
        assert_eq!(corrected.len(), 300);
    }

    #[test]
    fn latency_is_never_negative() {
        assert_eq!(
            corrected_latency(Duration::from_millis(5), Duration::from_millis(3)),
            Duration::ZERO
        );
        assert_eq!(
            corrected_latency(Duration::from_millis(5), Duration::from_millis(12)),
            Duration::from_millis(7)
        );
    }

    #[tokio::test]
    async fn an_open_loop_sends_its_whole_schedule_and_counts_failures_by_kind() {
        let send: Sender = Arc::new(|seq| {
            Box::pin(async move {
                if seq % 10 == 0 {
                    Err(Failure::Status(503))
                } else {
                    Ok(Some(Uuid::from_u128(u128::from(seq))))
                }
            })
        });
        let schedule = Schedule {
            rate: 200.0,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
        };

        let result = open_loop(&send, schedule, 100).await;

        assert_eq!(result.measured, 100);
        assert_eq!(result.ok, 90);
        assert_eq!(result.errors.get("http 503"), Some(&10));
        assert_eq!(result.per_second.len(), 1);
        assert_eq!(result.per_second[0].sent, 100);
        assert_eq!(result.started.len(), 90);
        assert!(
            result
                .started
                .iter()
                .all(|(id, second)| id.as_u128() >= 20 && *second == 0)
        );
    }

    #[tokio::test]
    async fn a_burst_sends_each_request_once() {
        let seen = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&seen);
        let send: Sender = Arc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Ok(None) })
        });

        let result = burst(&send, 1_000, 8).await;

        assert_eq!(result.ok, 1_000);
        assert_eq!(seen.load(Ordering::Relaxed), 1_000);
        assert!(result.errors.is_empty());
    }
}
