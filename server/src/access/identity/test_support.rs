//! Test support for workload identity: token minting with ring (RSA keys
//! from `testdata/`, P-256 and Ed25519 keys made per test), and a loopback
//! issuer serving discovery and a key set that tests can rotate or break.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

use super::{KeySource, ProviderConfig};

/// The public half of `testdata/rsa-a.pk8`, as PEM.
pub const RSA_A_PUBLIC_PEM: &str = include_str!("testdata/rsa-a.pub.pem");

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

enum Key {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A signing key with its `kid`.
pub struct Signer {
    /// The key id it publishes and signs under.
    pub kid: String,
    key: Key,
}

impl Signer {
    fn rsa(kid: &str, pkcs8: &[u8]) -> Self {
        Self { kid: kid.to_owned(), key: Key::Rsa(RsaKeyPair::from_pkcs8(pkcs8).unwrap()) }
    }

    /// The first test RSA key.
    pub fn rsa_a(kid: &str) -> Self {
        Self::rsa(kid, include_bytes!("testdata/rsa-a.pk8"))
    }

    /// The second test RSA key (a rotation).
    pub fn rsa_b(kid: &str) -> Self {
        Self::rsa(kid, include_bytes!("testdata/rsa-b.pk8"))
    }

    /// A third RSA key, which no test issuer publishes.
    pub fn rsa_other(kid: &str) -> Self {
        Self::rsa(kid, include_bytes!("testdata/rsa-other.pk8"))
    }

    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Self { kid: kid.to_owned(), key: Key::P256(pair) }
    }

    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Self { kid: kid.to_owned(), key: Key::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()) }
    }

    /// Its public JWK (`use: sig`, no `alg`).
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(pair) => {
                let public: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                json!({"kty": "RSA", "use": "sig", "kid": self.kid, "n": b64(&public.n), "e": b64(&public.e)})
            }
            Key::P256(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Key::Ed25519(pair) => {
                json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": self.kid, "x": b64(pair.public_key().as_ref())})
            }
        }
    }

    /// The algorithm it signs with by default.
    pub fn default_alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::P256(_) => "ES256",
            Key::Ed25519(_) => "EdDSA",
        }
    }

    /// A token with these claims, signed with the default algorithm.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(json!({"alg": self.default_alg(), "kid": self.kid, "typ": "JWT"}), claims)
    }

    /// A token with this header and these claims, signed as its `alg`
    /// says (RS*, PS* with an RSA key; ES256; EdDSA).
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let signature = match &self.key {
            Key::Rsa(pair) => {
                let padding: &dyn sig::RsaEncoding = match header["alg"].as_str().unwrap() {
                    "RS384" => &sig::RSA_PKCS1_SHA384,
                    "RS512" => &sig::RSA_PKCS1_SHA512,
                    "PS256" => &sig::RSA_PSS_SHA256,
                    "PS384" => &sig::RSA_PSS_SHA384,
                    "PS512" => &sig::RSA_PSS_SHA512,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, signing_input.as_bytes(), &mut out).unwrap();
                out
            }
            Key::P256(pair) => pair.sign(&rng, signing_input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Ed25519(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// A token with this header and these claims and a given signature.
pub fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(signature))
}

/// A token "signed" with HMAC-SHA256 under `secret`.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), signing_input.as_bytes());
    format!("{signing_input}.{}", b64(tag.as_ref()))
}

/// Kubernetes-shaped claims for `issuer`, issued now, valid `lifetime`
/// seconds.
pub fn kubernetes_claims(issuer: &str, audience: &str, lifetime: i64) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": [audience],
        "sub": "system:serviceaccount:ci:builder",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": "5f3c1e0a",
        "kubernetes.io": {
            "namespace": "ci",
            "serviceaccount": {"name": "builder", "uid": "7f1c2b9e-0000-4000-8000-000000000001"},
            "pod": {"name": "builder-0", "uid": "9a0e"},
            "node": {"name": "node-1", "uid": "11aa"},
        },
    })
}

#[derive(Default)]
struct State {
    jwks: Value,
    discovery_issuer: Option<String>,
    fail_with: u16,
    redirect_to: Option<String>,
    delay: std::time::Duration,
    jwks_fetches: usize,
    discovery_fetches: usize,
    other_requests: usize,
}

/// An issuer on loopback: `/.well-known/openid-configuration` and `/jwks`.
pub struct JwksServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    /// Starts serving an empty key set.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { jwks: json!({"keys": []}), ..State::default() }));
        let base = format!("http://{address}");
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, base) = (shared.clone(), base.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let reply = answer(&state, &base, request.uri().path());
                        let delay = state.lock().unwrap().delay;
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(reply)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { address, state, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// `http://127.0.0.1:PORT`: the issuer.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The key set's URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url())
    }

    /// Serves these keys from now on.
    pub fn publish(&self, signers: &[&Signer]) {
        self.state().jwks = json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
    }

    /// Answers every request with this status (0: answer normally).
    pub fn fail_with(&self, status: u16) {
        self.state().fail_with = status;
    }

    /// Answers every request with `302 Found` to `location`.
    pub fn redirect_to(&self, location: &str) {
        self.state().redirect_to = Some(location.to_owned());
    }

    /// Pads the key set it serves with `bytes` more bytes.
    pub fn pad_key_set(&self, bytes: usize) {
        self.state().jwks["padding"] = "x".repeat(bytes).into();
    }

    /// Answers each request only after `delay`.
    pub fn delay_answers(&self, delay: std::time::Duration) {
        self.state().delay = delay;
    }

    /// Makes discovery name this issuer instead of the server's URL.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.state().discovery_issuer = Some(issuer.to_owned());
    }

    /// Requests for the key set so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state().jwks_fetches
    }

    /// Requests for the discovery document so far.
    pub fn discovery_fetches(&self) -> usize {
        self.state().discovery_fetches
    }

    /// Requests for any other path so far.
    pub fn other_requests(&self) -> usize {
        self.state().other_requests
    }
}

fn answer(state: &Mutex<State>, base: &str, path: &str) -> hyper::Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    let body = match path {
        "/.well-known/openid-configuration" => {
            state.discovery_fetches += 1;
            let issuer = state.discovery_issuer.clone().unwrap_or_else(|| base.to_owned());
            Some(json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")}))
        }
        "/jwks" => {
            state.jwks_fetches += 1;
            Some(state.jwks.clone())
        }
        _ => {
            state.other_requests += 1;
            None
        }
    };
    if let Some(location) = &state.redirect_to {
        return hyper::Response::builder().status(302).header("location", location).body(Full::default()).unwrap();
    }
    let status = match (state.fail_with, &body) {
        (0, Some(_)) => 200,
        (0, None) => 404,
        (status, _) => status,
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or(Value::Null).to_string())))
        .unwrap()
}

/// A provider for the server's issuer, audience `pullpass`, with this key
/// source.
pub fn provider_for(server: &JwksServer, source: KeySource) -> ProviderConfig {
    ProviderConfig::new("cluster", &server.url(), source, &["pullpass"])
}
