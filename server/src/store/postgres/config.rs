//! Where the PostgreSQL database is and how to reach it: a
//! `postgres://USER@HOST[:PORT]/DB?sslmode=…` URL, a password from the URL,
//! `--database-password-file` or a `PGPASSFILE`, and TLS with rustls (ring)
//! against the Mozilla roots plus an optional `sslrootcert` bundle.
//!
//! The password is never shown: [`PgConfig`]'s `Debug` and
//! [`PgConfig::describe`] leave it out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use zeroize::Zeroizing;

/// How to use TLS toward PostgreSQL: libpq's `sslmode`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsUse {
    /// Never (`sslmode=disable`).
    Disable,
    /// If the server offers it, without checking its certificate
    /// (`allow`, `prefer`: the default, as in libpq). Stops eavesdroppers,
    /// not impostors.
    Prefer,
    /// Always, without checking the certificate (`require`).
    Require,
    /// Always, with a certificate chaining to a trusted root (`verify-ca`).
    VerifyCa,
    /// Always, with a trusted certificate for the host name (`verify-full`).
    VerifyFull,
}

/// A parsed database URL.
#[derive(Clone)]
pub struct PgConfig {
    config: tokio_postgres::Config,
    tls: TlsUse,
    root_cert: Option<PathBuf>,
    shown: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// Longest a database operation may take, connection and statements
    /// included, before it fails `UNAVAILABLE` (URL parameter
    /// `query_timeout`, seconds). A database that goes silent (a dropped
    /// network path: queries hang, nothing is refused) costs a call this
    /// long at most, never the kernel's 15 minutes.
    pub query_timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig").field("url", &self.shown).field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// Connections pooled per replica by default.
const DEFAULT_POOL_SIZE: usize = 16;
/// Default `query_timeout`.
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on every connection: first probe after this much
/// silence, then every [`KEEPALIVE_INTERVAL`], giving up after
/// [`KEEPALIVE_RETRIES`] unanswered probes. With [`TCP_USER_TIMEOUT`]
/// (data sent but unacknowledged), a dropped path breaks the connection in
/// seconds on both idle and busy connections.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

impl PgConfig {
    /// Parses `url`; the password comes from the URL, else `password_file`,
    /// else `PGPASSFILE` (or `~/.pgpass`).
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<Self, String> {
        let mut parsed = Url::parse(url).map_err(|_| "--database-url is not a postgres://… URL".to_owned())?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!("--database-url must start with postgres:// (got `{}://`)", parsed.scheme()));
        }
        let mut tls = TlsUse::Prefer;
        let mut root_cert = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut query_timeout = DEFAULT_QUERY_TIMEOUT;
        let mut kept: Vec<(String, String)> = Vec::new();
        // libpq also takes `?password=`: used like the URL's own password,
        // and kept out of the URL that logs and messages show.
        let mut query_password = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "password" => query_password = Some(Zeroizing::new(value.into_owned())),
                "sslmode" => {
                    tls = match value.as_ref() {
                        "disable" => TlsUse::Disable,
                        "allow" | "prefer" => TlsUse::Prefer,
                        "require" => TlsUse::Require,
                        "verify-ca" => TlsUse::VerifyCa,
                        "verify-full" => TlsUse::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                "pool_size" => {
                    pool_size =
                        value.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or("pool_size must be 1-1000")?
                }
                "query_timeout" => {
                    query_timeout = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=3600).contains(n))
                        .map(Duration::from_secs)
                        .ok_or("query_timeout must be 1-3600 (seconds)")?
                }
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        let url_password = parsed
            .password()
            .map(|p| Zeroizing::new(percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned()))
            .or(query_password);
        let _ = parsed.set_password(None);
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept.iter());
        }
        let shown = parsed.to_string();
        let mut config: tokio_postgres::Config = shown.parse().map_err(|e| format!("--database-url {shown}: {e}"))?;
        config.ssl_mode(match tls {
            TlsUse::Disable => tokio_postgres::config::SslMode::Disable,
            TlsUse::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsUse::Require | TlsUse::VerifyCa | TlsUse::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true);
        config.keepalives_idle(KEEPALIVE_IDLE);
        config.keepalives_interval(KEEPALIVE_INTERVAL);
        config.keepalives_retries(KEEPALIVE_RETRIES);
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        config.application_name("pullpassd");
        let password = match (url_password, password_file) {
            (Some(password), _) => Some(password),
            (None, Some(file)) => Some(Zeroizing::new(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("--database-password-file {}: {e}", file.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            )),
            (None, None) => pgpass_password(&config),
        };
        if let Some(password) = password {
            config.password(password.as_bytes());
        }
        Ok(Self { config, tls, root_cert, shown, pool_size, query_timeout })
    }

    /// The URL without its password, for logs and messages.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// The connection settings.
    pub fn connection(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector to use, if any (rustls with ring; never OpenSSL).
    pub fn tls(&self) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
        if self.tls == TlsUse::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match self.tls {
            TlsUse::VerifyCa | TlsUse::VerifyFull => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(path) = &self.root_cert {
                    use rustls::pki_types::CertificateDer;
                    use rustls::pki_types::pem::PemObject;
                    let unreadable = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
                    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                        roots.add(cert.map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
                    }
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS: {e}"))?;
                let verifier = tls::Verifier { inner: webpki, check_name: self.tls == TlsUse::VerifyFull };
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(tls::Unverified(provider)))
                .with_no_client_auth(),
        };
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }

    /// How TLS is used.
    pub fn tls_use(&self) -> TlsUse {
        self.tls
    }
}

/// Certificate checks for the `sslmode`s.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    /// `verify-ca` and `verify-full`: the WebPKI checks, with the name
    /// check only for `verify-full`.
    #[derive(Debug)]
    pub struct Verifier {
        pub inner: Arc<rustls::client::WebPkiServerVerifier>,
        pub check_name: bool,
    }

    impl ServerCertVerifier for Verifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Err(Error::InvalidCertificate(CertificateError::NotValidForName))
                | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                    if !self.check_name =>
                {
                    Ok(ServerCertVerified::assertion())
                }
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    /// `prefer` and `require`, as libpq: encrypted, any certificate (the
    /// handshake signatures are still checked).
    #[derive(Debug)]
    pub struct Unverified(pub Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// The password of a `PGPASSFILE` (or `~/.pgpass`) line matching the
/// connection (`host:port:database:user:password`, `*` matching anything,
/// `\:` and `\\` escaped).
fn pgpass_password(config: &tokio_postgres::Config) -> Option<Zeroizing<String>> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
    let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(_)) | None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let database = config.get_dbname().or(config.get_user()).unwrap_or_default().to_owned();
    let user = config.get_user().unwrap_or_default().to_owned();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], &host)
            && matches(&fields[1], &port)
            && matches(&fields[2], &database)
            && matches(&fields[3], &user)
        {
            return Some(Zeroizing::new(fields[4].clone()));
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows_and_our_parameters_are_taken_out() {
        let config = PgConfig::parse(
            "postgres://pullpass:s3cr%3At-CANARY@db.example:6543/pullpass?sslmode=verify-full&sslrootcert=/etc/ca.pem&pool_size=4&application_name=x",
            None,
        )
        .unwrap();
        assert_eq!(config.tls_use(), TlsUse::VerifyFull);
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.query_timeout, DEFAULT_QUERY_TIMEOUT);
        assert_eq!(config.connection().get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(config.connection().get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.connection().get_password(), Some("s3cr:t-CANARY".as_bytes()));
        assert!(!config.describe().contains("CANARY") && !format!("{config:?}").contains("CANARY"));
        assert!(config.describe().starts_with("postgres://pullpass@db.example:6543/pullpass"), "{}", config.describe());
        // libpq's `?password=` is a password too: used, never shown.
        let config =
            PgConfig::parse("postgres://pullpass@db.example/pullpass?password=q-CANARY&sslmode=disable", None).unwrap();
        assert_eq!(config.connection().get_password(), Some("q-CANARY".as_bytes()));
        assert!(
            !config.describe().contains("CANARY") && !format!("{config:?}").contains("CANARY"),
            "{}",
            config.describe()
        );
        for bad in [
            "mysql://x/y",
            "not a url",
            "postgres://h/db?sslmode=sometimes",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?query_timeout=0",
        ] {
            assert!(PgConfig::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        assert_eq!(split_pgpass(r"h:5432:db:u:pa\:ss\\word"), vec!["h", "5432", "db", "u", r"pa:ss\word"]);
        assert_eq!(split_pgpass("*:*:*:*:p:q"), vec!["*", "*", "*", "*", "p:q"]);
    }
}
