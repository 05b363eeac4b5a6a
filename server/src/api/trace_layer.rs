//! The tower layer giving each RPC its trace span (see `telemetry`):
//! continued from the caller's `traceparent`, entered while the call runs
//! (authentication included), so store, seal and upstream spans nest under
//! it, and closed with the final `grpc-status`. Health and reflection are
//! not traced; with tracing off this layer only passes calls through.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use super::call_end;
use crate::telemetry;

/// Layer opening a span per RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service produced by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for TraceService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if !telemetry::enabled() || super::rpc_layer::is_public(path) {
            return Box::pin(self.inner.call(request));
        }
        let span = telemetry::rpc_span(path, request.headers());
        let answer = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        Box::pin(async move {
            let response = answer.await?;
            Ok(call_end::observe(response, move |outcome| {
                telemetry::rpc_end(&span, outcome.map_or(tonic::Code::Cancelled, |o| o.code));
            }))
        })
    }
}
