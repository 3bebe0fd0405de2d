//! One trace from a webhook to the service an http node calls, on a real database and
//! loopback: first with the control plane's router and a worker in this process, exporting to
//! memory; then with `serve` and `worker` processes exporting OTLP/HTTP to a receiver here.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use quantumflow_netguard::{IpNet, Policy};
use quantumflow_testkit::TestDb;
use quantumflow_worker::WorkerConfig;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::cluster::{Cluster, admin, create_workflow, finished};
use crate::receiver::{Received, Receiver};
use crate::support::{free_address, quantumflow, send, terminate, wait_ready};

/// The caller's span, as a service in front of QuantumFlow would send it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A trace the workflow's author sets on a node by hand.
const AUTHOR_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Spans exported by this test only: the subscriber is the test thread's default, and the
/// runtime runs every task on that thread.
struct Recorder {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _default: tracing::subscriber::DefaultGuard,
}

impl Recorder {
    fn install() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        // At info and above, as the binary exports.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tests"))
            .with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry().with(layer);
        Self {
            exporter,
            provider,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The attribute `key` of `span` as exported, typed.
fn typed(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// The one span named `name` whose attribute `key` is `value`.
fn find<'a>(spans: &'a [SpanData], name: &str, key: &str, value: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
        .collect();
    assert_eq!(found.len(), 1, "{name} with {key}={value} among {spans:#?}");
    found[0]
}

async fn serve_api(db: &TestDb) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = quantumflow_api::router(quantumflow_api::AppState::new(db.pool().clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(quantumflow_api::serve(listener, router, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

fn traced_workflow(receiver: SocketAddr) -> Value {
    json!({
        "name": "traced",
        "status": "active",
        "settings": {"retry_policy": {"max_retries": 2, "retry_delay": 0.1}},
        "trigger_config": {
            "type": "webhook",
            "config": {"method": "POST", "path": "/webhook/traced"}
        },
        "nodes": [
            {"name": "hook", "type": "trigger", "config": {}},
            {"name": "call", "type": "action", "config": {
                "connector": "http", "method": "POST",
                "url": format!("http://{receiver}/call"), "body": {"n": "{{input.n}}"}
            }},
            {"name": "forward", "type": "action", "config": {
                "connector": "http", "method": "POST",
                "url": format!("http://{receiver}/forward"),
                "headers": {"Traceparent": AUTHOR_TRACEPARENT}
            }}
        ],
        "edges": [
            {"source": "hook", "target": "call"},
            {"source": "call", "target": "forward"}
        ]
    })
}

#[tokio::test(flavor = "current_thread")]
async fn a_webhooks_trace_runs_through_the_worker_into_the_called_service() {
    let recorder = Recorder::install();
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start(200).await;
    let (api, stop_api) = serve_api(&db).await;
    let config = WorkerConfig {
        concurrency: 2,
        outbound: Policy::allowing(["127.0.0.0/8".parse::<IpNet>().unwrap()]),
        ..WorkerConfig::default()
    };
    let (stop_worker, worker_stopped) = oneshot::channel::<()>();
    // The worker's future is not `'static`-friendly enough for `tokio::spawn`; it runs beside
    // the scenario instead, as `up` runs its workers.
    let worker = quantumflow_worker::run(db.pool().clone(), &config, async {
        let _ = worker_stopped.await;
    });
    let scenario = async {
        // A probe, as an orchestrator sends every few seconds; it is not traced.
        let (probed, _) = send(api, "GET", "/healthz", &[], None).await;
        assert_eq!(probed, 200);
        create_workflow(api, &traced_workflow(receiver.address)).await;
        let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
        let (status, accepted) = send(
            api,
            "POST",
            "/webhook/traced",
            &[("traceparent", &caller), ("tracestate", "vendor=abc")],
            Some(&json!({"n": 1})),
        )
        .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["execution_id"].as_str().unwrap().to_owned();
        let execution = finished(api, &id).await;
        stop_worker.send(()).unwrap();
        (id, execution)
    };
    let (ran, (id, execution)) = tokio::join!(worker, scenario);
    ran.unwrap();
    let _ = stop_api.send(());
    assert_eq!(execution["status"], "success", "{execution:#}");
    let id = id.as_str();
    let spans = recorder.spans();

    let probes: Vec<&str> = spans
        .iter()
        .filter(|s| s.name.contains("/healthz"))
        .map(|s| s.name.as_ref())
        .collect();
    assert!(probes.is_empty(), "{probes:?}");

    let trace = TraceId::from_hex(CALLER_TRACE).unwrap();
    let request = find(
        &spans,
        "POST /webhook/{*path}",
        "http.route",
        "/webhook/{*path}",
    );
    assert_eq!(request.span_context.trace_id(), trace);
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(CALLER_SPAN).unwrap()
    );
    assert!(request.parent_span_is_remote);
    assert_eq!(request.span_kind, SpanKind::Server);
    assert_eq!(attribute(request, "http.request.method").unwrap(), "POST");
    // Integers, as the conventions say, not their text.
    assert_eq!(
        typed(request, "http.response.status_code"),
        Some(opentelemetry::Value::I64(202))
    );

    let execution_span = find(&spans, "execution", "execution.id", id);
    assert_eq!(execution_span.span_context.trace_id(), trace);
    assert_eq!(
        execution_span.parent_span_id,
        request.span_context.span_id()
    );
    assert_eq!(
        attribute(execution_span, "workflow.id").unwrap(),
        execution["workflow_id"].as_str().unwrap()
    );

    let call = find(&spans, "node_run", "node.name", "call");
    let forward = find(&spans, "node_run", "node.name", "forward");
    for node in [call, forward] {
        assert_eq!(node.span_context.trace_id(), trace);
        assert_eq!(node.parent_span_id, execution_span.span_context.span_id());
        assert_eq!(attribute(node, "execution.id").unwrap(), id);
        assert_eq!(attribute(node, "node.type").unwrap(), "action");
        assert_eq!(attribute(node, "attempt").unwrap(), "1");
    }

    let outgoing: Vec<&SpanData> = spans.iter().filter(|s| s.name == "POST").collect();
    assert_eq!(outgoing.len(), 2, "{outgoing:#?}");
    let client = outgoing
        .iter()
        .find(|s| s.parent_span_id == call.span_context.span_id())
        .expect("the call node's request has a span under the node's");
    assert_eq!(client.span_context.trace_id(), trace);
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(
        typed(client, "http.response.status_code"),
        Some(opentelemetry::Value::I64(200))
    );
    assert_eq!(attribute(client, "server.address").unwrap(), "127.0.0.1");
    assert_eq!(
        typed(client, "server.port"),
        Some(opentelemetry::Value::I64(i64::from(
            receiver.address.port()
        )))
    );

    // The called service joined the trace under the request's span; a traceparent the node's
    // config sets is sent as it is, once.
    let received = receiver.received();
    let at = |path: &str| received.iter().find(|r| r.path == path).unwrap().clone();
    let sent = format!("00-{CALLER_TRACE}-{}-01", client.span_context.span_id());
    assert_eq!(at("/call").traceparent.as_deref(), Some(sent.as_str()));
    assert_eq!(
        at("/forward").traceparent.as_deref(),
        Some(AUTHOR_TRACEPARENT)
    );

    // The execution keeps the context its node runs join, and the caller's tracestate.
    let (traceparent, tracestate): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT traceparent, tracestate FROM executions WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let anchored = format!(
        "00-{CALLER_TRACE}-{}-01",
        execution_span.span_context.span_id()
    );
    assert_eq!(traceparent.as_deref(), Some(anchored.as_str()));
    assert_eq!(tracestate.as_deref(), Some("vendor=abc"));
    assert_eq!(execution["traceparent"], anchored);
}

#[tokio::test(flavor = "current_thread")]
async fn a_garbage_traceparent_starts_a_new_trace_and_the_trigger_is_accepted() {
    let recorder = Recorder::install();
    let db = TestDb::new().await;
    admin(&db).await;
    let (api, _stop_api) = serve_api(&db).await;
    let workflow = create_workflow(api, &traced_workflow("127.0.0.1:9".parse().unwrap())).await;

    let (status, accepted) = send(
        api,
        "POST",
        "/webhook/traced",
        &[("traceparent", "00-not-a-trace-zz"), ("tracestate", "=")],
        Some(&json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().unwrap();
    let spans = recorder.spans();

    let request = find(
        &spans,
        "POST /webhook/{*path}",
        "http.route",
        "/webhook/{*path}",
    );
    let trace = request.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    assert_eq!(request.parent_span_id, SpanId::INVALID);
    let execution = find(&spans, "execution", "execution.id", id);
    assert_eq!(execution.span_context.trace_id(), trace);
    let traceparent = stored_traceparent(&db, id).await;
    assert!(
        traceparent
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("00-{trace}-"))),
        "{traceparent:?}"
    );

    // An API trigger continues a valid caller's trace the same way.
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, accepted) = send(
        api,
        "POST",
        &format!("/api/v1/workflows/{workflow}/executions"),
        &[("traceparent", &caller)],
        Some(&json!({"n": 2})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let traceparent = stored_traceparent(&db, accepted["execution_id"].as_str().unwrap()).await;
    assert!(
        traceparent
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("00-{CALLER_TRACE}-"))),
        "{traceparent:?}"
    );
}

#[tokio::test]
async fn without_export_the_callers_context_is_stored_and_passed_on_unchanged() {
    let db = TestDb::new().await;
    admin(&db).await;
    let receiver = Receiver::start(200).await;
    // Processes started without any OTEL_* variable export nothing.
    let cluster = Cluster::with_workers(&db, 1).await;
    create_workflow(cluster.api, &traced_workflow(receiver.address)).await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let headers = [
        ("traceparent", caller.as_str()),
        ("tracestate", "vendor=abc"),
    ];

    let (status, accepted) = send(
        cluster.api,
        "POST",
        "/webhook/traced",
        &headers,
        Some(&json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["execution_id"].as_str().unwrap();
    let execution = finished(cluster.api, id).await;
    let tracestate: Option<String> =
        sqlx::query_scalar("SELECT tracestate FROM executions WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();

    assert_eq!(execution["status"], "success", "{execution:#}");
    assert_eq!(execution["traceparent"], caller);
    assert_eq!(tracestate.as_deref(), Some("vendor=abc"));
    let received = receiver.received();
    let at = |path: &str| received.iter().find(|r| r.path == path).unwrap().clone();
    assert_eq!(at("/call").traceparent, Some(caller));
    assert_eq!(
        at("/forward").traceparent.as_deref(),
        Some(AUTHOR_TRACEPARENT)
    );
}

/// The trace context stored on execution `id`, which its node runs join.
async fn stored_traceparent(db: &TestDb, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT traceparent FROM executions WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The service, trace id and name of each span sent, read from OTLP/JSON export requests.
fn exported(requests: &[crate::receiver::Received]) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for request in requests.iter().filter(|r| r.path == "/v1/traces") {
        for resource in request.body["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            let spans = resource["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|scope| scope["spans"].as_array().into_iter().flatten());
            for span in spans {
                let trace = span["traceId"].as_str().unwrap_or_default().to_owned();
                let name = span["name"].as_str().unwrap_or_default().to_owned();
                found.push((service.clone(), trace, name));
            }
        }
    }
    found
}

/// A process exporting to `collector`, logging JSON at info to a pipe read after it exits.
fn spawn_exporting(db: &TestDb, collector: SocketAddr, args: &[&str]) -> std::process::Child {
    quantumflow()
        .args(["--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", db.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn logs(child: &mut std::process::Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    text
}

// Two threads: the collector must answer the processes' last exports while the test blocks
// waiting for them to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_worker_processes_export_one_trace_over_otlp() {
    let db = TestDb::new().await;
    admin(&db).await;
    let collector = Receiver::start(200).await;
    // The first call fails and is retried, which the worker logs under the node's span.
    let target = Receiver::start_with(Arc::new(|request: &Received, seen| {
        let first = request.path == "/call" && seen == 0;
        (if first { 503 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let api = free_address();
    let mut server = spawn_exporting(
        &db,
        collector.address,
        &["serve", "--listen", &api.to_string()],
    );
    wait_ready(&mut server, api).await;
    let mut worker = spawn_exporting(
        &db,
        collector.address,
        &[
            "worker",
            "--concurrency",
            "2",
            "--allow-outbound",
            "127.0.0.1/32",
        ],
    );
    create_workflow(api, &traced_workflow(target.address)).await;

    let accepted = webhook_from_caller(api).await;
    let execution = finished(api, accepted["execution_id"].as_str().unwrap()).await;
    assert_eq!(execution["status"], "success", "{execution:#}");
    // Both send what they still hold as they stop.
    assert!(terminate(&mut worker).success());
    assert!(terminate(&mut server).success());
    let (server_logs, worker_logs) = (logs(&mut server), logs(&mut worker));

    let exported = exported(&collector.received());
    let on_trace: Vec<&str> = exported
        .iter()
        .filter(|(_, trace, _)| trace == CALLER_TRACE)
        .map(|(service, _, _)| service.as_str())
        .collect();
    // Background tasks that live as long as the process are no trace of their own.
    let names: Vec<&str> = exported.iter().map(|(_, _, name)| name.as_str()).collect();
    assert!(!names.contains(&"starter"), "{names:?}");
    assert!(on_trace.contains(&"quantumflow-api"), "{on_trace:?}");
    assert!(on_trace.contains(&"quantumflow-worker"), "{on_trace:?}");
    // Log lines written under the request and under the node runs name the trace.
    let traced = format!("\"trace_id\":\"{CALLER_TRACE}\"");
    let accepted_line = server_logs
        .lines()
        .find(|l| l.contains("execution accepted"))
        .unwrap_or_default();
    assert!(accepted_line.contains(&traced), "{server_logs}");
    assert!(
        worker_logs.lines().any(|l| l.contains(&traced)),
        "{worker_logs}"
    );
    let received = target.received();
    let call = received.iter().find(|r| r.path == "/call").unwrap();
    assert!(
        call.traceparent
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("00-{CALLER_TRACE}-"))),
        "{call:?}"
    );
}

/// Sends the traced workflow's webhook as a caller on [`CALLER_TRACE`] would, and returns the
/// 202's body.
async fn webhook_from_caller(api: SocketAddr) -> Value {
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, accepted) = send(
        api,
        "POST",
        "/webhook/traced",
        &[("traceparent", &caller)],
        Some(&json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    accepted
}

// Two threads: the collector must answer the last export while the test waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_without_a_protocol_set_sends_protobuf() {
    let db = TestDb::new().await;
    let collector = Receiver::start(200).await;
    let api = free_address();
    let mut server = serve_exporting(&db, api, collector.address);
    wait_ready(&mut server, api).await;

    let (status, _) = send(api, "GET", "/api/v1/openapi.json", &[], None).await;
    assert!(terminate(&mut server).success());

    assert_eq!(status, 200);
    let exports: Vec<Option<String>> = collector
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/traces")
        .map(|r| r.content_type)
        .collect();
    assert!(!exports.is_empty(), "nothing was exported");
    assert!(
        exports
            .iter()
            .all(|t| t.as_deref() == Some("application/x-protobuf")),
        "{exports:?}"
    );
}

#[tokio::test]
async fn a_collector_that_cannot_be_reached_is_logged_as_an_error() {
    let db = TestDb::new().await;
    let (api, nowhere) = (free_address(), free_address());
    let mut server = serve_exporting(&db, api, nowhere);
    wait_ready(&mut server, api).await;

    let (status, _) = send(api, "GET", "/api/v1/openapi.json", &[], None).await;
    assert!(terminate(&mut server).success());

    assert_eq!(status, 200);
    let logs = logs(&mut server);
    let failure = logs.lines().find(|line| line.contains("ExportError"));
    assert!(failure.is_some_and(|line| line.contains("ERROR")), "{logs}");
}

/// `serve` on `api`, exporting to `collector` with every other OTLP setting left at its
/// default, its log on a pipe.
fn serve_exporting(db: &TestDb, api: SocketAddr, collector: SocketAddr) -> std::process::Child {
    quantumflow()
        .args(["serve", "--listen", &api.to_string()])
        .env("DATABASE_URL", db.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
