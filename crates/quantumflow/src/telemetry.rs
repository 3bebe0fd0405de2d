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
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

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
        ExportSettings::Otlp { service_named } => Some(provider(service, *service_named)?),
    };

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
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
    // Spans are exported at info and above whatever RUST_LOG says: quieting the logs must not
    // cut traces into pieces.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("quantumflow"))
            .with_filter(LevelFilter::INFO)
    });
    Registry::default()
        .with(logs)
        .with(spans)
        .with(crate::observe::pool_waits())
        .init();

    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn provider(service: &'static str, service_named: bool) -> anyhow::Result<SdkTracerProvider> {
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
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Whether spans are exported, decided from the standard OpenTelemetry variables.
///
/// Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. OTLP over gRPC is not
/// built in, and other exporters than `otlp` are not either; asking for them is an error
/// rather than a silent loss of traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExportSettings {
    /// Nothing is exported, and nothing tries to connect anywhere.
    Off,
    /// Spans go to the OTLP/HTTP endpoint the variables name.
    Otlp {
        /// Whether the variables name the service, overriding the role's default name.
        service_named: bool,
    },
}

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
        let named_in_attributes = set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.split('=').next().map(str::trim) == Some("service.name"))
        });
        Ok(Self::Otlp {
            service_named: set("OTEL_SERVICE_NAME").is_some() || named_in_attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<ExportSettings> {
        ExportSettings::read(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
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
    }

    #[test]
    fn either_endpoint_turns_export_on() {
        let unnamed = ExportSettings::Otlp {
            service_named: false,
        };
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces",
        );

        assert_eq!(read(&[endpoint]).unwrap(), unnamed);
        assert_eq!(read(&[traces]).unwrap(), unnamed);
    }

    #[test]
    fn disabling_wins_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");

        assert_eq!(
            read(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            ExportSettings::Off
        );
        assert_eq!(
            read(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            ExportSettings::Off
        );
        assert_eq!(
            read(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).unwrap(),
            ExportSettings::Otlp {
                service_named: false
            }
        );
    }

    #[test]
    fn a_service_name_from_the_environment_replaces_the_roles_default() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let named = ExportSettings::Otlp {
            service_named: true,
        };

        assert_eq!(
            read(&[endpoint, ("OTEL_SERVICE_NAME", "edge")]).unwrap(),
            named
        );
        assert_eq!(
            read(&[
                endpoint,
                ("OTEL_RESOURCE_ATTRIBUTES", "team=flow, service.name=edge")
            ])
            .unwrap(),
            named
        );
        assert_eq!(
            read(&[
                endpoint,
                ("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=x")
            ])
            .unwrap(),
            ExportSettings::Otlp {
                service_named: false
            }
        );
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
}
