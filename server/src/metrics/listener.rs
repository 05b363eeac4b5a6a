//! `GET /metrics` on its own listener (`--metrics-listen`), so scrapes
//! never queue behind RPCs and the port can be firewalled apart. Only
//! `/metrics` answers; HEAD works; other methods get 405. Over TLS when
//! the server has a certificate (the same one as gRPC).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

use super::exposition::{self, Format};
use crate::tls::ReloadableTls;

/// Serves the metrics on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    connections: crate::connections::Connections,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let handle = |request: Request<hyper::body::Incoming>, _peer: SocketAddr| async move { answer(&request) };
    crate::http_listener::serve("metrics", listener, tls, connections, handle, shutdown, grace).await;
}

/// The answer to one request.
pub fn answer<B>(request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut response =
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET and HEAD\n".into());
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let accept = request.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    let format = Format::negotiate((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    let body = if head { String::new() } else { exposition::render(format) };
    reply(StatusCode::OK, format.content_type(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, method: Method, accept: Option<&str>) -> Response<Full<Bytes>> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        answer(&request.body(()).unwrap())
    }

    #[test]
    fn only_get_and_head_of_metrics_answer() {
        assert_eq!(get("/metrics", Method::GET, None).status(), StatusCode::OK);
        assert_eq!(get("/metrics", Method::HEAD, None).status(), StatusCode::OK);
        assert_eq!(get("/", Method::GET, None).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/metrics", Method::POST, None).status(), StatusCode::METHOD_NOT_ALLOWED);
        let text = get("/metrics", Method::GET, Some("text/plain"));
        assert_eq!(text.headers()[header::CONTENT_TYPE], exposition::TEXT_004);
        let open = get("/metrics", Method::GET, None);
        assert_eq!(open.headers()[header::CONTENT_TYPE], exposition::OPENMETRICS);
    }
}
