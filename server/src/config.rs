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
/// Environment variable holding master keys inline.
pub const MASTER_KEY_ENV: &str = "PULLPASS_MASTER_KEY";
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
    /// PULLPASS_MASTER_KEY environment variable. [default with --dev:
    /// DATA_DIR/master.key, created if absent]
    #[arg(long, env = "PULLPASS_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

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

    /// Lifetime announced for passthrough leases (the stored secret handed
    /// out where a registry has no token exchange). [default: 300]
    #[arg(long, env = "PULLPASS_PASSTHROUGH_TTL", value_name = "SECONDS")]
    pub passthrough_ttl: Option<u64>,

    /// Most leases kept in the cache. [default: 10000]
    #[arg(long, env = "PULLPASS_LEASE_CACHE_SIZE", value_name = "N")]
    pub lease_cache_size: Option<usize>,

    /// Longest an upstream exchange may take when the caller sets no
    /// deadline (gRPC timeout). [default: 30]
    #[arg(long, env = "PULLPASS_UPSTREAM_TIMEOUT", value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,

    /// Delete audit events older than this many days (checked hourly; the
    /// chain stays verifiable from the newest deleted event). [default: keep all]
    #[arg(long, env = "PULLPASS_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    pub audit_retention_days: Option<u64>,

    /// Requests per second each access token may make (token bucket, burst
    /// of twice as many); 0 disables the limit. [default: 1000]
    #[arg(long, env = "PULLPASS_RATE_LIMIT", value_name = "PER_SECOND")]
    pub rate_limit: Option<u32>,

    /// Largest request message accepted, in bytes. [default: 4194304]
    #[arg(long, env = "PULLPASS_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

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
    insecure_registries: Option<Vec<String>>,
    google_token_uris: Option<Vec<String>>,
    ecr_endpoint: Option<String>,
    passthrough_ttl: Option<u64>,
    lease_cache_size: Option<usize>,
    upstream_timeout: Option<u64>,
    audit_retention_days: Option<u64>,
    rate_limit: Option<u32>,
    max_request_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
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
    /// Upstream settings of the broker.
    pub upstream: crate::upstream::UpstreamConfig,
    /// Lease cache capacity.
    pub lease_cache_size: usize,
    /// Upstream time budget without a caller deadline.
    pub upstream_timeout: std::time::Duration,
    /// Audit retention, if any.
    pub audit_retention: Option<std::time::Duration>,
    /// Requests per second per token (0 = unlimited).
    pub rate_limit: u32,
    /// Largest request message.
    pub max_request_bytes: usize,
    /// TLS files, if TLS is on.
    pub tls: Option<TlsFiles>,
    /// Plaintext on non-loopback addresses allowed.
    pub insecure_plaintext: bool,
    /// Testing hook (see `--fault-audit-fail`).
    pub fault_audit_fail: Option<String>,
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
        let data_dir = common.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let key_file = common.key_file.clone().or(file.key_file);
        let env_keys = std::env::var_os(MASTER_KEY_ENV).is_some_and(|v| !v.is_empty());
        let keys = match (key_file, env_keys) {
            (Some(_), true) => {
                return Err(format!("master keys are configured twice (a key file and {MASTER_KEY_ENV}); keep one"));
            }
            (Some(path), false) => KeySource::File(path),
            (None, true) => KeySource::Environment,
            (None, false) if dev => KeySource::File(data_dir.join(DEV_KEY_FILE)),
            (None, false) => KeySource::None,
        };
        Ok(Self {
            keys,
            log_format: common.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_level: common.log_level.clone().or(file.log_level).unwrap_or_else(|| "info".into()),
            dev,
            listen: serve
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default listen address parses")),
            shutdown_grace: std::time::Duration::from_secs(serve.shutdown_grace.or(file.shutdown_grace).unwrap_or(30)),
            upstream,
            audit_retention: serve
                .audit_retention_days
                .or(file.audit_retention_days)
                .map(|days| std::time::Duration::from_secs(days.max(1) * 86_400)),
            rate_limit: serve.rate_limit.or(file.rate_limit).unwrap_or(1000),
            max_request_bytes: serve.max_request_bytes.or(file.max_request_bytes).unwrap_or(4 * 1024 * 1024),
            tls: match (
                serve.tls_cert.clone().or(file.tls_cert.clone()),
                serve.tls_key.clone().or(file.tls_key.clone()),
            ) {
                (Some(cert), Some(key)) => {
                    Some(TlsFiles { cert, key, client_ca: serve.client_ca.clone().or(file.client_ca.clone()) })
                }
                (None, None) => None,
                _ => return Err("--tls-cert and --tls-key go together".into()),
            },
            insecure_plaintext: serve.insecure_plaintext || file.insecure_plaintext.unwrap_or(false),
            fault_audit_fail: serve.fault_audit_fail.clone(),
            lease_cache_size: serve.lease_cache_size.or(file.lease_cache_size).unwrap_or(10_000),
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
        let serve = ServeArgs { dev: true, listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))), ..Default::default() };
        Self::resolve(&common, &serve)
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
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
        ecr_endpoint: serve.ecr_endpoint.clone().or(file.ecr_endpoint.clone()),
        passthrough_ttl: std::time::Duration::from_secs(serve.passthrough_ttl.or(file.passthrough_ttl).unwrap_or(300)),
    })
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
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullpass.toml");
        std::fs::write(&path, "data-dir = \"x\"\n").unwrap();
        let common = CommonArgs { config: Some(path), ..Default::default() };
        assert!(Settings::resolve(&common, &ServeArgs::default()).unwrap_err().contains("unknown field"));
    }
}
