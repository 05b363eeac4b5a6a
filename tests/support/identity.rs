//! Workload-identity peers: issuers of JWTs that are not pullpass's, for the
//! tests of pullpass's JWT callers. [`IdentityIssuer`] runs
//! `support/fixtures/identity.py` (PyJWT), which mints Kubernetes-,
//! GitHub- and GitLab-shaped tokens and hostile variants, and serves OIDC
//! discovery and a key set that it can rotate (no kube-apiserver can run
//! on this machine, so Kubernetes tokens are made with its real claim
//! layout). [`OidcProvider`] runs npm's `oidc-provider`, an OpenID
//! Certified provider, through `support/fixtures/oidc_provider.cjs`: JWT
//! access tokens from the client_credentials grant. [`verify_with_pyjwt`]
//! and [`verify_with_jose`] check a token with two verifiers independent of
//! pullpass, for the peers' own tests.
//!
//! Everything listens on 127.0.0.1; every wait is bounded; no token is ever
//! printed by the peers, and [`Minted`]'s `Debug` leaves its token out.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pullpass::v1::{
    CreateIdentityBindingRequest, CreateIdentityProviderRequest, IdentityBinding, IdentityProvider, Role,
};
use pullpass_client::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::registry::{Peer, http_request, http_request_with, python};
use crate::{repo_root, tools_dir};

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/support/fixtures").join(name)
}

/// `.tools/node/node_modules`, with oidc-provider and jose in it.
pub fn node_modules() -> PathBuf {
    let modules = tools_dir().join("node/node_modules");
    assert!(
        modules.join("oidc-provider").is_dir() && modules.join("jose").is_dir(),
        "oidc-provider and jose are missing from {}: run scripts/install-test-deps.sh",
        modules.display()
    );
    modules
}

/// The audience the tests' identity providers expect (and pullpass's
/// documentation suggests).
pub const AUDIENCE: &str = "pullpass";

/// Creates the identity provider `identityProviders/{id}` for `issuer`
/// (its key set by `jwks_uri`, audience [`AUDIENCE`]).
pub async fn create_provider(client: &Client, id: &str, issuer: &IdentityIssuer) {
    client
        .access()
        .create_identity_provider(CreateIdentityProviderRequest {
            identity_provider_id: id.into(),
            identity_provider: Some(IdentityProvider {
                issuer: issuer.issuer().to_owned(),
                jwks_uri: issuer.jwks_uri(),
                audiences: vec![AUDIENCE.into()],
                ..Default::default()
            }),
        })
        .await
        .expect("create the identity provider");
}

/// Binds, in workspace `acme`, the tokens of `provider` whose `claims`
/// match to LAUNCHER for `projects` (none: every project).
pub async fn bind(
    client: &Client,
    id: &str,
    provider: &str,
    claims: &[(&str, &str)],
    projects: &[&str],
) -> Result<IdentityBinding, tonic::Status> {
    client
        .access()
        .create_identity_binding(CreateIdentityBindingRequest {
            parent: "workspaces/acme".into(),
            identity_binding_id: id.into(),
            identity_binding: Some(IdentityBinding {
                identity_provider: format!("identityProviders/{provider}"),
                bound_claims: claims.iter().map(|(c, p)| (c.to_string(), p.to_string())).collect::<HashMap<_, _>>(),
                role: Role::Launcher as i32,
                allowed_projects: projects.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Where [`IdentityIssuer`] serves its key set, and which `iss` it uses.
#[derive(Debug, Clone, Default)]
pub struct IssuerOptions {
    /// The `iss` it announces and stamps (default: its own
    /// `http://127.0.0.1:PORT` plus `issuer_path`). Discovery is then
    /// served at this URL's path: a verifier given another host must use
    /// the `jwks_uri` directly.
    pub issuer: Option<String>,
    /// A path under its own URL for the issuer (`/tenant`), as issuers with
    /// a path have.
    pub issuer_path: Option<String>,
    /// Where the key set is served: `/jwks` (default), or Kubernetes'
    /// `/openid/v1/jwks`.
    pub jwks_path: Option<String>,
}

/// An OIDC issuer on loopback minting tokens with PyJWT: RS256, PS256,
/// ES256 and EdDSA keys whose `kid` is base64url(SHA-256(DER
/// SubjectPublicKeyInfo)), as Kubernetes makes them.
#[derive(Debug)]
pub struct IdentityIssuer {
    peer: Peer,
    issuer: String,
    jwks_path: String,
    logs: TempDir,
}

/// A minted token and what it says. `Debug` leaves the token out.
#[derive(Clone)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// The header's `kid` (absent when the request removed it).
    pub kid: Option<String>,
    /// The header's `alg`.
    pub alg: String,
    /// The whole header.
    pub header: Value,
    /// The claims, as signed.
    pub claims: Value,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"<left out>")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish()
    }
}

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new key's kid: it signs that algorithm from now on.
    pub kid: String,
    /// The kids taken out of the key set (empty unless `remove_old`).
    pub removed: Vec<String>,
}

/// How often each endpoint of an issuer was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IssuerStats {
    /// Discovery document fetches.
    pub discovery: u64,
    /// Key set fetches.
    pub jwks: u64,
    /// Tokens minted (or asked for).
    pub mints: u64,
    /// Rotations.
    pub rotations: u64,
    /// Fetches of the URLs hostile tokens name (`jku`, `x5u`): a verifier
    /// must never make one.
    pub foreign_fetches: u64,
}

/// A token built to be refused (see `fixtures/identity.py`). Each differs
/// from a good token of the same request in the one thing it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// `alg: none` and an empty signature.
    AlgNone,
    /// HS256 whose HMAC secret is the RSA signing key's public PEM
    /// (SubjectPublicKeyInfo), with that key's kid.
    Hs256WithPublicKey,
    /// `exp` as a JSON string of the right number.
    ExpAsString,
    /// `nbf` as a JSON string of the right number.
    NbfAsString,
    /// A `jku` header naming a key set on the issuer (counted in
    /// `foreign_fetches`); signed by the published key.
    JkuHeader,
    /// An `x5u` header, likewise.
    X5uHeader,
    /// The signing key's public JWK in a `jwk` header.
    JwkHeader,
    /// `crit: ["pullpass-test"]` with that parameter set.
    CritHeader,
    /// Signed by a key that is not in the key set ("another issuer's
    /// key"), with that key's own kid.
    ForeignKey,
    /// Signed by a key that is not in the key set, with the kid of the
    /// published key of that algorithm (so only the signature is wrong).
    ForeignKeyWithKnownKid,
    /// Signed by the published key with a kid no key has.
    UnknownKid,
}

impl Hostile {
    /// Every variant.
    pub const ALL: [Hostile; 11] = [
        Hostile::AlgNone,
        Hostile::Hs256WithPublicKey,
        Hostile::ExpAsString,
        Hostile::NbfAsString,
        Hostile::JkuHeader,
        Hostile::X5uHeader,
        Hostile::JwkHeader,
        Hostile::CritHeader,
        Hostile::ForeignKey,
        Hostile::ForeignKeyWithKnownKid,
        Hostile::UnknownKid,
    ];

    /// The fixture's name for it (`variant` in a mint request).
    pub fn name(self) -> &'static str {
        match self {
            Hostile::AlgNone => "none",
            Hostile::Hs256WithPublicKey => "hs256_public_key",
            Hostile::ExpAsString => "exp_string",
            Hostile::NbfAsString => "nbf_string",
            Hostile::JkuHeader => "jku",
            Hostile::X5uHeader => "x5u",
            Hostile::JwkHeader => "jwk",
            Hostile::CritHeader => "crit",
            Hostile::ForeignKey => "foreign_key",
            Hostile::ForeignKeyWithKnownKid => "foreign_key_known_kid",
            Hostile::UnknownKid => "unknown_kid",
        }
    }
}

impl IdentityIssuer {
    /// An issuer at its own URL, key set at `/jwks`.
    pub fn start() -> Self {
        Self::start_with(&IssuerOptions::default())
    }

    /// An issuer laid out like a Kubernetes API server's: key set at
    /// `/openid/v1/jwks`.
    pub fn start_kubernetes() -> Self {
        Self::start_with(&IssuerOptions { jwks_path: Some("/openid/v1/jwks".into()), ..Default::default() })
    }

    /// An issuer with these options.
    pub fn start_with(options: &IssuerOptions) -> Self {
        let logs = tempfile::Builder::new().prefix("pullpass-identity-issuer-").tempdir().expect("temp dir");
        let mut command = Command::new(python());
        command.arg(fixture("identity.py")).arg("issuer").stderr(log_file(&logs));
        if let Some(issuer) = &options.issuer {
            command.arg("--issuer").arg(issuer);
        }
        if let Some(path) = &options.issuer_path {
            command.arg("--issuer-path").arg(path);
        }
        if let Some(path) = &options.jwks_path {
            command.arg("--jwks-path").arg(path);
        }
        let peer = Peer::try_spawn(command)
            .unwrap_or_else(|e| panic!("identity.py issuer did not start: {e}\n{}", read_log(&logs)));
        let issuer = options.issuer.clone().unwrap_or_else(|| {
            format!("{}{}", peer.url(), options.issuer_path.as_deref().unwrap_or("").trim_end_matches('/'))
        });
        let jwks_path = options.jwks_path.clone().unwrap_or_else(|| "/jwks".into());
        Self { peer, issuer, jwks_path, logs }
    }

    /// What it wrote on stderr (nothing, unless it failed).
    pub fn logs(&self) -> String {
        read_log(&self.logs)
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.peer.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.peer.url()
    }

    /// The `iss` its tokens carry and its discovery document announces.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{issuer}/.well-known/openid-configuration`, on this fixture.
    pub fn discovery_url(&self) -> String {
        let path = self.issuer.split_once("://").and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]));
        format!("{}{}/.well-known/openid-configuration", self.url(), path.unwrap_or("").trim_end_matches('/'))
    }

    /// Its key set's URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}{}", self.url(), self.jwks_path)
    }

    /// The key set of the keys hostile tokens are signed with (never
    /// published in [`IdentityIssuer::jwks_uri`]).
    pub fn foreign_jwks_uri(&self) -> String {
        format!("{}/foreign/jwks", self.url())
    }

    /// Fetches the discovery document (counted in its stats).
    pub fn discovery(&self) -> Value {
        let path = self.discovery_url()[self.url().len()..].to_owned();
        self.get_json(&path)
    }

    /// Fetches the key set (counted in its stats).
    pub fn jwks(&self) -> Value {
        self.get_json(&self.jwks_path)
    }

    /// The public key of any key it holds (published, retired or
    /// foreign), as SubjectPublicKeyInfo PEM.
    pub fn public_key_pem(&self, kid: &str) -> String {
        let (status, body) = http_request(&self.peer.address, "GET", &format!("/keys/{kid}.pem"), None);
        assert_eq!(status, 200, "public key {kid}: {body}");
        body
    }

    /// Mints a token as `request` asks (see `fixtures/identity.py`:
    /// `kind`, `audience`, `alg`, `lifetime`, offsets, `claims`, `header`,
    /// `kid`, `signing_key`, `variant`, and the kind's own fields).
    pub fn mint(&self, request: Value) -> String {
        self.mint_full(request).token
    }

    /// Like [`IdentityIssuer::mint`], with the token's header and claims.
    pub fn mint_full(&self, request: Value) -> Minted {
        self.try_mint(request).unwrap_or_else(|refusal| panic!("the issuer refused to mint: {refusal}"))
    }

    /// Mints, or says why the fixture would not (a bad request).
    pub fn try_mint(&self, request: Value) -> Result<Minted, String> {
        let (status, body) = http_request(&self.peer.address, "POST", "/mint", Some(&request.to_string()));
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let mut answer: Value = serde_json::from_str(&body).map_err(|e| format!("mint answer is not JSON: {e}"))?;
        let text = |value: &Value| value.as_str().map(str::to_owned);
        Ok(Minted {
            token: text(&answer["token"]).ok_or("no token in the mint answer")?,
            kid: text(&answer["kid"]),
            alg: text(&answer["alg"]).unwrap_or_default(),
            header: answer["header"].take(),
            claims: answer["claims"].take(),
        })
    }

    /// A Kubernetes projected service-account token for
    /// `system:serviceaccount:NAMESPACE:NAME` with `aud: [audience]`
    /// (RS256, one hour, stable service-account, pod and node UIDs).
    pub fn mint_kubernetes(&self, namespace: &str, service_account: &str, audience: &str) -> String {
        self.mint(json!({
            "kind": "kubernetes",
            "namespace": namespace,
            "service_account": service_account,
            "audience": [audience],
        }))
    }

    /// A GitHub Actions token for `owner/repo` (on refs/heads/main) whose
    /// owner has the immutable id `repository_owner_id`, `aud: audience`.
    pub fn mint_github(&self, repository: &str, repository_owner_id: &str, audience: &str) -> String {
        self.mint(json!({
            "kind": "github",
            "repository": repository,
            "repository_owner_id": repository_owner_id,
            "audience": audience,
        }))
    }

    /// A GitLab CI `id_tokens` token for `group/project` on branch main,
    /// `ref_protected` as the string GitLab puts there, `aud: audience`.
    pub fn mint_gitlab(&self, project_path: &str, ref_protected: bool, audience: &str) -> String {
        self.mint(json!({
            "kind": "gitlab",
            "project_path": project_path,
            "ref_protected": ref_protected,
            "audience": audience,
        }))
    }

    /// A hostile token: `request` (an object: kind and the rest) with the
    /// variant applied.
    pub fn mint_hostile(&self, variant: Hostile, request: Value) -> Minted {
        let mut request = request;
        let object = request.as_object_mut().expect("a mint request is a JSON object");
        object.insert("variant".into(), variant.name().into());
        self.mint_full(request)
    }

    /// A new RS256 key signs from now on and joins the key set; with
    /// `remove_old`, the other RS256 keys leave it.
    pub fn rotate(&self, remove_old: bool) -> Rotation {
        self.rotate_alg("RS256", remove_old)
    }

    /// Like [`IdentityIssuer::rotate`] for `alg` (also how RS384/512,
    /// PS384/512, ES384 and ES512 get a first key).
    pub fn rotate_alg(&self, alg: &str, remove_old: bool) -> Rotation {
        let request = json!({"alg": alg, "remove_old": remove_old});
        let (status, body) = http_request(&self.peer.address, "POST", "/rotate", Some(&request.to_string()));
        assert_eq!(status, 200, "rotate: {body}");
        let answer: Value = serde_json::from_str(&body).expect("rotate answer");
        Rotation {
            kid: answer["kid"].as_str().expect("kid").to_owned(),
            removed: answer["removed"]
                .as_array()
                .expect("removed")
                .iter()
                .map(|kid| kid.as_str().expect("kid").to_owned())
                .collect(),
        }
    }

    /// The kid of the key that signs `alg` now.
    pub fn current_kid(&self, alg: &str) -> String {
        let stats = self.peer.stats();
        stats["current"][alg].as_str().unwrap_or_else(|| panic!("no current {alg} key: {stats}")).to_owned()
    }

    /// Its counters.
    pub fn stats(&self) -> IssuerStats {
        let stats = self.peer.stats();
        let count = |name: &str| stats[name].as_u64().unwrap_or(0);
        IssuerStats {
            discovery: count("discovery"),
            jwks: count("jwks"),
            mints: count("mint"),
            rotations: count("rotate"),
            foreign_fetches: count("foreign_fetches"),
        }
    }

    /// Makes its endpoints fail or lie (`{"jwks_status": 503}`,
    /// `{"discovery_status": 500}`, `{"jwks_delay": 2.5}`,
    /// `{"jwks_body": "not json"}`; `{}` restores them).
    pub fn control(&self, settings: Value) {
        self.peer.control(settings);
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_request(&self.peer.address, "GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }
}

/// npm's `oidc-provider` (OpenID Certified) on loopback, issuing JWT access
/// tokens (`typ: at+jwt`) to one client through the client_credentials
/// grant, the audience being the resource indicator asked for. `Debug`
/// leaves the client secret out.
pub struct OidcProvider {
    peer: Peer,
    client_id: String,
    client_secret: String,
    logs: TempDir,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("address", &self.peer.address)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What a provider key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRotation {
    /// The kids that sign RS256 and ES256 from now on.
    pub rs256: String,
    /// See `rs256`.
    pub es256: String,
    /// The kids taken out of the key set (empty unless `remove_old`).
    pub removed: Vec<String>,
}

impl OidcProvider {
    /// Starts it with a fresh client and fresh RSA and EC P-256 keys.
    pub fn start() -> Self {
        let modules = node_modules();
        let logs = tempfile::Builder::new().prefix("pullpass-oidc-provider-").tempdir().expect("temp dir");
        let client_id = "pullpass-test-client".to_owned();
        let client_secret = random_hex(24);
        let mut command = Command::new("node");
        command
            .arg(fixture("oidc_provider.cjs"))
            .env("PULLPASS_NODE_MODULES", &modules)
            .env("OIDC_CLIENT_ID", &client_id)
            .env("OIDC_CLIENT_SECRET", &client_secret)
            .stderr(log_file(&logs));
        let peer = Peer::try_spawn(command)
            .unwrap_or_else(|e| panic!("oidc_provider.cjs did not start (node: {e})\n{}", read_log(&logs)));
        Self { peer, client_id, client_secret, logs }
    }

    /// Its issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.peer.url()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.peer.address
    }

    /// Its key set's URL (as its discovery document says).
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// Fetches the discovery document (counted).
    pub fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration")
    }

    /// Fetches the key set (counted).
    pub fn jwks(&self) -> Value {
        self.get_json("/jwks")
    }

    /// A JWT access token for `audience` (the resource indicator: an
    /// absolute URI such as `https://pullpass.test`), RS256, 5 minutes,
    /// with `extra_claims` (an object, or null) added to its claims.
    pub fn token(&self, audience: &str, extra_claims: Value) -> String {
        self.try_token(audience, extra_claims, "RS256", 300)
            .unwrap_or_else(|refusal| panic!("oidc-provider refused the token request: {refusal}"))
    }

    /// A token signed with `alg` (RS256 or ES256) living `lifetime_seconds`,
    /// or the provider's refusal (`HTTP status: body`).
    pub fn try_token(
        &self,
        audience: &str,
        extra_claims: Value,
        alg: &str,
        lifetime_seconds: u64,
    ) -> Result<String, String> {
        let basic = STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret));
        let authorization = format!("Basic {basic}");
        let claims = if extra_claims.is_null() { String::new() } else { extra_claims.to_string() };
        let ttl = lifetime_seconds.to_string();
        let mut headers = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", authorization.as_str()),
            ("x-pullpass-alg", alg),
            ("x-pullpass-ttl", ttl.as_str()),
        ];
        if !claims.is_empty() {
            headers.push(("x-pullpass-claims", claims.as_str()));
        }
        let form = format!("grant_type=client_credentials&scope=pull&resource={}", form_encode(audience));
        let (status, body) = http_request_with(&self.peer.address, "POST", "/token", &headers, Some(&form));
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("token answer is not JSON: {e}"))?;
        answer["access_token"].as_str().map(str::to_owned).ok_or_else(|| "no access_token in the answer".into())
    }

    /// New RSA and EC keys sign from now on (the provider is re-created
    /// with them on the same port); the old ones stay in the key set unless
    /// `remove_old`.
    pub fn rotate(&self, remove_old: bool) -> ProviderRotation {
        let request = json!({"remove_old": remove_old});
        let (status, body) = http_request(&self.peer.address, "POST", "/control/rotate", Some(&request.to_string()));
        assert_eq!(status, 200, "rotate: {body}");
        let answer: Value = serde_json::from_str(&body).expect("rotate answer");
        ProviderRotation {
            rs256: answer["current"]["RS256"].as_str().expect("RS256 kid").to_owned(),
            es256: answer["current"]["ES256"].as_str().expect("ES256 kid").to_owned(),
            removed: answer["removed"]
                .as_array()
                .expect("removed")
                .iter()
                .map(|kid| kid.as_str().expect("kid").to_owned())
                .collect(),
        }
    }

    /// Its counters: discovery, jwks, token requests and rotations.
    pub fn stats(&self) -> IssuerStats {
        let stats = self.get_json("/control/stats");
        let count = |name: &str| stats[name].as_u64().unwrap_or(0);
        IssuerStats {
            discovery: count("discovery"),
            jwks: count("jwks"),
            mints: count("token"),
            rotations: count("rotate"),
            foreign_fetches: 0,
        }
    }

    /// What it wrote on stderr (oidc-provider's warnings: it calls Node
    /// 20 an unsupported runtime, and its in-memory store for development
    /// only, which is all a test needs).
    pub fn logs(&self) -> String {
        read_log(&self.logs)
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = http_request(&self.peer.address, "GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }
}

/// The header and claims of a compact JWT, unverified (test inspection
/// only). Panics on a malformed token without printing it.
pub fn decode_unverified(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut segment = |what: &str| -> Value {
        let text = parts.next().unwrap_or_else(|| panic!("the token has no {what}"));
        let bytes = URL_SAFE_NO_PAD.decode(text).unwrap_or_else(|e| panic!("the token's {what} is not base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the token's {what} is not JSON: {e}"))
    };
    let header = segment("header");
    let claims = segment("claims");
    (header, claims)
}

/// What a verifier is told to expect.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The key set to fetch.
    pub jwks_uri: String,
    /// The `iss` required (none: not checked).
    pub issuer: Option<String>,
    /// An `aud` required (none: not checked).
    pub audience: Option<String>,
    /// The algorithms allowed.
    pub algorithms: Vec<String>,
    /// Skip exp/nbf/iat (PyJWT only).
    pub skip_time_checks: bool,
    /// Check the signature with the key set's key for the kid and nothing
    /// else (PyJWT only).
    pub signature_only: bool,
    /// The header `typ` required (jose only).
    pub typ: Option<String>,
}

impl Expect {
    /// Tokens of `issuer` for `audience`, keys from `jwks_uri`, RS256 or
    /// ES256, every check on.
    pub fn new(jwks_uri: &str, issuer: &str, audience: &str) -> Self {
        Self {
            jwks_uri: jwks_uri.into(),
            issuer: Some(issuer.into()),
            audience: Some(audience.into()),
            algorithms: vec!["RS256".into(), "ES256".into()],
            skip_time_checks: false,
            signature_only: false,
            typ: None,
        }
    }

    /// Only the signature, with the key set's key for the token's kid.
    pub fn signature_only(jwks_uri: &str) -> Self {
        Self { signature_only: true, issuer: None, audience: None, ..Self::new(jwks_uri, "", "") }
    }

    /// With these algorithms allowed instead.
    pub fn algorithms(mut self, algorithms: &[&str]) -> Self {
        self.algorithms = algorithms.iter().map(|a| a.to_string()).collect();
        self
    }
}

/// A token an independent verifier accepted.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its protected header.
    pub header: Value,
    /// Its claims.
    pub claims: Value,
}

/// Why an independent verifier refused a token.
#[derive(Debug, Clone)]
pub struct Refused {
    /// PyJWT's exception class, or jose's error code.
    pub error: String,
    /// Its message (never the token).
    pub message: String,
    /// The claim jose names, if any.
    pub claim: Option<String>,
}

/// Verifies `token` with PyJWT (`fixtures/verify_pyjwt.py`: PyJWKClient
/// and jwt.decode).
pub fn verify_with_pyjwt(token: &str, expect: &Expect) -> Result<Verified, Refused> {
    let mut command = Command::new(python());
    command.arg(fixture("verify_pyjwt.py")).arg("--jwks-uri").arg(&expect.jwks_uri);
    command.arg("--algorithms").arg(expect.algorithms.join(","));
    if let Some(issuer) = &expect.issuer {
        command.arg("--issuer").arg(issuer);
    }
    if let Some(audience) = &expect.audience {
        command.arg("--audience").arg(audience);
    }
    if expect.skip_time_checks {
        command.arg("--no-time-checks");
    }
    if expect.signature_only {
        command.arg("--signature-only");
    }
    run_verifier(command, token)
}

/// Decodes `token` as HS256 with PyJWT, `secret` being the HMAC key: PyJWT
/// refuses a public key there (CVE-2022-29217), which is what a hostile
/// HS256 token counts on a verifier not doing.
pub fn decode_hs256_with_pyjwt(token: &str, secret: &str) -> Result<Verified, Refused> {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).expect("secret file");
    let mut command = Command::new(python());
    command.arg(fixture("verify_pyjwt.py")).arg("--hmac-secret-file").arg(&secret_file);
    run_verifier(command, token)
}

/// Verifies `token` with npm's jose (`fixtures/verify_jose.cjs`:
/// createRemoteJWKSet and jwtVerify).
pub fn verify_with_jose(token: &str, expect: &Expect) -> Result<Verified, Refused> {
    assert!(!expect.skip_time_checks && !expect.signature_only, "verify_jose.cjs checks everything");
    let mut command = Command::new("node");
    command.arg(fixture("verify_jose.cjs")).env("PULLPASS_NODE_MODULES", node_modules());
    command.arg("--jwks-uri").arg(&expect.jwks_uri).arg("--algorithms").arg(expect.algorithms.join(","));
    if let Some(issuer) = &expect.issuer {
        command.arg("--issuer").arg(issuer);
    }
    if let Some(audience) = &expect.audience {
        command.arg("--audience").arg(audience);
    }
    if let Some(typ) = &expect.typ {
        command.arg("--typ").arg(typ);
    }
    run_verifier(command, token)
}

/// Runs a verifier script (at most 20 s), the token on its stdin.
fn run_verifier(command: Command, token: &str) -> Result<Verified, Refused> {
    let mut bounded = Command::new("timeout");
    bounded.arg("20").arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            bounded.env(name, value);
        }
    }
    let mut child = bounded
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the verifier");
    child.stdin.take().expect("stdin").write_all(token.as_bytes()).expect("hand the verifier the token");
    let output = child.wait_with_output().expect("run the verifier");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the verifier {:?} failed: {}",
        command.get_program(),
        String::from_utf8_lossy(&output.stderr)
    );
    let verdict: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the verifier's answer is not JSON ({e}): {stdout}"));
    if verdict["ok"] == Value::Bool(true) {
        Ok(Verified { header: verdict["header"].clone(), claims: verdict["claims"].clone() })
    } else {
        Err(Refused {
            error: verdict["error"].as_str().unwrap_or_default().to_owned(),
            message: verdict["message"].as_str().unwrap_or_default().to_owned(),
            claim: verdict["claim"].as_str().map(str::to_owned),
        })
    }
}

/// A fixture's stderr, `stderr.log` in `dir`.
fn log_file(dir: &TempDir) -> std::fs::File {
    std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file")
}

fn read_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buffer).expect("random bytes");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}
