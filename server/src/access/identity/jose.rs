//! The JOSE layer: which signature algorithms an identity provider may
//! use, the ring-backed verify-only [`CryptoProvider`] that `jsonwebtoken`
//! checks signatures with, and the header rules a token must pass before
//! any key is looked up.
//!
//! Header rules (checked on the header JSON itself, since
//! `jsonwebtoken::Header` does not keep every parameter):
//! * `crit`, `jku`, `x5u` and `jwk` are refused: a token never names the
//!   key or the rules it is checked with;
//! * `alg` must be one of the provider's [`SigningAlgorithm`]s. `none` and
//!   HS* cannot even be written as one, and the verifier factory refuses
//!   HMAC keys and signing as a second wall.
//!
//! A key's type must match the algorithm ([`check_key_matches`]): RSA for
//! RS*/PS*, P-256 for ES256, P-384 for ES384, Ed25519 for EdDSA, and a key
//! that names its own `alg` is used with that algorithm only.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};

use super::Refusal;

/// Longest token accepted, in bytes (a Kubernetes token is about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 256;
/// Header parameters that make a token name its own key or rules.
pub const FORBIDDEN_HEADERS: [&str; 4] = ["crit", "jku", "x5u", "jwk"];

/// A signature algorithm an identity provider may use. HMAC (`HS*`) and
/// `none` have no variant: a token signed so is refused whatever the
/// configuration says. ES512 has none either, since ring cannot verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the common one).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    /// Every algorithm a provider may allow.
    pub const ALL: [SigningAlgorithm; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// What a provider allows when it says nothing: RS256 and ES256.
    pub const DEFAULT: [SigningAlgorithm; 2] = [Self::Rs256, Self::Es256];

    /// The JOSE name (`RS256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses a JOSE name; `none`, HS* and anything else are refused with
    /// the reason.
    pub fn parse(name: &str) -> Result<Self, String> {
        if let Some(alg) = Self::ALL.into_iter().find(|a| a.name() == name) {
            return Ok(alg);
        }
        let allowed = Self::ALL.map(Self::name).join(", ");
        let shown: String = name.chars().take(16).collect();
        Err(if name.eq_ignore_ascii_case("none") || name.starts_with("HS") {
            format!("`{shown}` is never allowed: tokens must be signed with a public key; use one of {allowed}")
        } else {
            format!("`{shown}` is not a supported algorithm; use one of {allowed}")
        })
    }

    /// The same algorithm in `jsonwebtoken`'s terms.
    pub fn jose(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Rs384 => Algorithm::RS384,
            Self::Rs512 => Algorithm::RS512,
            Self::Ps256 => Algorithm::PS256,
            Self::Ps384 => Algorithm::PS384,
            Self::Ps512 => Algorithm::PS512,
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    fn from_jose(alg: Algorithm) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.jose() == alg)
    }

    /// The kind of key this algorithm needs.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512 => KeyKind::Rsa,
            Self::Es256 => KeyKind::P256,
            Self::Es384 => KeyKind::P384,
            Self::EdDsa => KeyKind::Ed25519,
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a public key in a JWKS, as far as verification cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `kty: RSA`.
    Rsa,
    /// `kty: EC`, `crv: P-256`.
    P256,
    /// `kty: EC`, `crv: P-384`.
    P384,
    /// `kty: OKP`, `crv: Ed25519`.
    Ed25519,
}

/// A public key from a key set, ready to verify with.
#[derive(Clone)]
pub struct PublicKey {
    /// Its type.
    pub kind: KeyKind,
    /// The algorithm the key set pinned it to (its `alg`), if any.
    pub alg: Option<SigningAlgorithm>,
    /// The key in `jsonwebtoken`'s form.
    pub key: Arc<DecodingKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("kind", &self.kind).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// Refuses a key whose type does not fit `alg` (an RSA key offered for
/// ES256, an HMAC secret for anything), or that its key set pinned to
/// another algorithm.
pub fn check_key_matches(key: &PublicKey, alg: SigningAlgorithm) -> Result<(), Refusal> {
    if key.kind != alg.key_kind() || key.alg.is_some_and(|pinned| pinned != alg) {
        return Err(Refusal::KeyTypeMismatch);
    }
    Ok(())
}

/// What the header of a token says, once it passed the header rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedHeader {
    /// Its algorithm, one the provider allows.
    pub alg: SigningAlgorithm,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// The three parts of a compact JWS, split and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The encoded header.
    pub header: &'a str,
    /// The encoded payload.
    pub payload: &'a str,
}

/// Splits a compact token into its parts, refusing anything that is not
/// three base64url segments of bounded length.
pub fn split(token: &str) -> Result<Parts<'_>, Refusal> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let base64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if header.is_empty() || payload.is_empty() || !token.split('.').all(base64url) {
        return Err(Refusal::Malformed);
    }
    Ok(Parts { header, payload })
}

/// Decodes one base64url segment as a JSON object.
pub fn decode_object(segment: &str) -> Result<serde_json::Map<String, serde_json::Value>, Refusal> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Refusal::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        _ => Err(Refusal::Malformed),
    }
}

/// Applies the header rules: no `crit`/`jku`/`x5u`/`jwk`, an `alg` in
/// `allowed`, a `kid` (if any) that is a short string.
pub fn check_header(encoded: &str, allowed: &[SigningAlgorithm]) -> Result<CheckedHeader, Refusal> {
    let header = decode_object(encoded)?;
    if let Some(name) = FORBIDDEN_HEADERS.into_iter().find(|name| header.contains_key(*name)) {
        return Err(Refusal::ForbiddenHeader(name));
    }
    let alg = match header.get("alg") {
        Some(serde_json::Value::String(name)) => {
            SigningAlgorithm::parse(name).map_err(|_| Refusal::AlgorithmNotAllowed)?
        }
        Some(_) | None => return Err(Refusal::Malformed),
    };
    if !allowed.contains(&alg) {
        return Err(Refusal::AlgorithmNotAllowed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => Some(kid.clone()),
        Some(_) => return Err(Refusal::Malformed),
    };
    Ok(CheckedHeader { alg, kid })
}

/// The provider installed into `jsonwebtoken`: ring verifies, nothing
/// signs, and JWK helpers never panic.
static RING_VERIFY_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: refuse_signing,
    verifier_factory: ring_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest,
    },
};

/// Installs the ring provider as `jsonwebtoken`'s process-wide default.
/// Idempotent; an error means another provider got there first, and this
/// module then refuses to verify anything.
pub fn install() -> Result<(), String> {
    match RING_VERIFY_ONLY.install_default() {
        Ok(()) => Ok(()),
        Err(installed) if std::ptr::eq(installed, &RING_VERIFY_ONLY) => Ok(()),
        Err(_) => Err("another JWT crypto provider is installed in this process".to_owned()),
    }
}

/// Is the ring provider the one `jsonwebtoken` uses?
pub fn installed() -> bool {
    CryptoProvider::try_get_default().is_some_and(|p| std::ptr::eq(p, &RING_VERIFY_ONLY))
}

fn unsupported() -> jsonwebtoken::errors::Error {
    new_error(ErrorKind::Provider("not supported by pullpass's verify-only provider".to_owned()))
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> jsonwebtoken::errors::Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

fn refuse_signing(_: &Algorithm, _: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(new_error(ErrorKind::Provider("this provider only verifies".to_owned())))
}

fn ring_verifier(alg: &Algorithm, key: &DecodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let Some(alg) = SigningAlgorithm::from_jose(*alg) else {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    };
    let family = match alg.key_kind() {
        KeyKind::Rsa => AlgorithmFamily::Rsa,
        KeyKind::P256 | KeyKind::P384 => AlgorithmFamily::Ec,
        KeyKind::Ed25519 => AlgorithmFamily::Ed,
    };
    if key.family() != family {
        return Err(new_error(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(RingVerifier { alg, key: key.clone() }))
}

/// One verification with ring.
struct RingVerifier {
    alg: SigningAlgorithm,
    key: DecodingKey,
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), jsonwebtoken::signature::Error> {
        let ok = match (self.alg.key_kind(), self.key.kind()) {
            (KeyKind::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                // JWKs should encode n and e minimally, but some carry a
                // leading zero, which ring refuses.
                let components = RsaPublicKeyComponents { n: without_leading_zeros(n), e: without_leading_zeros(e) };
                components.verify(rsa_parameters(self.alg), message, signature).is_ok()
            }
            (KeyKind::Rsa, DecodingKeyKind::SecretOrDer(pkcs1_der)) => {
                UnparsedPublicKey::new(rsa_parameters(self.alg), pkcs1_der).verify(message, signature).is_ok()
            }
            (KeyKind::P256, DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point).verify(message, signature).is_ok()
            }
            (KeyKind::P384, DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point).verify(message, signature).is_ok()
            }
            (KeyKind::Ed25519, DecodingKeyKind::SecretOrDer(x)) => {
                UnparsedPublicKey::new(&sig::ED25519, x).verify(message, signature).is_ok()
            }
            _ => false,
        };
        if ok { Ok(()) } else { Err(jsonwebtoken::signature::Error::new()) }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg.jose()
    }
}

/// RSA parameters for an RSA algorithm (keys of 2048 to 8192 bits).
fn rsa_parameters(alg: SigningAlgorithm) -> &'static sig::RsaParameters {
    match alg {
        SigningAlgorithm::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        SigningAlgorithm::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        SigningAlgorithm::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
        SigningAlgorithm::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
        SigningAlgorithm::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

/// The key type of a JWK, if verification supports it.
pub fn key_kind_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<KeyKind> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(KeyKind::Rsa),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(KeyKind::P256),
            EllipticCurve::P384 => Some(KeyKind::P384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Some(KeyKind::Ed25519),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn none_and_hmac_algorithms_cannot_be_configured() {
        for name in ["none", "NONE", "HS256", "HS384", "HS512"] {
            let refused = SigningAlgorithm::parse(name).unwrap_err();
            assert!(refused.contains("never allowed"), "{name}: {refused}");
        }
        assert!(SigningAlgorithm::parse("ES512").unwrap_err().contains("not a supported algorithm"));
        for alg in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::parse(alg.name()), Ok(alg));
        }
    }

    #[test]
    fn a_header_with_alg_none_is_refused_as_an_algorithm() {
        let header = encode(r#"{"alg":"none","kid":"a"}"#);
        assert_eq!(check_header(&header, &SigningAlgorithm::ALL), Err(Refusal::AlgorithmNotAllowed));
    }

    #[test]
    fn an_algorithm_outside_the_providers_list_is_refused() {
        let header = encode(r#"{"alg":"PS256","kid":"a"}"#);
        assert_eq!(check_header(&header, &SigningAlgorithm::DEFAULT), Err(Refusal::AlgorithmNotAllowed));
        let checked = check_header(&header, &[SigningAlgorithm::Ps256]).unwrap();
        assert_eq!(checked, CheckedHeader { alg: SigningAlgorithm::Ps256, kid: Some("a".to_owned()) });
    }

    #[test]
    fn headers_that_name_their_own_key_or_rules_are_refused() {
        for (name, value) in [
            ("jku", r#""https://evil.example/jwks""#),
            ("x5u", r#""https://evil.example/cert""#),
            ("jwk", r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#),
            ("crit", r#"["exp"]"#),
        ] {
            let header = encode(&format!(r#"{{"alg":"RS256","kid":"a","{name}":{value}}}"#));
            assert_eq!(check_header(&header, &SigningAlgorithm::DEFAULT), Err(Refusal::ForbiddenHeader(name)));
        }
    }

    #[test]
    fn a_header_that_is_not_a_json_object_is_malformed() {
        for header in
            [encode("[]"), encode("{"), "!!".to_owned(), encode(r#"{"alg":256}"#), encode(r#"{"alg":"RS256","kid":7}"#)]
        {
            assert_eq!(check_header(&header, &SigningAlgorithm::DEFAULT), Err(Refusal::Malformed), "{header}");
        }
    }

    #[test]
    fn tokens_that_are_not_three_base64url_segments_are_malformed() {
        for token in ["", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b+.c", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(split(token).map(|_| ()), Err(Refusal::Malformed));
        }
        assert!(split("a.b.").is_ok(), "an empty signature is for the verifier to refuse");
    }

    #[test]
    fn the_verifier_refuses_hmac_keys_and_nothing_signs() {
        install().unwrap();
        install().unwrap();
        assert!(installed());
        let secret = DecodingKey::from_secret(b"-----BEGIN PUBLIC KEY-----").unwrap();
        assert!(ring_verifier(&Algorithm::HS256, &secret).is_err());
        assert!(ring_verifier(&Algorithm::RS256, &secret).is_err());
        let encoding = EncodingKey::from_secret(b"secret").unwrap();
        assert!(refuse_signing(&Algorithm::RS256, &encoding).is_err());
        assert!(jsonwebtoken::crypto::sign(b"message", &encoding, Algorithm::HS256).is_err());
    }

    #[test]
    fn a_key_of_the_wrong_type_for_the_algorithm_is_refused() {
        let rsa = PublicKey {
            kind: KeyKind::Rsa,
            alg: None,
            key: Arc::new(DecodingKey::from_rsa_raw_components(&[1; 256], &[1, 0, 1])),
        };
        assert_eq!(check_key_matches(&rsa, SigningAlgorithm::Es256), Err(Refusal::KeyTypeMismatch));
        assert_eq!(check_key_matches(&rsa, SigningAlgorithm::Ps512), Ok(()));
        let pinned = PublicKey { alg: Some(SigningAlgorithm::Rs256), ..rsa };
        assert_eq!(check_key_matches(&pinned, SigningAlgorithm::Ps256), Err(Refusal::KeyTypeMismatch));
        assert_eq!(check_key_matches(&pinned, SigningAlgorithm::Rs256), Ok(()));
    }
}
