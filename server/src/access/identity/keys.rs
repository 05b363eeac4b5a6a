//! An identity provider's signing keys: its JSON Web Key Set, fetched from
//! its key source and cached.
//!
//! The key source is OIDC discovery (`{issuer}/.well-known/openid-configuration`,
//! whose `issuer` must be the configured one, then its `jwks_uri`), a
//! `jwks_uri`, or an inline key set. Fetches go through the outbound HTTP
//! client ([`Http`]: bounded bodies, deadlines, no redirects, no link-local
//! or metadata addresses), over https unless the host is a loopback
//! address, trusting the provider's CA certificates too if it has any. A
//! key a token names (`jku`, `x5u`) is never fetched: only the provider's
//! configured source is.
//!
//! The cache, per provider ([`KeyPolicy`] holds the figures):
//! * keys are kept, and the set is fetched again when it is older than
//!   [`KeyPolicy::refresh_after`] (10 min), so keys removed from the set stop
//!   working after the next fetch;
//! * a `kid` the set does not know triggers a fetch, but fetches (for any
//!   reason, failed ones too) happen at most once per
//!   [`KeyPolicy::refetch_cooldown`] (30 s), so random `kid`s cannot make the
//!   server hammer the issuer;
//! * when fetches fail, the last good set keeps working until it is
//!   [`KeyPolicy::keep_last_good`] (1 h) old; after that, verification fails
//!   with "key source unreachable";
//! * one caller fetches at a time; while it does, tokens the last good set
//!   can verify do not wait for it.
//!
//! Time is passed in (`now`), so tests need no sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, KeyOperations, PublicKeyUse};
use reqwest::Url;
use reqwest::header::ACCEPT;

use super::jose::{self, PublicKey, SigningAlgorithm};
use super::{KeySource, ProviderConfig, Refusal};
use crate::metrics::UpstreamKind;
use crate::upstream::http::Http;
use crate::upstream::realm::is_forbidden_address;

/// Most keys kept from one key set.
pub const MAX_KEYS: usize = 100;

/// How the key cache behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Fetches happen at most this often per provider (30 s).
    pub refetch_cooldown: Duration,
    /// A set older than this is fetched again before use (10 min).
    pub refresh_after: Duration,
    /// A set older than this is no longer used, whatever the fetches
    /// say (1 h).
    pub keep_last_good: Duration,
    /// How long one fetch (discovery and key set) may take (10 s).
    pub fetch_timeout: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            refetch_cooldown: Duration::from_secs(30),
            refresh_after: Duration::from_secs(600),
            keep_last_good: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// The usable signing keys of one key set.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Keys by `kid` (an issuer may list one `kid` per key type).
    named: HashMap<String, Vec<PublicKey>>,
    /// Keys without a `kid`.
    unnamed: Vec<PublicKey>,
}

/// What a key set says about a token's `kid` and algorithm.
#[derive(Debug)]
enum Lookup {
    Found(PublicKey),
    WrongType,
    Unknown,
}

impl KeySet {
    /// Parses a JSON Web Key Set, keeping the signing keys verification
    /// supports (RSA, P-256, P-384, Ed25519; not `use: enc`; not pinned
    /// to an algorithm that is never allowed) and dropping the rest.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let document: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("the key set is not JSON: {e}"))?;
        let Some(keys) = document.get("keys").and_then(|k| k.as_array()) else {
            return Err("the key set has no `keys` array".to_owned());
        };
        let mut set = KeySet::default();
        for value in keys.iter().take(MAX_KEYS) {
            let Some((kid, key)) = usable_key(value) else { continue };
            match kid {
                Some(kid) => set.named.entry(kid).or_default().push(key),
                None => set.unnamed.push(key),
            }
        }
        Ok(set)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.named.values().map(Vec::len).sum::<usize>() + self.unnamed.len()
    }

    /// Is the set empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Does the set hold a key named `kid`?
    pub fn contains(&self, kid: &str) -> bool {
        self.named.contains_key(kid)
    }

    /// The key for a token's `kid` and algorithm. A token without a `kid`
    /// gets the set's only key of the right type; if there are several,
    /// none (trying each would let one token cost many verifications).
    fn find(&self, kid: Option<&str>, alg: SigningAlgorithm) -> Lookup {
        let fits = |key: &&PublicKey| jose::check_key_matches(key, alg).is_ok();
        match kid {
            Some(kid) => match self.named.get(kid) {
                None => Lookup::Unknown,
                Some(keys) => keys.iter().find(fits).cloned().map_or(Lookup::WrongType, Lookup::Found),
            },
            None => {
                let mut candidates = self.named.values().flatten().chain(&self.unnamed).filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Lookup::Found(only.clone()),
                    _ => Lookup::Unknown,
                }
            }
        }
    }
}

/// One JWK as a usable key with its `kid`, or `None` if verification
/// cannot or must not use it.
fn usable_key(value: &serde_json::Value) -> Option<(Option<String>, PublicKey)> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let kind = jose::key_kind_of(&jwk)?;
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(SigningAlgorithm::parse(&alg.to_string()).ok()?),
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let kid = jwk.common.key_id.filter(|kid| !kid.is_empty() && kid.len() <= jose::MAX_KID_LEN);
    Some((kid, PublicKey { kind, alg, key: Arc::new(key) }))
}

/// Checks a URL keys may be fetched from: https, or http to a loopback
/// address; no user info; no link-local or metadata address.
pub fn check_url(text: &str) -> Result<Url, String> {
    let shown: String = text.chars().take(200).collect();
    let url = Url::parse(text).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{shown}` must not carry a user name or password"));
    }
    let Some(host) = url.host_str() else {
        return Err(format!("`{shown}` has no host"));
    };
    let ip = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok();
    if ip.is_some_and(is_forbidden_address) {
        return Err(format!("`{shown}` is a link-local or cloud metadata address"));
    }
    let loopback = ip.is_some_and(|ip| ip.is_loopback()) || host == "localhost";
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!("`{shown}` uses plain http; keys are fetched over https (plain http only on loopback)")),
        _ => Err(format!("`{shown}` is not an http(s) URL")),
    }
}

/// The discovery document's URL for an issuer.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// What the cache holds.
#[derive(Debug, Default)]
struct State {
    /// The last good set and when it was fetched.
    current: Option<(Arc<KeySet>, Instant)>,
    /// When the last fetch began, whatever came of it.
    last_attempt: Option<Instant>,
}

/// Where the keys come from.
#[derive(Debug)]
enum Source {
    /// An inline key set (parsed once), or why it does not parse.
    Inline(Result<Arc<KeySet>, String>),
    /// A URL to fetch.
    Remote { provider: String, issuer: String, source: KeySource, ca_pem: String },
}

/// The key cache of one provider.
#[derive(Debug)]
pub struct KeyCache {
    source: Source,
    policy: KeyPolicy,
    state: Mutex<State>,
    /// Held while fetching, so concurrent misses make one fetch.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyCache {
    /// The cache for `provider`, empty until its first use (an inline set
    /// is parsed now).
    pub fn new(provider: &ProviderConfig, policy: KeyPolicy) -> Self {
        let source = match &provider.key_source {
            KeySource::Jwks(json) => Source::Inline(KeySet::parse(json.as_bytes()).map(Arc::new)),
            other => Source::Remote {
                provider: provider.id.clone(),
                issuer: provider.issuer.clone(),
                source: other.clone(),
                ca_pem: provider.ca_certificates_pem.clone(),
            },
        };
        Self { source, policy, state: Mutex::default(), fetching: tokio::sync::Mutex::new(()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a result verified earlier with the key `kid` be reused at
    /// `now`? Only while that key is in a set younger than
    /// [`KeyPolicy::refresh_after`] (no fetch here: an older set sends the
    /// token through full verification, which fetches).
    pub fn vouches_for(&self, kid: Option<&str>, now: Instant) -> bool {
        let set = match &self.source {
            Source::Inline(set) => set.as_ref().ok().cloned(),
            Source::Remote { .. } => self
                .state()
                .current
                .as_ref()
                .filter(|(_, fetched)| now.saturating_duration_since(*fetched) < self.policy.refresh_after)
                .map(|(set, _)| set.clone()),
        };
        match (set, kid) {
            (Some(set), Some(kid)) => set.contains(kid),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The key to verify a token signed with `alg` under `kid`, fetching
    /// the set when the rules above say so.
    pub async fn key(
        &self,
        http: &Http,
        kid: Option<&str>,
        alg: SigningAlgorithm,
        now: Instant,
    ) -> Result<PublicKey, Refusal> {
        let set = match &self.source {
            Source::Inline(Ok(set)) => set.clone(),
            Source::Inline(Err(_)) => return Err(Refusal::KeySourceUnreachable),
            Source::Remote { .. } => self.remote_set(http, kid, alg, now).await?,
        };
        match set.find(kid, alg) {
            Lookup::Found(key) => Ok(key),
            Lookup::WrongType => Err(Refusal::KeyTypeMismatch),
            Lookup::Unknown => Err(Refusal::KeyUnknown),
        }
    }

    /// The set to look the key up in: the current one while it is fresh
    /// and knows the key, else whatever a fetch (if allowed now) leaves.
    async fn remote_set(
        &self,
        http: &Http,
        kid: Option<&str>,
        alg: SigningAlgorithm,
        now: Instant,
    ) -> Result<Arc<KeySet>, Refusal> {
        let refresh_after = self.policy.refresh_after;
        if let Some(set) = self.set_knowing(kid, alg, now, refresh_after) {
            return Ok(set);
        }
        let _fetching = match self.fetching.try_lock() {
            Ok(fetching) => fetching,
            Err(_) => {
                // A fetch is under way: a token the last good set can
                // verify need not wait for it.
                if let Some(set) = self.set_knowing(kid, alg, now, self.policy.keep_last_good) {
                    return Ok(set);
                }
                self.fetching.lock().await
            }
        };
        // Another caller may have fetched while this one waited.
        if let Some(set) = self.set_knowing(kid, alg, now, refresh_after) {
            return Ok(set);
        }
        let may_fetch = self
            .state()
            .last_attempt
            .is_none_or(|at| now.saturating_duration_since(at) >= self.policy.refetch_cooldown);
        if may_fetch {
            self.state().last_attempt = Some(now);
            match self.fetch(http).await {
                Ok(set) => self.state().current = Some((Arc::new(set), now)),
                Err(why) => {
                    if let Source::Remote { provider, .. } = &self.source {
                        tracing::warn!(identity_provider = %provider, error = %why, "an identity provider's keys could not be fetched");
                    }
                }
            }
        }
        match &self.state().current {
            Some((set, fetched)) if now.saturating_duration_since(*fetched) < self.policy.keep_last_good => {
                Ok(set.clone())
            }
            _ => Err(Refusal::KeySourceUnreachable),
        }
    }

    /// The current set, if it is younger than `max_age` and has a key for
    /// the token.
    fn set_knowing(
        &self,
        kid: Option<&str>,
        alg: SigningAlgorithm,
        now: Instant,
        max_age: Duration,
    ) -> Option<Arc<KeySet>> {
        let state = self.state();
        let (set, fetched) = state.current.as_ref()?;
        let young = now.saturating_duration_since(*fetched) < max_age;
        (young && !matches!(set.find(kid, alg), Lookup::Unknown)).then(|| set.clone())
    }

    /// Fetches the key set from the source (through discovery if that is
    /// the source).
    async fn fetch(&self, http: &Http) -> Result<KeySet, String> {
        let Source::Remote { issuer, source, ca_pem, .. } = &self.source else {
            return Err("an inline key set is not fetched".to_owned());
        };
        let deadline = Instant::now() + self.policy.fetch_timeout;
        let client = http.client_for(ca_pem).map_err(|e| e.replace("the credential's", "the identity provider's"))?;
        let jwks_url = match source {
            KeySource::JwksUri(url) => check_url(url)?,
            KeySource::Discovery => {
                let url = check_url(&discovery_url(issuer))?;
                let body = get(http, &client, url, deadline).await?;
                let document: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| format!("the discovery document is not JSON: {e}"))?;
                if document.get("issuer").and_then(|i| i.as_str()) != Some(issuer.as_str()) {
                    return Err("the discovery document names another issuer".to_owned());
                }
                let Some(jwks_uri) = document.get("jwks_uri").and_then(|u| u.as_str()) else {
                    return Err("the discovery document has no jwks_uri".to_owned());
                };
                check_url(jwks_uri)?
            }
            KeySource::Jwks(_) => return Err("an inline key set is not fetched".to_owned()),
        };
        let body = get(http, &client, jwks_url, deadline).await?;
        KeySet::parse(&body)
    }
}

/// GETs a JSON document: 200 or an error naming the status.
async fn get(http: &Http, client: &reqwest::Client, url: Url, deadline: Instant) -> Result<Vec<u8>, String> {
    let origin = url.origin().ascii_serialization();
    let reply = http
        .send(UpstreamKind::IdentityKeys, || client.get(url.clone()).header(ACCEPT, "application/json"), deadline)
        .await
        .map_err(|e| format!("{origin}: {e}"))?;
    match reply.status.as_u16() {
        200 => Ok(reply.body),
        300..=399 => Err(format!("{origin} answered with a redirect ({}), which is not followed", reply.status)),
        _ => Err(format!("{origin} answered {}", reply.status)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::{JwksServer, Signer, provider_for};
    use super::*;

    fn cache(server: &JwksServer, source: KeySource) -> KeyCache {
        KeyCache::new(&provider_for(server, source), KeyPolicy::default())
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_fetched() {
        for ok in
            ["https://issuer.example/jwks", "http://127.0.0.1:8080/jwks", "http://[::1]/jwks", "http://localhost:1/k"]
        {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://issuer.example/jwks",
            "http://10.0.0.1/jwks",
            "https://169.254.169.254/latest",
            "https://user:pw@issuer.example/jwks",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_url(refused).is_err(), "{refused}");
        }
        assert_eq!(discovery_url("https://a.example/x/"), "https://a.example/x/.well-known/openid-configuration");
    }

    #[test]
    fn a_key_set_keeps_only_usable_signing_keys() {
        let rsa = Signer::rsa_a("rsa");
        let mut encryption = rsa.jwk();
        encryption["use"] = json!("enc");
        encryption["kid"] = json!("enc");
        let mut hmac_pinned = rsa.jwk();
        hmac_pinned["alg"] = json!("HS256");
        hmac_pinned["kid"] = json!("hs");
        let set = json!({"keys": [
            rsa.jwk(),
            encryption,
            hmac_pinned,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "weird"},
            Signer::es256("ec").jwk(),
            Signer::ed25519("ed").jwk(),
        ]});
        let set = KeySet::parse(set.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.contains("rsa") && set.contains("ec") && set.contains("ed"));
        assert!(matches!(set.find(Some("rsa"), SigningAlgorithm::Es256), Lookup::WrongType));
        assert!(matches!(set.find(Some("hs"), SigningAlgorithm::Rs256), Lookup::Unknown));
        assert!(matches!(set.find(None, SigningAlgorithm::Rs256), Lookup::Found(_)), "the only RSA key");
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_cooldown() {
        let server = JwksServer::start().await;
        let (a, b) = (Signer::rsa_a("a"), Signer::rsa_b("b"));
        server.publish(&[&a]);
        let cache = cache(&server, KeySource::JwksUri(server.jwks_url()));
        let http = Http::new().unwrap();
        let t0 = Instant::now();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, t0).await.is_ok());
        assert_eq!(server.jwks_fetches(), 1);

        // The issuer rotates to b; a token signed with b arrives at once.
        server.publish(&[&a, &b]);
        let soon = t0 + Duration::from_secs(5);
        assert_eq!(cache.key(&http, Some("b"), SigningAlgorithm::Rs256, soon).await.unwrap_err(), Refusal::KeyUnknown);
        assert_eq!(cache.key(&http, Some("zz"), SigningAlgorithm::Rs256, soon).await.unwrap_err(), Refusal::KeyUnknown);
        assert_eq!(server.jwks_fetches(), 1, "within 30 s of the last fetch, unknown kids fetch nothing");

        let later = t0 + Duration::from_secs(31);
        assert!(cache.key(&http, Some("b"), SigningAlgorithm::Rs256, later).await.is_ok());
        assert_eq!(server.jwks_fetches(), 2);
        for kid in ["x", "y", "z"] {
            assert!(cache.key(&http, Some(kid), SigningAlgorithm::Rs256, later).await.is_err());
        }
        assert_eq!(server.jwks_fetches(), 2, "random kids cause no storm");
    }

    #[tokio::test]
    async fn a_key_removed_from_the_set_stops_working_after_the_next_fetch() {
        let server = JwksServer::start().await;
        let (a, b) = (Signer::rsa_a("a"), Signer::rsa_b("b"));
        server.publish(&[&a, &b]);
        let cache = cache(&server, KeySource::JwksUri(server.jwks_url()));
        let http = Http::new().unwrap();
        let t0 = Instant::now();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, t0).await.is_ok());
        server.publish(&[&b]);
        let before_refresh = t0 + Duration::from_secs(60);
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, before_refresh).await.is_ok());
        assert!(cache.vouches_for(Some("a"), before_refresh));
        let after_refresh = t0 + KeyPolicy::default().refresh_after;
        assert!(!cache.vouches_for(Some("a"), after_refresh), "a set due for a fetch vouches for nothing");
        assert_eq!(
            cache.key(&http, Some("a"), SigningAlgorithm::Rs256, after_refresh).await.unwrap_err(),
            Refusal::KeyUnknown
        );
        assert!(!cache.vouches_for(Some("a"), after_refresh));
        assert!(cache.vouches_for(Some("b"), after_refresh));
        assert!(cache.key(&http, Some("b"), SigningAlgorithm::Rs256, after_refresh).await.is_ok());
        assert_eq!(server.jwks_fetches(), 2);
    }

    #[tokio::test]
    async fn a_key_source_that_redirects_or_answers_too_much_is_refused_and_the_redirect_not_followed() {
        let (elsewhere, source) = (JwksServer::start().await, JwksServer::start().await);
        let a = Signer::rsa_a("a");
        elsewhere.publish(&[&a]);
        source.redirect_to(&elsewhere.jwks_url());
        let http = Http::new().unwrap();
        let redirected = cache(&source, KeySource::JwksUri(source.jwks_url()));
        let refused = redirected.key(&http, Some("a"), SigningAlgorithm::Rs256, Instant::now()).await;
        assert_eq!(refused.unwrap_err(), Refusal::KeySourceUnreachable);
        assert_eq!(elsewhere.jwks_fetches(), 0, "the redirect was followed");

        // A key set over the outbound client's body limit is not read.
        let huge = JwksServer::start().await;
        huge.publish(&[&a]);
        huge.pad_key_set(crate::upstream::http::MAX_BODY);
        let oversized = cache(&huge, KeySource::JwksUri(huge.jwks_url()));
        let refused = oversized.key(&http, Some("a"), SigningAlgorithm::Rs256, Instant::now()).await;
        assert_eq!(refused.unwrap_err(), Refusal::KeySourceUnreachable);
        assert_eq!(huge.jwks_fetches(), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_last_good_set_for_an_hour_then_refuses() {
        let server = JwksServer::start().await;
        let a = Signer::rsa_a("a");
        server.publish(&[&a]);
        let cache = cache(&server, KeySource::Discovery);
        let http = Http::new().unwrap();
        let t0 = Instant::now();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, t0).await.is_ok());
        server.fail_with(404);
        let stale = t0 + Duration::from_secs(20 * 60);
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, stale).await.is_ok(), "the last good set");
        let attempts = server.discovery_fetches();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, stale + Duration::from_secs(1)).await.is_ok());
        assert_eq!(server.discovery_fetches(), attempts, "failed fetches are not retried within the cooldown");
        let too_old = t0 + Duration::from_secs(3600);
        assert_eq!(
            cache.key(&http, Some("a"), SigningAlgorithm::Rs256, too_old).await.unwrap_err(),
            Refusal::KeySourceUnreachable
        );
        server.fail_with(0);
        let recovered = too_old + Duration::from_secs(30);
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, recovered).await.is_ok());
    }

    #[tokio::test]
    async fn a_slow_fetch_does_not_hold_up_tokens_the_last_good_set_verifies() {
        let server = JwksServer::start().await;
        let a = Signer::rsa_a("a");
        server.publish(&[&a]);
        let cache = Arc::new(cache(&server, KeySource::JwksUri(server.jwks_url())));
        let http = Arc::new(Http::new().unwrap());
        let t0 = Instant::now();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, t0).await.is_ok());

        server.delay_answers(Duration::from_secs(60));
        let due = t0 + KeyPolicy::default().refresh_after;
        let refreshing = tokio::spawn({
            let (cache, http) = (cache.clone(), http.clone());
            async move { cache.key(&http, Some("a"), SigningAlgorithm::Rs256, due).await.map(|_| ()) }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.jwks_fetches() < 2 {
            assert!(Instant::now() < deadline, "the refresh never reached the issuer");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let meanwhile = tokio::time::timeout(
            Duration::from_secs(5),
            cache.key(&http, Some("a"), SigningAlgorithm::Rs256, due + Duration::from_secs(1)),
        )
        .await;
        assert!(matches!(meanwhile, Ok(Ok(_))), "served from the last good set while the fetch runs");
        assert!(!refreshing.is_finished());
        refreshing.abort();
    }

    #[tokio::test]
    async fn discovery_must_name_the_configured_issuer() {
        let server = JwksServer::start().await;
        server.publish(&[&Signer::rsa_a("a")]);
        server.set_discovery_issuer("https://someone-else.example");
        let cache = cache(&server, KeySource::Discovery);
        let http = Http::new().unwrap();
        assert_eq!(
            cache.key(&http, Some("a"), SigningAlgorithm::Rs256, Instant::now()).await.unwrap_err(),
            Refusal::KeySourceUnreachable
        );
        assert_eq!(server.jwks_fetches(), 0);
    }

    #[tokio::test]
    async fn an_inline_key_set_is_used_without_fetching() {
        let server = JwksServer::start().await;
        let a = Signer::rsa_a("a");
        let inline = json!({"keys": [a.jwk()]}).to_string();
        let cache = cache(&server, KeySource::Jwks(inline));
        let http = Http::new().unwrap();
        assert!(cache.key(&http, Some("a"), SigningAlgorithm::Rs256, Instant::now()).await.is_ok());
        assert_eq!(
            cache.key(&http, Some("b"), SigningAlgorithm::Rs256, Instant::now()).await.unwrap_err(),
            Refusal::KeyUnknown
        );
        assert_eq!(server.jwks_fetches() + server.discovery_fetches(), 0);
    }
}
