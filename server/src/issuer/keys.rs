//! The issuer's signing keys: ES256 (P-256) key pairs made by ring, their
//! private halves sealed with the master key (`Sealer::seal_blob`, bound to
//! the key id), kept as one JSON document in the store's `meta` table so
//! that both engines, `store copy` and backups carry it unchanged.
//!
//! Rotation publishes a new key before it signs anything (`activate_time`),
//! so a cloud that fetched the key set from a replica which has not reloaded
//! yet still finds every key a token may be signed with; the key it
//! replaces stays published until every token it signed has expired.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use zeroize::Zeroizing;

use crate::domain::Timestamp;
use crate::error::Error;
use crate::seal::Sealer;

/// What the private keys are sealed for (the HKDF purpose of their key).
const PURPOSE: &str = "pullpass issuer signing key v1";
/// The only algorithm pullpass signs with: ring generates P-256 keys, and
/// every cloud in `docs/cloud-federation.md` accepts ES256.
pub const ALGORITHM: &str = "ES256";
/// How long a retired key stays published after it stopped signing: the
/// longest token lifetime plus clock skew.
pub const PUBLISHED_AFTER_RETIREMENT: Duration = Duration::from_secs(10 * 60 + 5 * 60);

/// One key as stored.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    /// RFC 7638 thumbprint of the public key (base64url SHA-256).
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
    /// The public point's x coordinate, base64url.
    pub x: String,
    /// The public point's y coordinate, base64url.
    pub y: String,
    /// The PKCS#8 private key, sealed (base64).
    pub sealed: String,
    /// Unix seconds.
    pub create_time: i64,
    /// From when it signs (unix seconds).
    pub activate_time: i64,
    /// From when a newer key signs instead (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_time: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("activate_time", &self.activate_time)
            .field("retire_time", &self.retire_time)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// Is it still in the published key set at `now`?
    pub fn published(&self, now: i64) -> bool {
        self.retire_time.is_none_or(|retired| retired + PUBLISHED_AFTER_RETIREMENT.as_secs() as i64 > now)
    }

    /// The public JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "alg": self.alg, "use": "sig",
        })
    }

    /// Opens the private key.
    pub fn open(&self, sealer: &Sealer) -> Result<EcdsaKeyPair, Error> {
        let unreadable = || {
            Error::internal(format!(
                "the issuer signing key {} cannot be opened with the loaded master keys (run `pullpassd keys rotate-signing`)",
                self.kid
            ))
        };
        let blob = STANDARD.decode(&self.sealed).map_err(|_| unreadable())?;
        let pkcs8 = sealer.open_blob(PURPOSE, self.kid.as_bytes(), &blob).map_err(|_| unreadable())?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &SystemRandom::new())
            .map_err(|_| unreadable())
    }
}

/// Makes a fresh key, sealed, signing from `activate_time`.
pub fn generate(sealer: &Sealer, now: Timestamp, activate_time: Timestamp) -> Result<StoredKey, Error> {
    let rng = SystemRandom::new();
    let failed = || Error::internal("generating an issuer signing key failed");
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| failed())?;
    let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).map_err(|_| failed())?;
    let point = pair.public_key().as_ref();
    // Uncompressed SEC1: 0x04 ‖ x ‖ y.
    let (x, y) = point[1..].split_at(32);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let kid = thumbprint(&x, &y);
    let sealed = sealer.seal_blob(PURPOSE, kid.as_bytes(), &pkcs8).map_err(|_| failed())?;
    Ok(StoredKey {
        kid,
        alg: ALGORITHM.to_owned(),
        x,
        y,
        sealed: STANDARD.encode(sealed),
        create_time: now.as_seconds(),
        activate_time: activate_time.as_seconds(),
        retire_time: None,
    })
}

/// Seals every key again under the active master key (for `keys rotate`).
pub fn reseal(sealer: &Sealer, keys: &[StoredKey]) -> Result<Vec<StoredKey>, Error> {
    keys.iter()
        .map(|key| {
            let blob =
                STANDARD.decode(&key.sealed).map_err(|_| Error::internal("a sealed signing key is not base64"))?;
            let pkcs8 = sealer
                .open_blob(PURPOSE, key.kid.as_bytes(), &blob)
                .map_err(|e| Error::internal(format!("the issuer signing key {} cannot be opened: {e}", key.kid)))?;
            let sealed = sealer
                .seal_blob(PURPOSE, key.kid.as_bytes(), &pkcs8)
                .map_err(|_| Error::internal("sealing a signing key failed"))?;
            Ok(StoredKey { sealed: STANDARD.encode(sealed), ..key.clone() })
        })
        .collect()
}

/// RFC 7638: SHA-256 of the required members in lexicographic order.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// Parses the stored set.
pub fn parse(text: &str) -> Result<Vec<StoredKey>, Error> {
    serde_json::from_str(text).map_err(|_| Error::internal("the stored issuer signing keys are not readable"))
}

/// Writes the set.
pub fn render(keys: &[StoredKey]) -> String {
    serde_json::to_string(keys).unwrap_or_default()
}

/// The set after a rotation at `now`: the new key signs from
/// `activate_time`, every older signing key retires then, and keys whose
/// tokens have all expired are dropped.
pub fn rotated(mut keys: Vec<StoredKey>, new: StoredKey, now: i64) -> Vec<StoredKey> {
    for key in keys.iter_mut().filter(|k| k.retire_time.is_none()) {
        key.retire_time = Some(new.activate_time.max(key.activate_time));
    }
    keys.retain(|k| k.published(now));
    keys.push(new);
    keys
}

/// The key that signs at `now`: the newest one already active and not
/// retired.
pub fn signing(keys: &[StoredKey], now: i64) -> Option<&StoredKey> {
    keys.iter()
        .filter(|k| k.activate_time <= now && k.retire_time.is_none_or(|r| r > now))
        .max_by_key(|k| (k.activate_time, k.create_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(crate::seal::Keyring::parse(&format!("k1:{}\n", STANDARD.encode([7u8; 32])), "test").unwrap())
    }

    #[test]
    fn a_rotated_key_is_published_first_and_the_old_one_until_its_tokens_expire() {
        let sealer = sealer();
        let t0 = Timestamp::now();
        let first = generate(&sealer, t0, t0).unwrap();
        let now = t0.as_seconds();
        assert_eq!(signing(std::slice::from_ref(&first), now).unwrap().kid, first.kid);
        let second = generate(&sealer, t0, t0.plus(Duration::from_secs(120))).unwrap();
        let keys = rotated(vec![first.clone()], second.clone(), now);
        assert_eq!(keys.len(), 2);
        // Until the new key activates, the old one signs; both are published.
        assert_eq!(signing(&keys, now + 60).unwrap().kid, first.kid);
        assert_eq!(signing(&keys, now + 120).unwrap().kid, second.kid);
        assert!(keys.iter().all(|k| k.published(now + 120)));
        // The old key leaves the set once every token it signed has expired.
        let later = now + 120 + PUBLISHED_AFTER_RETIREMENT.as_secs() as i64;
        assert!(!keys[0].published(later));
        let third = generate(&sealer, t0, t0).unwrap();
        let keys = rotated(keys, third, later);
        assert!(!keys.iter().any(|k| k.kid == first.kid));
    }

    #[test]
    fn a_key_opens_only_under_its_own_id_and_its_debug_hides_the_sealed_key() {
        let sealer = sealer();
        let key = generate(&sealer, Timestamp::now(), Timestamp::now()).unwrap();
        key.open(&sealer).unwrap();
        let moved = StoredKey { kid: "other".into(), ..key.clone() };
        assert!(moved.open(&sealer).is_err());
        assert!(!format!("{key:?}").contains(&key.sealed));
        let resealed = reseal(&sealer, std::slice::from_ref(&key)).unwrap();
        assert_ne!(resealed[0].sealed, key.sealed);
        resealed[0].open(&sealer).unwrap();
    }
}
