//! Log output and trace export.
//!
//! Logs go to stderr through a `tracing` subscriber, filtered by `RUST_LOG`. Spans are also
//! exported over OTLP/HTTP when the standard OpenTelemetry environment asks for it (see
//! [`ExportSettings`]); without an endpoint nothing is exported, no exporter exists and no
//! OpenTelemetry layer sees a span, so tracing costs what it did before.

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_log::AsLog as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::cli::LogFormat;

/// What is logged when `RUST_LOG` is not set: our own events at info, libraries' warnings. The
/// OpenTelemetry SDK logs through `tracing` too, so a failing export (a collector that is down
/// or refuses the spans) shows up as an error instead of traces silently going missing.
const DEFAULT_FILTER: &str =
    "info,sqlx=warn,apalis=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// The installed subscriber's exporter, if any; [`Telemetry::shutdown`] sends what it holds.
#[must_use = "shut it down before exiting, or the last spans are lost"]
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Blocks, so it runs after the
    /// runtime has finished.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "cannot export the last spans");
        }
    }
}

/// Installs the global subscriber, exporting spans as `service` unless `OTEL_SERVICE_NAME`
/// (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names the service otherwise.
pub(crate) fn init(format: LogFormat, service: &'static str) -> anyhow::Result<Telemetry> {
    let settings = ExportSettings::read(|name| std::env::var(name).ok())?;
    let provider = match &settings {
        ExportSettings::Off => None,
        ExportSettings::Otlp {
            service_named,
            sampling,
            ..
        } => Some(provider(service, *service_named, *sampling)?),
    };

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let tracer = provider
        .as_ref()
        .map(|provider| provider.tracer("quantumflow"));
    let (subscriber, log_level) = subscriber(format, filter, tracer);
    tracing::subscriber::set_global_default(subscriber)
        .context("cannot install the log subscriber")?;
    // Records of libraries that log through `log` reach the subscriber through this bridge.
    // It passes only what the logs or the exporter could use: the pool-wait layer's interest in
    // trace events would otherwise make every `log::trace!` call in the process go through it.
    tracing_log::LogTracer::builder()
        .with_max_level(log_level.as_log())
        .init()
        .context("cannot route `log` records to the log subscriber")?;

    if let ExportSettings::Otlp { ignored, .. } = &settings {
        // Only now can they be logged; the exporter was built before the subscriber existed.
        for warning in ignored {
            tracing::warn!("{warning}");
        }
        tracing::info!(service, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

/// The subscriber that writes the logs, exports spans to `tracer` if there is one and measures
/// pool waits, with the most verbose level `log` records need to reach it.
///
/// The layers sit in one `Vec`. tracing-subscriber (0.3.23) mis-sums the per-layer filters'
/// interest when an absent layer (`Option::None`) sits between filtered ones: it then lets
/// through every span and event that all the filters turned down, so with logs at `warn`
/// every request and execution span was built and sqlx formatted a debug record of every
/// query, for nobody.
fn subscriber(
    format: LogFormat,
    filter: EnvFilter,
    tracer: Option<SdkTracer>,
) -> (impl Subscriber + Send + Sync, LevelFilter) {
    let mut log_level = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs];
    if let Some(tracer) = tracer {
        // Spans are exported at info and above whatever RUST_LOG says: quieting the logs must
        // not cut traces into pieces.
        log_level = log_level.max(LevelFilter::INFO);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(LevelFilter::INFO);
        layers.push(spans.boxed());
    }
    layers.push(crate::observe::pool_waits().boxed());
    (Registry::default().with(layers), log_level)
}

fn provider(
    service: &'static str,
    service_named: bool,
    sampling: Sampling,
) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client uses rustls with the ring provider, as the database driver
    // and the nodes' client do; installing it again is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The exporter reads the endpoint, protocol, headers and timeout from the
    // OTEL_EXPORTER_OTLP_* variables itself; nothing here may override them. Only the protocol
    // needs a default of ours: built with JSON support too, the exporter would send JSON, where
    // the specification's default, and what collectors expect, is protobuf.
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    let protocol_set = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !protocol_set {
        exporter = exporter.with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    }
    let exporter = exporter
        .build()
        .context("cannot set up trace export (check the OTEL_EXPORTER_OTLP_* variables)")?;
    let resource = if service_named {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name(service).build()
    };
    // The SDK reads OTEL_TRACES_SAMPLER itself, but falls back to sampling everything, with a
    // warning nobody sees yet, for a value it does not know; the sampler is set from the value
    // read here instead, which refuses such values.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_sampler(sampling.sampler())
        .build())
}

/// Whether spans are exported, decided from the standard OpenTelemetry variables.
///
/// Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter and the
/// SDK read most other variables themselves, but skip a value they cannot use without a word
/// (or with one logged before logging is set up). So, when export is on, a value that cannot
/// be read, or that asks for what is not built in (OTLP over gRPC, another exporter than
/// `otlp`, a sampler the SDK lacks), is an error rather than a silent change of what is
/// exported; and a variable that is valid but has no effect here is named in a warning.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExportSettings {
    /// Nothing is exported, and nothing tries to connect anywhere.
    Off,
    /// Spans go to the OTLP/HTTP endpoint the variables name.
    Otlp {
        /// Whether the variables name the service, overriding the role's default name.
        service_named: bool,
        /// Which traces are kept.
        sampling: Sampling,
        /// Variables that are set but have no effect, each with what applies instead.
        ignored: Vec<String>,
    },
}

/// Which traces are kept: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampling {
    /// Whether a span with a parent follows its parent's decision (a caller's `traceparent`
    /// included); only root spans are then decided by `root`.
    pub(crate) parent_based: bool,
    /// How spans without a parent, or every span when not parent-based, are decided.
    pub(crate) root: RootSampling,
}

/// The decision for spans that do not follow a parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RootSampling {
    /// Keep them all.
    AlwaysOn,
    /// Keep none.
    AlwaysOff,
    /// Keep this fraction of traces, chosen by trace id.
    Ratio(f64),
}

impl Default for Sampling {
    /// The specification's default, `parentbased_always_on`.
    fn default() -> Self {
        Self {
            parent_based: true,
            root: RootSampling::AlwaysOn,
        }
    }
}

impl Sampling {
    /// The SDK's sampler for these settings.
    fn sampler(self) -> Sampler {
        let root = match self.root {
            RootSampling::AlwaysOn => Sampler::AlwaysOn,
            RootSampling::AlwaysOff => Sampler::AlwaysOff,
            RootSampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// The samplers `OTEL_TRACES_SAMPLER` may name, as the specification spells them.
const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, \
                        parentbased_always_off or parentbased_traceidratio";

/// Variables that take a whole number (milliseconds or a count), which the exporter or the SDK
/// would otherwise skip, without a word, when it is anything else.
const WHOLE_NUMBERS: [&str; 8] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
];

/// Whole numbers of [`WHOLE_NUMBERS`] for which 0 would break export.
const ABOVE_ZERO: [&str; 3] = [
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

/// Variables of the specification that nothing here applies, with what happens instead.
const NOT_APPLIED: [(&str, &str); 13] = [
    (
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "the collector's certificate is checked against the system's trust store",
    ),
    (
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "the collector's certificate is checked against the system's trust store",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "no client certificate is sent",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "no client certificate is sent",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "no client certificate is sent",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "no client certificate is sent",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
        "over OTLP/HTTP the endpoint's scheme, http or https, decides",
    ),
    (
        "OTEL_EXPORTER_OTLP_INSECURE",
        "over OTLP/HTTP the endpoint's scheme, http or https, decides",
    ),
    (
        "OTEL_BSP_EXPORT_TIMEOUT",
        "each export is bounded by OTEL_EXPORTER_OTLP_TIMEOUT",
    ),
    (
        "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
        "batches are exported one at a time",
    ),
    (
        "OTEL_ATTRIBUTE_COUNT_LIMIT",
        "only OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT limits attributes",
    ),
    (
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "attribute values are not shortened",
    ),
    (
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "attribute values are not shortened",
    ),
];

impl ExportSettings {
    /// Reads the settings through `var`, which returns a variable's value.
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(Self::Off);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(Self::Off),
            Some(other) => {
                anyhow::bail!("OTEL_TRACES_EXPORTER={other} is not supported; use otlp or none")
            }
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(Self::Off);
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol
            && !matches!(protocol.as_str(), "http/protobuf" | "http/json")
        {
            anyhow::bail!(
                "OTLP protocol {protocol} is not supported; use http/protobuf or http/json"
            );
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            // The exporter would take any scheme and fail only at each export, and its own
            // message quotes the value, password included; this one never does.
            let readable = set(name).is_none_or(|endpoint| {
                endpoint.parse::<axum::http::Uri>().is_ok_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
                })
            });
            if !readable {
                anyhow::bail!("{name} is not an http:// or https:// URL with a host");
            }
        }
        for name in WHOLE_NUMBERS {
            if let Some(value) = set(name)
                && value.parse::<u64>().is_err()
            {
                anyhow::bail!("{name}={value} is not a whole number");
            }
        }
        for name in ABOVE_ZERO {
            // A batch delay of 0 makes the export thread spin; a queue or batch of 0 drops
            // every span.
            if set(name).is_some_and(|value| value.parse::<u64>() == Ok(0)) {
                anyhow::bail!("{name}=0 is not allowed; it must be at least 1");
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ] {
            // Header values are often credentials: the message never quotes them.
            let malformed = set(name).is_some_and(|headers| {
                headers.split(',').map(str::trim).any(|pair| {
                    !pair.is_empty()
                        && pair
                            .split_once('=')
                            .is_none_or(|(k, _)| k.trim().is_empty())
                })
            });
            if malformed {
                anyhow::bail!("{name} has an entry that is not key=value");
            }
        }
        let sampling = sampling(&set)?;

        let mut ignored = Vec::new();
        let compression = set("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", v))
            .or_else(|| {
                set("OTEL_EXPORTER_OTLP_COMPRESSION").map(|v| ("OTEL_EXPORTER_OTLP_COMPRESSION", v))
            });
        if let Some((name, value)) = compression
            && !value.eq_ignore_ascii_case("none")
        {
            ignored.push(format!(
                "{name}={value} is not applied: compression is not built in, so spans are sent \
                 uncompressed"
            ));
        }
        for (name, instead) in NOT_APPLIED {
            if set(name).is_some() {
                ignored.push(format!("{name} is not applied: {instead}"));
            }
        }
        if let Some(propagators) = set("OTEL_PROPAGATORS")
            && propagators.split(',').any(|p| p.trim() != "tracecontext")
        {
            ignored.push(format!(
                "OTEL_PROPAGATORS={propagators} is not applied: W3C Trace Context \
                 (tracecontext) is the only format read and written"
            ));
        }
        if set("OTEL_TRACES_SAMPLER_ARG").is_some()
            && !matches!(sampling.root, RootSampling::Ratio(_))
        {
            ignored.push(
                "OTEL_TRACES_SAMPLER_ARG is not applied: only the traceidratio samplers take an \
                 argument"
                    .to_owned(),
            );
        }

        let named_in_attributes = set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.split('=').next().map(str::trim) == Some("service.name"))
        });
        Ok(Self::Otlp {
            service_named: set("OTEL_SERVICE_NAME").is_some() || named_in_attributes,
            sampling,
            ignored,
        })
    }
}

/// Reads `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` through `set`, which returns a
/// variable's trimmed value if it is not empty.
fn sampling(set: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Sampling> {
    let Some(name) = set("OTEL_TRACES_SAMPLER") else {
        return Ok(Sampling::default());
    };
    let name = name.to_ascii_lowercase();
    let (parent_based, root) = match name.strip_prefix("parentbased_") {
        Some(root) => (true, root),
        None => (false, name.as_str()),
    };
    let root = match root {
        "always_on" => RootSampling::AlwaysOn,
        "always_off" => RootSampling::AlwaysOff,
        // The specification's default argument is 1.0.
        "traceidratio" => match set("OTEL_TRACES_SAMPLER_ARG") {
            None => RootSampling::Ratio(1.0),
            Some(arg) => match arg.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => RootSampling::Ratio(ratio),
                _ => anyhow::bail!(
                    "OTEL_TRACES_SAMPLER_ARG={arg} is not a sampling ratio; use a number from \
                     0 to 1"
                ),
            },
        },
        _ => anyhow::bail!("OTEL_TRACES_SAMPLER={name} is not supported; use {SAMPLERS}"),
    };
    Ok(Sampling { parent_based, root })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs at `warn` and no export: a request's span and sqlx's query records must cost
    /// nothing, while the pool's acquire events still reach the pool-wait layer. With an
    /// exporter, info spans are built for it whatever the logs' level, and no more. One test,
    /// run in turn: `tracing` caches each callsite's interest across every live subscriber, so
    /// two subscribers alive at once on parallel threads would blur what each lets through.
    #[test]
    fn the_subscriber_builds_only_what_the_logs_or_the_exporter_take() {
        let (quiet, log_level) = subscriber(LogFormat::Text, EnvFilter::new("warn"), None);

        assert_eq!(log_level, LevelFilter::WARN);
        tracing::subscriber::with_default(quiet, || {
            assert!(tracing::info_span!("http.request").is_disabled());
            assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::DEBUG));
            assert!(tracing::enabled!(target: "sqlx::pool::acquire", tracing::Level::TRACE));
        });

        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let (exporting, log_level) =
            subscriber(LogFormat::Json, EnvFilter::new("warn"), Some(tracer));

        assert_eq!(log_level, LevelFilter::INFO);
        tracing::subscriber::with_default(exporting, || {
            assert!(!tracing::info_span!("execution").is_disabled());
            assert!(tracing::debug_span!("probe").is_disabled());
            assert!(!tracing::enabled!(target: "sqlx::query", tracing::Level::DEBUG));
        });
    }

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<ExportSettings> {
        ExportSettings::read(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");

    /// Export with these settings beside an endpoint, or the error reading them.
    fn exporting(vars: &[(&str, &str)]) -> anyhow::Result<(bool, Sampling, Vec<String>)> {
        let mut vars = vars.to_vec();
        vars.push(ENDPOINT);
        match read(&vars)? {
            ExportSettings::Otlp {
                service_named,
                sampling,
                ignored,
            } => Ok((service_named, sampling, ignored)),
            ExportSettings::Off => anyhow::bail!("export is off"),
        }
    }

    fn unnamed() -> ExportSettings {
        ExportSettings::Otlp {
            service_named: false,
            sampling: Sampling::default(),
            ignored: Vec::new(),
        }
    }

    #[test]
    fn an_endpoint_must_be_an_http_url_and_is_never_quoted() {
        for endpoint in [
            "ftp://127.0.0.1:4318",
            "://bad",
            "http://user:secret-9@127.0.0.1:4318/ x",
            "127.0.0.1:4318",
        ] {
            let err = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).unwrap_err();
            let err = err.to_string();

            assert!(
                err.contains("not an http:// or https:// URL"),
                "{endpoint}: {err}"
            );
            assert!(!err.contains("secret-9"), "{err}");
        }
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector.example:4318",
        );
        assert!(read(&[traces]).is_ok());
    }

    #[test]
    fn a_zero_batch_delay_queue_or_batch_is_refused() {
        for name in ABOVE_ZERO {
            let err = exporting(&[(name, "0")]).unwrap_err();

            assert!(err.to_string().contains(&format!("{name}=0")), "{err}");
        }
        assert!(exporting(&[("OTEL_BSP_SCHEDULE_DELAY", "1")]).is_ok());
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        assert_eq!(read(&[]).unwrap(), ExportSettings::Off);
        assert_eq!(
            read(&[
                ("OTEL_SERVICE_NAME", "api"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
            ])
            .unwrap(),
            ExportSettings::Off
        );
        // Settings for an export that does not happen stop nothing.
        assert_eq!(
            read(&[("OTEL_TRACES_SAMPLER", "xray")]).unwrap(),
            ExportSettings::Off
        );
    }

    #[test]
    fn either_endpoint_turns_export_on() {
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces",
        );

        assert_eq!(read(&[ENDPOINT]).unwrap(), unnamed());
        assert_eq!(read(&[traces]).unwrap(), unnamed());
    }

    #[test]
    fn disabling_wins_over_an_endpoint() {
        assert_eq!(
            read(&[ENDPOINT, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            ExportSettings::Off
        );
        assert_eq!(
            read(&[ENDPOINT, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            ExportSettings::Off
        );
        assert_eq!(
            read(&[ENDPOINT, ("OTEL_SDK_DISABLED", "false")]).unwrap(),
            unnamed()
        );
    }

    #[test]
    fn a_service_name_from_the_environment_replaces_the_roles_default() {
        let named = |vars: &[(&str, &str)]| exporting(vars).unwrap().0;

        assert!(named(&[("OTEL_SERVICE_NAME", "edge")]));
        assert!(named(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=flow, service.name=edge"
        )]));
        assert!(!named(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.namespace=x"
        )]));
    }

    #[test]
    fn what_is_not_built_in_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");

        let grpc = read(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        let zipkin = read(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();

        assert!(grpc.to_string().contains("grpc is not supported"), "{grpc}");
        assert!(
            zipkin.to_string().contains("zipkin is not supported"),
            "{zipkin}"
        );
        assert!(read(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_ok());
    }

    #[test]
    fn every_sampler_of_the_specification_is_read_and_parent_based_is_the_default() {
        let sampling = |vars: &[(&str, &str)]| exporting(vars).unwrap().1;
        let ratio = ("OTEL_TRACES_SAMPLER_ARG", "0.25");
        let of = |parent_based, root| Sampling { parent_based, root };

        assert_eq!(sampling(&[]), of(true, RootSampling::AlwaysOn));
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "always_on")]),
            of(false, RootSampling::AlwaysOn)
        );
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "always_off")]),
            of(false, RootSampling::AlwaysOff)
        );
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ratio]),
            of(false, RootSampling::Ratio(0.25))
        );
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "parentbased_always_on")]),
            of(true, RootSampling::AlwaysOn)
        );
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", " ParentBased_Always_Off ")]),
            of(true, RootSampling::AlwaysOff)
        );
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ratio]),
            of(true, RootSampling::Ratio(0.25))
        );
        // Without an argument the ratio is the specification's default, every trace.
        assert_eq!(
            sampling(&[("OTEL_TRACES_SAMPLER", "traceidratio")]),
            of(false, RootSampling::Ratio(1.0))
        );
    }

    #[test]
    fn a_sampler_the_sdk_lacks_or_a_bad_ratio_is_refused_naming_what_works() {
        let refused = |vars: &[(&str, &str)]| exporting(vars).unwrap_err().to_string();

        let xray = refused(&[("OTEL_TRACES_SAMPLER", "xray")]);
        let jaeger = refused(&[("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote")]);
        let percent = refused(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "25"),
        ]);
        let word = refused(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ]);

        assert!(xray.contains("xray is not supported"), "{xray}");
        assert!(xray.contains("parentbased_traceidratio"), "{xray}");
        assert!(
            jaeger.contains("jaeger_remote is not supported"),
            "{jaeger}"
        );
        assert!(percent.contains("from 0 to 1"), "{percent}");
        assert!(word.contains("OTEL_TRACES_SAMPLER_ARG=half"), "{word}");
    }

    #[test]
    fn numbers_and_headers_that_the_exporter_would_skip_are_refused() {
        let refused = |vars: &[(&str, &str)]| exporting(vars).unwrap_err().to_string();

        let timeout = refused(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
        let delay = refused(&[("OTEL_BSP_SCHEDULE_DELAY", "1.5")]);
        let headers = refused(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer secret-token,x-tenant",
        )]);

        assert!(
            timeout.contains("OTEL_EXPORTER_OTLP_TIMEOUT=10s"),
            "{timeout}"
        );
        assert!(delay.contains("OTEL_BSP_SCHEDULE_DELAY=1.5"), "{delay}");
        assert!(headers.contains("not key=value"), "{headers}");
        assert!(!headers.contains("secret"), "{headers}");
        assert!(
            exporting(&[
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1, b=2,")
            ])
            .is_ok()
        );
    }

    #[test]
    fn settings_that_have_no_effect_here_are_named_with_what_applies_instead() {
        let ignored = |vars: &[(&str, &str)]| exporting(vars).unwrap().2;

        let found = ignored(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ]);

        let text = found.join("\n");
        assert_eq!(found.len(), 5, "{text}");
        for name in [
            "OTEL_EXPORTER_OTLP_COMPRESSION=gzip",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_BSP_EXPORT_TIMEOUT",
            "OTEL_PROPAGATORS=tracecontext,baggage",
            "OTEL_TRACES_SAMPLER_ARG",
        ] {
            assert!(
                text.contains(&format!("{name} is not applied")),
                "{name}: {text}"
            );
        }
        assert!(text.contains("sent uncompressed"), "{text}");
        // What is applied, or asks for what is done anyway, is not named.
        assert!(
            ignored(&[
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_PROPAGATORS", "tracecontext"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
            ])
            .is_empty()
        );
    }
}
