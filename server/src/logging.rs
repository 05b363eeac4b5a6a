//! Structured logs with `tracing`: text or JSON lines on stderr. Standard
//! output is kept for what a human or script must read (the root token shown
//! once, the listening address, command results).
//!
//! The subscriber is a registry with two layers: the log lines (filtered by
//! `--log-level`) and, when traces are exported, the OpenTelemetry layer
//! of `telemetry` (which sees only its own spans).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The log-line layer, with its filter. A bad filter falls back to `info`;
/// the error is returned to be logged once the subscriber is up.
fn log_layer<S>(format: LogFormat, filter: &str) -> (Box<dyn Layer<S> + Send + Sync>, Option<String>)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => lines.with_ansi(false).with_filter(filter).boxed(),
        LogFormat::Json => {
            lines.json().flatten_event(true).with_current_span(false).with_span_list(false).with_filter(filter).boxed()
        }
    };
    (layer, bad)
}

/// Installs the global subscriber: log lines, and trace export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (call inside the tokio runtime).
pub fn init(format: LogFormat, filter: &str) {
    let (lines, bad) = log_layer::<Registry>(format, filter);
    let subscriber = tracing_subscriber::registry().with(lines);
    #[cfg(feature = "otel")]
    let (subscriber, otel_error) = match crate::telemetry::layer() {
        Ok(otel) => (subscriber.with(otel), None),
        Err(e) => (subscriber.with(None), Some(e)),
    };
    if subscriber.try_init().is_err() {
        return;
    }
    if let Some(error) = bad {
        tracing::warn!(%error, "invalid log filter; using `info`");
    }
    #[cfg(feature = "otel")]
    if let Some(error) = otel_error {
        tracing::warn!(%error, "traces are not exported");
    }
}

/// Installs log lines plus trace export to `exporter` (tests: the SDK's
/// in-memory exporter). Returns false when a subscriber was already set.
#[cfg(feature = "otel")]
pub fn init_with_span_exporter<E>(format: LogFormat, filter: &str, exporter: E) -> bool
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    let (lines, _) = log_layer::<Registry>(format, filter);
    let otel = crate::telemetry::layer_with_exporter(exporter);
    tracing_subscriber::registry().with(lines).with(otel).try_init().is_ok()
}
