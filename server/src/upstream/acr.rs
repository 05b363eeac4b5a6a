//! Azure Container Registry through Entra ID (Azure/acr `docs/AAD-OAuth.md`):
//! 1. an Entra access token for `https://containerregistry.azure.net`, by the
//!    client-credentials grant with the app's client secret, or with a
//!    client assertion that is pullpass's own issuer token (a federated
//!    identity credential on the app: no secret at all);
//! 2. `POST https://<registry>/oauth2/exchange` turns it into an ACR
//!    refresh token;
//! 3. `POST https://<registry>/oauth2/token` turns that into an access
//!    token scoped to the one repository asked for.
//!
//! The lease is that bearer token; its expiry is the token's own `exp`.
//! Steps 1 and 2 are kept per credential ([`super::sessions`]), so a burst
//! over many repositories costs one of each, then one scoped call per
//! repository. A caller that takes only a username and password goes
//! through the pull gateway, as for any bearer-only registry.

use std::time::Duration;

use reqwest::Url;

use super::{Exchange, Failure, Post, Upstream, post, refused, token_flow};
use crate::domain::credential::AzureIdentity;
use crate::domain::{Accept, Grant, Lease, LeaseSecret, Timestamp};
use crate::metrics::UpstreamKind;
use crate::secret::SecretBytes;

/// The body type of every request of this flow.
const FORM: &str = "application/x-www-form-urlencoded";
/// The resource ACR's Entra tokens are for.
pub const SCOPE: &str = "https://containerregistry.azure.net/.default";
/// The `aud` Entra expects of a federated client assertion.
pub const ASSERTION_AUDIENCE: &str = "api://AzureADTokenExchange";
/// How long an ACR refresh token is kept (ACR issues them for about three
/// hours).
const REFRESH_TOKEN_KEPT: Duration = Duration::from_secs(3600);

/// The ACR flow.
pub async fn exchange(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    azure: &AzureIdentity,
    secret: &SecretBytes,
) -> Result<Lease, Failure> {
    if exchange.accept == Accept::BasicOnly {
        return Err(Failure::FormUnavailable(
            "ACR leases are bearer tokens scoped to one repository, and the caller accepts only a username and password; pull through the pullpass gateway (via_gateway) instead".into(),
        ));
    }
    let credential = exchange.credential;
    // The Entra token reaches every registry the app may read: it goes only
    // to an ACR login server (or a host the operator lists as insecure).
    let host = credential.registry.host().as_str();
    if !crate::providers::cloud_hosts::is_acr_host(host) && !upstream.config().realm.is_insecure(host) {
        return Err(Failure::Misconfigured(format!(
            "`{host}` is not an ACR login server (NAME.azurecr.io, .azurecr.cn or .azurecr.us); pullpass sends Entra tokens only there"
        )));
    }
    let base = token_flow::base_url(upstream, exchange.endpoint);
    let refresh = upstream
        .sessions()
        .get_or_fetch(credential, "acr_refresh_token", || async {
            let (entra, _) = upstream
                .sessions()
                .get_or_fetch(credential, "entra_token", || entra_token(upstream, exchange, azure, secret))
                .await?;
            let refresh = refresh_token(upstream, exchange, azure, &base, &entra).await;
            if matches!(refresh, Err(Failure::Rejected(_))) {
                upstream.sessions().forget(credential, "entra_token");
            }
            refresh
        })
        .await?
        .0;
    let result = scoped_token(upstream, exchange, &base, &refresh).await;
    if matches!(result, Err(Failure::Rejected(_))) {
        upstream.sessions().forget(credential, "acr_refresh_token");
    }
    result
}

/// Step 1: an Entra access token for ACR.
async fn entra_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    azure: &AzureIdentity,
    secret: &SecretBytes,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let credential = exchange.credential;
    let authority = &upstream.config().clouds.entra_authority_host;
    let url = Url::parse(&format!("{authority}/{}/oauth2/v2.0/token", azure.tenant_id))
        .map_err(|_| Failure::Misconfigured("the Entra token URL is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let assertion = if credential.secret_set() {
        None
    } else {
        Some(upstream.federation_token(credential, ASSERTION_AUDIENCE).await?)
    };
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &azure.client_id)
            .append_pair("scope", SCOPE)
            .append_pair("grant_type", "client_credentials");
        match &assertion {
            Some(jwt) => {
                form.append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    .append_pair("client_assertion", jwt.expose_str().unwrap_or_default());
            }
            None => {
                let secret = secret
                    .expose_str()
                    .ok_or_else(|| Failure::Misconfigured("the client secret is not UTF-8".into()))?;
                form.append_pair("client_secret", secret);
            }
        }
        zeroize::Zeroizing::new(form.finish())
    };
    // Entra is a cloud endpoint: public roots only, never the credential's.
    let request =
        Post { kind: UpstreamKind::Entra, url: &url, content_type: FORM, body: &body, authorization: None, roots: "" };
    let reply = post(upstream, request, exchange.deadline).await?;
    if !reply.status.is_success() {
        return Err(refused(&reply, "Entra ID refused the app's credentials", "Entra ID"));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("Entra ID's token answer is not the expected JSON".into()))?;
    let expiry = Timestamp::now().plus(Duration::from_secs(answer.expires_in.unwrap_or(3600).min(24 * 3600)));
    Ok((LeaseSecret::new(answer.access_token), expiry))
}

/// Step 2: the Entra token for an ACR refresh token.
async fn refresh_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    azure: &AzureIdentity,
    base: &str,
    entra: &LeaseSecret,
) -> Result<(LeaseSecret, Timestamp), Failure> {
    let url = Url::parse(&format!("{base}/oauth2/exchange"))
        .map_err(|_| Failure::Misconfigured("the registry's exchange URL is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let body = zeroize::Zeroizing::new(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "access_token")
            .append_pair("service", exchange.endpoint)
            .append_pair("tenant", &azure.tenant_id)
            .append_pair("access_token", entra.expose())
            .finish(),
    );
    let reply = post(upstream, registry_post(&url, &body, exchange), exchange.deadline).await?;
    if !reply.status.is_success() {
        return Err(refused(&reply, "the registry's /oauth2/exchange refused the Entra token", "/oauth2/exchange"));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        refresh_token: String,
    }
    let answer: Answer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::Protocol("the registry's /oauth2/exchange answer is not the expected JSON".into()))?;
    let expiry = jwt_expiry(&answer.refresh_token)
        .unwrap_or_else(|| Timestamp::now().plus(REFRESH_TOKEN_KEPT))
        .min(Timestamp::now().plus(REFRESH_TOKEN_KEPT));
    Ok((LeaseSecret::new(answer.refresh_token), expiry))
}

/// Step 3: an access token for the one repository.
async fn scoped_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    base: &str,
    refresh: &LeaseSecret,
) -> Result<Lease, Failure> {
    let url = Url::parse(&format!("{base}/oauth2/token"))
        .map_err(|_| Failure::Misconfigured("the registry's token URL is not a URL".into()))?;
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let scope = exchange.scope.to_string();
    let body = zeroize::Zeroizing::new(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("service", exchange.endpoint)
            .append_pair("scope", &scope)
            .append_pair("refresh_token", refresh.expose())
            .finish(),
    );
    let reply = post(upstream, registry_post(&url, &body, exchange), exchange.deadline).await?;
    if !reply.status.is_success() {
        return Err(refused(&reply, "the registry's /oauth2/token refused the scope", "/oauth2/token"));
    }
    let now = Timestamp::now();
    let answer = token_flow::parse_token_answer(&reply.body, exchange.scope, now)?;
    // ACR answers no `expires_in`: the token's own `exp` is its expiry.
    let expire_time = jwt_expiry(&answer.token).filter(|e| *e > now).unwrap_or(answer.expires);
    Ok(Lease {
        grant: Grant::Bearer { token: LeaseSecret::new(answer.token) },
        registry: exchange.endpoint.to_owned(),
        requested: exchange.scope.clone(),
        granted: answer.granted,
        issue_time: answer.issued,
        expire_time: expire_time.min(now.plus(Duration::from_secs(24 * 3600))),
        credential: exchange.credential.name.clone(),
    })
}

/// A POST to the registry's own token endpoints, trusting the credential's
/// CA bundle as the registry's other requests do.
fn registry_post<'a>(url: &'a Url, body: &'a str, exchange: Exchange<'a>) -> Post<'a> {
    Post {
        kind: UpstreamKind::Token,
        url,
        content_type: FORM,
        body,
        authorization: None,
        roots: &exchange.credential.ca_bundle_pem,
    }
}

/// The `exp` of a JWT, if the token is one.
pub fn jwt_expiry(token: &str) -> Option<Timestamp> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&decoded).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    (exp > 0).then(|| Timestamp::from_micros(exp.saturating_mul(1_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_expiry_is_read_and_anything_else_is_none() {
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1800000000}"#);
        assert_eq!(jwt_expiry(&format!("e30.{claims}.sig")).map(|t| t.as_seconds()), Some(1_800_000_000));
        assert_eq!(jwt_expiry("opaque"), None);
        assert_eq!(jwt_expiry("a.!!.c"), None);
    }
}
