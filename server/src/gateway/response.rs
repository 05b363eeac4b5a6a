//! Gateway responses: manifests, blobs, tag lists and errors as the
//! distribution spec shapes them, and the one log line per request.
//!
//! The log line is written when the response body ends (or the client goes
//! away): method, path, status, bytes sent, principal, latency, request id.
//! Never a header value, never a query, so never a password or token.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use super::errors::GatewayError;
use super::route::GatewayRef;
use crate::pulls::{Blob, ManifestAnswer, PullError, Tags};

/// The body of every gateway response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body of `text`.
pub fn text_body(text: String) -> Body {
    use http_body_util::BodyExt as _;
    http_body_util::Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn with_body(status: StatusCode, headers: &[(header::HeaderName, HeaderValue)], body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(name, value.clone());
    }
    response
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `GET /v2/` with valid credentials.
pub fn api_root() -> Response<Body> {
    with_body(
        StatusCode::OK,
        &[(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        full(Bytes::from_static(b"{}")),
    )
}

/// A manifest, byte for byte as the registry sent it (its head only for
/// HEAD).
pub fn manifest(answer: &ManifestAnswer, head: bool) -> Response<Body> {
    let manifest = answer.head();
    let body = match (head, answer.bytes()) {
        (true, _) => empty(),
        (false, Some(bytes)) => full(bytes.clone()),
        (false, None) => {
            let error = PullError::Internal("a manifest GET was answered without its bytes".into());
            return self::error(&GatewayError::from(error), false);
        }
    };
    let digest = manifest.digest.to_string();
    let headers = [
        (header::CONTENT_TYPE, value(&manifest.media_type)),
        (header::CONTENT_LENGTH, HeaderValue::from(manifest.length)),
        (header::HeaderName::from_static("docker-content-digest"), value(&digest)),
        (header::ETAG, value(&format!("\"{digest}\""))),
    ];
    with_body(StatusCode::OK, &headers, body)
}

/// A blob: the registry's redirect, or its content streamed and verified.
pub fn blob(blob: Blob) -> Response<Body> {
    match blob {
        Blob::Redirect { status, location } => with_body(
            StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT),
            &[(header::LOCATION, value(&location)), (header::CONTENT_LENGTH, HeaderValue::from(0))],
            empty(),
        ),
        Blob::Content { status, headers, body } => {
            let body = match body {
                None => empty(),
                Some(stream) => {
                    let frames = futures_util::stream::unfold(stream, |mut stream| async move {
                        let next = stream.next().await?;
                        let frame = next.map(Frame::data).map_err(|e| std::io::Error::other(e.message().to_owned()));
                        Some((frame, stream))
                    });
                    BodyExt::boxed(StreamBody::new(frames))
                }
            };
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            *response.headers_mut() = headers;
            response
        }
    }
}

/// A tag list, with the registry's `Link` pointing back at the gateway.
pub fn tags(tags: Tags, gateway_ref: &GatewayRef, repository: &str, head: bool) -> Response<Body> {
    let mut headers = vec![
        (header::CONTENT_TYPE, value(&tags.content_type)),
        (header::CONTENT_LENGTH, HeaderValue::from(tags.body.len())),
    ];
    if let Some(link) = tags.link.as_deref().and_then(|l| rewrite_link(l, gateway_ref, repository)) {
        headers.push((header::LINK, value(&link)));
    }
    with_body(StatusCode::OK, &headers, if head { empty() } else { full(tags.body) })
}

/// An error as distribution JSON (no body for HEAD).
pub fn error(error: &GatewayError, head: bool) -> Response<Body> {
    let body = error.body();
    let mut headers = error.headers();
    headers.push((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    if head {
        return with_body(error.status, &headers, empty());
    }
    headers.push((header::CONTENT_LENGTH, HeaderValue::from(body.len())));
    with_body(error.status, &headers, full(Bytes::from(body)))
}

/// `</v2/<repository>/tags/list?…>; rel="next"` from the registry, as a
/// path on the gateway (under the prefix the client used, with its `ns`);
/// `None` for a link elsewhere.
fn rewrite_link(link: &str, gateway_ref: &GatewayRef, repository: &str) -> Option<String> {
    let start = link.find('<')?;
    let end = start + link[start..].find('>')?;
    let target = &link[start + 1..end];
    let path_and_query = match target.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => target,
    };
    let rest = path_and_query.strip_prefix("/v2/")?;
    if !rest.starts_with(&format!("{repository}/tags/list")) {
        return None;
    }
    let mut rewritten = format!("{}{rest}", gateway_ref.prefix);
    if let Some(ns) = &gateway_ref.ns {
        rewritten.push(if rewritten.contains('?') { '&' } else { '?' });
        rewritten.push_str("ns=");
        rewritten.extend(percent_encoding::utf8_percent_encode(ns, percent_encoding::NON_ALPHANUMERIC));
    }
    Some(format!("{}<{rewritten}>{}", &link[..start], &link[end + 1..]))
}

/// The path as logged: control characters replaced, at most 512
/// characters (a blob path with its digest fits; the query is never
/// logged).
fn loggable_path(path: &str) -> String {
    const MAX: usize = 512;
    let mut text: String = path.chars().take(MAX).map(|c| if c.is_control() { '?' } else { c }).collect();
    if path.chars().count() > MAX {
        text.push('…');
    }
    text
}

/// What the log line of a request says.
#[derive(Debug)]
pub struct RequestLog {
    /// The request id (the caller's `x-request-id`, else a fresh one).
    pub request_id: std::sync::Arc<str>,
    /// The client.
    pub client: Option<SocketAddr>,
    /// Who (the token's name; empty before authentication).
    pub principal: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Served from the manifest cache.
    pub cached: bool,
    /// What was asked for, for metrics: `base`, `manifest`, `blob`, `tags`,
    /// or `other` (refused before the path was understood).
    pub kind: &'static str,
    method: http::Method,
    path: String,
    started: Instant,
    status: u16,
    bytes: u64,
    complete: bool,
}

impl RequestLog {
    /// The log of `request`, started now.
    pub fn new<B>(request: &Request<B>, client: Option<SocketAddr>) -> Self {
        Self {
            request_id: crate::request_id::of(request.headers()),
            client,
            principal: String::new(),
            error: None,
            cached: false,
            kind: "other",
            method: request.method().clone(),
            path: loggable_path(request.uri().path()),
            started: Instant::now(),
            status: 0,
            bytes: 0,
            complete: false,
        }
    }
}

/// The line is written once, when the log is dropped: with the body (its
/// end, an error, or the client going away), or with the handler.
impl Drop for RequestLog {
    fn drop(&mut self) {
        crate::metrics::gateway_request(&self.method, self.kind, self.status, self.bytes);
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let client = self.client.map(|c| c.to_string()).unwrap_or_default();
        let complete = self.complete;
        let error = self.error.as_deref().unwrap_or(if complete { "" } else { "the response did not complete" });
        if self.status < 400 && complete {
            tracing::info!(target: "pullpass::gateway", method = %self.method, path = %self.path, status = self.status,
                bytes = self.bytes, cached = self.cached, latency_ms, principal = %self.principal,
                request_id = %self.request_id, client = %client, "gateway request");
        } else {
            tracing::warn!(target: "pullpass::gateway", method = %self.method, path = %self.path, status = self.status,
                bytes = self.bytes, latency_ms, principal = %self.principal, request_id = %self.request_id,
                client = %client, error = %error, "gateway request");
        }
    }
}

/// `response` with a body that writes `log` when it ends.
pub fn logged(response: Response<Body>, mut log: RequestLog) -> Response<Body> {
    log.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, BodyExt::boxed(Logged { inner: body, log: Some(log) }))
}

/// A body that counts what it sends and hands the log line its end.
struct Logged {
    inner: Body,
    log: Option<RequestLog>,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(log)) = (frame.data_ref(), self.log.as_mut()) {
                    log.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut log) = self.log.take() {
                    log.error = Some(e.to_string());
                }
            }
            Poll::Ready(None) => {
                if let Some(mut log) = self.log.take() {
                    log.complete = true;
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // An empty body (HEAD, redirects) may never be polled to its end.
        if let Some(log) = self.log.as_mut() {
            log.complete = self.inner.is_end_stream();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::route::Target;
    use pullpass::registry::RegistryHost;

    fn gateway_ref(prefix: &str, ns: Option<&str>) -> GatewayRef {
        GatewayRef {
            registry: RegistryHost::parse("127.0.0.1:5000").unwrap(),
            repository: "team/app".into(),
            prefix: prefix.into(),
            ns: ns.map(str::to_owned),
            target: Target::Tags,
        }
    }

    #[test]
    fn tag_list_links_point_back_at_the_gateway() {
        let link = "</v2/team/app/tags/list?last=b&n=2>; rel=\"next\"";
        assert_eq!(
            rewrite_link(link, &gateway_ref("/v2/local/", None), "team/app").as_deref(),
            Some("</v2/local/team/app/tags/list?last=b&n=2>; rel=\"next\"")
        );
        assert_eq!(
            rewrite_link(link, &gateway_ref("/v2/", Some("127.0.0.1:5000")), "team/app").as_deref(),
            Some("</v2/team/app/tags/list?last=b&n=2&ns=127%2E0%2E0%2E1%3A5000>; rel=\"next\"")
        );
        let absolute = "<https://r.example/v2/team/app/tags/list?n=2>; rel=\"next\"";
        assert!(
            rewrite_link(absolute, &gateway_ref("/v2/local/", None), "team/app").unwrap().starts_with("</v2/local/")
        );
        assert_eq!(
            rewrite_link("</v2/other/repo/tags/list>; rel=\"next\"", &gateway_ref("/v2/local/", None), "team/app"),
            None
        );
        assert_eq!(rewrite_link("garbage", &gateway_ref("/v2/local/", None), "team/app"), None);
    }
}
