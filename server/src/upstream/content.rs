//! Registry content requests for the pull gateway: manifests, blobs and tag
//! lists, read with a lease the broker issued.
//!
//! The auth goes only to the registry endpoint the lease is for, over https
//! unless that host is on the insecure list, never to a link-local or
//! metadata address, and never through a redirect: a redirect (a blob on a
//! CDN) is handed back as it is, for the caller to follow without
//! credentials. Connection errors and 5xx answers are retried (before any
//! byte of the body is read); bodies are read by the caller, in bounded
//! pieces.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use super::http::{self, HttpFailure};
use super::token_flow::base_url;
use super::{Failure, Upstream};
use crate::domain::{Credential, Grant, Lease};

/// One registry request.
#[derive(Debug, Clone)]
pub struct ContentRequest<'a> {
    /// The credential whose lease this is (for its CA bundle).
    pub credential: &'a Credential,
    /// The registry API host (`registry-1.docker.io`).
    pub endpoint: &'a str,
    /// The path, such as `/v2/library/ubuntu/manifests/latest`.
    pub path: &'a str,
    /// The query, if any (`n=100&last=v1`).
    pub query: Option<&'a str>,
    /// HEAD instead of GET.
    pub head: bool,
    /// Headers to send besides the auth (`Accept`, `Range`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The auth to present.
    pub lease: &'a Lease,
    /// When the headers of the answer must have arrived.
    pub deadline: Instant,
}

/// An answer whose body has not been read yet.
pub struct Opened {
    /// The status (a redirect is not followed).
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The URL asked (to resolve a relative `Location` against).
    pub url: Url,
    response: reqwest::Response,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("status", &self.status).finish_non_exhaustive()
    }
}

impl Opened {
    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole body, at most `limit` bytes, by `deadline`.
    pub async fn read(self, limit: usize, deadline: Instant) -> Result<Vec<u8>, Failure> {
        http::read_body(self.response, limit, deadline).await.map_err(Failure::from)
    }

    /// The next piece of the body (`None` at its end), waiting at most
    /// `idle` for it.
    pub async fn chunk(&mut self, idle: Duration) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(idle, self.response.chunk()).await {
            Err(_) => Err(Failure::Unavailable(format!("the registry sent nothing for {} s", idle.as_secs()))),
            Ok(Err(e)) => Err(Failure::from(http::classify(&e))),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }
}

impl Upstream {
    /// Sends a content request; the answer's body is left unread.
    pub async fn open_content(&self, request: &ContentRequest<'_>) -> Result<Opened, Failure> {
        // Path and query are set on the registry's own URL, so nothing in
        // them can change the host the auth goes to.
        let mut url = Url::parse(&base_url(self, request.endpoint))
            .map_err(|_| Failure::Protocol("the registry endpoint is not a URL".into()))?;
        url.set_path(request.path);
        url.set_query(request.query);
        self.config().realm.check_transport(&url).map_err(Failure::Refused)?;
        let authorization = authorization(request.lease)?;
        let client = self.http().client_for(&request.credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
        let build = || {
            let method = if request.head { reqwest::Method::HEAD } else { reqwest::Method::GET };
            let mut builder = client.request(method, url.clone()).header(AUTHORIZATION, authorization.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            builder
        };
        let response =
            self.http().open(crate::metrics::UpstreamKind::Registry, build, request.deadline).await.map_err(
                |failure| match failure {
                    HttpFailure::Deadline => Failure::Deadline,
                    other => Failure::from(other),
                },
            )?;
        Ok(Opened { status: response.status(), headers: response.headers().clone(), url, response })
    }
}

/// The `Authorization` value for a lease; marked sensitive so no debug
/// output of the request shows it.
fn authorization(lease: &Lease) -> Result<HeaderValue, Failure> {
    use base64::Engine;
    let text = zeroize::Zeroizing::new(match &lease.grant {
        Grant::Bearer { token } => format!("Bearer {}", token.expose()),
        Grant::Basic { username, password } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
        ),
    });
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| Failure::Protocol("the registry's token cannot be sent in a header".into()))?;
    value.set_sensitive(true);
    Ok(value)
}
