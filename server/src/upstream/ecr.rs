//! Amazon ECR: `GetAuthorizationToken`, signed with SigV4, returns a
//! 12-hour password for user `AWS`. It is already short-lived, so it is
//! handed out as a BASIC lease (not passthrough). ECR tokens cover the whole
//! registry, not one repository, so the lease has no granted scope.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{StatusCode, Url};

use super::sigv4::{self, AwsKey, SignedRequest};
use super::{Exchange, Failure, Upstream, failure_of, retry_after};
use crate::domain::{Accept, Grant, Lease, LeaseSecret, Timestamp};
use crate::providers::ecr::ecr_region;
use crate::secret::SecretBytes;

const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The API endpoint for a region.
fn endpoint(upstream: &Upstream, region: &str, registry_host: &str) -> String {
    match &upstream.config().ecr_endpoint {
        Some(template) => template.replace("{region}", region),
        None if registry_host.ends_with(".amazonaws.com.cn") => format!("https://api.ecr.{region}.amazonaws.com.cn/"),
        None => format!("https://api.ecr.{region}.amazonaws.com/"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    authorization_data: Vec<AuthorizationData>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationData {
    authorization_token: String,
    expires_at: Option<f64>,
}

#[derive(serde::Deserialize)]
struct AwsError {
    #[serde(rename = "__type")]
    kind: Option<String>,
}

/// Runs `GetAuthorizationToken` with the credential's access key.
pub async fn authorization_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    secret: &SecretBytes,
) -> Result<Lease, Failure> {
    if exchange.accept == Accept::BearerOnly {
        return Err(Failure::FormUnavailable(
            "ECR issues a username and password, and the caller accepts only bearer tokens".into(),
        ));
    }
    let credential = exchange.credential;
    let host = credential.registry.host().as_str();
    let region = ecr_region(host).ok_or_else(|| Failure::Misconfigured(format!("`{host}` is not an ECR registry")))?;
    let url = Url::parse(&endpoint(upstream, region, host))
        .map_err(|_| Failure::Misconfigured("the ECR endpoint is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let secret_key =
        secret.expose_str().ok_or_else(|| Failure::Misconfigured("the secret access key is not UTF-8".into()))?;
    let api_host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let amz_date = sigv4::amz_date(Timestamp::now());
    let body = b"{}";
    let authorization = sigv4::authorization(
        &SignedRequest {
            method: "POST",
            path: url.path(),
            host: &api_host,
            headers: &[("content-type", CONTENT_TYPE), ("x-amz-target", TARGET)],
            body,
        },
        AwsKey { access_key_id: &credential.username, secret_access_key: secret_key },
        region,
        "ecr",
        &amz_date,
    );
    let client = upstream.http().client_for(&credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(
            crate::metrics::UpstreamKind::Ecr,
            || {
                client
                    .post(url.clone())
                    .header("content-type", CONTENT_TYPE)
                    .header("x-amz-target", TARGET)
                    .header("x-amz-date", &amz_date)
                    .header("authorization", &authorization)
                    .body(body.as_slice())
            },
            exchange.deadline,
        )
        .await?;
    if reply.status == StatusCode::TOO_MANY_REQUESTS || reply.status.is_server_error() {
        return Err(failure_of(&reply, "the ECR API"));
    }
    if !reply.status.is_success() {
        let kind = serde_json::from_slice::<AwsError>(&reply.body).ok().and_then(|e| e.kind).unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or_default().to_owned();
        return Err(match kind.as_str() {
            "ThrottlingException" => Failure::RateLimited(retry_after(&reply)),
            _ if reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::FORBIDDEN => {
                Failure::Rejected(format!("the ECR API answered {} {kind}", reply.status))
            }
            _ => Failure::Protocol(format!("the ECR API answered {} {kind}", reply.status)),
        });
    }
    let parsed: Response = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("the ECR API's answer is not the expected JSON".into()))?;
    let data = parsed
        .authorization_data
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Protocol("the ECR API returned no authorization data".into()))?;
    let decoded = zeroize::Zeroizing::new(
        STANDARD
            .decode(data.authorization_token.trim())
            .map_err(|_| Failure::Protocol("the ECR authorization token is not base64".into()))?,
    );
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| Failure::Protocol("the ECR authorization token is not text".into()))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| Failure::Protocol("the ECR authorization token is not user:password".into()))?;
    let now = Timestamp::now();
    let expire_time = data
        .expires_at
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Timestamp::from_micros((s * 1_000_000.0) as i64))
        .unwrap_or(now.plus(std::time::Duration::from_secs(12 * 3600)));
    Ok(Lease {
        grant: Grant::Basic { username: username.to_owned(), password: LeaseSecret::new(password.to_owned()) },
        registry: exchange.endpoint.to_owned(),
        requested: exchange.scope.clone(),
        granted: None,
        issue_time: now,
        expire_time,
        credential: credential.name.clone(),
    })
}
