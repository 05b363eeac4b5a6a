//! Workload identity: the JWT a client presents instead of a `pp_` access
//! token, and where it comes from. A platform hands its workloads such
//! tokens (a Kubernetes projected service-account token in a file,
//! GitLab's `id_tokens:` in a variable, the GitHub Actions job token behind
//! the runner's `ACTIONS_ID_TOKEN_REQUEST_URL`); pullpassd verifies them
//! against its identity providers and grants what the workspace's bindings
//! say.
//!
//! These tokens rotate and expire, so each source is asked again as it
//! needs: a file is read again as soon as it changes (and at least once a
//! second), a GitHub Actions token is fetched again before it has less than
//! a minute left (or half its life, for shorter ones). Nothing here puts a
//! token, or the runner's request token, in `Debug`, an error or a log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use tonic::metadata::{Ascii, MetadataValue};
use zeroize::Zeroizing;

use crate::client::error_chain;
use crate::error::Error;

/// Environment variable with a workload-identity JWT (GitLab's `id_tokens:`).
pub const IDENTITY_TOKEN_ENV: &str = "PULLPASS_IDENTITY_TOKEN";
/// Environment variable with a file holding a workload-identity JWT.
pub const IDENTITY_TOKEN_FILE_ENV: &str = "PULLPASS_IDENTITY_TOKEN_FILE";
/// The GitHub Actions runner's URL for the job's OIDC token.
pub const ACTIONS_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
/// The GitHub Actions runner's bearer token for that URL.
pub const ACTIONS_TOKEN_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// An unchanged token file is read again after this long anyway (a file
/// rewritten in place within the file system's timestamp granularity, with
/// the same length, looks unchanged).
const REREAD_AFTER: Duration = Duration::from_secs(1);
/// A fetched token is fetched again when it has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// After a failed background refresh, the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Largest answer taken from the token endpoint.
const MAX_ANSWER: usize = 64 * 1024;
/// Limits of one token fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const FETCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the identity token comes from, as configured on the builder.
#[derive(Clone)]
pub(crate) enum IdentitySource {
    /// A JWT given directly (the kubelet plugin's `serviceAccountToken`).
    Value(Zeroizing<String>),
    /// A file, re-read as it rotates.
    File(PathBuf),
    /// `PULLPASS_IDENTITY_TOKEN`, else the file `PULLPASS_IDENTITY_TOKEN_FILE`.
    Environment,
    /// The GitHub Actions job token for this audience.
    GithubActions { audience: String },
}

impl IdentitySource {
    /// What it is, for messages (never the token).
    pub(crate) fn describe(&self) -> String {
        match self {
            IdentitySource::Value(_) => "an identity token".into(),
            IdentitySource::File(path) => format!("the identity token file {}", path.display()),
            IdentitySource::Environment => {
                if std::env::var(IDENTITY_TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty()) {
                    IDENTITY_TOKEN_ENV.into()
                } else {
                    IDENTITY_TOKEN_FILE_ENV.into()
                }
            }
            IdentitySource::GithubActions { .. } => "the GitHub Actions identity token".into(),
        }
    }

    /// What this source presents, or `None` (the environment names none).
    /// A file is read once here, so a missing one fails now; a GitHub
    /// Actions token is fetched once, and kept fresh by a task on the
    /// current runtime.
    pub(crate) async fn resolve(&self) -> Result<Option<Presented>, Error> {
        match self {
            IdentitySource::Value(token) => Ok(Some(Presented::Fixed(identity_header(token, "the identity token")?))),
            IdentitySource::File(path) => Ok(Some(Presented::File(Arc::new(TokenFile::open(path)?)))),
            IdentitySource::Environment => match std::env::var(IDENTITY_TOKEN_ENV) {
                Ok(token) if !token.trim().is_empty() => {
                    let token = Zeroizing::new(token);
                    Ok(Some(Presented::Fixed(identity_header(&token, IDENTITY_TOKEN_ENV)?)))
                }
                _ => match std::env::var_os(IDENTITY_TOKEN_FILE_ENV) {
                    Some(path) if !path.is_empty() => {
                        Ok(Some(Presented::File(Arc::new(TokenFile::open(Path::new(&path))?))))
                    }
                    _ => Ok(None),
                },
            },
            IdentitySource::GithubActions { audience } => {
                let token = Arc::new(FetchedToken::github_actions_from_env(audience)?);
                token.fresh().await?;
                spawn_refresher(&token);
                Ok(Some(Presented::Fetched(token)))
            }
        }
    }
}

/// What the client sends as `authorization`, resolved at connect.
#[derive(Clone)]
pub(crate) enum Presented {
    /// A fixed header (an access token, or an identity token given once).
    Fixed(MetadataValue<Ascii>),
    /// An identity token file, re-read as it changes.
    File(Arc<TokenFile>),
    /// A fetched identity token, fetched again before it expires.
    Fetched(Arc<FetchedToken>),
}

impl Presented {
    /// The header to send now.
    pub(crate) fn header(&self) -> Result<MetadataValue<Ascii>, tonic::Status> {
        match self {
            Presented::Fixed(value) => Ok(value.clone()),
            Presented::File(file) => file.header().map_err(|e| tonic::Status::unauthenticated(e.to_string())),
            Presented::Fetched(token) => token.header(),
        }
    }

    /// Makes sure the header is good for a call about to be sent: a fetched
    /// token with little life left is fetched again first.
    pub(crate) async fn prepare(&self) -> Result<(), tonic::Status> {
        match self {
            Presented::Fetched(token) => token.fresh().await.map_err(|e| match e {
                Error::Unauthenticated(m) => tonic::Status::unauthenticated(m),
                other => tonic::Status::unavailable(other.to_string()),
            }),
            Presented::Fixed(_) | Presented::File(_) => Ok(()),
        }
    }
}

/// `Bearer <token>` for a workload-identity JWT, after checking that it is
/// one (a `pp_` token here is a configuration mistake worth naming).
fn identity_header(token: &str, what: &str) -> Result<MetadataValue<Ascii>, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Configuration(format!("{what} is empty")));
    }
    if token.starts_with("pp_") {
        return Err(Error::Configuration(format!(
            "{what} holds a pullpass access token, not a workload-identity JWT: give it as the access token instead"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts[..2].iter().any(|p| p.is_empty()) {
        return Err(Error::Configuration(format!("{what} is not a JWT (three parts separated by dots)")));
    }
    let header = Zeroizing::new(format!("Bearer {token}"));
    MetadataValue::try_from(header.as_str())
        .map_err(|_| Error::Configuration(format!("{what} has characters not allowed in a header")))
}

/// An identity token file: read again when its length, modification time
/// or inode changes, or a second after the last read.
pub(crate) struct TokenFile {
    path: PathBuf,
    last: Mutex<Option<FileRead>>,
}

struct FileRead {
    stamp: Stamp,
    at: Instant,
    header: MetadataValue<Ascii>,
}

/// What tells one version of a file from the next without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let inode = (0, 0);
        Stamp { len: metadata.len(), modified: metadata.modified().ok(), inode }
    }
}

impl TokenFile {
    fn open(path: &Path) -> Result<Self, Error> {
        let file = TokenFile { path: path.to_owned(), last: Mutex::new(None) };
        file.header()?;
        Ok(file)
    }

    fn what(&self) -> String {
        format!("identity token file {}", self.path.display())
    }

    fn header(&self) -> Result<MetadataValue<Ascii>, Error> {
        let unreadable = |e: std::io::Error| Error::Configuration(format!("{}: {e}", self.what()));
        // Follows symbolic links: a projected volume swaps a `..data` link.
        let stamp = Stamp::of(&std::fs::metadata(&self.path).map_err(unreadable)?);
        {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(read) = last.as_ref()
                && read.stamp == stamp
                && read.at.elapsed() < REREAD_AFTER
            {
                return Ok(read.header.clone());
            }
        }
        let at = Instant::now();
        let text = Zeroizing::new(std::fs::read_to_string(&self.path).map_err(unreadable)?);
        if text.trim().is_empty() {
            // A writer that truncates before it writes: keep presenting the
            // last token until the new one is there (read again next call).
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(read) = last.as_ref() {
                return Ok(read.header.clone());
            }
        }
        let header = identity_header(&text, &self.what())?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(FileRead { stamp, at, header: header.clone() });
        Ok(header)
    }
}

/// A token fetched over HTTP (the GitHub Actions job token), kept with its
/// expiry and fetched again before it runs out.
pub(crate) struct FetchedToken {
    /// The request URL, audience included. Never shown: only `origin` is.
    url: reqwest::Url,
    origin: String,
    request_token: Zeroizing<String>,
    http: reqwest::Client,
    current: Mutex<Option<Current>>,
    /// One fetch at a time; the others wait for it and take its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Current {
    header: MetadataValue<Ascii>,
    /// Its `iat`, else when it was fetched.
    issued: SystemTime,
    expires: SystemTime,
}

impl Current {
    /// When to fetch again: a minute before it expires, or halfway through
    /// the life of a token living less than two minutes (so a short-lived
    /// token is not fetched again for every call).
    fn refresh_at(&self) -> SystemTime {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        self.expires.checked_sub(REFRESH_BEFORE.min(life / 2)).unwrap_or(self.expires)
    }
}

impl fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedToken").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl FetchedToken {
    /// The GitHub Actions job token for `audience`, from the runner's
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    fn github_actions_from_env(audience: &str) -> Result<Self, Error> {
        let missing = |name: &str| {
            Error::Configuration(format!(
                "{name} is not set: the GitHub Actions identity token is only available in a job with \
                 `permissions: id-token: write`"
            ))
        };
        let url = std::env::var(ACTIONS_URL_ENV).ok().filter(|u| !u.trim().is_empty());
        let url = url.ok_or_else(|| missing(ACTIONS_URL_ENV))?;
        let token = Zeroizing::new(std::env::var(ACTIONS_TOKEN_ENV).unwrap_or_default());
        if token.trim().is_empty() {
            return Err(missing(ACTIONS_TOKEN_ENV));
        }
        Self::github_actions(&url, Zeroizing::new(token.trim().to_owned()), audience)
    }

    /// The GitHub Actions protocol: `GET {url}&audience={audience}` with
    /// `Authorization: Bearer {request_token}`, answered `{"value": JWT}`.
    pub(crate) fn github_actions(url: &str, request_token: Zeroizing<String>, audience: &str) -> Result<Self, Error> {
        let mut url = reqwest::Url::parse(url.trim())
            .map_err(|e| Error::Configuration(format!("{ACTIONS_URL_ENV} is not a URL ({e})")))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(Error::Configuration(format!(
                    "{ACTIONS_URL_ENV} must be an https:// URL (plain http only on loopback), so the request token \
                     is never sent in clear"
                )));
            }
        }
        if audience.trim().is_empty() {
            return Err(Error::Configuration("the identity token's audience is empty".into()));
        }
        url.query_pairs_mut().append_pair("audience", audience.trim());
        let origin = url.origin().ascii_serialization();
        Ok(FetchedToken {
            url,
            origin,
            request_token,
            http: http_client()?,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Option<Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current token, even one past its refresh time (the refresh is
    /// the task's and `prepare`'s job); none or an expired one refuses.
    fn header(&self) -> Result<MetadataValue<Ascii>, tonic::Status> {
        match self.current() {
            Some(current) if current.expires > SystemTime::now() => Ok(current.header),
            Some(_) => Err(tonic::Status::unauthenticated(
                "the GitHub Actions identity token expired and could not be fetched again",
            )),
            None => Err(tonic::Status::unauthenticated("no GitHub Actions identity token was fetched")),
        }
    }

    /// Fetches a token when there is none or it is due for refresh. A
    /// failed fetch is an error only if no unexpired token is left.
    pub(crate) async fn fresh(&self) -> Result<(), Error> {
        if self.current().is_some_and(|c| c.refresh_at() > SystemTime::now()) {
            return Ok(());
        }
        let _one = self.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        let current = self.current();
        if current.as_ref().is_some_and(|c| c.refresh_at() > SystemTime::now()) {
            return Ok(());
        }
        match self.fetch().await {
            Ok(fetched) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fetched);
                Ok(())
            }
            Err(_) if current.is_some_and(|c| c.expires > SystemTime::now()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How long until the next refresh is due.
    fn until_refresh(&self) -> Duration {
        match self.current() {
            Some(current) => current.refresh_at().duration_since(SystemTime::now()).unwrap_or_default(),
            None => Duration::ZERO,
        }
    }

    async fn fetch(&self) -> Result<Current, Error> {
        let from = &self.origin;
        let unreachable = |e: reqwest::Error| Error::Unavailable {
            reason: None,
            message: format!("the GitHub Actions token endpoint {from}: {}", error_chain(&e.without_url())),
        };
        let authorization = Zeroizing::new(format!("Bearer {}", self.request_token.as_str()));
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::AUTHORIZATION, authorization.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::Unauthenticated(format!(
                "the GitHub Actions token endpoint {from} refused the request token (HTTP {}): \
                 is {ACTIONS_TOKEN_ENV} this job's, and does the job have `permissions: id-token: write`?",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(Error::Unavailable {
                reason: None,
                message: format!("the GitHub Actions token endpoint {from} answered HTTP {}", status.as_u16()),
            });
        }
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Error::Unavailable {
                    reason: None,
                    message: format!("the GitHub Actions token endpoint {from} answered more than {MAX_ANSWER} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let not_a_token = || Error::Unavailable {
            reason: None,
            message: format!(
                "the GitHub Actions token endpoint {from} did not answer JSON with a JWT `value` that has an `exp`"
            ),
        };
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| not_a_token())?;
        let token = Zeroizing::new(answer.get("value").and_then(|v| v.as_str()).ok_or_else(not_a_token)?.to_owned());
        let (expires, issued) = lifetime(&token).ok_or_else(not_a_token)?;
        let header = identity_header(&token, "the GitHub Actions identity token").map_err(|_| not_a_token())?;
        Ok(Current { header, issued: issued.unwrap_or_else(SystemTime::now), expires })
    }
}

/// A JWT's `exp` and, if it has one, `iat`, read without verifying
/// anything (the server verifies; this is only to know when to fetch a new
/// one).
fn lifetime(token: &str) -> Option<(SystemTime, Option<SystemTime>)> {
    let payload = token.split('.').nth(1)?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=').as_bytes()).ok()?,
    );
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let time = |name: &str| {
        let seconds = claims.get(name)?.as_f64()?;
        (seconds.is_finite() && seconds > 0.0 && seconds < 1e12)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
    };
    Some((time("exp")?, time("iat")))
}

/// Keeps a fetched token fresh in the background, for calls made through
/// the generated clients directly (the SDK's own calls also refresh before
/// sending). Ends once the client is gone.
fn spawn_refresher(token: &Arc<FetchedToken>) {
    let weak = Arc::downgrade(token);
    tokio::spawn(async move {
        let mut wait = weak.upgrade().map(|t| t.until_refresh()).unwrap_or_default();
        loop {
            tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
            let Some(token) = weak.upgrade() else { return };
            // A refresh that failed while the old token still lives leaves
            // it due: try again a little later, not at once.
            wait = match token.fresh().await {
                Ok(()) => Some(token.until_refresh()).filter(|w| !w.is_zero()).unwrap_or(RETRY_AFTER),
                Err(_) => RETRY_AFTER,
            };
        }
    });
}

fn http_client() -> Result<reqwest::Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Configuration(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // The request token must not follow a redirect anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(FETCH_CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("pullpass-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Configuration(format!("HTTP client: {}", error_chain(&e))))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An unsigned JWT-shaped token (only its claims matter on this side).
    fn jwt(claims: serde_json::Value) -> String {
        let encode = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2lnbmF0dXJl", encode(&serde_json::json!({"alg": "RS256", "typ": "JWT"})), encode(&claims))
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    fn sent(header: &MetadataValue<Ascii>) -> String {
        header.to_str().unwrap().trim_start_matches("Bearer ").to_owned()
    }

    #[test]
    fn a_rotated_token_file_is_presented_from_the_next_call_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let first = jwt(serde_json::json!({"sub": "first", "exp": now() + 3600}));
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(sent(&file.header().unwrap()), first);

        // Swapped as a projected volume does it: a new file renamed over.
        let second = jwt(serde_json::json!({"sub": "secon", "exp": now() + 3600}));
        std::fs::write(dir.path().join("next"), &second).unwrap();
        std::fs::rename(dir.path().join("next"), &path).unwrap();
        assert_eq!(sent(&file.header().unwrap()), second, "a new inode is read at once");

        // Rewritten in place with the same length: read within a second or so.
        let third = jwt(serde_json::json!({"sub": "third", "exp": now() + 3600}));
        assert_eq!(third.len(), second.len());
        std::fs::write(&path, &third).unwrap();
        let deadline = Instant::now() + REREAD_AFTER * 3;
        while sent(&file.header().unwrap()) != third {
            assert!(Instant::now() < deadline, "the rewritten file was not read again");
            std::thread::sleep(Duration::from_millis(20));
        }

        // Truncated by a writer that has not written yet: the last token.
        std::fs::write(&path, "").unwrap();
        assert_eq!(sent(&file.header().unwrap()), third);

        std::fs::remove_file(&path).unwrap();
        let gone = file.header().unwrap_err().to_string();
        assert!(gone.contains("identity token file") && !gone.contains(&third), "{gone}");
    }

    #[test]
    fn what_is_not_a_jwt_is_refused_without_being_shown() {
        for (token, says) in [
            ("", "is empty"),
            ("pp_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "pullpass access token"),
            ("not-a-jwt-secret", "not a JWT"),
            ("a.b.c\u{7}", "not allowed in a header"),
        ] {
            let refused = identity_header(token, "the identity token").unwrap_err().to_string();
            assert!(refused.contains(says), "{refused}");
            assert!(token.is_empty() || !refused.contains(token), "{refused}");
        }
    }

    #[test]
    fn exp_and_iat_are_read_from_the_claims_and_bad_ones_are_none() {
        let (exp, iat) = lifetime(&jwt(serde_json::json!({"exp": 2_000_000_000u64, "iat": 1_999_999_000u64}))).unwrap();
        assert_eq!(exp, SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        assert_eq!(iat, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_999_999_000)));
        assert!(lifetime(&jwt(serde_json::json!({"exp": "2000000000"}))).is_none());
        assert!(lifetime(&jwt(serde_json::json!({"sub": "x"}))).is_none());
        assert!(lifetime("a.!!!.c").is_none());
    }

    /// A runner's token endpoint: answers each request with the next token
    /// of `tokens` (the last one again when they run out), and only when the
    /// request token and an audience are right.
    struct Endpoint {
        url: String,
        fetches: Arc<AtomicU64>,
        audiences: Arc<Mutex<Vec<String>>>,
    }

    async fn endpoint(tokens: Vec<String>) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/idtoken?api-version=2.0", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicU64::new(0));
        let audiences = Arc::new(Mutex::new(Vec::new()));
        let (counted, heard) = (Arc::clone(&fetches), Arc::clone(&audiences));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let authorized = head.lines().any(|l| l.eq_ignore_ascii_case("authorization: Bearer request-secret"));
                let audience = target.split("audience=").nth(1).map(|a| a.split('&').next().unwrap_or("").to_owned());
                let answer = match (authorized, audience) {
                    (true, Some(audience)) => {
                        let n = counted.fetch_add(1, Ordering::SeqCst) as usize;
                        heard.lock().unwrap().push(audience);
                        let token = &tokens[n.min(tokens.len() - 1)];
                        let body = serde_json::json!({"count": 1, "value": token}).to_string();
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                    }
                    _ => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_owned(),
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        Endpoint { url, fetches, audiences }
    }

    #[tokio::test]
    async fn a_github_actions_token_is_fetched_for_its_audience_and_again_only_when_it_nears_expiry() {
        let expiring = jwt(serde_json::json!({"sub": "repo:acme/app", "iat": now() - 3000, "exp": now() + 30}));
        let lasting = jwt(serde_json::json!({"sub": "repo:acme/app", "iat": now(), "exp": now() + 600}));
        let runner = endpoint(vec![expiring.clone(), lasting.clone()]).await;
        let token =
            FetchedToken::github_actions(&runner.url, Zeroizing::new("request-secret".into()), "pull pass/ci").unwrap();
        token.fresh().await.unwrap();
        assert_eq!(sent(&token.header().unwrap()), expiring);
        // 30 s left, under a minute: the next call fetches again.
        token.fresh().await.unwrap();
        assert_eq!(sent(&token.header().unwrap()), lasting);
        token.fresh().await.unwrap();
        token.fresh().await.unwrap();
        assert_eq!(runner.fetches.load(Ordering::SeqCst), 2, "a token with ten minutes left is kept");
        assert_eq!(*runner.audiences.lock().unwrap(), ["pull+pass%2Fci", "pull+pass%2Fci"], "URL-encoded");
        assert!(!format!("{token:?}").contains("request-secret"));
    }

    #[tokio::test]
    async fn a_refused_request_token_is_unauthenticated_and_never_shown() {
        let runner = endpoint(vec![jwt(serde_json::json!({"exp": now() + 600}))]).await;
        let token =
            FetchedToken::github_actions(&runner.url, Zeroizing::new("wrong-secret".into()), "pullpass").unwrap();
        let refused = token.fresh().await.unwrap_err();
        assert!(matches!(refused, Error::Unauthenticated(_)), "{refused:?}");
        let text = refused.to_string();
        assert!(text.contains("HTTP 401") && !text.contains("wrong-secret") && !text.contains("idtoken"), "{text}");
        assert!(token.header().is_err(), "no token to present");
    }

    #[test]
    fn the_request_token_is_never_sent_in_clear_off_loopback() {
        let secret = || Zeroizing::new("request-secret".to_owned());
        let refused =
            FetchedToken::github_actions("http://runner.example/idtoken?x=1", secret(), "pullpass").unwrap_err();
        assert!(refused.to_string().contains("https://"), "{refused}");
        assert!(FetchedToken::github_actions("https://runner.example/idtoken?x=1", secret(), "pullpass").is_ok());
        assert!(FetchedToken::github_actions("http://[::1]:8080/idtoken", secret(), "pullpass").is_ok());
        assert!(FetchedToken::github_actions("not a url", secret(), "pullpass").is_err());
    }
}
