//! The pull gateway: a read-only OCI distribution endpoint inside
//! `pullpassd`, for runtimes that take only a username and password
//! (kubelet with containerd, CRI-O, podman, Apptainer, credential helpers).
//!
//! This module is the HTTP front end only: HTTP/1.1 and h2 (hyper), TLS,
//! the paths ([`route`]), the `Authorization` header ([`credentials`]),
//! `Range` ([`range`]), the distribution error JSON ([`errors`]), one log
//! line per request ([`response`]). Who may pull what, caches and registry
//! requests are `pulls`; it knows no gRPC and no SQL.
//!
//! A request's journey: Basic credentials (else 401 with the challenge,
//! on every path) → [`crate::pulls::Pulls::authenticate`] → GET or HEAD
//! only (else 405) → [`route::parse`] → `Pulls::authorize` (before any
//! cache or registry) → one thin handler per endpoint.

pub mod credentials;
pub mod errors;
pub mod range;
pub mod response;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, header};
use tokio::net::TcpListener;

use crate::access::rate_limit::RateLimiter;
use crate::audit::{Actor, Origin};
use crate::pulls::{PullError, Pulls};
use crate::tls::ReloadableTls;
use errors::GatewayError;
use response::{Body, RequestLog};
use route::{Route, Target};

/// The gateway's request handler.
#[derive(Debug, Clone)]
pub struct Gateway {
    pulls: Pulls,
    timeout: Duration,
    limiter: Option<Arc<RateLimiter>>,
    issuer: Option<Arc<crate::issuer::Issuer>>,
}

impl Gateway {
    /// A gateway over `pulls`, giving each registry request `timeout` to
    /// answer (its headers; a blob body may then take as long as it needs,
    /// if it never stalls), and limiting each token's requests with
    /// `limiter` (shared with the gRPC API) when given.
    pub fn new(pulls: Pulls, timeout: Duration, limiter: Option<Arc<RateLimiter>>) -> Self {
        Self { pulls, timeout, limiter, issuer: None }
    }

    /// Also publishes `issuer`'s discovery document and key set (no
    /// authentication: clouds fetch them).
    pub fn with_issuer(mut self, issuer: Option<Arc<crate::issuer::Issuer>>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Answers one request from `client`. Never fails: errors are
    /// distribution error responses. The log line is written when the
    /// response body ends.
    pub async fn handle<B>(&self, request: Request<B>, client: Option<SocketAddr>) -> Response<Body> {
        let mut log = RequestLog::new(&request, client);
        let head = request.method() == Method::HEAD;
        let mut response = match self.respond(&request, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                log.error = Some(error.message.clone());
                response::error(&error, head)
            }
        };
        let headers = response.headers_mut();
        headers.insert("docker-distribution-api-version", http::HeaderValue::from_static("registry/2.0"));
        if let Ok(id) = http::HeaderValue::from_str(&log.request_id) {
            headers.insert("x-request-id", id);
        }
        response::logged(response, log)
    }

    async fn respond<B>(&self, request: &Request<B>, log: &mut RequestLog) -> Result<Response<Body>, GatewayError> {
        if let Some(issuer) = &self.issuer
            && let Some(document) =
                crate::issuer::documents::respond(issuer, request.method(), request.uri().path()).await
        {
            log.kind = "issuer";
            return Ok(document.map(response::text_body));
        }
        let presented = credentials::basic(request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()))
            .ok_or_else(|| {
                GatewayError::unauthorized(
                    "authentication required: log in with username `pullpass` and a gateway password (IssueRegistryAuth with via_gateway), or a LAUNCHER access token",
                )
            })?;
        let caller = self.pulls.authenticate(&presented.username, &presented.password).await?;
        log.principal = caller.name();
        if let Some(Err(retry_after)) = self.limiter.as_ref().map(|l| l.check(&caller.principal().token_id)) {
            let message = format!("{} is over its request rate; retry shortly", caller.principal().resource_name);
            return Err(PullError::RateLimited { message, retry_after }.into());
        }
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return Err(GatewayError::method_not_allowed(method));
        }
        let query = request.uri().query();
        let gateway_ref = match route::parse(request.uri().path(), query, self.pulls.addressing())? {
            Route::Root => {
                log.kind = "base";
                return Ok(response::api_root());
            }
            Route::Pull(gateway_ref) => gateway_ref,
        };
        let actor = Actor {
            principal: log.principal.as_str().into(),
            request_id: std::sync::Arc::clone(&log.request_id),
            origin: log.client.map_or(Origin::Unknown, Origin::Peer),
        };
        let pull = self.pulls.authorize(&caller, &gateway_ref.registry, &gateway_ref.repository, actor).await?;
        let deadline = Instant::now() + self.timeout;
        let head = method == Method::HEAD;
        match &gateway_ref.target {
            Target::Manifest(reference) => {
                log.kind = "manifest";
                let accept = joined(request.headers(), header::ACCEPT);
                let (answer, cached) = self.pulls.manifest(&pull, reference, accept.as_deref(), head, deadline).await?;
                log.cached = cached;
                Ok(response::manifest(&answer, head))
            }
            Target::Blob(digest) => {
                log.kind = "blob";
                let range = range::single_byte_range(request.headers().get(header::RANGE).map(|v| v.as_bytes()));
                let blob = self.pulls.blob(&pull, digest, range.as_deref(), head, deadline).await?;
                Ok(response::blob(blob))
            }
            Target::Tags => {
                log.kind = "tags";
                let tags = self.pulls.tags(&pull, tags_query(query).as_deref(), deadline).await?;
                Ok(response::tags(tags, &gateway_ref, pull.image.repository(), head))
            }
        }
    }
}

/// Every value of a header, joined by `, `.
fn joined(headers: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The `n` and `last` parameters of a tag-list query, as sent.
fn tags_query(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("n", value)) => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.len() <= 6,
            Some(("last", value)) => value.len() <= 256,
            _ => false,
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Serves `gateway` on `listener` (over TLS when given) until `shutdown`
/// completes, then lets open requests finish for up to `grace` and closes
/// whatever is still open.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    connections: crate::connections::Connections,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let handle = move |request, peer| {
        let gateway = gateway.clone();
        async move { gateway.handle(request, Some(peer)).await }
    };
    crate::http_listener::serve("gateway", listener, tls, connections, handle, shutdown, grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_n_and_last_reach_the_registry() {
        assert_eq!(tags_query(Some("n=10&last=v1&ns=docker.io")).as_deref(), Some("n=10&last=v1"));
        assert_eq!(tags_query(Some("n=ten&x=1")), None);
        assert_eq!(tags_query(None), None);
    }
}
