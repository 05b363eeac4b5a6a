//! The distribution token flow.
//!
//! 1. `GET /v2/` without credentials; the `WWW-Authenticate` challenge says
//!    how to authenticate (remembered per registry for a while).
//! 2. Bearer: `GET realm?service=…&scope=repository:<repo>:<actions>&account=…`
//!    with HTTP Basic, to a realm the policy allows; the answer's `token` (or
//!    `access_token`), `expires_in` (60 s when absent) and `issued_at`.
//! 3. Basic-only registries: the stored username and secret themselves, if
//!    the credential allows passthrough, after checking them on `/v2/`. The
//!    pull gateway ([`Accept::Gateway`]) gets them without passthrough: it
//!    presents them to the registry itself and hands them to no one.
//!
//! Where the token is a JWT with an `access` claim, the granted scope is read
//! from it, so a read-only secret asked for push says so.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pullpass::scope::Scope;
use reqwest::{StatusCode, Url};

use super::challenge;
use super::http::Reply;
use super::{Exchange, Failure, Upstream, failure_of, retry_after};
use crate::domain::{Accept, Grant, Lease, LeaseSecret, Timestamp};
use crate::metrics::UpstreamKind;

/// How a registry wants to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthScheme {
    /// A token realm.
    Bearer {
        /// The realm URL.
        realm: Url,
        /// The `service` parameter, if given.
        service: Option<String>,
    },
    /// HTTP Basic on the registry itself.
    Basic,
}

/// Runs the flow for `exchange` with a username and password.
pub async fn issue(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    username: &str,
    password: &str,
) -> Result<Lease, Failure> {
    let base = base_url(upstream, exchange.endpoint);
    let scheme = challenge_of(upstream, exchange, &base).await?;
    match (scheme, exchange.accept) {
        (AuthScheme::Bearer { realm, service }, Accept::Any | Accept::BearerOnly | Accept::Gateway) => {
            let result = bearer_token(upstream, exchange, &realm, service.as_deref(), username, password).await;
            if matches!(result, Err(Failure::Unavailable(_) | Failure::Protocol(_))) {
                upstream.forget_challenge(&challenge_key(exchange, &base));
            }
            result
        }
        (AuthScheme::Bearer { realm, service }, Accept::BasicOnly) => {
            if !exchange.credential.allow_passthrough {
                return Err(Failure::PassthroughNotAllowed(format!(
                    "registry {} issues bearer tokens, and the caller accepts only a username and password",
                    exchange.endpoint
                )));
            }
            // Check the secret with a real exchange before handing it out. A
            // token granting nothing on this repository still proves the
            // secret is accepted (credential helpers know only the host).
            match bearer_token(upstream, exchange, &realm, service.as_deref(), username, password).await {
                Ok(_) | Err(Failure::NoAccess) => Ok(passthrough(upstream, exchange, username, password)),
                Err(failure) => Err(failure),
            }
        }
        (AuthScheme::Basic, Accept::BearerOnly) => Err(Failure::FormUnavailable(format!(
            "registry {} accepts only HTTP Basic, and the caller accepts only bearer tokens",
            exchange.endpoint
        ))),
        (AuthScheme::Basic, Accept::Gateway) => {
            // The gateway presents the stored secret to the registry itself;
            // it never leaves the server, so no passthrough is needed.
            verify_basic(upstream, exchange, &base, username, password).await?;
            Ok(passthrough(upstream, exchange, username, password))
        }
        (AuthScheme::Basic, Accept::Any | Accept::BasicOnly) => {
            if !exchange.credential.allow_passthrough {
                return Err(Failure::PassthroughNotAllowed(format!(
                    "registry {} offers no token exchange (its challenge is Basic)",
                    exchange.endpoint
                )));
            }
            verify_basic(upstream, exchange, &base, username, password).await?;
            Ok(passthrough(upstream, exchange, username, password))
        }
    }
}

/// `https://host[:port]` (http for hosts on the insecure list).
pub fn base_url(upstream: &Upstream, endpoint: &str) -> String {
    format!("{}://{endpoint}", upstream.config().realm.scheme_for(endpoint))
}

/// The challenge cache's key: the registry, and the roots the credential
/// trusts. A challenge read over a connection verified with one CA bundle
/// is not reused by a credential that could not verify that registry.
fn challenge_key(exchange: Exchange<'_>, base: &str) -> String {
    let roots = &exchange.credential.ca_bundle_pem;
    if roots.is_empty() {
        return base.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, roots.as_bytes());
    let short: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{base} ca:{short}")
}

async fn challenge_of(upstream: &Upstream, exchange: Exchange<'_>, base: &str) -> Result<AuthScheme, Failure> {
    let key = challenge_key(exchange, base);
    if let Some(scheme) = upstream.cached_challenge(&key) {
        return Ok(scheme);
    }
    let url = Url::parse(&format!("{base}/v2/")).map_err(|_| Failure::Protocol("bad registry URL".into()))?;
    // No secret goes with this request, but a metadata address is not
    // contacted at all.
    upstream.config().realm.check_transport(&url).map_err(Failure::Refused)?;
    let client = upstream.http().client_for(&exchange.credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let reply = upstream.http().send(UpstreamKind::Challenge, || client.get(url.clone()), exchange.deadline).await?;
    let scheme = match reply.status {
        StatusCode::UNAUTHORIZED => read_challenge(&reply, base)?,
        status if status.is_success() => return Err(Failure::NoAuthNeeded),
        StatusCode::TOO_MANY_REQUESTS => return Err(Failure::RateLimited(retry_after(&reply))),
        status if status.is_server_error() => return Err(Failure::Unavailable(format!("GET /v2/ answered {status}"))),
        status => return Err(Failure::Protocol(format!("GET /v2/ answered {status}; is this a registry?"))),
    };
    upstream.remember_challenge(&key, scheme.clone());
    Ok(scheme)
}

fn read_challenge(reply: &Reply, base: &str) -> Result<AuthScheme, Failure> {
    let challenges = challenge::parse(&reply.header_values("www-authenticate"));
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer" && c.param("realm").is_some()) {
        let realm_text = bearer.param("realm").unwrap_or_default();
        let realm = Url::parse(realm_text)
            .or_else(|_| Url::parse(base).and_then(|b| b.join(realm_text)))
            .map_err(|_| Failure::Protocol("the bearer challenge's realm is not a URL".into()))?;
        return Ok(AuthScheme::Bearer { realm, service: bearer.param("service").map(str::to_owned) });
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Ok(AuthScheme::Basic);
    }
    Err(Failure::Protocol("GET /v2/ answered 401 without a Bearer or Basic challenge".into()))
}

async fn bearer_token(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    realm: &Url,
    service: Option<&str>,
    username: &str,
    password: &str,
) -> Result<Lease, Failure> {
    upstream.config().realm.check(exchange.credential, exchange.endpoint, realm).map_err(Failure::Refused)?;
    let mut url = realm.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", &exchange.scope.to_string());
        if !username.is_empty() {
            query.append_pair("account", username);
        }
    }
    let client = upstream.http().client_for(&exchange.credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(UpstreamKind::Token, || client.get(url.clone()).basic_auth(username, Some(password)), exchange.deadline)
        .await?;
    match reply.status {
        status if status.is_success() => read_token(exchange, &reply),
        status if status.is_redirection() => {
            let target = reply
                .header_values("location")
                .first()
                .and_then(|l| realm.join(l).ok())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_else(|| "an unknown location".into());
            Err(Failure::Redirected(target))
        }
        _ => Err(failure_of(&reply, "the token realm")),
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<i64>,
    issued_at: Option<String>,
}

/// Registries' `expires_in` when they give none (distribution spec).
const DEFAULT_EXPIRES_IN: i64 = 60;
/// Longest lifetime believed: a longer `expires_in` is cut to this, so a
/// realm's mistake cannot keep a token in the caches for years.
const MAX_EXPIRES_IN: i64 = 24 * 3600;
/// `issued_at` older than this by our clock is ignored (clock skew); a
/// future one counts as now.
const MAX_SKEW: Duration = Duration::from_secs(300);

fn read_token(exchange: Exchange<'_>, reply: &Reply) -> Result<Lease, Failure> {
    let answer = parse_token_answer(&reply.body, exchange.scope, Timestamp::now())?;
    Ok(Lease {
        grant: Grant::Bearer { token: LeaseSecret::new(answer.token) },
        registry: exchange.endpoint.to_owned(),
        requested: exchange.scope.clone(),
        granted: answer.granted,
        issue_time: answer.issued,
        expire_time: answer.expires,
        credential: exchange.credential.name.clone(),
    })
}

/// A token realm's answer, checked. Its `Debug` leaves the token out.
pub struct TokenAnswer {
    /// The issued token (`token`, else `access_token`); never empty.
    pub token: String,
    /// When it was issued, by our clock (never later than `now`).
    pub issued: Timestamp,
    /// When it expires, by our clock: at most a day after `issued`.
    pub expires: Timestamp,
    /// What a JWT's `access` claim grants of the request, if it says.
    pub granted: Option<Scope>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("token", &"<redacted>")
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .field("granted", &self.granted.as_ref().map(ToString::to_string))
            .finish()
    }
}

/// Reads a token realm's JSON answer to a request for `requested`, at
/// `now` by our clock.
pub fn parse_token_answer(body: &[u8], requested: &Scope, now: Timestamp) -> Result<TokenAnswer, Failure> {
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| Failure::Protocol("the token realm's answer is not the expected JSON".into()))?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Failure::Protocol("the token realm's answer has no token".into()))?;
    let (issued, expires) = lifetime(parsed.issued_at.as_deref(), parsed.expires_in, now);
    let granted = granted_scope(&token, requested);
    if granted.as_ref().is_some_and(Scope::is_empty) {
        return Err(Failure::NoAccess);
    }
    Ok(TokenAnswer { token, issued, expires, granted })
}

/// When a token was issued and when it expires, by our clock. An
/// `issued_at` in the future counts as now: the registry judges expiry by
/// the realm's clock, so a realm ahead of us must not stretch the lifetime.
fn lifetime(issued_at: Option<&str>, expires_in: Option<i64>, now: Timestamp) -> (Timestamp, Timestamp) {
    let issued = issued_at
        .and_then(Timestamp::parse_rfc3339)
        .filter(|t| now.saturating_since(*t) < MAX_SKEW)
        .map_or(now, |t| t.min(now));
    let expires_in = expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_EXPIRES_IN).min(MAX_EXPIRES_IN);
    (issued, issued.plus(Duration::from_secs(expires_in as u64)))
}

/// The part of `requested` a JWT's `access` claim grants; `None` when the
/// token is not a JWT or has no `access` claim.
pub fn granted_scope(token: &str, requested: &Scope) -> Option<Scope> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).or_else(|_| STANDARD.decode(payload)).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&decoded).ok()?;
    let access = claims.get("access")?.as_array()?;
    let mut actions = Vec::new();
    for entry in access {
        if entry.get("type").and_then(|t| t.as_str()) == Some("repository")
            && entry.get("name").and_then(|n| n.as_str()) == Some(requested.repository())
        {
            actions.extend(
                entry
                    .get("actions")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned)),
            );
        }
    }
    Some(requested.intersect(&Scope::new(requested.repository(), actions)))
}

async fn verify_basic(
    upstream: &Upstream,
    exchange: Exchange<'_>,
    base: &str,
    username: &str,
    password: &str,
) -> Result<(), Failure> {
    let url = Url::parse(&format!("{base}/v2/")).map_err(|_| Failure::Protocol("bad registry URL".into()))?;
    upstream.config().realm.check(exchange.credential, exchange.endpoint, &url).map_err(Failure::Refused)?;
    let client = upstream.http().client_for(&exchange.credential.ca_bundle_pem).map_err(Failure::Misconfigured)?;
    let reply = upstream
        .http()
        .send(UpstreamKind::Token, || client.get(url.clone()).basic_auth(username, Some(password)), exchange.deadline)
        .await?;
    if reply.status.is_success() { Ok(()) } else { Err(failure_of(&reply, "GET /v2/ with the stored credential")) }
}

fn passthrough(upstream: &Upstream, exchange: Exchange<'_>, username: &str, password: &str) -> Lease {
    let now = Timestamp::now();
    Lease {
        grant: Grant::Basic { username: username.to_owned(), password: LeaseSecret::new(password.to_owned()) },
        registry: exchange.endpoint.to_owned(),
        requested: exchange.scope.clone(),
        granted: None,
        issue_time: now,
        expire_time: now.plus(upstream.config().passthrough_ttl),
        credential: exchange.credential.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use pullpass::scope::Action;

    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!("eyJhbGciOiJFUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    #[test]
    fn granted_scope_is_read_from_the_access_claim() {
        let push = Scope::request("team/app", &[Action::Push]);
        let read_only =
            jwt(serde_json::json!({"access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}]}));
        assert_eq!(granted_scope(&read_only, &push).unwrap().to_string(), "repository:team/app:pull");
        let nothing = jwt(serde_json::json!({"access": []}));
        assert!(granted_scope(&nothing, &push).unwrap().is_empty());
        let other_repo =
            jwt(serde_json::json!({"access": [{"type": "repository", "name": "other/tool", "actions": ["*"]}]}));
        assert!(granted_scope(&other_repo, &push).unwrap().is_empty());
        assert_eq!(granted_scope("opaque-token", &push), None);
        assert_eq!(granted_scope(&jwt(serde_json::json!({"sub": "x"})), &push), None);
    }

    #[test]
    fn lifetime_never_extends_past_expires_in_from_now() {
        let now = Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").unwrap();
        let at = |t: &str| Timestamp::parse_rfc3339(t).unwrap();
        // A realm four minutes ahead: the token lives 60 s from now, not 300.
        assert_eq!(lifetime(Some("2026-11-23T12:04:00Z"), Some(60), now), (now, at("2026-11-23T12:01:00Z")));
        // A realm a little behind: the token is already partly used.
        let behind = at("2026-11-23T11:59:30Z");
        assert_eq!(lifetime(Some("2026-11-23T11:59:30Z"), Some(60), now), (behind, at("2026-11-23T12:00:30Z")));
        // Far behind, absent or garbage: counted from now; no expires_in = 60 s.
        for issued_at in [Some("2026-11-23T10:00:00Z"), None, Some("yesterday"), Some("2026-11-23T12:00:00+0\u{e9}:0")]
        {
            assert_eq!(lifetime(issued_at, None, now), (now, at("2026-11-23T12:01:00Z")), "{issued_at:?}");
        }
        assert_eq!(lifetime(None, Some(-5), now).1, at("2026-11-23T12:01:00Z"));
        assert_eq!(lifetime(None, Some(i64::MAX), now).1, at("2026-11-24T12:00:00Z"), "capped at a day");
    }

    /// Token answers shaped like JSON, with odd values in every field.
    fn token_answer_like() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![Just("null".to_owned()), "\\PC{0,20}".prop_map(|s| serde_json::json!(s).to_string())];
        let number = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| serde_json::json!(n).to_string()),
            Just("\"300\"".to_owned()),
        ];
        let time = prop_oneof![
            Just("null".to_owned()),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+\\-][0-9]{2}:[0-9]{2})"
                .prop_map(|s| format!("\"{s}\"")),
            "\\PC{0,30}".prop_map(|s| serde_json::json!(s).to_string()),
        ];
        let raw = proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            (text.clone(), text, number, time).prop_map(|(token, access_token, expires_in, issued_at)| format!(
                "{{\"token\":{token},\"access_token\":{access_token},\"expires_in\":{expires_in},\"issued_at\":{issued_at}}}"
            )
            .into_bytes()),
            raw,
        ]
    }

    proptest! {
        #[test]
        fn token_answers_never_panic_and_never_outlive_a_day(body in token_answer_like()) {
            let now = Timestamp::now();
            let requested = Scope::request("team/app", &[Action::Pull]);
            if let Ok(answer) = parse_token_answer(&body, &requested, now) {
                prop_assert!(!answer.token.is_empty());
                prop_assert!(answer.issued <= now);
                prop_assert!(answer.expires > answer.issued);
                prop_assert!(answer.expires <= now.plus(Duration::from_secs(MAX_EXPIRES_IN as u64)));
            }
        }

        #[test]
        fn granted_scope_never_panics_on_any_token(
            header in "[A-Za-z0-9_\\-]{0,20}",
            payload in proptest::collection::vec(any::<u8>(), 0..120),
            json in "\\PC{0,80}",
        ) {
            let requested = Scope::request("team/app", &[Action::Push]);
            let _ = granted_scope(&format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(&payload)), &requested);
            let _ = granted_scope(&format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(json.as_bytes())), &requested);
            let _ = granted_scope(&json, &requested);
        }
    }
}
