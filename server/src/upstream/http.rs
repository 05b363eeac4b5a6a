//! HTTP to registries, token realms and provider APIs: reqwest over rustls
//! (ring), never following redirects, with deadlines, bounded bodies, and at
//! most three attempts with jittered backoff on connection errors and 5xx,
//! within each endpoint's retry budget and circuit breaker ([`budget`]).
//!
//! [`SafeResolver`] refuses link-local and metadata addresses after DNS, so a
//! name pointing at `169.254.169.254` is as blocked as the literal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, RequestBuilder, StatusCode, header::HeaderMap};

use super::budget::{self, Budgets, Outcome};
use super::realm::is_forbidden_address;
use crate::metrics::{self, UpstreamKind, UpstreamOutcome};

/// Largest response body read, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// Attempts per request (the first and two retries).
pub const MAX_ATTEMPTS: u32 = 3;
/// Longest a single connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An attempt that had this long and got no answer says the endpoint is
/// failing; one cut shorter by its caller's deadline says nothing.
const FAIR_WAIT: Duration = Duration::from_secs(1);

/// A response read to the end. Its body may hold an issued token or a
/// password, so `Debug` shows only its length.
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// Every value of a header, as text.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

/// Why a request produced no usable reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFailure {
    /// Connection refused, reset, DNS failure, TLS failure…
    Transport(String),
    /// The deadline passed.
    Deadline,
    /// The body was larger than the limit (bytes).
    TooLarge(usize),
    /// Not sent: the endpoint's breaker is open ([`budget`]).
    Shed(String),
    /// The server's certificate is not acceptable (wrong name, expired,
    /// unknown issuer…); not retried.
    Certificate(String),
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => f.write_str(e),
            Self::Deadline => f.write_str("no answer before the deadline"),
            Self::TooLarge(limit) => write!(f, "the response is larger than {limit} bytes"),
            Self::Shed(why) | Self::Certificate(why) => f.write_str(why),
        }
    }
}

/// HTTP clients: one shared, plus one per private CA bundle.
pub struct Http {
    default: Client,
    private_ca: Mutex<HashMap<String, Client>>,
    budgets: Budgets,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

impl Http {
    /// Clients trusting the Mozilla roots (webpki-roots).
    pub fn new() -> Result<Self, String> {
        Ok(Self { default: build_client(&[])?, private_ca: Mutex::default(), budgets: Budgets::default() })
    }

    /// The client for a credential: trusting its CA bundle too, if any.
    pub fn client_for(&self, ca_bundle_pem: &str) -> Result<Client, String> {
        if ca_bundle_pem.is_empty() {
            return Ok(self.default.clone());
        }
        let mut cache = self.private_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = cache.get(ca_bundle_pem) {
            return Ok(client.clone());
        }
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the credential's CA bundle does not parse: {e}"))?;
        let client = build_client(&certs)?;
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(ca_bundle_pem.to_owned(), client.clone());
        Ok(client)
    }

    /// Sends the request built by `build` until it gets a non-5xx answer
    /// and reads its body (at most [`MAX_BODY`] bytes), before `deadline`:
    /// at most [`MAX_ATTEMPTS`] attempts in all, retries within the
    /// endpoint's budget. A body cut off by the network is retried too.
    pub async fn send(
        &self,
        kind: UpstreamKind,
        build: impl Fn() -> RequestBuilder,
        deadline: Instant,
    ) -> Result<Reply, HttpFailure> {
        let endpoint = self.admit(kind, &build)?;
        let mut attempt = 0;
        loop {
            let response = self.until_answered(kind, &build, deadline, &endpoint, &mut attempt).await?;
            let status = response.status();
            let headers = response.headers().clone();
            match read_body(response, MAX_BODY, deadline).await {
                Ok(body) => return Ok(Reply { status, headers, body }),
                Err(HttpFailure::Transport(cause)) => {
                    self.budgets.record(&endpoint, Outcome::Failed(&cause));
                    if !self.pause_before_retry(kind, &endpoint, attempt, deadline).await {
                        return Err(HttpFailure::Transport(cause));
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Like [`Http::send`], but returns as soon as the headers of the last
    /// attempt arrive, leaving the body to the caller (for streaming). A 5xx
    /// answer or a connection error is retried before any body is read.
    pub async fn open(
        &self,
        kind: UpstreamKind,
        build: impl Fn() -> RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response, HttpFailure> {
        let endpoint = self.admit(kind, &build)?;
        self.until_answered(kind, &build, deadline, &endpoint, &mut 0).await
    }

    /// The endpoint `build` names, if its breaker lets a request through.
    fn admit(&self, kind: UpstreamKind, build: &impl Fn() -> RequestBuilder) -> Result<String, HttpFailure> {
        let (_, request) = build().build_split();
        let endpoint = budget::endpoint_of(request.map_err(|e| classify(&e))?.url());
        match self.budgets.admit(&endpoint) {
            Ok(()) => Ok(endpoint),
            Err(shed) => {
                metrics::upstream_shed(kind);
                Err(HttpFailure::Shed(shed.to_string()))
            }
        }
    }

    /// Attempts until an answer that is not a 5xx, counting in `attempt`.
    async fn until_answered(
        &self,
        kind: UpstreamKind,
        build: &impl Fn() -> RequestBuilder,
        deadline: Instant,
        endpoint: &str,
        attempt: &mut u32,
    ) -> Result<reqwest::Response, HttpFailure> {
        loop {
            *attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                self.budgets.record(endpoint, Outcome::Inconclusive);
                return Err(HttpFailure::Deadline);
            }
            let sent_at = Instant::now();
            let sent = tracing::Instrument::instrument(build().send(), crate::telemetry::child(kind.span_name()));
            let outcome = match tokio::time::timeout(remaining, sent).await {
                Err(_) => Err(HttpFailure::Deadline),
                Ok(sent) => sent.map_err(|e| classify(&e)),
            };
            let seen = match &outcome {
                Ok(response) if response.status().is_server_error() => {
                    Outcome::Failed(response.status().canonical_reason().unwrap_or("a server error"))
                }
                Ok(_) => Outcome::Answered,
                Err(HttpFailure::Transport(cause) | HttpFailure::Certificate(cause)) => Outcome::Failed(cause),
                Err(HttpFailure::Deadline) if remaining >= FAIR_WAIT => Outcome::Failed("no answer in time"),
                Err(_) => Outcome::Inconclusive,
            };
            self.budgets.record(endpoint, seen);
            let measured = match &outcome {
                Ok(response) => UpstreamOutcome::Status(response.status().as_u16()),
                Err(HttpFailure::Deadline) => UpstreamOutcome::Timeout,
                Err(_) => UpstreamOutcome::Error,
            };
            metrics::upstream_request(kind, measured, sent_at.elapsed());
            let retryable = match &outcome {
                Ok(response) => response.status().is_server_error(),
                Err(HttpFailure::Transport(_)) => true,
                Err(_) => false,
            };
            if !retryable || !self.pause_before_retry(kind, endpoint, *attempt, deadline).await {
                return outcome;
            }
        }
    }

    /// Waits a jittered backoff and says whether attempt `attempt + 1` may
    /// go: attempts left, time left before `deadline`, and a retry token.
    async fn pause_before_retry(&self, kind: UpstreamKind, endpoint: &str, attempt: u32, deadline: Instant) -> bool {
        if attempt >= MAX_ATTEMPTS {
            return false;
        }
        let pause = backoff(attempt);
        if Instant::now() + pause >= deadline {
            return false;
        }
        if !self.budgets.may_retry(endpoint) {
            metrics::upstream_shed(kind);
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }
}

/// Reads a response body to the end: at most `limit` bytes, by `deadline`.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Instant,
) -> Result<Vec<u8>, HttpFailure> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(HttpFailure::TooLarge(limit));
    }
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, response.chunk())
            .await
            .map_err(|_| HttpFailure::Deadline)?
            .map_err(|e| classify(&e))?;
        match chunk {
            Some(chunk) => {
                if body.len() + chunk.len() > limit {
                    return Err(HttpFailure::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            None => return Ok(body),
        }
    }
}

/// 100 ms, 200 ms… each ±50 %.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << (attempt - 1).min(4);
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    let jitter = base / 2 + (base * u64::from(byte[0]) / 255);
    Duration::from_millis(jitter)
}

/// A reqwest error as a failure that names no URL query.
pub fn classify(error: &reqwest::Error) -> HttpFailure {
    if error.is_timeout() {
        return HttpFailure::Deadline;
    }
    // The chain names the cause (refused, DNS, TLS) without any request data.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    // rustls's certificate errors, however deeply wrapped, read
    // "invalid peer certificate: <why>"; retrying cannot fix them.
    if let Some((_, why)) = message.split_once("invalid peer certificate: ") {
        return HttpFailure::Certificate(format!("TLS: the server's certificate is not acceptable: {why}"));
    }
    HttpFailure::Transport(strip_urls(&message))
}

/// reqwest puts the URL in its messages; query strings could carry
/// `account=` or scopes, so keep only scheme and authority.
fn strip_urls(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let trimmed = word.trim_matches(|c| matches!(c, '(' | ')' | ',' | ':' | ';'));
            match reqwest::Url::parse(trimmed) {
                Ok(url) if url.has_host() => {
                    let origin = url.origin().ascii_serialization();
                    word.replace(trimmed, &origin)
                }
                _ => word.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn build_client(extra_roots: &[rustls::pki_types::CertificateDer<'static>]) -> Result<Client, String> {
    client_builder(extra_roots)?
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .dns_resolver(Arc::new(SafeResolver))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The client of pullpass's own AWS identity chain (`aws_identity`): the
/// only one that may reach link-local metadata addresses, so it has no
/// [`SafeResolver`]; short timeouts, no redirects, no proxy.
pub fn metadata_client() -> Result<Client, String> {
    client_builder(&[])?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("AWS metadata client: {e}"))
}

fn client_builder(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<reqwest::ClientBuilder, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(|e| format!("a CA certificate is not usable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("pullpass/", env!("CARGO_PKG_VERSION"))))
}

/// System DNS, minus link-local and metadata addresses.
#[derive(Debug)]
pub struct SafeResolver;

impl Resolve for SafeResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved.iter().copied().filter(|a| !is_forbidden_address(a.ip())).collect();
            if allowed.is_empty() && !resolved.is_empty() {
                return Err(
                    format!("`{host}` resolves only to link-local or metadata addresses, which are refused").into()
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_transport_errors_keep_only_their_origin() {
        let message = strip_urls("error sending request for url (http://127.0.0.1:5000/token?account=alice&scope=x)");
        assert_eq!(message, "error sending request for url (http://127.0.0.1:5000)");
        let chained = strip_urls("error sending request for url (https://ghcr.io/v2/): client error (Connect)");
        assert_eq!(chained, "error sending request for url (https://ghcr.io): client error (Connect)");
    }

    #[test]
    fn backoff_grows_and_stays_jittered_within_bounds() {
        for attempt in 1..4 {
            let pause = backoff(attempt).as_millis() as u64;
            let base = 100u64 << (attempt - 1);
            assert!(pause >= base / 2 && pause <= base + base / 2, "{attempt}: {pause}");
        }
    }
}
