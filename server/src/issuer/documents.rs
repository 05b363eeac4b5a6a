//! The issuer's public documents: OpenID discovery and the key set, and the
//! one function both listeners that publish them (the gateway's, and
//! `--issuer-listen`) answer a request with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;

use super::keys::{self, StoredKey};
use super::{Issuer, IssuerUrl};

/// Path of the discovery document under the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set under the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The discovery document: what AWS IAM, GCP workload identity pools and
/// Entra read (`issuer`, `jwks_uri`, the algorithms).
pub fn discovery(url: &IssuerUrl) -> String {
    serde_json::json!({
        "issuer": url.as_str(),
        "jwks_uri": format!("{url}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys::ALGORITHM],
        "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "pullpass_credential_uid"],
    })
    .to_string()
}

/// The key set: every key still published at `now`.
pub fn jwks(stored: &[StoredKey], now: i64) -> String {
    let keys: Vec<_> = stored.iter().filter(|k| k.published(now)).map(StoredKey::jwk).collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// Answers `method path` if it is one of the issuer's documents; `None`
/// leaves the request to the listener's other routes.
pub async fn respond(issuer: &Issuer, method: &Method, path: &str) -> Option<Response<String>> {
    let rest = path.strip_prefix(issuer.url().path())?;
    let body = match rest {
        DISCOVERY_PATH => Ok(issuer.discovery()),
        JWKS_PATH => issuer.jwks().await,
        _ => return None,
    };
    let builder = Response::builder();
    if method != Method::GET && method != Method::HEAD {
        return builder
            .header(header::CACHE_CONTROL, "no-store")
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(String::new())
            .ok();
    }
    let builder = builder.header(header::CONTENT_TYPE, "application/json");
    match body {
        Ok(body) => builder
            .header(header::CACHE_CONTROL, "public, max-age=60")
            .status(StatusCode::OK)
            .body(if method == Method::HEAD { String::new() } else { body })
            .ok(),
        Err(e) => {
            tracing::warn!(error = %e, "the issuer's key set is unavailable");
            builder
                .header(header::CACHE_CONTROL, "no-store")
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header(header::RETRY_AFTER, "5")
                .body(r#"{"error":"the key set is unavailable"}"#.to_owned())
                .ok()
        }
    }
}

/// Serves the documents on their own listener (`--issuer-listen`) until
/// `shutdown`; every other path is 404.
pub async fn serve(
    issuer: Arc<Issuer>,
    listener: TcpListener,
    tls: Option<crate::tls::ReloadableTls>,
    connections: crate::connections::Connections,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let handle = move |request: Request<hyper::body::Incoming>, _peer: SocketAddr| {
        let issuer = Arc::clone(&issuer);
        async move {
            let answer = respond(&issuer, request.method(), request.uri().path()).await;
            let answer = answer.unwrap_or_else(|| {
                let mut not_found = Response::new(format!(
                    "not found: the issuer's documents are at {}{DISCOVERY_PATH} and {}{JWKS_PATH}\n",
                    issuer.url().path(),
                    issuer.url().path()
                ));
                *not_found.status_mut() = StatusCode::NOT_FOUND;
                not_found
            });
            answer.map(|body| Full::new(Bytes::from(body)))
        }
    };
    crate::http_listener::serve("issuer", listener, tls, connections, handle, shutdown, grace).await;
}
