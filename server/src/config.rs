//! Settings from flags, `PULLPASS_*` environment variables and an optional
//! TOML file, in that order of precedence, then the built-in defaults.
//!
//! clap reads flags and environment variables (every field is an `Option`,
//! so "not given" is visible); the TOML file fills what they leave unset;
//! [`Settings::resolve`] applies defaults and checks the combination.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./pullpass-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The pull gateway's address with `--dev`.
pub const DEV_GATEWAY_LISTEN: &str = "127.0.0.1:50052";
/// The metrics endpoint's address with `--dev`.
pub const DEV_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Where `--dev` serves the web console.
pub const DEV_CONSOLE_LISTEN: &str = "127.0.0.1:50053";
/// Environment variable holding master keys inline.
pub const MASTER_KEY_ENV: &str = "PULLPASS_MASTER_KEY";
/// Where systemd puts credentials loaded with `LoadCredential=`.
pub const SYSTEMD_CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";
/// The credential name of the master key file under systemd.
pub const SYSTEMD_KEY_CREDENTIAL: &str = "master.key";
/// Database file name inside the data directory.
pub const DATABASE_FILE: &str = "pullpass.db";
/// Key file name inside the data directory (`--dev` only).
pub const DEV_KEY_FILE: &str = "master.key";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options every command shares.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// TOML file with settings (keys as the long flags, with `_` for `-`;
    /// flags and environment variables win over it).
    #[arg(long, env = "PULLPASS_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the database (and, with --dev, the key file).
    /// [default: ./pullpass-data]
    #[arg(long, env = "PULLPASS_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Master key file (mode 0600): one `<key-id>:<base64url 32 bytes>` per
    /// line, the last one active. Alternatively put the same text in the
    /// PULLPASS_MASTER_KEY environment variable. [default:
    /// $CREDENTIALS_DIRECTORY/master.key when systemd's LoadCredential= gives
    /// one; else, with --dev, DATA_DIR/master.key, created if absent]
    #[arg(long, env = "PULLPASS_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// PostgreSQL database shared by replicas, as
    /// `postgres://USER@HOST[:PORT]/DB?sslmode=MODE` (sslmode: disable,
    /// prefer, require, verify-ca, verify-full; also `sslrootcert=FILE`,
    /// `pool_size=N`). The password comes from the URL, else
    /// --database-password-file, else PGPASSFILE or ~/.pgpass. TLS is
    /// rustls. [default: SQLite in DATA_DIR]
    #[arg(long, env = "PULLPASS_DATABASE_URL", hide_env_values = true, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// File holding the PostgreSQL password (one line).
    #[arg(long, env = "PULLPASS_DATABASE_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// Log format. [default: text]
    #[arg(long, env = "PULLPASS_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, such as `info` or `pullpass_server=debug,info`.
    /// [default: info]
    #[arg(long, env = "PULLPASS_LOG", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Options of the server itself.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Development mode: creates the data directory and a key file if they
    /// are missing, and prints a root token on first start.
    #[arg(long, env = "PULLPASS_DEV")]
    pub dev: bool,

    /// Address to listen on. [default: 127.0.0.1:50051]
    #[arg(long, env = "PULLPASS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Seconds to let in-flight RPCs finish after SIGTERM/SIGINT before
    /// closing the remaining connections. [default: 30]
    #[arg(long, env = "PULLPASS_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,

    /// On SIGTERM, how long to keep serving after health turns NOT_SERVING,
    /// so load balancers stop sending calls first. [default: 5; 0 with
    /// --dev]
    #[arg(long, env = "PULLPASS_DRAIN_DELAY", value_name = "SECONDS")]
    pub drain_delay: Option<u64>,

    /// A registry (host[:port]) to reach over plain http, and whose token
    /// realm may be plain http too. Repeat for several; for local registries
    /// and tests only.
    #[arg(
        long = "insecure-registry",
        env = "PULLPASS_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub insecure_registries: Vec<String>,

    /// A token URI Google service-account keys may name (where their signed
    /// JWT is sent). Repeat for several. [default: https://oauth2.googleapis.com/token]
    #[arg(long = "google-token-uri", env = "PULLPASS_GOOGLE_TOKEN_URIS", value_delimiter = ',', value_name = "URL")]
    pub google_token_uris: Vec<String>,

    /// ECR API endpoint; `{region}` is replaced by the registry's region
    /// (for VPC endpoints). [default: https://api.ecr.{region}.amazonaws.com/]
    #[arg(long, env = "PULLPASS_ECR_ENDPOINT", value_name = "URL")]
    pub ecr_endpoint: Option<String>,

    /// A role ECR credentials may assume with pullpass's own AWS identity
    /// (environment, AWS_WEB_IDENTITY_TOKEN_FILE, ECS, EC2 metadata): an
    /// ARN, or an ARN prefix ending in `*` (arn:aws:iam::123456789012:role/pull-*).
    /// Repeat for several. None by default: without this, only web identity
    /// and stored access keys assume roles. pullpass then sends
    /// `ExternalId` = `pullpass:WORKSPACE`, which each role's trust policy
    /// should require.
    #[arg(
        long = "aws-own-identity-role",
        env = "PULLPASS_AWS_OWN_IDENTITY_ROLES",
        value_delimiter = ',',
        value_name = "ARN[*]"
    )]
    pub aws_own_identity_roles: Vec<String>,

    /// Entra ID's authority host, for ACR credentials (tokens come from
    /// `HOST/TENANT/oauth2/v2.0/token`); for sovereign clouds, such as
    /// https://login.microsoftonline.us. [default: https://login.microsoftonline.com]
    #[arg(long, env = "PULLPASS_ENTRA_AUTHORITY_HOST", value_name = "URL")]
    pub entra_authority_host: Option<String>,

    /// GitHub's REST API, asked when a tested GHCR (ghcr.io) token expires
    /// (the `GitHub-Authentication-Token-Expiration` header). GHCR tokens
    /// are sent there: point it only at GitHub's API (or your proxy of it).
    /// [default: https://api.github.com]
    #[arg(long, env = "PULLPASS_GITHUB_API_URL", value_name = "URL")]
    pub github_api_url: Option<String>,

    /// GitLab instances asked when a tested GITLAB token expires
    /// (`/api/v4/personal_access_tokens/self`), repeatable or
    /// comma-separated. A credential's token goes only to the instance whose
    /// host its registry is on: the same host (any port: GitLab's
    /// `gitlab.example.com:5050`) or `registry.` + that host. [default:
    /// https://gitlab.com, for registry.gitlab.com]
    #[arg(long = "gitlab-api-url", env = "PULLPASS_GITLAB_API_URLS", value_delimiter = ',', value_name = "URL")]
    pub gitlab_api_urls: Vec<String>,

    /// Google's Security Token Service endpoint, for GOOGLE credentials
    /// that federate. [default: https://sts.googleapis.com/v1/token]
    #[arg(long, env = "PULLPASS_GOOGLE_STS_ENDPOINT", value_name = "URL")]
    pub google_sts_endpoint: Option<String>,

    /// Google's IAM Credentials endpoint, for federated GOOGLE credentials
    /// that impersonate a service account. [default: https://iamcredentials.googleapis.com]
    #[arg(long, env = "PULLPASS_GOOGLE_IAM_CREDENTIALS_ENDPOINT", value_name = "URL")]
    pub google_iam_credentials_endpoint: Option<String>,

    /// Lifetime announced for passthrough leases (the stored secret handed
    /// out where a registry has no token exchange). [default: 300]
    #[arg(long, env = "PULLPASS_PASSTHROUGH_TTL", value_name = "SECONDS")]
    pub passthrough_ttl: Option<u64>,

    /// With replicas on PostgreSQL: the longest a replica honours state that
    /// another replica changed (a revoked token, a narrowed or deleted
    /// credential). Past it, a replica that cannot confirm the others'
    /// changes from the database serves nothing from its caches (calls
    /// confirm first, or fail UNAVAILABLE) and reports NOT_SERVING.
    /// 2-3600. [default: 10]
    #[arg(long, env = "PULLPASS_MAX_STALENESS", value_name = "SECONDS")]
    pub max_staleness: Option<u64>,

    /// Most leases kept in the cache. [default: 10000]
    #[arg(long, env = "PULLPASS_LEASE_CACHE_SIZE", value_name = "N")]
    pub lease_cache_size: Option<usize>,

    /// Longest an upstream exchange may take when the caller sets no
    /// deadline (gRPC timeout). [default: 30]
    #[arg(long, env = "PULLPASS_UPSTREAM_TIMEOUT", value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,

    /// Delete audit events older than this many days (checked hourly; the
    /// chain stays verifiable from the newest deleted event; as `audit
    /// prune`, never an event newer than that, so an old event that follows a
    /// newer one in the chain waits for a later round). [default: keep all]
    #[arg(long, env = "PULLPASS_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    pub audit_retention_days: Option<u64>,

    /// Requests per second each access token may make (token bucket, burst
    /// of twice as many); 0 disables the limit. [default: 1000]
    #[arg(long, env = "PULLPASS_RATE_LIMIT", value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,

    /// Largest request message accepted, in bytes. [default: 4194304]
    #[arg(long, env = "PULLPASS_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Client connections open at once, across the gRPC, gateway, metrics
    /// and console listeners; at the limit, new connections wait in the
    /// kernel's queue until one closes. Lowered to fit the open-file limit
    /// (pullpassd raises its soft limit to the hard one). [default: 16384]
    #[arg(long, env = "PULLPASS_MAX_CONNECTIONS", value_name = "COUNT")]
    pub max_connections: Option<usize>,

    /// Concurrent HTTP/2 streams (calls) per connection, on the gRPC
    /// listener and the gateway. [default: 100]
    #[arg(long, env = "PULLPASS_MAX_STREAMS_PER_CONNECTION", value_name = "COUNT")]
    pub max_streams_per_connection: Option<u32>,

    /// Largest request header block (gRPC metadata, gateway headers), in
    /// bytes; larger ones are refused. [default: 16384]
    #[arg(long, env = "PULLPASS_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<u32>,

    /// Longest a client of the HTTP listeners (gateway, metrics) may take
    /// to send a request's headers; slower connections are closed.
    /// [default: 30]
    #[arg(long, env = "PULLPASS_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<u64>,

    /// TLS certificate chain (PEM). With --tls-key, serves gRPC over TLS.
    /// Both files are read again on SIGHUP (existing connections are kept).
    #[arg(long, env = "PULLPASS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PULLPASS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) client certificates must chain to: with it,
    /// clients without a valid certificate are refused during the handshake.
    #[arg(long, env = "PULLPASS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Allow plaintext gRPC on a non-loopback address (bearer tokens then
    /// cross the network unencrypted). Use only behind a TLS-terminating proxy.
    #[arg(long, env = "PULLPASS_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// Serve the pull gateway, a read-only OCI registry endpoint for
    /// runtimes that take only a username and password, on this address,
    /// or `off`. Off unless set. [default with --dev: 127.0.0.1:50052]
    #[arg(long, env = "PULLPASS_GATEWAY_LISTEN", value_name = "ADDR|off")]
    pub gateway_listen: Option<String>,

    /// The name runtimes reach the gateway by; it appears in the image
    /// references the gateway hands out. [default: the listen address]
    #[arg(long, env = "PULLPASS_GATEWAY_PUBLIC_HOST", value_name = "HOST[:PORT]")]
    pub gateway_public_host: Option<String>,

    /// Name a registry with a port on the gateway: `local=127.0.0.1:5000`
    /// makes `GW/local/team/app` pull `127.0.0.1:5000/team/app`. Repeat for
    /// several.
    #[arg(
        long = "gateway-alias",
        env = "PULLPASS_GATEWAY_ALIASES",
        value_delimiter = ',',
        value_name = "NAME=HOST[:PORT]"
    )]
    pub gateway_aliases: Vec<String>,

    /// TLS certificate chain (PEM) of the gateway. [default: --tls-cert]
    #[arg(long, env = "PULLPASS_GATEWAY_TLS_CERT", value_name = "FILE", requires = "gateway_tls_key")]
    pub gateway_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of the gateway. [default: --tls-key]
    #[arg(long, env = "PULLPASS_GATEWAY_TLS_KEY", value_name = "FILE", requires = "gateway_tls_cert")]
    pub gateway_tls_key: Option<PathBuf>,

    /// Longest life of a gateway password, at most 3600; never longer than
    /// the access token that asked for it. [default: 3600]
    #[arg(long, env = "PULLPASS_GATEWAY_PASSWORD_TTL", value_name = "SECONDS")]
    pub gateway_password_ttl: Option<u64>,

    /// How long the gateway reuses a tag's manifest answer before asking the
    /// registry again (manifests by digest are kept). [default: 30]
    #[arg(long, env = "PULLPASS_GATEWAY_TAG_TTL", value_name = "SECONDS")]
    pub gateway_tag_ttl: Option<u64>,

    /// Serve Prometheus metrics at `/metrics` on this address (OpenMetrics,
    /// or text 0.0.4 when asked), or `off`. Over TLS with --tls-cert;
    /// plaintext on a non-loopback address needs --insecure-plaintext. Off
    /// unless set. [default with --dev: 127.0.0.1:9464]
    #[arg(long, env = "PULLPASS_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,

    /// Serve the web console (people add and manage their registry
    /// credentials in a browser) under `/console/` on this address, or
    /// `off`. Over TLS with --tls-cert; plaintext on a non-loopback address
    /// needs --insecure-plaintext. Off unless set. [default with --dev:
    /// 127.0.0.1:50053]
    #[arg(long, env = "PULLPASS_CONSOLE_LISTEN", value_name = "ADDR|off")]
    pub console_listen: Option<String>,

    /// The address people open the console at, when it is not the listen
    /// address (behind a proxy): `https://pullpass.example.com`. Login links
    /// (`pullpass console-link`) point there. [default: the listen address]
    #[arg(long, env = "PULLPASS_CONSOLE_PUBLIC_URL", value_name = "URL")]
    pub console_public_url: Option<String>,

    /// The console's share of --max-connections: at most this many console
    /// connections are open at once (the rest wait in the kernel's queue),
    /// so that clients who need no token to connect cannot take the
    /// connections gRPC callers need. [default: an eighth of
    /// --max-connections]
    #[arg(long, env = "PULLPASS_CONSOLE_MAX_CONNECTIONS", value_name = "COUNT")]
    pub console_max_connections: Option<usize>,

    /// The public URL of pullpass as an OpenID Connect issuer, for
    /// credentials that federate with a cloud instead of storing a key (ECR
    /// roles, Google workload identity federation, Entra federated
    /// credentials, Quay robot federation). Clouds fetch
    /// `URL/.well-known/openid-configuration` and the key set it names, so
    /// it must be https (http only on a loopback address). Both are served
    /// on the gateway's listener and on --issuer-listen. Off unless set.
    /// [default with --dev: http://127.0.0.1:50052, the dev gateway]
    #[arg(long, env = "PULLPASS_ISSUER_URL", value_name = "URL")]
    pub issuer_url: Option<String>,

    /// Also serve the issuer's discovery document and key set on this
    /// address (for installations without a gateway), or `off`. Over TLS
    /// with --tls-cert; plaintext on a non-loopback address needs
    /// --insecure-plaintext.
    #[arg(long, env = "PULLPASS_ISSUER_LISTEN", value_name = "ADDR|off")]
    pub issuer_listen: Option<String>,

    /// Testing hook: how often the issuer reads its key set again, in
    /// seconds (default 30).
    #[arg(long, hide = true)]
    pub issuer_reload_seconds: Option<u64>,

    /// Testing hook: how often the credential health gauges are counted
    /// again, in seconds (default 30).
    #[arg(long, hide = true)]
    pub health_refresh_seconds: Option<u64>,

    /// Testing hook: make audit appends for this action (or `*`) fail.
    #[arg(long, env = "PULLPASS_FAULT_AUDIT_FAIL", hide = true)]
    pub fault_audit_fail: Option<String>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    data_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    dev: Option<bool>,
    listen: Option<SocketAddr>,
    shutdown_grace: Option<u64>,
    drain_delay: Option<u64>,
    database_url: Option<String>,
    database_password_file: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
    google_token_uris: Option<Vec<String>>,
    ecr_endpoint: Option<String>,
    entra_authority_host: Option<String>,
    github_api_url: Option<String>,
    gitlab_api_urls: Option<Vec<String>>,
    aws_own_identity_roles: Option<Vec<String>>,
    google_sts_endpoint: Option<String>,
    google_iam_credentials_endpoint: Option<String>,
    passthrough_ttl: Option<u64>,
    lease_cache_size: Option<usize>,
    max_staleness: Option<u64>,
    upstream_timeout: Option<u64>,
    audit_retention_days: Option<u64>,
    rate_limit: Option<u32>,
    max_request_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_streams_per_connection: Option<u32>,
    max_header_bytes: Option<u32>,
    header_timeout: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
    gateway_listen: Option<String>,
    gateway_public_host: Option<String>,
    gateway_aliases: Option<Vec<String>>,
    gateway_tls_cert: Option<PathBuf>,
    gateway_tls_key: Option<PathBuf>,
    gateway_password_ttl: Option<u64>,
    gateway_tag_ttl: Option<u64>,
    metrics_listen: Option<String>,
    console_listen: Option<String>,
    console_public_url: Option<String>,
    console_max_connections: Option<usize>,
    issuer_url: Option<String>,
    issuer_listen: Option<String>,
}

/// Settings after precedence and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where master keys come from.
    pub keys: KeySource,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Development mode.
    pub dev: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// How long in-flight RPCs may take to finish at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// How long to keep serving, NOT_SERVING, after SIGTERM.
    pub drain_delay: std::time::Duration,
    /// Upstream settings of the broker.
    pub upstream: crate::upstream::UpstreamConfig,
    /// Lease cache capacity.
    pub lease_cache_size: usize,
    /// How long a replica may serve from caches without confirming the
    /// other replicas' changes.
    pub max_staleness: std::time::Duration,
    /// Upstream time budget without a caller deadline.
    pub upstream_timeout: std::time::Duration,
    /// Audit retention, if any.
    pub audit_retention: Option<std::time::Duration>,
    /// Requests per second per token (0 = unlimited).
    pub rate_limit: u32,
    /// Largest request message.
    pub max_request_bytes: usize,
    /// Limits on client connections.
    pub connections: crate::connections::Limits,
    /// TLS files, if TLS is on.
    pub tls: Option<TlsFiles>,
    /// Plaintext on non-loopback addresses allowed.
    pub insecure_plaintext: bool,
    /// The pull gateway, if it is served.
    pub gateway: Option<GatewaySettings>,
    /// Where metrics are served, if they are.
    pub metrics_listen: Option<SocketAddr>,
    /// The web console, if it is served.
    pub console: Option<ConsoleSettings>,
    /// Where the database is.
    pub database: crate::store::Location,
    /// The PostgreSQL password file, if given (for `store copy` ends).
    pub database_password_file: Option<PathBuf>,
    /// pullpass as an OIDC issuer, if it is one.
    pub issuer: Option<IssuerSettings>,
    /// How often the credential health gauges are counted.
    pub health_refresh: std::time::Duration,
    /// Testing hook (see `--fault-audit-fail`).
    pub fault_audit_fail: Option<String>,
}

/// Settings of the OIDC issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The public URL.
    pub url: crate::issuer::IssuerUrl,
    /// A listener of its own for the documents, if any.
    pub listen: Option<SocketAddr>,
    /// `--dev` without `--issuer-url`: the URL is the gateway's bound
    /// address (which may be an ephemeral port).
    pub follows_gateway: bool,
    /// How often the key set is read again.
    pub reload: std::time::Duration,
}

/// `--console-public-url` must be an http(s) origin without a path, query,
/// fragment or user info (it is where login links point).
fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.trim_end_matches('/'));
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => Ok(()),
        _ => Err(format!(
            "--console-public-url `{url}` is not an origin such as https://pullpass.example.com (http or https, a host and an optional port, no path)"
        )),
    }
}

/// Settings of the web console.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where people open it (`https://host`), when not the listen address.
    pub public_url: Option<String>,
    /// Its share of the connection budget; `None`: an eighth of it.
    pub max_connections: Option<usize>,
}

/// Settings of the pull gateway.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// TLS files, if it serves TLS (no client certificates: runtimes
    /// authenticate with passwords).
    pub tls: Option<TlsFiles>,
    /// The name runtimes use; `None`: the bound address.
    pub public_host: Option<pullpass::registry::RegistryHost>,
    /// Registries named by a path component.
    pub aliases: Vec<crate::pulls::address::Alias>,
    /// Longest life of a gateway password.
    pub password_ttl: std::time::Duration,
    /// How long a tag's manifest answer is reused.
    pub tag_ttl: std::time::Duration,
}

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Client CA bundle (PEM) for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Where master keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file.
    File(PathBuf),
    /// The PULLPASS_MASTER_KEY variable.
    Environment,
    /// Nothing configured.
    None,
}

impl Settings {
    /// Merges flags/env with the config file and defaults.
    pub fn resolve(common: &CommonArgs, serve: &ServeArgs) -> Result<Self, String> {
        let file = match &common.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let dev = serve.dev || file.dev.unwrap_or(false);
        let upstream = upstream_config(serve, &file)?;
        let tls =
            match (serve.tls_cert.clone().or(file.tls_cert.clone()), serve.tls_key.clone().or(file.tls_key.clone())) {
                (Some(cert), Some(key)) => {
                    Some(TlsFiles { cert, key, client_ca: serve.client_ca.clone().or(file.client_ca.clone()) })
                }
                (None, None) => None,
                _ => return Err("--tls-cert and --tls-key go together".into()),
            };
        let gateway = gateway_settings(serve, &file, dev, tls.as_ref())?;
        let data_dir = common.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let key_file = common.key_file.clone().or(file.key_file);
        let env_keys = std::env::var_os(MASTER_KEY_ENV).is_some_and(|v| !v.is_empty());
        let keys = match (key_file, env_keys) {
            (Some(_), true) => {
                return Err(format!("master keys are configured twice (a key file and {MASTER_KEY_ENV}); keep one"));
            }
            (Some(path), false) => KeySource::File(path),
            (None, true) => KeySource::Environment,
            (None, false) => match systemd_credential() {
                Some(path) => KeySource::File(path),
                None if dev => KeySource::File(data_dir.join(DEV_KEY_FILE)),
                None => KeySource::None,
            },
        };
        let database_password_file = common.database_password_file.clone().or(file.database_password_file);
        let database = match common.database_url.clone().or(file.database_url) {
            Some(url) => crate::store::Location::Postgres(Box::new(crate::store::postgres::PgConfig::parse(
                &url,
                database_password_file.as_deref(),
            )?)),
            None => crate::store::Location::Sqlite(data_dir.join(DATABASE_FILE)),
        };
        let metrics_listen = match serve.metrics_listen.clone().or(file.metrics_listen).map(|m| m.trim().to_owned()) {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(address) => Some(address.parse().map_err(|_| {
                format!("--metrics-listen `{address}` is not an address such as 127.0.0.1:9464, or `off`")
            })?),
            None if dev => Some(DEV_METRICS_LISTEN.parse().expect("the dev metrics address parses")),
            None => None,
        };
        let console_listen = match serve.console_listen.clone().or(file.console_listen).map(|m| m.trim().to_owned()) {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(address) => Some(address.parse().map_err(|_| {
                format!("--console-listen `{address}` is not an address such as 127.0.0.1:50053, or `off`")
            })?),
            None if dev => Some(DEV_CONSOLE_LISTEN.parse().expect("the dev console address parses")),
            None => None,
        };
        let console_public_url = serve.console_public_url.clone().or(file.console_public_url);
        if let Some(url) = &console_public_url {
            check_public_url(url)?;
        }
        let console_max_connections = serve.console_max_connections.or(file.console_max_connections);
        if console_max_connections == Some(0) {
            return Err(
                "--console-max-connections must be at least 1 (turn the console off with --console-listen off)".into(),
            );
        }
        let issuer_listen = match serve.issuer_listen.clone().or(file.issuer_listen).map(|m| m.trim().to_owned()) {
            Some(off) if off.eq_ignore_ascii_case("off") => None,
            Some(address) => Some(address.parse().map_err(|_| {
                format!("--issuer-listen `{address}` is not an address such as 127.0.0.1:50054, or `off`")
            })?),
            None => None,
        };
        let issuer_url = match serve.issuer_url.clone().or(file.issuer_url.clone()) {
            Some(url) => Some(crate::issuer::IssuerUrl::parse(&url).map_err(|e| format!("--issuer-url {e}"))?),
            None if dev && gateway.is_some() => {
                gateway.as_ref().and_then(|g| crate::issuer::IssuerUrl::parse(&format!("http://{}", g.listen)).ok())
            }
            None => None,
        };
        if issuer_listen.is_some() && issuer_url.is_none() {
            return Err("--issuer-listen needs --issuer-url (the public URL clouds fetch the documents at)".into());
        }
        let follows_gateway = dev && serve.issuer_url.is_none() && file.issuer_url.is_none();
        let reload = std::time::Duration::from_secs(serve.issuer_reload_seconds.unwrap_or(30).clamp(1, 3600));
        let issuer = issuer_url.map(|url| IssuerSettings { url, listen: issuer_listen, follows_gateway, reload });
        let console = console_listen.map(|listen| ConsoleSettings {
            listen,
            public_url: console_public_url.clone(),
            max_connections: console_max_connections,
        });
        Ok(Self {
            health_refresh: std::time::Duration::from_secs(serve.health_refresh_seconds.unwrap_or(30).clamp(1, 3600)),
            keys,
            gateway,
            metrics_listen,
            console,
            database,
            database_password_file,
            log_format: common.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_level: common.log_level.clone().or(file.log_level).unwrap_or_else(|| "info".into()),
            dev,
            listen: serve
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default listen address parses")),
            shutdown_grace: std::time::Duration::from_secs(serve.shutdown_grace.or(file.shutdown_grace).unwrap_or(30)),
            drain_delay: std::time::Duration::from_secs(
                serve.drain_delay.or(file.drain_delay).unwrap_or(if dev { 0 } else { 5 }).min(600),
            ),
            upstream,
            audit_retention: serve
                .audit_retention_days
                .or(file.audit_retention_days)
                .map(|days| std::time::Duration::from_secs(days.max(1) * 86_400)),
            rate_limit: serve.rate_limit.or(file.rate_limit).unwrap_or(1000),
            max_request_bytes: serve.max_request_bytes.or(file.max_request_bytes).unwrap_or(4 * 1024 * 1024),
            connections: crate::connections::Limits {
                max_connections: serve
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(crate::connections::Limits::default().max_connections)
                    .max(1),
                max_streams_per_connection: serve
                    .max_streams_per_connection
                    .or(file.max_streams_per_connection)
                    .unwrap_or(crate::connections::Limits::default().max_streams_per_connection)
                    .max(1),
                max_header_bytes: serve
                    .max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(crate::connections::Limits::default().max_header_bytes)
                    .max(1024),
                header_timeout: serve
                    .header_timeout
                    .or(file.header_timeout)
                    .map(|s| std::time::Duration::from_secs(s.clamp(1, 3600)))
                    .unwrap_or(crate::connections::Limits::default().header_timeout),
            },
            tls,
            insecure_plaintext: serve.insecure_plaintext || file.insecure_plaintext.unwrap_or(false),
            issuer,
            fault_audit_fail: serve.fault_audit_fail.clone(),
            lease_cache_size: serve.lease_cache_size.or(file.lease_cache_size).unwrap_or(10_000),
            max_staleness: match serve.max_staleness.or(file.max_staleness) {
                None => crate::changes::DEFAULT_MAX_STALENESS,
                Some(seconds @ 2..=3600) => std::time::Duration::from_secs(seconds),
                Some(other) => {
                    return Err(format!(
                        "--max-staleness {other}: must be 2-3600 seconds (the change feed is confirmed every second)"
                    ));
                }
            },
            upstream_timeout: std::time::Duration::from_secs(
                serve.upstream_timeout.or(file.upstream_timeout).unwrap_or(30).clamp(1, 600),
            ),
            data_dir,
        })
    }

    /// Development settings for a data directory, listening on an ephemeral
    /// loopback port (for embedding and tests).
    pub fn dev(data_dir: PathBuf) -> Result<Self, String> {
        let common = CommonArgs { data_dir: Some(data_dir), ..Default::default() };
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let serve = ServeArgs {
            dev: true,
            listen: Some(loopback),
            gateway_listen: Some(loopback.to_string()),
            metrics_listen: Some(loopback.to_string()),
            console_listen: Some(loopback.to_string()),
            ..Default::default()
        };
        Self::resolve(&common, &serve)
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// The master key systemd hands over with `LoadCredential=master.key:…`.
fn systemd_credential() -> Option<PathBuf> {
    let dir = std::env::var_os(SYSTEMD_CREDENTIALS_ENV).filter(|d| !d.is_empty())?;
    let path = Path::new(&dir).join(SYSTEMD_KEY_CREDENTIAL);
    path.is_file().then_some(path)
}

fn upstream_config(serve: &ServeArgs, file: &FileSettings) -> Result<crate::upstream::UpstreamConfig, String> {
    use pullpass::registry::RegistryHost;
    let pick = |flag: &Vec<String>, from_file: &Option<Vec<String>>| {
        if flag.is_empty() { from_file.clone().unwrap_or_default() } else { flag.clone() }
    };
    let insecure = pick(&serve.insecure_registries, &file.insecure_registries)
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .map(|h| RegistryHost::parse(h).map_err(|e| format!("--insecure-registry `{h}` {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut google_token_uris = pick(&serve.google_token_uris, &file.google_token_uris);
    if google_token_uris.is_empty() {
        google_token_uris.push(crate::upstream::google::DEFAULT_TOKEN_URI.to_owned());
    }
    Ok(crate::upstream::UpstreamConfig {
        realm: crate::upstream::realm::RealmPolicy { insecure },
        google_token_uris,
        ecr_endpoint: match serve.ecr_endpoint.clone().or(file.ecr_endpoint.clone()) {
            Some(flag) => Some(flag),
            None => aws_endpoint("ECR")?,
        },
        passthrough_ttl: std::time::Duration::from_secs(serve.passthrough_ttl.or(file.passthrough_ttl).unwrap_or(300)),
        clouds: crate::upstream::CloudEndpoints {
            entra_authority_host: endpoint_url(
                "--entra-authority-host",
                serve.entra_authority_host.clone().or(file.entra_authority_host.clone()),
                crate::upstream::DEFAULT_ENTRA_AUTHORITY_HOST,
            )?,
            google_sts: endpoint_url(
                "--google-sts-endpoint",
                serve.google_sts_endpoint.clone().or(file.google_sts_endpoint.clone()),
                crate::upstream::DEFAULT_GOOGLE_STS,
            )?,
            google_iam_credentials: endpoint_url(
                "--google-iam-credentials-endpoint",
                serve.google_iam_credentials_endpoint.clone().or(file.google_iam_credentials_endpoint.clone()),
                crate::upstream::DEFAULT_GOOGLE_IAM_CREDENTIALS,
            )?,
            github_api: match serve.github_api_url.clone().or(file.github_api_url.clone()) {
                Some(url) => Some(endpoint_url("--github-api-url", Some(url), "")?),
                None => None,
            },
            gitlab_apis: {
                let mut urls = pick(&serve.gitlab_api_urls, &file.gitlab_api_urls);
                if urls.is_empty() {
                    urls.push(crate::upstream::expiry::GITLAB_API.to_owned());
                }
                urls.into_iter().map(|url| endpoint_url("--gitlab-api-url", Some(url), "")).collect::<Result<_, _>>()?
            },
        },
        aws: crate::upstream::AwsConfig {
            sts_endpoint: aws_endpoint("STS")?,
            environment: crate::upstream::aws_identity::AwsEnvironment::from_env(),
            own_identity_roles: own_identity_roles(pick(&serve.aws_own_identity_roles, &file.aws_own_identity_roles))?,
        },
    })
}

/// An endpoint flag: an http(s) URL without query or fragment, stored
/// without a trailing slash.
fn endpoint_url(flag: &str, given: Option<String>, default: &str) -> Result<String, String> {
    let Some(given) = given.map(|g| g.trim().to_owned()) else { return Ok(default.to_owned()) };
    let ok = reqwest::Url::parse(&given).is_ok_and(|url| {
        matches!(url.scheme(), "https" | "http")
            && url.host_str().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none()
    });
    if !ok {
        // Not echoed: a URL with a password in it would leak.
        return Err(format!("{flag} is not an http(s) URL without query, fragment, user or password"));
    }
    Ok(given.trim_end_matches('/').to_owned())
}

/// `--aws-own-identity-role` patterns: ARNs of IAM roles, or prefixes of
/// them ending in `*`.
fn own_identity_roles(patterns: Vec<String>) -> Result<Vec<String>, String> {
    patterns
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(|pattern| {
            let fixed = pattern.strip_suffix('*').unwrap_or(&pattern);
            let ok = fixed.starts_with("arn:aws")
                && fixed.contains(":iam::")
                && !fixed.contains('*')
                && fixed.bytes().all(|b| b.is_ascii_graphic());
            if ok {
                Ok(pattern)
            } else {
                Err(format!(
                    "--aws-own-identity-role `{pattern}` is not an IAM role ARN or an ARN prefix ending in `*` (arn:aws:iam::123456789012:role/pull-*)"
                ))
            }
        })
        .collect()
}

/// The AWS SDKs' endpoint variables: `AWS_ENDPOINT_URL_<SERVICE>`, else
/// `AWS_ENDPOINT_URL` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`),
/// checked like the endpoint flags.
fn aws_endpoint(service: &str) -> Result<Option<String>, String> {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let specific = format!("AWS_ENDPOINT_URL_{service}");
    let (name, value) = match var(&specific) {
        Some(value) => (specific, value),
        None => match var("AWS_ENDPOINT_URL") {
            Some(value) => ("AWS_ENDPOINT_URL".to_owned(), value),
            None => return Ok(None),
        },
    };
    // Keep the trailing slash AWS endpoints are signed with.
    endpoint_url(&name, Some(value.clone()), "").map(|_| Some(value))
}

fn gateway_settings(
    serve: &ServeArgs,
    file: &FileSettings,
    dev: bool,
    server_tls: Option<&TlsFiles>,
) -> Result<Option<GatewaySettings>, String> {
    let listen: SocketAddr =
        match serve.gateway_listen.clone().or(file.gateway_listen.clone()).map(|g| g.trim().to_owned()) {
            Some(off) if off.eq_ignore_ascii_case("off") => return Ok(None),
            Some(address) => address.parse().map_err(|_| {
                format!("--gateway-listen `{address}` is not an address such as 127.0.0.1:50052, or `off`")
            })?,
            None if dev => DEV_GATEWAY_LISTEN.parse().expect("the dev gateway address parses"),
            None => return Ok(None),
        };
    let tls = match (
        serve.gateway_tls_cert.clone().or(file.gateway_tls_cert.clone()),
        serve.gateway_tls_key.clone().or(file.gateway_tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca: None }),
        (None, None) => server_tls.map(|t| TlsFiles { cert: t.cert.clone(), key: t.key.clone(), client_ca: None }),
        _ => return Err("--gateway-tls-cert and --gateway-tls-key go together".into()),
    };
    let public_host = match serve.gateway_public_host.clone().or(file.gateway_public_host.clone()) {
        Some(host) => Some(
            pullpass::registry::RegistryHost::parse(host.trim())
                .map_err(|e| format!("--gateway-public-host `{host}` {e}"))?,
        ),
        None if listen.ip().is_unspecified() => {
            return Err(format!(
                "--gateway-listen {listen} listens on every address: say which name runtimes reach it by with --gateway-public-host HOST[:PORT]"
            ));
        }
        None => None,
    };
    let aliases = if serve.gateway_aliases.is_empty() {
        file.gateway_aliases.clone().unwrap_or_default()
    } else {
        serve.gateway_aliases.clone()
    };
    let aliases = aliases
        .iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| crate::pulls::address::Alias::parse(a).map_err(|e| format!("--gateway-alias {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(twice) = aliases.iter().enumerate().find(|(i, a)| aliases[..*i].iter().any(|b| b.name == a.name)) {
        return Err(format!("--gateway-alias `{}` is given twice", twice.1.name));
    }
    let password_ttl = serve.gateway_password_ttl.or(file.gateway_password_ttl).unwrap_or(3600);
    let max_ttl = crate::access::gateway_password::MAX_TTL.as_secs();
    if !(1..=max_ttl).contains(&password_ttl) {
        return Err(format!("--gateway-password-ttl must be 1 to {max_ttl} seconds, got {password_ttl}"));
    }
    let tag_ttl = serve.gateway_tag_ttl.or(file.gateway_tag_ttl).unwrap_or(30);
    if tag_ttl > 3600 {
        return Err(format!("--gateway-tag-ttl must be at most 3600 seconds, got {tag_ttl}"));
    }
    Ok(Some(GatewaySettings {
        listen,
        tls,
        public_host,
        aliases,
        password_ttl: std::time::Duration::from_secs(password_ttl),
        tag_ttl: std::time::Duration::from_secs(tag_ttl),
    }))
}

fn read_file(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullpass.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:6000\"\nlog_format = \"json\"\n")
            .unwrap();
        let common =
            CommonArgs { config: Some(path.clone()), data_dir: Some("/from/flag".into()), ..Default::default() };
        let settings = Settings::resolve(&common, &ServeArgs::default()).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.listen.port(), 6000);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.keys, KeySource::None);
        let dev = ServeArgs { dev: true, ..Default::default() };
        let settings = Settings::resolve(&CommonArgs::default(), &dev).unwrap();
        assert_eq!(settings.keys, KeySource::File(PathBuf::from(DEFAULT_DATA_DIR).join(DEV_KEY_FILE)));
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn the_gateway_is_off_unless_asked_for_and_dev_turns_it_on() {
        let off = Settings::resolve(&CommonArgs::default(), &ServeArgs::default()).unwrap();
        assert!(off.gateway.is_none());
        let dev = Settings::resolve(&CommonArgs::default(), &ServeArgs { dev: true, ..Default::default() }).unwrap();
        assert_eq!(dev.gateway.unwrap().listen.to_string(), DEV_GATEWAY_LISTEN);
        let serve = ServeArgs {
            gateway_listen: Some("127.0.0.1:6000".into()),
            gateway_aliases: vec!["local=127.0.0.1:5000".into()],
            gateway_password_ttl: Some(600),
            ..Default::default()
        };
        let gateway = Settings::resolve(&CommonArgs::default(), &serve).unwrap().gateway.unwrap();
        assert_eq!((gateway.aliases.len(), gateway.password_ttl.as_secs(), gateway.tag_ttl.as_secs()), (1, 600, 30));
        assert!(gateway.public_host.is_none() && gateway.tls.is_none());
        for (bad, says) in [
            (ServeArgs { gateway_password_ttl: Some(7200), ..serve.clone() }, "at most"),
            (ServeArgs { gateway_listen: Some("0.0.0.0:6000".into()), ..serve.clone() }, "--gateway-public-host"),
            (ServeArgs { gateway_aliases: vec!["a=h:1".into(), "a=h:2".into()], ..serve.clone() }, "twice"),
            (ServeArgs { gateway_aliases: vec!["no-target".into()], ..serve.clone() }, "NAME=HOST"),
        ] {
            let error = Settings::resolve(&CommonArgs::default(), &bad).unwrap_err();
            assert!(error.contains(says) || error.contains("1 to 3600"), "{error}");
        }
    }

    #[test]
    fn metrics_are_off_unless_asked_for_and_dev_turns_them_on_unless_off() {
        let resolve = |dev: bool, metrics: Option<&str>| {
            let serve = ServeArgs { dev, metrics_listen: metrics.map(str::to_owned), ..Default::default() };
            Settings::resolve(&CommonArgs::default(), &serve).map(|s| s.metrics_listen.map(|a| a.to_string()))
        };
        assert_eq!(resolve(false, None), Ok(None));
        assert_eq!(resolve(true, None), Ok(Some(DEV_METRICS_LISTEN.to_owned())));
        assert_eq!(resolve(true, Some("off")), Ok(None));
        assert_eq!(resolve(false, Some("127.0.0.1:9000")), Ok(Some("127.0.0.1:9000".to_owned())));
        assert!(resolve(false, Some("9000")).unwrap_err().contains("or `off`"));
    }

    #[test]
    fn dev_turns_the_gateway_on_unless_it_is_off() {
        let resolve = |dev: bool, gateway: Option<&str>| {
            let serve = ServeArgs { dev, gateway_listen: gateway.map(str::to_owned), ..Default::default() };
            Settings::resolve(&CommonArgs::default(), &serve).map(|s| s.gateway.map(|g| g.listen.to_string()))
        };
        assert_eq!(resolve(false, None), Ok(None));
        assert_eq!(resolve(true, None), Ok(Some(DEV_GATEWAY_LISTEN.to_owned())));
        assert_eq!(resolve(true, Some("off")), Ok(None));
        assert_eq!(resolve(true, Some(" OFF ")), Ok(None));
        assert_eq!(resolve(false, Some("127.0.0.1:6000")), Ok(Some("127.0.0.1:6000".to_owned())));
        assert!(resolve(true, Some("6000")).unwrap_err().contains("or `off`"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullpass.toml");
        std::fs::write(&path, "data-dir = \"x\"\n").unwrap();
        let common = CommonArgs { config: Some(path), ..Default::default() };
        assert!(Settings::resolve(&common, &ServeArgs::default()).unwrap_err().contains("unknown field"));
    }
}
