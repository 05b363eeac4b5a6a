//! pullpass as an OpenID Connect issuer, for upstream federation only.
//!
//! Clouds (AWS `AssumeRoleWithWebIdentity`, Google STS, Entra client
//! assertions, Quay robot federation) trust a JWT from pullpass instead of
//! a stored secret. This module owns the signing keys ([`keys`]), mints
//! those JWTs ([`Issuer::mint`]: `iss` = `--issuer-url`, `sub` = the
//! credential's resource name, `aud` = what the credential names, at most
//! ten minutes) and renders the discovery document and key set the clouds
//! fetch ([`documents`]). The tokens go only to the upstream endpoint that
//! exchanges them; callers never see one.
//!
//! Signing is ES256 with ring directly: the compact JWS is three base64url
//! parts, and keeping `jsonwebtoken`'s process-wide provider verify-only
//! (`access::identity::jose`) means no signer is reachable from the code
//! that checks callers' tokens.

pub mod documents;
pub mod keys;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::audit::Actor;
use crate::domain::{CredentialName, Timestamp};
use crate::error::Error;
use crate::seal::Sealer;
use crate::secret::SecretBytes;
use crate::store::Store;
use keys::StoredKey;

/// Longest lifetime of a minted token.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Lifetime of the tokens pullpass mints: every exchange uses its token at
/// once, so five minutes leave room for a slow cloud and clock skew.
pub const LIFETIME: Duration = Duration::from_secs(300);
/// How often a server reads the key set again (another process may have
/// rotated it; a new key is published `--activate-in` before it signs).
pub const RELOAD: Duration = Duration::from_secs(30);
/// The default `keys rotate-signing --activate-in`: a new key is published
/// this long before it signs, well over [`RELOAD`].
pub const DEFAULT_ACTIVATE_IN: Duration = Duration::from_secs(120);

/// The issuer's public URL: `https://host[:port][/path]`, or `http://` on a
/// loopback host only. No trailing slash, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrl {
    url: String,
    path: String,
}

impl IssuerUrl {
    /// Parses `--issuer-url`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text.trim())
            .map_err(|_| "is not a URL: expected https://host[:port][/path]".to_owned())?;
        let host = url.host_str().unwrap_or_default();
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(format!(
                    "uses http on {host}, which is not a loopback address: clouds fetch the issuer's keys, so it must be https"
                ));
            }
            _ => return Err("must be an https URL".into()),
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err("must have no user, query or fragment".into());
        }
        let path = url.path().trim_end_matches('/').to_owned();
        for taken in ["/v2", "/console", "/metrics"] {
            if path == taken || path.starts_with(&format!("{taken}/")) {
                return Err(format!("must not lie under {taken}, which the gateway serves"));
            }
        }
        let origin = url.origin().ascii_serialization();
        Ok(Self { url: format!("{origin}{path}"), path })
    }

    /// The URL as written in `iss` (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The URL's path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for IssuerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The loaded key set.
struct Loaded {
    keys: Vec<StoredKey>,
    /// The signing key, opened, with its kid.
    signing: Option<(String, Arc<ring::signature::EcdsaKeyPair>)>,
    read_at: Instant,
}

/// The issuer: mints federation JWTs and renders its public documents.
pub struct Issuer {
    url: IssuerUrl,
    store: Store,
    sealer: Arc<Sealer>,
    loaded: Mutex<Arc<Loaded>>,
    reloading: tokio::sync::Mutex<()>,
    reload: Duration,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the issuer at `url`, making its first signing key if the
    /// database has none.
    pub async fn open(url: IssuerUrl, store: Store, sealer: Arc<Sealer>, reload: Duration) -> Result<Self, Error> {
        let stored = store.signing_keys().await?;
        if stored.is_none() {
            let now = Timestamp::now();
            let first = keys::generate(&sealer, now, now)?;
            // Another replica may make the first key at the same moment;
            // then its key is used. Like the dev master key, the first key
            // is the server's own set-up, not an audited change; every
            // rotation is audited.
            store.replace_signing_keys(None, &keys::render(&[first]), &[]).await?;
        }
        let issuer = Self {
            url,
            store,
            sealer,
            loaded: Mutex::new(Arc::new(Loaded { keys: Vec::new(), signing: None, read_at: Instant::now() })),
            reloading: tokio::sync::Mutex::new(()),
            reload,
        };
        issuer.load().await?;
        Ok(issuer)
    }

    /// The issuer URL.
    pub fn url(&self) -> &IssuerUrl {
        &self.url
    }

    /// Mints a JWT for `credential`'s federation with `audience`. Besides
    /// `sub`, `pullpass_credential_uid` names this credential's life: a
    /// credential deleted and created again under the same name has another,
    /// so a trust condition on it (GCP attribute conditions can check any
    /// claim) does not carry over.
    pub async fn mint(&self, credential: &CredentialName, uid: &str, audience: &str) -> Result<SecretBytes, Error> {
        let loaded = self.current().await?;
        let (kid, pair) = loaded
            .signing
            .clone()
            .ok_or_else(|| Error::internal("the issuer has no signing key that is active now"))?;
        let now = Timestamp::now().as_seconds();
        let mut jti = [0u8; 16];
        SystemRandom::new().fill(&mut jti).map_err(|_| Error::internal("the system random generator failed"))?;
        let header = serde_json::json!({"alg": keys::ALGORITHM, "typ": "JWT", "kid": kid});
        let claims = serde_json::json!({
            "iss": self.url.as_str(),
            "sub": credential.to_string(),
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + LIFETIME.as_secs() as i64,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "pullpass_credential_uid": uid,
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| Error::internal("signing a federation token failed"))?;
        crate::metrics::issuer_token_minted();
        Ok(SecretBytes::from_string(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))))
    }

    /// The published key set (JWKS JSON).
    pub async fn jwks(&self) -> Result<String, Error> {
        let loaded = self.current().await?;
        Ok(documents::jwks(&loaded.keys, Timestamp::now().as_seconds()))
    }

    /// The discovery document (JSON).
    pub fn discovery(&self) -> String {
        documents::discovery(&self.url)
    }

    async fn current(&self) -> Result<Arc<Loaded>, Error> {
        let loaded = Arc::clone(&self.loaded.lock().unwrap_or_else(|p| p.into_inner()));
        let now = Timestamp::now().as_seconds();
        let signing_changed =
            keys::signing(&loaded.keys, now).map(|k| &k.kid) != loaded.signing.as_ref().map(|(kid, _)| kid);
        if loaded.read_at.elapsed() < self.reload && !signing_changed {
            return Ok(loaded);
        }
        match self.load().await {
            Ok(fresh) => Ok(fresh),
            // A database that does not answer: the keys read before still
            // serve (they are published before they sign).
            Err(e) if !loaded.keys.is_empty() => {
                tracing::warn!(error = %e, "reading the issuer's signing keys failed; using the keys read before");
                // Try again only after another interval, so an outage costs
                // one read per interval, not one per request.
                let kept = Arc::new(Loaded {
                    keys: loaded.keys.clone(),
                    signing: loaded.signing.clone(),
                    read_at: Instant::now(),
                });
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&kept);
                Ok(kept)
            }
            Err(e) => Err(e),
        }
    }

    async fn load(&self) -> Result<Arc<Loaded>, Error> {
        let _one = self.reloading.lock().await;
        {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let now = Timestamp::now().as_seconds();
            let same_signer =
                keys::signing(&loaded.keys, now).map(|k| &k.kid) == loaded.signing.as_ref().map(|(kid, _)| kid);
            if loaded.read_at.elapsed() < Duration::from_millis(200) && same_signer && !loaded.keys.is_empty() {
                return Ok(Arc::clone(&loaded));
            }
        }
        let text = self.store.signing_keys().await?.unwrap_or_else(|| "[]".into());
        let stored = keys::parse(&text)?;
        let now = Timestamp::now().as_seconds();
        let previous = Arc::clone(&self.loaded.lock().unwrap_or_else(|p| p.into_inner()));
        let signing = match keys::signing(&stored, now) {
            Some(key) => match &previous.signing {
                Some((kid, pair)) if *kid == key.kid => Some((kid.clone(), Arc::clone(pair))),
                _ => Some((key.kid.clone(), Arc::new(key.open(&self.sealer)?))),
            },
            None => None,
        };
        let fresh = Arc::new(Loaded { keys: stored, signing, read_at: Instant::now() });
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }
}

#[async_trait::async_trait]
impl crate::upstream::FederationTokens for Issuer {
    async fn token(&self, credential: &crate::domain::Credential, audience: &str) -> Result<SecretBytes, Error> {
        self.mint(&credential.name, &credential.uid.to_string(), audience).await
    }
}

/// What `keys rotate-signing` did.
#[derive(Debug)]
pub struct Rotation {
    /// The new key's id.
    pub kid: String,
    /// When it starts signing.
    pub activate_time: Timestamp,
    /// Keys still published (the new one included).
    pub published: usize,
}

/// Adds a new signing key, published now and signing after `activate_in`;
/// the current one retires then.
pub async fn rotate(store: &Store, sealer: &Sealer, activate_in: Duration) -> Result<Rotation, Error> {
    for _ in 0..5 {
        let current = store.signing_keys().await?;
        let existing = current.as_deref().map(keys::parse).transpose()?.unwrap_or_default();
        let now = Timestamp::now();
        let activate_time = if existing.is_empty() { now } else { now.plus(activate_in) };
        let new = keys::generate(sealer, now, activate_time)?;
        let kid = new.kid.clone();
        let set = keys::rotated(existing, new, now.as_seconds());
        let event =
            Actor::command("keys rotate-signing").event("RotateSigningKey", "", &format!("signingKeys/{kid}"), 0);
        if store.replace_signing_keys(current.as_deref(), &keys::render(&set), &[event]).await? {
            return Ok(Rotation {
                kid,
                activate_time,
                published: set.iter().filter(|k| k.published(now.as_seconds())).count(),
            });
        }
    }
    Err(Error::internal("the signing keys kept changing while rotating; run the command again"))
}

/// Seals every signing key again under the active master key (part of
/// `keys rotate`). Returns how many keys were resealed.
pub async fn reseal(store: &Store, sealer: &Sealer) -> Result<usize, Error> {
    for _ in 0..5 {
        let Some(current) = store.signing_keys().await? else { return Ok(0) };
        let existing = keys::parse(&current)?;
        let resealed = keys::reseal(sealer, &existing)?;
        let event = Actor::command("keys rotate").event("ResealSigningKeys", "", "signingKeys", 0);
        if store.replace_signing_keys(Some(&current), &keys::render(&resealed), &[event]).await? {
            return Ok(resealed.len());
        }
    }
    Err(Error::internal("the signing keys kept changing while resealing; run the command again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_url_is_https_or_loopback_http_without_extras() {
        assert_eq!(IssuerUrl::parse("https://pp.example.com/").unwrap().as_str(), "https://pp.example.com");
        let with_path = IssuerUrl::parse("https://pp.example.com:8443/issuer/").unwrap();
        assert_eq!(with_path.as_str(), "https://pp.example.com:8443/issuer");
        assert_eq!(with_path.path(), "/issuer");
        assert!(IssuerUrl::parse("http://127.0.0.1:5000").is_ok());
        assert!(IssuerUrl::parse("http://localhost:5000").is_ok());
        assert!(IssuerUrl::parse("http://[::1]:5000").is_ok());
        for bad in [
            "http://pp.example.com",
            "ftp://pp.example.com",
            "pp.example.com",
            "https://u:p@pp.example.com",
            "https://pp.example.com/?a=b",
            "https://pp.example.com/#x",
            "https://pp.example.com/v2",
            "https://pp.example.com/console/x",
        ] {
            assert!(IssuerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
