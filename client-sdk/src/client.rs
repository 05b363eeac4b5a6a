//! The client: HTTP/2 connections to one or several pullpassd replicas
//! (plain or TLS), the bearer token on every call, retries on UNAVAILABLE
//! that move to another replica, and a lease cache.
//!
//! Several endpoints come as a list (`http://a:50051,http://b:50051`) or as
//! one DNS name that resolves to several addresses (each address becomes an
//! endpoint, with the name kept for TLS and `:authority`). Calls go to one
//! endpoint; when it fails to answer (the connection is refused or lost, or
//! the server answers UNAVAILABLE) the call is sent to the next one, within
//! the call's deadline, and later calls start there.
//!
//! A client presents a `pp_` access token, or a workload-identity JWT
//! (`identity.rs`: from a file re-read as it rotates, the environment, or
//! the GitHub Actions runner), never both.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
use crate::identity::{IdentitySource, Presented};
use crate::lease::{Grant, Lease, Source};

/// The channel every service client uses.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// Environment variable with the endpoint (or a comma-separated list).
pub const ENDPOINT_ENV: &str = "PULLPASS_ENDPOINT";
/// Environment variable with the token.
pub const TOKEN_ENV: &str = "PULLPASS_TOKEN";
/// Environment variable with a file holding the token.
pub const TOKEN_FILE_ENV: &str = "PULLPASS_TOKEN_FILE";
/// The endpoint when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// Adds `authorization: Bearer <token>` to each request (the access token,
/// or the workload-identity JWT as it is now: a token file is re-read as it
/// changes), and the client's timeout as `grpc-timeout` (unless the request
/// sets its own), so the server knows the deadline too and answers before
/// it (a replica that cannot confirm its data answers UNAVAILABLE in time,
/// instead of the call running out on this side).
#[derive(Clone)]
pub struct BearerToken(Option<Presented>, Option<Duration>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "BearerToken(<redacted>)" } else { "BearerToken(None)" })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(presented) = &self.0 {
            request.metadata_mut().insert("authorization", presented.header()?);
        }
        if let Some(timeout) = self.1
            && !request.metadata().contains_key("grpc-timeout")
        {
            request.set_timeout(timeout);
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

impl TokenSource {
    /// What it is, for messages (never the token).
    fn describe(&self) -> String {
        match self {
            TokenSource::None => "no access token".into(),
            TokenSource::Value(_) => "an access token".into(),
            TokenSource::File(path) => format!("the access token file {}", path.display()),
            TokenSource::Environment => {
                if std::env::var(TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty()) {
                    TOKEN_ENV.into()
                } else {
                    TOKEN_FILE_ENV.into()
                }
            }
        }
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    endpoints: Vec<String>,
    token: TokenSource,
    identity_token: Option<IdentitySource>,
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
        f.debug_struct("ClientBuilder").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Replaces the endpoints: every replica's `http://host:port` or
    /// `https://host:port`.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

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

    /// Presents this workload-identity JWT (verified by pullpassd against
    /// its identity providers) instead of an access token. Giving both is
    /// an error at [`ClientBuilder::connect`].
    pub fn identity_token(mut self, jwt: impl Into<String>) -> Self {
        self.identity_token = Some(IdentitySource::Value(Zeroizing::new(jwt.into())));
        self
    }

    /// Presents the workload-identity JWT in this file (a Kubernetes
    /// projected service-account token, say). The file is read again as soon
    /// as it changes, and at least once a second, so a rotated token is
    /// used from the next call on.
    pub fn identity_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_token = Some(IdentitySource::File(path.into()));
        self
    }

    /// Presents the workload-identity JWT in `PULLPASS_IDENTITY_TOKEN`
    /// (GitLab's `id_tokens:` puts it in a variable), or in the file named
    /// by `PULLPASS_IDENTITY_TOKEN_FILE`; nothing if neither is set.
    pub fn identity_token_from_env(mut self) -> Self {
        self.identity_token = Some(IdentitySource::Environment);
        self
    }

    /// Presents the GitHub Actions job's OIDC token for `audience` (the
    /// audience pullpass's identity provider expects, such as `pullpass`),
    /// fetched from the runner (`ACTIONS_ID_TOKEN_REQUEST_URL` with
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the job needs `permissions:
    /// id-token: write`) and fetched again before it has less than a minute
    /// left.
    pub fn identity_token_from_github_actions(mut self, audience: impl Into<String>) -> Self {
        self.identity_token = Some(IdentitySource::GithubActions { audience: audience.into() });
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

    /// Extra attempts for calls answered UNAVAILABLE (default 2; with several
    /// endpoints, at least enough to try each once).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Connects: to the first endpoint that answers (the others connect when
    /// first used). Fails only if none can be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let token = self.presented().await?;
        let mut targets = Vec::new();
        for text in &self.endpoints {
            targets.extend(self.targets(text).await?);
        }
        if targets.is_empty() {
            return Err(Error::Connect("no endpoint given".into()));
        }
        let mut failures = Vec::new();
        let mut connected = None;
        for (index, target) in targets.iter_mut().enumerate() {
            match target.endpoint.connect().await {
                Ok(channel) => {
                    target.channel = Some(channel);
                    connected = Some(index);
                    break;
                }
                Err(e) => failures.push(format!("{}: {}", target.name, error_chain(&e))),
            }
        }
        let Some(first) = connected else { return Err(Error::Connect(failures.join("; "))) };
        let targets = targets
            .into_iter()
            .map(|t| Target { channel: t.channel.unwrap_or_else(|| t.endpoint.connect_lazy()), name: t.name })
            .collect::<Vec<_>>();
        let retries = self.retries.max(targets.len().saturating_sub(1) as u32);
        Ok(Client {
            inner: Arc::new(Inner {
                targets,
                current: AtomicUsize::new(first),
                token: BearerToken(token, self.timeout),
                cache: LeaseCache { slots: Mutex::default(), capacity: self.cache_capacity, margin: self.cache_margin },
                retries,
                timeout: self.timeout,
                stats: Counters::default(),
            }),
        })
    }

    /// What the client presents: the access token, or the identity token;
    /// both configured (and found) is an error.
    async fn presented(&self) -> Result<Option<Presented>, Error> {
        let access = self.bearer()?;
        let identity = match &self.identity_token {
            Some(source) => source.resolve().await?,
            None => None,
        };
        match (access, identity) {
            (Some(_), Some(_)) => Err(Error::Configuration(format!(
                "both {} and {} are given: present an access token or a workload-identity token, not both",
                self.token.describe(),
                self.identity_token.as_ref().map(IdentitySource::describe).unwrap_or_default(),
            ))),
            (Some(access), None) => Ok(Some(Presented::Fixed(access))),
            (None, identity) => Ok(identity),
        }
    }

    fn bearer(&self) -> Result<Option<MetadataValue<Ascii>>, Error> {
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
        token
            .map(|token| {
                MetadataValue::try_from(format!("Bearer {}", token.trim()))
                    .map_err(|_| Error::Connect("the access token has characters not allowed in a header".into()))
            })
            .transpose()
    }

    /// The endpoints `text` stands for: one, or one per address of a DNS
    /// name that resolves to several.
    async fn targets(&self, text: &str) -> Result<Vec<Pending>, Error> {
        let uri: http::Uri = text.parse().map_err(|e| Error::Connect(format!("invalid endpoint `{text}`: {e}")))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(Error::Connect(format!(
                "invalid endpoint `{text}`: expected http://host:port or https://host:port"
            )));
        };
        let tls = scheme == "https";
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let is_name = host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[');
        let addresses: Vec<std::net::SocketAddr> = if is_name {
            let mut found: Vec<_> =
                tokio::net::lookup_host((host, port)).await.map(|a| a.collect()).unwrap_or_default();
            found.sort();
            found.dedup();
            found
        } else {
            Vec::new()
        };
        if addresses.len() < 2 {
            return Ok(vec![Pending {
                name: text.to_owned(),
                endpoint: self.endpoint(text, None, tls, host)?,
                channel: None,
            }]);
        }
        addresses
            .into_iter()
            .map(|address| {
                let direct = format!("{scheme}://{address}");
                let endpoint = self.endpoint(&direct, Some(&uri), tls, host)?;
                Ok(Pending { name: format!("{text} ({address})"), endpoint, channel: None })
            })
            .collect()
    }

    fn endpoint(&self, address: &str, origin: Option<&http::Uri>, tls: bool, host: &str) -> Result<Endpoint, Error> {
        let invalid = |e: tonic::transport::Error| Error::Connect(format!("invalid endpoint `{address}`: {e}"));
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(invalid)?
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent.clone())
            .map_err(invalid)?;
        if let Some(origin) = origin {
            endpoint = endpoint.origin(origin.clone());
        }
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if tls {
            let mut config = ClientTlsConfig::new().domain_name(host.trim_start_matches('[').trim_end_matches(']'));
            config = match &self.ca_pem {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_webpki_roots(),
            };
            if let Some((certificate, key)) = &self.identity {
                config = config.identity(Identity::from_pem(certificate, key.as_slice()));
            }
            endpoint = endpoint.tls_config(config).map_err(|e| Error::Connect(format!("TLS: {e}")))?;
        }
        Ok(endpoint)
    }
}

/// An endpoint before the client is built.
struct Pending {
    name: String,
    endpoint: Endpoint,
    channel: Option<Channel>,
}

/// One replica's connection.
#[derive(Debug)]
struct Target {
    name: String,
    channel: Channel,
}

fn read_token_file(path: &PathBuf) -> Result<Zeroizing<String>, Error> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::Connect(format!("token file {}: {e}", path.display())))?,
    );
    Ok(Zeroizing::new(text.trim().to_owned()))
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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
    targets: Vec<Target>,
    /// Where calls go first (moves on when that endpoint fails).
    current: AtomicUsize,
    token: BearerToken,
    cache: LeaseCache,
    retries: u32,
    timeout: Option<Duration>,
    stats: Counters,
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port` or
    /// `https://host:port`), or for several replicas: a comma-separated
    /// list, or a DNS name resolving to several addresses.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoints: endpoint.into().split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect(),
            token: TokenSource::None,
            identity_token: None,
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
    /// `http://127.0.0.1:50051`) and `PULLPASS_TOKEN` or `PULLPASS_TOKEN_FILE`,
    /// or a workload-identity JWT in `PULLPASS_IDENTITY_TOKEN` or
    /// `PULLPASS_IDENTITY_TOKEN_FILE` (one of the two kinds, not both).
    pub fn from_env() -> ClientBuilder {
        let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
        Self::builder(endpoint).token_from_env().identity_token_from_env()
    }

    fn authed(&self) -> AuthedChannel {
        let target = &self.inner.targets[self.inner.current.load(Ordering::Relaxed) % self.inner.targets.len()];
        InterceptedService::new(target.channel.clone(), self.inner.token.clone())
    }

    /// The endpoints calls may go to, the current one first.
    pub fn endpoints(&self) -> Vec<String> {
        let n = self.inner.targets.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        (0..n).map(|i| self.inner.targets[(first + i) % n].name.clone()).collect()
    }

    /// After endpoint `failed` did not answer, later calls start at the next.
    fn fail_over(&self, failed: usize) {
        let n = self.inner.targets.len();
        if n > 1 {
            let _ = self.inner.current.compare_exchange(failed, (failed + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
        }
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

    /// Runs `call` again while it fails with UNAVAILABLE, on the next
    /// endpoint (backing off once every endpoint was tried), within the
    /// client's timeout. For reads and leases.
    pub(crate) async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.retry_while(call, |status| status.code() == tonic::Code::Unavailable || unsent(status)).await
    }

    /// As [`Client::retrying`], for calls that change something: retried
    /// only when no server took the call in (the connection failed, or the
    /// server said it did not commit: shutting down, database or audit
    /// trail unavailable).
    pub(crate) async fn retrying_write<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.retry_while(call, not_taken_in).await
    }

    async fn retry_while<T, F, Fut>(
        &self,
        mut call: F,
        retryable: fn(&tonic::Status) -> bool,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        if let Some(presented) = &self.inner.token.0 {
            presented.prepare().await?;
        }
        let deadline = self.inner.timeout.map(|t| Instant::now() + t);
        let n = self.inner.targets.len() as u32;
        let mut attempt = 0;
        loop {
            let target = self.inner.current.load(Ordering::Relaxed) % self.inner.targets.len();
            match call().await {
                Err(status) if retryable(&status) && attempt < self.inner.retries => {
                    attempt += 1;
                    self.fail_over(target);
                    // A round over every endpoint failed: wait a little.
                    let pause = if attempt % n == 0 {
                        Duration::from_millis(100 << (attempt / n).min(4))
                    } else {
                        Duration::ZERO
                    };
                    if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                        return Err(status);
                    }
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}

/// A call this side never sent: its connection closed first (hyper's
/// "operation was canceled", as when a replica stops and sends GOAWAY).
fn unsent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled && std::error::Error::source(status).is_some()
}

/// Did the call fail before any server took it in? A status made on this
/// side (connection refused, reset, or closed), or a server's UNAVAILABLE
/// that says nothing was committed.
fn not_taken_in(status: &tonic::Status) -> bool {
    if unsent(status) {
        return true;
    }
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    if std::error::Error::source(status).is_some() {
        return true;
    }
    let details = tonic_types::StatusExt::get_details_error_info(status);
    details.is_some_and(|info| {
        matches!(info.reason.as_str(), "SERVER_SHUTTING_DOWN" | "DATABASE_UNAVAILABLE" | "AUDIT_UNAVAILABLE")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJlLXNlY3JldA";

    #[tokio::test]
    async fn an_access_token_and_an_identity_token_together_are_refused_before_connecting() {
        // Port 9 (discard): nothing is reached, the configuration fails first.
        let builder = Client::builder("http://127.0.0.1:9").token("pp_secret-access-token").identity_token(JWT);
        let refused = builder.connect().await.unwrap_err();
        assert!(matches!(refused, Error::Configuration(_)), "{refused:?}");
        let text = refused.to_string();
        assert!(text.contains("an access token and an identity token are given"), "{text}");
        assert!(!text.contains("pp_secret") && !text.contains(JWT), "{text}");
    }

    #[tokio::test]
    async fn an_identity_token_is_never_in_debug() {
        let builder = Client::builder("http://127.0.0.1:9").identity_token(JWT);
        assert!(!format!("{builder:?}").contains(JWT));
        let presented = builder.presented().await.unwrap();
        let bearer = BearerToken(presented, None);
        assert_eq!(format!("{bearer:?}"), "BearerToken(<redacted>)");
        assert_eq!(format!("{:?}", BearerToken(None, None)), "BearerToken(None)");
    }
}
