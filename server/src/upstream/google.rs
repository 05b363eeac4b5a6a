//! Google Artifact Registry / Container Registry with a service-account key.
//!
//! The key signs a JWT (RS256, ring) that the key's `token_uri` exchanges for
//! an OAuth access token (about an hour). That token, as the password of user
//! `oauth2accesstoken`, then runs the registry's own token flow for a
//! repository-scoped bearer token; its expiry is the earlier of the two. A
//! caller that takes only username/password gets the OAuth access token
//! itself as a BASIC lease: short-lived, though not repository-scoped.
//!
//! A key's `token_uri` is where the signed JWT goes, so it must be on the
//! server's allow-list (default: Google's).
//!
//! Without a key ([`federated`]): pullpass's own issuer token is exchanged
//! at Google STS (RFC 8693 token exchange, audience = the workload identity
//! pool provider), and optionally for a service account's token through
//! IAM Credentials `generateAccessToken`. The access token then serves as
//! above.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, Url};
use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;

use super::{Exchange, Failure, Post, Upstream, failure_of, post, refused, token_flow};
use crate::domain::credential::GoogleFederation;
use crate::domain::{Accept, CredentialUid, Grant, Lease, LeaseSecret, Timestamp};
use crate::providers::google_key::GoogleServiceAccountKey;
use crate::secret::SecretBytes;

/// Google's OAuth token endpoint.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The user name registries expect with an OAuth access token.
pub const OAUTH_USERNAME: &str = "oauth2accesstoken";
/// OAuth scope asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The scope of federated tokens: reading is all a pull needs.
const FEDERATED_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform.read-only";

/// OAuth access tokens by credential uid, secret version and update time
/// (a changed credential never reuses one), until a minute before they
/// expire.
#[derive(Debug, Default)]
pub struct AccessTokenCache(Mutex<HashMap<TokenKey, (LeaseSecret, Timestamp)>>);

/// A credential as it is now: uid, secret version, update time.
type TokenKey = (CredentialUid, u64, Timestamp);

impl AccessTokenCache {
    fn get(&self, key: TokenKey) -> Option<(LeaseSecret, Timestamp)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).filter(|(_, expiry)| expiry.saturating_since(Timestamp::now()) > Duration::from_secs(60)).cloned()
    }

    fn put(&self, key: TokenKey, token: LeaseSecret, expiry: Timestamp) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(key, (token, expiry));
    }
}

/// The GOOGLE flow with a service-account key.
pub async fn exchange(upstream: &Upstream, exchange: Exchange<'_>, secret: &SecretBytes) -> Result<Lease, Failure> {
    let token = access_token(upstream, exchange, secret).await?;
    with_access_token(upstream, exchange, token).await
}

/// The GOOGLE flow by workload identity federation.
pub async fn federated(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    federation: &GoogleFederation,
) -> Result<Lease, Failure> {
    let credential = exchange.credential;
    // A federated access token reaches the whole project: it goes only to
    // Google's registries (or a host the operator lists as insecure), and
    // never to a caller as a password.
    let host = credential.registry.host().as_str();
    if !crate::providers::cloud_hosts::is_google_host(host) && !upstream.config().realm.is_insecure(host) {
        return Err(Failure::Misconfigured(format!(
            "`{host}` is not a Google registry (gcr.io, REGION-docker.pkg.dev); pullpass sends federated Google tokens only there"
        )));
    }
    if exchange.accept == Accept::BasicOnly {
        return Err(Failure::FormUnavailable(
            "a federated Google credential hands out only the registry's token for one repository, and the caller accepts only a username and password; pull through the pullpass gateway (via_gateway) instead".into(),
        ));
    }
    let token = upstream
        .sessions()
        .get_or_fetch(credential, "google_access_token", || async {
            let federated = sts_exchange(upstream, exchange, federation).await?;
            if federation.service_account.is_empty() {
                return Ok(federated);
            }
            impersonate(upstream, exchange, &federation.service_account, &federated.0).await
        })
        .await?;
    let result = with_access_token(upstream, exchange, token).await;
    if matches!(result, Err(Failure::Rejected(_))) {
        upstream.sessions().forget(credential, "google_access_token");
    }
    result
}

/// RFC 8693 at Google STS: pullpass's token for a federated access token.
async fn sts_exchange(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    federation: &GoogleFederation,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let credential = exchange.credential;
    let url = Url::parse(&upstream.config().clouds.google_sts)
        .map_err(|_| Failure::Misconfigured("the Google STS endpoint is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let subject = upstream.federation_token(credential, &format!("https:{}", federation.audience)).await?;
    let body = zeroize::Zeroizing::new(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
            .append_pair("audience", &federation.audience)
            .append_pair("scope", FEDERATED_SCOPE)
            .append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
            .append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
            .append_pair("subject_token", subject.expose_str().unwrap_or_default())
            .finish(),
    );
    // Google's endpoints are cloud endpoints: public roots only.
    let request = Post {
        kind: crate::metrics::UpstreamKind::GoogleFederation,
        url: &url,
        content_type: "application/x-www-form-urlencoded",
        body: &body,
        authorization: None,
        roots: "",
    };
    let reply = post(upstream, request, exchange.deadline).await?;
    if !reply.status.is_success() {
        return Err(refused(&reply, "Google STS refused pullpass's token", "Google STS"));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("Google STS's answer is not the expected JSON".into()))?;
    let expiry = Timestamp::now().plus(Duration::from_secs(answer.expires_in.unwrap_or(3600).min(12 * 3600)));
    Ok((LeaseSecret::new(answer.access_token), expiry))
}

/// IAM Credentials `generateAccessToken` for `service_account`, as the
/// federated identity.
async fn impersonate(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    service_account: &str,
    federated: &LeaseSecret,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let base = &upstream.config().clouds.google_iam_credentials;
    let account: String =
        percent_encoding::utf8_percent_encode(service_account, percent_encoding::NON_ALPHANUMERIC).to_string();
    let url = Url::parse(&format!("{base}/v1/projects/-/serviceAccounts/{account}:generateAccessToken"))
        .map_err(|_| Failure::Misconfigured("the IAM Credentials endpoint is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let body = serde_json::json!({"scope": [FEDERATED_SCOPE], "lifetime": "3600s"}).to_string();
    let authorization = zeroize::Zeroizing::new(format!("Bearer {}", federated.expose()));
    let request = Post {
        kind: crate::metrics::UpstreamKind::GoogleFederation,
        url: &url,
        content_type: "application/json",
        body: &body,
        authorization: Some(&authorization),
        roots: "",
    };
    let reply = post(upstream, request, exchange.deadline).await?;
    if !reply.status.is_success() {
        let step = format!("IAM Credentials refused to impersonate {service_account}");
        return Err(refused(&reply, &step, "IAM Credentials"));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: String,
        expire_time: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("IAM Credentials' answer is not the expected JSON".into()))?;
    let now = Timestamp::now();
    let expiry = answer
        .expire_time
        .as_deref()
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or(now.plus(Duration::from_secs(3600)))
        .min(now.plus(Duration::from_secs(12 * 3600)));
    Ok((LeaseSecret::new(answer.access_token), expiry))
}

/// The registry side, once an OAuth access token is in hand.
async fn with_access_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    (access_token, oauth_expiry): (LeaseSecret, Timestamp),
) -> Result<Lease, Failure> {
    let credential = exchange.credential;
    if exchange.accept == Accept::BasicOnly {
        return Ok(Lease {
            grant: Grant::Basic { username: OAUTH_USERNAME.into(), password: access_token },
            registry: exchange.endpoint.to_owned(),
            requested: exchange.scope.clone(),
            granted: None,
            issue_time: Timestamp::now(),
            expire_time: oauth_expiry,
            credential: credential.name.clone(),
        });
    }
    let mut lease = token_flow::issue(upstream, exchange, OAUTH_USERNAME, access_token.expose()).await?;
    lease.expire_time = lease.expire_time.min(oauth_expiry);
    Ok(lease)
}

async fn access_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    secret: &SecretBytes,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let credential = exchange.credential;
    let key_id = (credential.uid, credential.secret_version, credential.update_time);
    if let Some(cached) = upstream.google_tokens.get(key_id) {
        return Ok(cached);
    }
    let key = GoogleServiceAccountKey::parse(secret).map_err(Failure::Misconfigured)?;
    let allowed = upstream
        .config()
        .google_token_uris
        .iter()
        .any(|u| u.trim_end_matches('/') == key.token_uri.trim_end_matches('/'));
    if !allowed {
        return Err(Failure::Misconfigured(format!(
            "the key's token_uri `{}` is not on this server's list of Google token URIs (--google-token-uri)",
            key.token_uri
        )));
    }
    let token_uri =
        Url::parse(&key.token_uri).map_err(|_| Failure::Misconfigured("the key's token_uri is not a URL".into()))?;
    upstream.config().realm.check_transport(&token_uri).map_err(Failure::Refused)?;
    let assertion = signed_assertion(&key, Timestamp::now())?;
    let form = format!("grant_type={}&assertion={assertion}", "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
    let client = upstream.http().client_for(&credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(
            crate::metrics::UpstreamKind::Google,
            || {
                client
                    .post(token_uri.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.clone())
            },
            exchange.deadline,
        )
        .await?;
    if reply.status == StatusCode::BAD_REQUEST {
        // OAuth answers `invalid_grant` with 400 when the key is not accepted.
        return Err(Failure::Rejected("the Google token endpoint answered 400 (invalid grant)".into()));
    }
    if !reply.status.is_success() {
        return Err(failure_of(&reply, "the Google token endpoint"));
    }
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        access_token: String,
        expires_in: Option<u64>,
    }
    let parsed: TokenResponse = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("the Google token endpoint's answer is not the expected JSON".into()))?;
    let expiry = Timestamp::now().plus(Duration::from_secs(parsed.expires_in.unwrap_or(3600)));
    let token = LeaseSecret::new(parsed.access_token);
    upstream.google_tokens.put(key_id, token.clone(), expiry);
    Ok((token, expiry))
}

/// The RS256 JWT a service account presents to its token URI.
pub fn signed_assertion(key: &GoogleServiceAccountKey, now: Timestamp) -> Result<String, Failure> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if !key.private_key_id.is_empty() {
        header["kid"] = serde_json::Value::String(key.private_key_id.clone());
    }
    let iat = now.as_seconds();
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": key.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0u8; key.key_pair.public().modulus_len()];
    key.key_pair
        .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| Failure::Misconfigured("signing with the service-account key failed".into()))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::google_key::tests::key_json;

    #[test]
    fn the_assertion_is_an_rs256_jwt_for_the_token_uri() {
        let key = GoogleServiceAccountKey::parse(&SecretBytes::from_string(key_json("ci@p.iam"))).unwrap();
        let jwt = signed_assertion(&key, Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").unwrap()).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "abc123");
        assert_eq!(claims["iss"], "ci@p.iam");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        // The signature verifies with the key's public half.
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.key_pair.public().as_ref(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).unwrap();
    }
}
