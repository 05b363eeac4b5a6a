//! Traces: one span per RPC, continuing the caller's W3C `traceparent`,
//! with child spans for store writes, sealing and opening secrets, and
//! upstream exchanges and requests. Exported over OTLP/gRPC (tonic) when
//! the cargo feature `otel` is on (the default) and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise nothing is created.
//!
//! The spans are `tracing` spans of target [`TARGET`] at TRACE level, seen
//! only by the OpenTelemetry layer (the log layer's filter never enables
//! them, so logs look the same with tracing on). When tracing is off,
//! [`rpc_span`] and [`child`] return `Span::none()` after one atomic load,
//! so the hot path pays nothing. Health and reflection are not traced.
//!
//! Attributes are fixed names with bounded values (the gRPC service,
//! method and code; the span's own name). Never a header value, a message
//! field, a workspace, or a secret.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Span;

/// The `tracing` target of exported spans.
pub const TARGET: &str = "pullpass::trace";

static ON: AtomicBool = AtomicBool::new(false);

/// Are spans being exported?
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A child span named `name` (`store.write`, `seal.open`,
/// `upstream.exchange`…) under the current one, or none when tracing is off.
pub fn child(name: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::trace_span!(target: TARGET, "pullpass", otel.name = name)
}

/// The span of one RPC to `path` (`/pkg.Service/Method`), whose parent is
/// the caller's `traceparent` when it sent a valid one.
pub fn rpc_span(path: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let method = crate::metrics::GrpcMethod::of_path(path);
    let span = tracing::trace_span!(
        target: TARGET,
        "rpc",
        otel.name = %format_args!("{}/{}", method.service(), method.method()),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = method.service(),
        rpc.method = method.method(),
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    otel::continue_trace(&span, headers);
    span
}

/// Records how the RPC of `span` ended.
pub fn rpc_end(span: &Span, code: tonic::Code) {
    if span.is_none() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(feature = "otel")]
pub use otel::{TracingGuard, layer, layer_with_exporter};

#[cfg(feature = "otel")]
mod otel {
    use std::sync::Mutex;

    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
    use tracing::Subscriber;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::registry::LookupSpan;

    use super::{ON, TARGET};

    /// The provider installed, flushed at exit.
    static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

    /// Flushes and stops the exporter when dropped (at the end of `main`).
    #[derive(Debug)]
    pub struct TracingGuard;

    impl Drop for TracingGuard {
        fn drop(&mut self) {
            let provider = PROVIDER.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(provider) = provider {
                let _ = provider.shutdown();
            }
        }
    }

    /// The OpenTelemetry layer exporting over OTLP/gRPC, when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter also reads the
    /// other standard `OTEL_EXPORTER_OTLP_*` variables). Must be called
    /// inside a tokio runtime.
    #[allow(clippy::type_complexity)]
    pub fn layer<S>() -> Result<Option<Box<dyn Layer<S> + Send + Sync>>, String>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if !configured {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("OTLP exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("pullpassd").build())
            .build();
        Ok(Some(install(provider)))
    }

    /// The layer exporting every span to `exporter` as it ends (tests: the
    /// SDK's in-memory exporter).
    pub fn layer_with_exporter<S, E>(exporter: E) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
        E: SpanExporter + 'static,
    {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("pullpassd").build())
            .build();
        install(provider)
    }

    fn install<S>(provider: SdkTracerProvider) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = provider.tracer("pullpassd");
        *PROVIDER.lock().unwrap_or_else(|p| p.into_inner()) = Some(provider);
        ON.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
            .boxed()
    }

    /// Headers as the propagator reads them.
    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    /// Makes the caller's `traceparent` (and `tracestate`) the parent of
    /// `span`; an absent or malformed one starts a new trace.
    pub(super) fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
        if !headers.contains_key("traceparent") {
            return;
        }
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(parent);
    }
}

#[cfg(not(feature = "otel"))]
mod otel {
    pub(super) fn continue_trace(_span: &tracing::Span, _headers: &http::HeaderMap) {}
}
