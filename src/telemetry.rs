//! Logs and traces. Traces go to an OpenTelemetry collector over OTLP/HTTP when the standard
//! OTEL_* variables name one (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT; off when unset
//! or OTEL_SDK_DISABLED=true). W3C trace context rides in AMQP headers (`traceparent`,
//! `tracestate`) so one message is one trace across every actor and process.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the tracer provider alive; flushes spans on drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

fn otel_enabled() -> bool {
    let set = |k: &str| std::env::var(k).map(|v| !v.trim().is_empty()).unwrap_or(false);
    let disabled = std::env::var("OTEL_SDK_DISABLED").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false);
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Colour codes only for a terminal, and not when `NO_COLOR` is set (no-color.org): files,
/// pipes and log collectors get plain text.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install logging (text or JSON; `EDINODE_LOG_FORMAT=json`) and, when configured, OTLP tracing.
pub fn init() -> Telemetry {
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn,lapin=warn".into());
    let json = std::env::var("EDINODE_LOG_FORMAT").as_deref() == Ok("json");
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter()).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(colour(std::io::stderr().is_terminal())).with_writer(std::io::stderr).with_filter(filter()).boxed()
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut provider = None;
    let otel_layer = if otel_enabled() {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => {
                let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "edinode".into());
                let p = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
                    .build();
                let tracer = p.tracer("edinode");
                provider = Some(p);
                Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(tracing_subscriber::filter::LevelFilter::INFO))
            }
            Err(e) => {
                eprintln!("edinode: OpenTelemetry exporter not started: {e}");
                None
            }
        }
    } else {
        None
    };
    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel_layer).try_init();
    Telemetry { provider }
}

struct Headers<'a>(&'a mut Vec<(String, String)>);
impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct HeadersRef<'a>(&'a [(String, String)]);
impl Extractor for HeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The W3C trace context of a span, as headers.
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    let mut out = Vec::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(&mut out));
    out
}

/// Make `span` a child of the trace context carried in `headers`, if any.
pub fn set_parent(span: &tracing::Span, headers: &[(String, String)]) {
    if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("traceparent")) {
        let cx = TraceContextPropagator::new().extract(&HeadersRef(headers));
        let _ = span.set_parent(cx);
    }
}
