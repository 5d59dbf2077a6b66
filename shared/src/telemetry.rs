//! Logs to stderr and, when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, Vantage's own spans as OpenTelemetry traces over
//! OTLP/gRPC. The SDK reads the other standard variables itself: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`; `OTEL_EXPORTER_OTLP_CERTIFICATE` names the CA of a
//! collector behind TLS. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn traces off.
//!
//! Trace context crosses process boundaries inside Vantage's own messages as W3C `traceparent`
//! (and `tracestate`) entries: [`carrier`] writes a span's context, [`adopt`] makes a span the
//! child of one.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of spans that exist for traces only (one run of a target, the probe and its
/// stages): exported when traces are on, never recorded for log lines. No log line needs them
/// for context, and at several per probe, recording their fields for the log layer cost more
/// CPU than anything else an agent does besides the probe itself; with traces off they are
/// not even created.
pub const TRACE_ONLY: &str = "vantage_trace";

/// The exporter's lifetime: dropping it (or [`Telemetry::shutdown`]) sends the spans still
/// buffered, waiting at most a few seconds.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Drives the gRPC exporter, apart from the program's own runtime (which may be gone by the
    /// time the last spans are flushed).
    runtime: Option<tokio::runtime::Runtime>,
}

/// Installs the global subscriber: human-readable logs on stderr filtered by `VANTAGE_LOG` (else
/// `default_filter`), plus the OTLP exporter when configured. `service` is the default
/// `service.name`. A tracing setup that cannot work is a warning, never a reason not to monitor.
pub fn init(service: &'static str, default_filter: &str) -> Telemetry {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_env("VANTAGE_LOG").unwrap_or_else(|_| default_filter.into()).and(
                tracing_subscriber::filter::filter_fn(|meta| !(meta.is_span() && meta.target() == TRACE_ONLY))
                    // No level of its own: the level filter's hint stays in force, and with it
                    // `log`'s maximum level (rustls logs every handshake step at trace level).
                    .with_max_level_hint(tracing::level_filters::LevelFilter::TRACE),
            ),
        );
    let (exporter, problem) = match exporter(service) {
        Ok(exporter) => (exporter, None),
        Err(problem) => (None, Some(problem)),
    };
    let traces = exporter.as_ref().map(|(provider, _)| {
        // Only Vantage's spans: the libraries' own (h2, hyper, tonic) would drown them.
        let ours = tracing_subscriber::filter::Targets::new()
            .with_target("vantage_agent", tracing::Level::INFO)
            .with_target("vantage_coordinator", tracing::Level::INFO)
            .with_target("vantage_shared", tracing::Level::INFO)
            .with_target(TRACE_ONLY, tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(ours)
    });
    // No traces layer at all without an exporter: an absent layer still counts as interested in
    // every span, and the trace-only spans would be created (and recorded) for nothing.
    let registry = tracing_subscriber::registry().with(logs);
    match traces {
        Some(traces) => registry.with(traces).init(),
        None => registry.init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("OpenTelemetry traces are off: {problem}");
    } else if exporter.is_some() {
        tracing::info!(endpoint = endpoint().unwrap_or_default(), "exporting traces over OTLP/gRPC");
    }
    let (provider, runtime) = exporter.unzip();
    Telemetry { provider, runtime }
}

fn endpoint() -> Option<String> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

type Exporter = (SdkTracerProvider, tokio::runtime::Runtime);

/// The OTLP pipeline, when the environment asks for one.
fn exporter(service: &'static str) -> Result<Option<Exporter>, String> {
    let var = |name: &str| std::env::var(name).unwrap_or_default().trim().to_ascii_lowercase();
    if var("OTEL_SDK_DISABLED") == "true" || var("OTEL_TRACES_EXPORTER") == "none" || endpoint().is_none() {
        return Ok(None);
    }
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        let protocol = var(name);
        if !protocol.is_empty() && protocol != "grpc" {
            return Err(format!("{name}={protocol}: Vantage exports OTLP over gRPC only (set it to grpc, port 4317)"));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the exporter's runtime: {e}"))?;
    let exporter = {
        let _inside = runtime.enter();
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Ok(ca_file) = std::env::var("OTEL_EXPORTER_OTLP_CERTIFICATE") {
            use opentelemetry_otlp::WithTonicConfig;
            let pem = std::fs::read(&ca_file).map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE={ca_file}: {e}"))?;
            let tls =
                tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            builder = builder.with_tls_config(tls);
        }
        builder.build().map_err(|e| format!("the OTLP exporter: {e}"))?
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() && !named {
        resource = resource.with_service_name(service);
    }
    let resource =
        resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    Ok(Some((provider, runtime)))
}

impl Telemetry {
    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("OpenTelemetry: the last spans were not all sent: {e}");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `span`'s trace context as W3C trace-context entries (`traceparent`, maybe `tracestate`), to
/// carry inside a message; empty when traces are off.
pub fn carrier(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Makes `span` the child of the context in `carrier` (from [`carrier`], or a caller's
/// `traceparent` header); a missing or malformed context leaves `span` where it was.
pub fn adopt<'a>(span: &tracing::Span, carrier: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let carrier: HashMap<String, String> =
        carrier.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
    if !carrier.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}
