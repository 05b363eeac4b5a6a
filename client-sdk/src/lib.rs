//! `pullpass-client`: the Rust SDK for pullpass.
//!
//! A [`Client`] holds one HTTP/2 connection to `pullpassd` and adds the
//! caller's bearer token to every call. It is cheap to clone and share
//! across tasks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = pullpass_client::Client::builder("http://127.0.0.1:50051")
//!     .token(std::env::var("PULLPASS_TOKEN")?)
//!     .connect()
//!     .await?;
//! let workspaces = client
//!     .access()
//!     .list_workspaces(pullpass::v1::ListWorkspacesRequest::default())
//!     .await?
//!     .into_inner();
//! println!("{} workspace(s)", workspaces.workspaces.len());
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use pullpass::v1::access_service_client::AccessServiceClient;
use pullpass::v1::audit_service_client::AuditServiceClient;
use pullpass::v1::credential_service_client::CredentialServiceClient;
use pullpass::v1::registry_auth_service_client::RegistryAuthServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The channel every service client uses.
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// Why a client could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint is not a valid URI.
    InvalidEndpoint(String),
    /// The token has characters that cannot go in a header.
    InvalidToken,
    /// The connection failed.
    Transport(tonic::transport::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEndpoint(e) => write!(f, "invalid pullpass endpoint: {e}"),
            Self::InvalidToken => f.write_str("the access token contains characters not allowed in a header"),
            Self::Transport(e) => write!(f, "cannot connect to pullpass: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

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

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    endpoint: String,
    token: Option<String>,
    connect_timeout: Duration,
    timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The bearer token (`pp_…`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Limit for establishing the connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for every call (default: none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<Client, ConnectError> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| ConnectError::InvalidEndpoint(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("pullpass-client/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| ConnectError::InvalidEndpoint(e.to_string()))?;
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let token = match self.token {
            Some(token) => {
                Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| ConnectError::InvalidToken)?)
            }
            None => None,
        };
        let channel = endpoint.connect().await.map_err(ConnectError::Transport)?;
        Ok(Client { channel, token: BearerToken(token) })
    }
}

/// A connection to pullpassd.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    token: BearerToken,
}

impl Client {
    /// Starts building a client for `endpoint` (`http://host:port`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder { endpoint: endpoint.into(), token: None, connect_timeout: Duration::from_secs(5), timeout: None }
    }

    fn authed(&self) -> AuthedChannel {
        InterceptedService::new(self.channel.clone(), self.token.clone())
    }

    /// `pullpass.v1.CredentialService`.
    pub fn credentials(&self) -> CredentialServiceClient<AuthedChannel> {
        CredentialServiceClient::new(self.authed())
    }

    /// `pullpass.v1.AccessService`.
    pub fn access(&self) -> AccessServiceClient<AuthedChannel> {
        AccessServiceClient::new(self.authed())
    }

    /// `pullpass.v1.RegistryAuthService`.
    pub fn registry_auth(&self) -> RegistryAuthServiceClient<AuthedChannel> {
        RegistryAuthServiceClient::new(self.authed())
    }

    /// `pullpass.v1.AuditService`.
    pub fn audit(&self) -> AuditServiceClient<AuthedChannel> {
        AuditServiceClient::new(self.authed())
    }
}
