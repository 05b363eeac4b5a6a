//! The tower layer every RPC passes through: request id, caller
//! authentication, and one structured log line per RPC.
//!
//! Health checks and reflection need no token. Everything else needs
//! `authorization: Bearer <token>`; the [`Principal`] it stands for is put in
//! the request extensions for the handlers. The log line is written when the
//! response body ends, with the final `grpc-status` (from the trailers),
//! the latency, the principal and the request id — never a header value or
//! a message body, so never a secret.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use super::call_end::{self, Outcome};
use super::status::to_status;
use crate::access::rate_limit::RateLimiter;
use crate::access::{Authenticator, Principal};
use crate::error::Error;
use std::sync::Arc;

/// Per-call facts handlers and audit use.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The caller's `x-request-id`, or one made up here.
    pub request_id: Arc<str>,
    /// The peer address, when known (written out only where it is used:
    /// most calls never need it as text).
    pub client: Option<std::net::SocketAddr>,
}

/// Layer adding authentication, rate limiting and RPC logging.
#[derive(Debug, Clone)]
pub struct RpcLayer {
    authn: Authenticator,
    limiter: Option<Arc<RateLimiter>>,
}

impl RpcLayer {
    /// A layer authenticating with `authn` and, when given, limiting each
    /// token's call rate.
    pub fn new(authn: Authenticator, limiter: Option<Arc<RateLimiter>>) -> Self {
        Self { authn, limiter }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, authn: self.authn.clone(), limiter: self.limiter.clone() }
    }
}

/// The service produced by [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    authn: Authenticator,
    limiter: Option<Arc<RateLimiter>>,
}

/// The lease call: its successes log at debug, not info (see [`RpcLog`]).
const LEASE_METHOD: &str = "/pullpass.v1.RegistryAuthService/IssueRegistryAuth";

/// Paths served without a token.
pub(super) fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl<S> Service<Request<Body>> for RpcService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authn = self.authn.clone();
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let started = Instant::now();
            // A cheap clone (shared bytes); the path is written out only
            // when the line is.
            let method = request.uri().clone();
            let public = is_public(method.path());
            let quiet_ok = public || method.path() == LEASE_METHOD;
            let request_id = request_id(&request);
            let client = client_address(&request);
            request.extensions_mut().insert(CallContext { request_id: Arc::clone(&request_id), client });
            let mut principal = None;
            if !public {
                let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let deadline = super::deadline_of(request.headers(), crate::changes::CONFIRM_WAIT);
                let checked = authn.authenticate(header, deadline).await.and_then(|caller| {
                    match limiter.as_ref().map(|l| l.check(&caller.token_id)) {
                        Some(Err(retry_after)) => Err(Error::ResourceExhausted {
                            reason: pullpass::reason::RATE_LIMITED,
                            message: format!("{} is over its request rate; retry shortly", caller.resource_name),
                            retry_after,
                        }),
                        _ => Ok(caller),
                    }
                });
                match checked {
                    Ok(caller) => {
                        principal = Some(Arc::clone(&caller));
                        request.extensions_mut().insert::<Arc<Principal>>(caller);
                    }
                    Err(error) => {
                        let status = to_status(&error);
                        let mut response = status.into_http::<Body>();
                        set_request_id(&mut response, &request_id);
                        let log = RpcLog { method, principal, request_id, started, quiet_ok, done: false };
                        log.finish(Some(&Outcome::of_headers(response.headers())));
                        return Ok(response);
                    }
                }
            }
            let response = inner.call(request).await?;
            let (mut parts, body) = response.into_parts();
            set_request_id_headers(&mut parts.headers, &request_id);
            let log = RpcLog { method, principal, request_id, started, quiet_ok, done: false };
            Ok(call_end::observe(Response::from_parts(parts, body), move |outcome| log.finish(outcome)))
        })
    }
}

/// The peer address, over TCP or TLS.
fn client_address(request: &Request<Body>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()))
}

/// The caller's `x-request-id`, or a fresh one.
fn request_id(request: &Request<Body>) -> Arc<str> {
    crate::request_id::of(request.headers())
}

fn set_request_id(response: &mut Response<Body>, request_id: &str) {
    set_request_id_headers(response.headers_mut(), request_id);
}

fn set_request_id_headers(headers: &mut http::HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

/// The one log line of an RPC. Failures log at warn. Successes log at
/// info, except on the hot paths, which log at debug: health checks and
/// reflection, and `IssueRegistryAuth`, whose every lease the audit trail
/// already records (with its image and granted scope) and the metrics
/// count. At tens of thousands of leases a second, an info line each would
/// be the largest cost of a cached lease and gigabytes of log a day.
struct RpcLog {
    method: http::Uri,
    principal: Option<Arc<Principal>>,
    request_id: Arc<str>,
    started: Instant,
    quiet_ok: bool,
    done: bool,
}

impl RpcLog {
    fn finish(mut self, outcome: Option<&Outcome>) {
        self.emit(outcome);
    }

    fn emit(&mut self, outcome: Option<&Outcome>) {
        if self.done {
            return;
        }
        self.done = true;
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let (code, message) = match outcome {
            Some(o) => (o.code, o.message.as_str()),
            None => (tonic::Code::Cancelled, "the client went away before the response ended"),
        };
        let code_name = log_name(code);
        let sampler = match code {
            tonic::Code::Unauthenticated => Some(&UNAUTHENTICATED_LINES),
            tonic::Code::ResourceExhausted => Some(&EXHAUSTED_LINES),
            _ => None,
        };
        if let Some(sampler) = sampler
            && !sampler.admit()
        {
            return;
        }
        let method = self.method.path();
        let principal = self.principal.as_ref().map_or("", |p| &*p.resource_name);
        if code == tonic::Code::Ok {
            if self.quiet_ok {
                tracing::debug!(target: "pullpass::rpc", method, code = code_name, latency_ms, principal, request_id = %self.request_id, "rpc");
            } else {
                tracing::info!(target: "pullpass::rpc", method, code = code_name, latency_ms, principal, request_id = %self.request_id, "rpc");
            }
        } else {
            tracing::warn!(target: "pullpass::rpc", method, code = code_name, latency_ms, principal, request_id = %self.request_id, error = %message, "rpc");
        }
    }
}

/// A code as log lines spell it (tonic's names: `Ok`, `Cancelled`, …).
fn log_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "Ok",
        tonic::Code::Cancelled => "Cancelled",
        other => crate::metrics::grpc::code_name(other),
    }
}

/// Refusals logged one by one in each second, per code; the rest are
/// counted and summed up in one line once that second is over (by the next
/// refusal, or by a timer the first suppressed refusal of the second sets,
/// so the sum is written even when the flood stops). A flood of calls
/// without a valid token (or over their rate) costs a counter increment
/// each, not a log line each; the metrics still count them all.
const LINES_PER_SECOND: u32 = 10;

static UNAUTHENTICATED_LINES: LineSampler = LineSampler::new("Unauthenticated");
static EXHAUSTED_LINES: LineSampler = LineSampler::new("ResourceExhausted");

struct LineSampler {
    code: &'static str,
    second: std::sync::atomic::AtomicU64,
    logged: std::sync::atomic::AtomicU32,
    suppressed: std::sync::atomic::AtomicU64,
}

/// Whole seconds since the Unix epoch.
fn unix_second() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl LineSampler {
    const fn new(code: &'static str) -> Self {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        Self { code, second: AtomicU64::new(0), logged: AtomicU32::new(0), suppressed: AtomicU64::new(0) }
    }

    /// May this refusal be logged on its own line?
    fn admit(&'static self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.roll(unix_second());
        if self.logged.fetch_add(1, Relaxed) < LINES_PER_SECOND {
            return true;
        }
        if self.suppressed.fetch_add(1, Relaxed) == 0 {
            // The first refusal left out this second: make sure the sum is
            // written once the second is over, even if no refusal follows.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let into_second = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0);
                    let rest = std::time::Duration::from_nanos(1_000_000_000 - u64::from(into_second));
                    tokio::time::sleep(rest + std::time::Duration::from_millis(5)).await;
                    self.roll(unix_second());
                });
            }
        }
        false
    }

    /// Starts second `now` if it is a new one, summing up the refusals the
    /// second before left out.
    fn roll(&self, now: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let second = self.second.load(Relaxed);
        if second != now && self.second.compare_exchange(second, now, Relaxed, Relaxed).is_ok() {
            self.logged.store(0, Relaxed);
            let suppressed = self.suppressed.swap(0, Relaxed);
            if suppressed > 0 {
                let code = self.code;
                tracing::warn!(target: "pullpass::rpc", code, suppressed, "rpc: {suppressed} more {code} refusals in the last second were not logged one by one");
            }
        }
    }
}

impl Drop for RpcLog {
    fn drop(&mut self) {
        self.emit(None);
    }
}
