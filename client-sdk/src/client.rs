//! The client: one HTTP/2 connection to pullpassd (plain or TLS), the bearer
//! token on every call, retries on UNAVAILABLE, and a lease cache.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pullpass::reference::ImageRef;
use pullpass::v1::access_service_client::AccessServiceClient;
use pullpass::v1::audit_service_client::AuditServiceClient;
use pullpass::v1::credential_service_client::CredentialServiceClient;
use pullpass::v1::registry_auth_service_client::RegistryAuthServiceClient;
use pullpass::v1::{Action, AuthKind, IssueRegistryAuthRequest};
use tokio::sync::OnceCell;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::lease::{Grant, Lease, Source};

/// The channel every service client uses.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// Environment variable with the endpoint.
pub const ENDPOINT_ENV: &str = "PULLPASS_ENDPOINT";
/// Environment variable with the token.
pub const TOKEN_ENV: &str = "PULLPASS_TOKEN";
/// Environment variable with a file holding the token.
pub const TOKEN_FILE_ENV: &str = "PULLPASS_TOKEN_FILE";
/// The endpoint when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "BearerToken(<redacted>)" } else { "BearerToken(None)" })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Where the token comes from.
#[derive(Clone)]
enum TokenSource {
    None,
    Value(Zeroizing<String>),
    File(PathBuf),
    Environment,
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    endpoint: String,
    token: TokenSource,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    user_agent: String,
    cache_margin: Duration,
    cache_capacity: usize,
    retries: u32,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The bearer token (`pp_…`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = TokenSource::Value(Zeroizing::new(token.into()));
        self
    }

    /// Reads the token from a file (trailing whitespace ignored).
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = TokenSource::File(path.into());
        self
    }

    /// Takes the token from `PULLPASS_TOKEN`, or the file named by
    /// `PULLPASS_TOKEN_FILE`.
    pub fn token_from_env(mut self) -> Self {
        self.token = TokenSource::Environment;
        self
    }

    /// Trusts these CA certificates (PEM) for an `https://` endpoint instead
    /// of the Mozilla roots.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents a client certificate (PEM chain and key) for mutual TLS.
    pub fn client_certificate_pem(mut self, certificate: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((certificate.into(), Zeroizing::new(key.into())));
        self
    }

    /// Limit for establishing the connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for every call (default: none; the server bounds registry
    /// work by its own `--upstream-timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The `user-agent` (default `pullpass-client/VERSION`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Leases are served from the client cache until this long before they
    /// expire (default 30 s).
    pub fn cache_margin(mut self, margin: Duration) -> Self {
        self.cache_margin = margin;
        self
    }

    /// Most leases kept in the client cache (default 1000; 0 disables it).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Extra attempts for calls answered UNAVAILABLE (default 2).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<Client, Error> {
        let invalid = |e: tonic::transport::Error| Error::Connect(format!("invalid endpoint `{}`: {e}", self.endpoint));
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(invalid)?
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent.clone())
            .map_err(invalid)?;
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if self.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca_pem {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_webpki_roots(),
            };
            if let Some((certificate, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(certificate, key.as_slice()));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| Error::Connect(format!("TLS: {e}")))?;
        }
        let token = match self.token.clone() {
            TokenSource::None => None,
            TokenSource::Value(token) => Some(token),
            TokenSource::File(path) => Some(read_token_file(&path)?),
            TokenSource::Environment => match std::env::var(TOKEN_ENV) {
                Ok(token) if !token.trim().is_empty() => Some(Zeroizing::new(token.trim().to_owned())),
                _ => match std::env::var_os(TOKEN_FILE_ENV) {
                    Some(path) => Some(read_token_file(&PathBuf::from(path))?),
                    None => None,
                },
            },
        };
        let token = match token {
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::Connect("the access token has characters not allowed in a header".into()))?,
            ),
            None => None,
        };
        let channel =
            endpoint.connect().await.map_err(|e| Error::Connect(format!("{}: {}", self.endpoint, error_chain(&e))))?;
        Ok(Client {
            inner: Arc::new(Inner {
                channel,
                token: BearerToken(token),
                cache: LeaseCache { slots: Mutex::default(), capacity: self.cache_capacity, margin: self.cache_margin },
                retries: self.retries,
                stats: Counters::default(),
            }),
        })
    }
}

fn read_token_file(path: &PathBuf) -> Result<Zeroizing<String>, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::Connect(format!("token file {}: {e}", path.display())))?,
    );
    Ok(Zeroizing::new(text.trim().to_owned()))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Counters of what the client did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `IssueRegistryAuth` RPCs sent.
    pub issue_rpcs: u64,
    /// Leases served from the client cache.
    pub cache_hits: u64,
}

#[derive(Debug, Default)]
struct Counters {
    issue_rpcs: AtomicU64,
    cache_hits: AtomicU64,
}

/// A connection to pullpassd. Cheap to clone; clones share the connection
/// and the lease cache.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channel: Channel,
    token: BearerToken,
    cache: LeaseCache,
    retries: u32,
    stats: Counters,
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or
    /// `https://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            token: TokenSource::None,
            ca_pem: None,
            identity: None,
            connect_timeout: Duration::from_secs(5),
            timeout: None,
            user_agent: concat!("pullpass-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            cache_margin: Duration::from_secs(30),
            cache_capacity: 1000,
            retries: 2,
        }
    }

    /// A builder from the environment: `PULLPASS_ENDPOINT` (default
    /// `http://127.0.0.1:50051`) and `PULLPASS_TOKEN` or `PULLPASS_TOKEN_FILE`.
    pub fn from_env() -> ClientBuilder {
        let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
        Self::builder(endpoint).token_from_env()
    }

    fn authed(&self) -> AuthedChannel {
        InterceptedService::new(self.inner.channel.clone(), self.inner.token.clone())
    }

    /// The generated `pullpass.v1.CredentialService` client.
    pub fn credentials(&self) -> CredentialServiceClient<AuthedChannel> {
        CredentialServiceClient::new(self.authed())
    }

    /// The generated `pullpass.v1.AccessService` client.
    pub fn access(&self) -> AccessServiceClient<AuthedChannel> {
        AccessServiceClient::new(self.authed())
    }

    /// The generated `pullpass.v1.RegistryAuthService` client.
    pub fn registry_auth_service(&self) -> RegistryAuthServiceClient<AuthedChannel> {
        RegistryAuthServiceClient::new(self.authed())
    }

    /// The generated `pullpass.v1.AuditService` client.
    pub fn audit(&self) -> AuditServiceClient<AuthedChannel> {
        AuditServiceClient::new(self.authed())
    }

    /// What this client (and its clones) did so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            issue_rpcs: self.inner.stats.issue_rpcs.load(Ordering::Relaxed),
            cache_hits: self.inner.stats.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Starts a request for auth to pull (or push) one image.
    ///
    /// ```no_run
    /// # async fn demo(client: pullpass_client::Client) -> Result<(), pullpass_client::Error> {
    /// let lease = client.registry_auth("ghcr.io/acme/aligner:2.1").workspace("acme").project("rnaseq").pull().send().await?;
    /// println!("valid for {:?}", lease.remaining());
    /// # Ok(()) }
    /// ```
    pub fn registry_auth(&self, image: impl Into<String>) -> AuthRequest {
        AuthRequest::new(self.clone(), vec![image.into()])
    }

    /// Starts a request for several images at once ([`AuthRequest::send_all`]).
    pub fn registry_auths<I, S>(&self, images: I) -> AuthRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AuthRequest::new(self.clone(), images.into_iter().map(Into::into).collect())
    }

    /// Runs `call` again (with backoff) while it fails with UNAVAILABLE.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(status) if status.code() == tonic::Code::Unavailable && attempt < self.inner.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// A request for registry auth, built step by step.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    client: Client,
    images: Vec<String>,
    workspace: String,
    project: String,
    push: bool,
    accept: Vec<AuthKind>,
    min_ttl: Option<Duration>,
    use_cache: bool,
    via_gateway: bool,
}

impl AuthRequest {
    fn new(client: Client, images: Vec<String>) -> Self {
        Self {
            client,
            images,
            workspace: String::new(),
            project: String::new(),
            push: false,
            accept: Vec::new(),
            min_ttl: None,
            use_cache: true,
            via_gateway: false,
        }
    }

    /// The workspace id (`acme`) or name (`workspaces/acme`).
    pub fn workspace(mut self, workspace: impl Into<String>) -> Self {
        let workspace = workspace.into();
        self.workspace =
            if workspace.starts_with("workspaces/") { workspace } else { format!("workspaces/{workspace}") };
        self
    }

    /// The project the caller runs for.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = project.into();
        self
    }

    /// Pull access (the default).
    pub fn pull(mut self) -> Self {
        self.push = false;
        self
    }

    /// Push access (implies pull).
    pub fn push(mut self) -> Self {
        self.push = true;
        self
    }

    /// Only a username and password (for kubelet, credential helpers,
    /// Apptainer).
    pub fn basic(mut self) -> Self {
        self.accept = vec![AuthKind::Basic];
        self
    }

    /// Only a bearer token.
    pub fn bearer(mut self) -> Self {
        self.accept = vec![AuthKind::Bearer];
        self
    }

    /// Pull through pullpass's pull gateway: the lease is then a short-lived
    /// username (`pullpass`) and password for the gateway host, for any
    /// registry, and [`Lease::gateway_image`] is the reference to pull.
    /// For runtimes that take only a username and password.
    pub fn via_gateway(mut self) -> Self {
        self.via_gateway = true;
        self
    }

    /// Least remaining life the server must give (default 30 s there).
    pub fn min_ttl(mut self, ttl: Duration) -> Self {
        self.min_ttl = Some(ttl);
        self
    }

    /// Skip the client cache (always ask pullpass).
    pub fn no_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    /// Sends a single-image request.
    pub async fn send(self) -> Result<Lease, Error> {
        if self.images.len() != 1 {
            return Err(Error::InvalidArgument {
                message: format!("send() needs exactly one image, got {}; use send_all()", self.images.len()),
                violations: vec![("images".into(), "exactly one image".into())],
            });
        }
        let mut all = self.send_all().await?;
        all.remove(0)
    }

    /// Sends a request for every image; each has its own outcome. Images
    /// with a fresh enough cached lease cost no RPC; concurrent requests for
    /// the same lease share one RPC.
    pub async fn send_all(self) -> Result<Vec<Result<Lease, Error>>, Error> {
        let mut results: Vec<Option<Result<Lease, Error>>> = vec![None; self.images.len()];
        let mut keys = Vec::with_capacity(self.images.len());
        for (index, image) in self.images.iter().enumerate() {
            match ImageRef::parse(image) {
                Ok(parsed) => keys.push(Some(self.key(&parsed))),
                Err(e) => {
                    results[index] = Some(Err(Error::InvalidImage { image: image.clone(), reason: e.to_string() }));
                    keys.push(None);
                }
            }
        }
        let this = &self;
        let cache = &this.client.inner.cache;
        let lookups = this.images.iter().zip(&keys).enumerate().filter_map(|(index, (image, key))| {
            key.as_ref().map(|key| async move {
                let outcome = if this.use_cache && cache.capacity > 0 {
                    cache.get_or_fetch(key.clone(), this.min_ttl, || this.fetch_one(image.clone()), &this.client).await
                } else {
                    this.fetch_one(image.clone()).await
                };
                (index, image.clone(), outcome)
            })
        });
        for (index, image, outcome) in futures_util::future::join_all(lookups).await {
            results[index] = Some(outcome.map(|mut lease| {
                lease.image = image;
                lease
            }));
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::Other { code: tonic::Code::Internal, message: "missing result".into() }))
            })
            .collect())
    }

    fn key(&self, image: &ImageRef) -> CacheKey {
        CacheKey {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            name: image.name(),
            push: self.push,
            accept: self.accept.iter().map(|a| *a as i32).collect(),
            via_gateway: self.via_gateway,
        }
    }

    async fn fetch_one(&self, image: String) -> Result<Lease, Error> {
        let request = IssueRegistryAuthRequest {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            images: vec![image],
            actions: if self.push { vec![Action::Push as i32] } else { vec![Action::Pull as i32] },
            min_ttl: self
                .min_ttl
                .map(|d| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }),
            accept: self.accept.iter().map(|a| *a as i32).collect(),
            via_gateway: self.via_gateway,
        };
        let client = &self.client;
        client.inner.stats.issue_rpcs.fetch_add(1, Ordering::Relaxed);
        let response = client
            .retrying(|| {
                let request = request.clone();
                async move { client.registry_auth_service().issue_registry_auth(request).await }
            })
            .await?
            .into_inner();
        let auth = response.auths.into_iter().next().ok_or_else(|| Error::Other {
            code: tonic::Code::Internal,
            message: "the server answered without a result".into(),
        })?;
        lease_of(auth)
    }
}

/// Turns one `RegistryAuth` into a lease or an error.
pub(crate) fn lease_of(auth: pullpass::v1::RegistryAuth) -> Result<Lease, Error> {
    if let Some(status) = auth.status.as_ref().filter(|s| s.code != 0) {
        return Err(Error::from_rpc_status(status));
    }
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| {
                SystemTime::UNIX_EPOCH.checked_add(Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
            })
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let grant = match AuthKind::try_from(auth.kind) {
        Ok(AuthKind::Bearer) => Grant::Bearer { token: Zeroizing::new(auth.token) },
        Ok(AuthKind::Basic) => Grant::Basic { username: auth.username, password: Zeroizing::new(auth.password) },
        _ => {
            return Err(Error::Other {
                code: tonic::Code::Internal,
                message: "the server answered an unknown auth kind".into(),
            });
        }
    };
    Ok(Lease {
        image: auth.image,
        normalized_image: auth.normalized_image,
        grant,
        registry: auth.registry,
        expire_time: time(&auth.expire_time),
        issue_time: time(&auth.issue_time),
        requested_scope: auth.requested_scope,
        granted_scope: (!auth.granted_scope.is_empty()).then_some(auth.granted_scope),
        credential: auth.credential,
        source: if auth.cached { Source::ServerCache } else { Source::Registry },
        gateway_image: (!auth.gateway_image.is_empty()).then_some(auth.gateway_image),
    })
}

/// What a lease is cached under: the repository (not the tag), the
/// workspace, project, actions and accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    workspace: String,
    project: String,
    name: String,
    push: bool,
    accept: Vec<i32>,
    via_gateway: bool,
}

type Flight = Arc<OnceCell<Result<Lease, Error>>>;

enum Slot {
    Ready(Box<Lease>),
    InFlight(Flight),
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::Ready(_) => "Ready",
            Slot::InFlight(_) => "InFlight",
        })
    }
}

/// The client-side lease cache, with singleflight.
#[derive(Debug)]
struct LeaseCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
    capacity: usize,
    margin: Duration,
}

impl LeaseCache {
    /// A cached lease with more than `min_ttl` (and the refresh margin)
    /// left, or one from `fetch`, run once for all concurrent callers of the
    /// key. A caller whose `min_ttl` the shared result does not meet fetches
    /// again on its own.
    async fn get_or_fetch<F, Fut>(
        &self,
        key: CacheKey,
        min_ttl: Option<Duration>,
        fetch: F,
        client: &Client,
    ) -> Result<Lease, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Lease, Error>>,
    {
        let needed = self.margin.max(min_ttl.unwrap_or_default());
        let flight = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(&key) {
                Some(Slot::Ready(lease)) if lease.remaining() > needed => {
                    client.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    let mut lease = Lease::clone(lease);
                    lease.source = Source::ClientCache;
                    return Ok(lease);
                }
                Some(Slot::InFlight(flight)) => Arc::clone(flight),
                _ => {
                    let flight: Flight = Arc::new(OnceCell::new());
                    slots.insert(key.clone(), Slot::InFlight(Arc::clone(&flight)));
                    flight
                }
            }
        };
        let mut fetched_here = false;
        let outcome = flight
            .get_or_init(|| {
                fetched_here = true;
                fetch()
            })
            .await
            .clone();
        if !fetched_here
            && let (Some(min_ttl), Ok(lease)) = (min_ttl, &outcome)
            && lease.remaining() < min_ttl
        {
            return fetch().await;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Slot::InFlight(current)) = slots.get(&key)
            && Arc::ptr_eq(current, &flight)
        {
            match &outcome {
                Ok(lease) => {
                    if slots.len() >= self.capacity {
                        let now = SystemTime::now();
                        slots.retain(|_, slot| match slot {
                            Slot::Ready(lease) => lease.expire_time > now,
                            Slot::InFlight(_) => true,
                        });
                        if slots.len() >= self.capacity {
                            slots.retain(|_, slot| matches!(slot, Slot::InFlight(_)));
                        }
                    }
                    slots.insert(key, Slot::Ready(Box::new(lease.clone())));
                }
                Err(_) => {
                    slots.remove(&key);
                }
            }
        }
        outcome
    }
}
