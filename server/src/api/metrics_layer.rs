//! The tower layer counting RPCs for Prometheus, outermost, so calls
//! refused by authentication or rate limits are counted too:
//! `grpc_server_started_total` when a call arrives, then
//! `grpc_server_handled_total` and `grpc_server_handling_seconds` when it
//! ends, with the code read from `grpc-status` (see `metrics::grpc` for the
//! labels). Off (a pass-through) unless metrics are served.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use super::call_end;
use crate::metrics::{self, GrpcMethod};

/// Layer recording gRPC metrics.
#[derive(Debug, Clone, Copy)]
pub struct MetricsLayer {
    enabled: bool,
}

impl MetricsLayer {
    /// A layer that records when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, enabled: self.enabled }
    }
}

/// The service produced by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    enabled: bool,
}

impl<S> Service<Request<Body>> for MetricsService<S>
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
        if !self.enabled {
            return Box::pin(self.inner.call(request));
        }
        let method = GrpcMethod::of_path(request.uri().path());
        let started = Instant::now();
        metrics::grpc_started(&method);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(call_end::observe(response, move |outcome| {
                // A client gone before the end: Canceled, as grpc-go counts it.
                let code = outcome.map_or(tonic::Code::Cancelled, |o| o.code);
                metrics::grpc_handled(&method, code, started.elapsed());
            }))
        })
    }
}
