//! A personal access token's own expiry, learned from the registry's owner
//! when a credential is tested. Two sources document it:
//! * **GitHub** (GHCR): every REST API answer to a request authenticated
//!   with a personal access token that expires carries
//!   `GitHub-Authentication-Token-Expiration: 2027-01-31 09:00:00 UTC`.
//! * **GitLab**: `GET /api/v4/personal_access_tokens/self` answers the
//!   token's own record, with `expires_at` (a date, or null).
//!
//! The token goes only to the API of the registry's owner: api.github.com
//! for GHCR (always ghcr.io; `--github-api-url` is an operator's endpoint
//! override, trusted like `--entra-authority-host`), and, for GITLAB, the
//! instance its registry is on (`--gitlab-api-url`, default gitlab.com for
//! registry.gitlab.com), over https unless the host is an
//! `--insecure-registry`. Never through a redirect; the header is marked
//! sensitive.
//! Any failure only means the expiry stays unknown: the test's outcome is
//! the registry's.

use std::time::Instant;

use reqwest::Url;

use super::Upstream;
use crate::domain::{Credential, Provider, Timestamp};
use crate::metrics::UpstreamKind;
use crate::secret::SecretBytes;

/// GitHub's public REST API.
pub const GITHUB_API: &str = "https://api.github.com";
/// gitlab.com.
pub const GITLAB_API: &str = "https://gitlab.com";

/// The expiry the registry's owner reports for the credential's secret, if
/// it reports one (None also when it could not be asked).
pub async fn learn(
    upstream: &Upstream,
    credential: &Credential,
    secret: &SecretBytes,
    deadline: Instant,
) -> Option<Timestamp> {
    let token = secret.expose_str()?;
    if token.is_empty() || !credential.secret_set() {
        return None;
    }
    let clouds = &upstream.config().clouds;
    let host = credential.registry.host().as_str();
    match credential.provider {
        Provider::Ghcr => {
            if host != "ghcr.io" {
                return None;
            }
            let api = clouds.github_api.as_deref().unwrap_or(GITHUB_API);
            let url = Url::parse(&format!("{api}/user")).ok()?;
            let bearer = zeroize::Zeroizing::new(format!("Bearer {token}"));
            let reply = get(upstream, &url, &[("authorization", bearer.as_str())], deadline).await?;
            let header = reply.headers.get("github-authentication-token-expiration")?.to_str().ok()?;
            github_expiry(header)
        }
        Provider::Gitlab => {
            let api = clouds.gitlab_apis.iter().find(|api| on_instance(host, api))?;
            let url = Url::parse(&format!("{api}/api/v4/personal_access_tokens/self")).ok()?;
            let reply = get(upstream, &url, &[("private-token", token)], deadline).await?;
            if !reply.status.is_success() {
                return None;
            }
            #[derive(serde::Deserialize)]
            struct Record {
                expires_at: Option<String>,
            }
            let record: Record = serde_json::from_slice(&reply.body).ok()?;
            gitlab_expiry(&record.expires_at?)
        }
        _ => None,
    }
}

/// Is a registry on `host` (`host[:port]`) part of the GitLab instance at
/// `api`: the same host on any port (`gitlab.example.com:5050`), or
/// `registry.` + its host (`registry.gitlab.com` for gitlab.com)?
fn on_instance(host: &str, api: &str) -> bool {
    let Some(instance) = Url::parse(api).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)) else {
        return false;
    };
    let instance = instance.trim_start_matches('[').trim_end_matches(']');
    let registry = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    }
    .to_ascii_lowercase();
    registry == instance || registry.strip_prefix("registry.") == Some(instance)
}

/// One GET with the public roots (and no redirect: the HTTP clients never
/// follow one), if the transport policy allows the URL.
async fn get(
    upstream: &Upstream,
    url: &Url,
    headers: &[(&str, &str)],
    deadline: Instant,
) -> Option<super::http::Reply> {
    upstream.config().realm.check_transport(url).ok()?;
    let client = upstream.http().client_for("").ok()?;
    let build = || {
        let mut request = client
            .get(url.clone())
            .header("accept", "application/json")
            .header("user-agent", concat!("pullpass/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            if let Ok(mut value) = reqwest::header::HeaderValue::from_str(value) {
                value.set_sensitive(true);
                request = request.header(*name, value);
            }
        }
        request
    };
    match upstream.http().send(UpstreamKind::TokenExpiry, build, deadline).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::info!(error = ?e, "could not ask when the tested token expires");
            None
        }
    }
}

/// `2027-01-31 09:00:00 UTC` (or with a numeric offset, `-0700`).
fn github_expiry(header: &str) -> Option<Timestamp> {
    let (date, rest) = header.trim().split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let offset = match zone {
        "UTC" | "GMT" | "Z" => "Z".to_owned(),
        z if z.len() == 5
            && (z.starts_with('+') || z.starts_with('-'))
            && z[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{}:{}", &z[..3], &z[3..])
        }
        _ => return None,
    };
    Timestamp::parse_rfc3339(&format!("{date}T{time}{offset}"))
}

/// `2027-01-31`: the token stops working that day (start of day, UTC).
fn gitlab_expiry(date: &str) -> Option<Timestamp> {
    (date.len() == 10).then(|| Timestamp::parse_rfc3339(&format!("{date}T00:00:00Z"))).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's REST API as its docs describe it, for one token: `GET
    /// /user` answers with the expiry header. Returns its address and the
    /// `Authorization` headers it saw.
    fn github_fixture(token: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut first, mut authorization) = (String::new(), String::new());
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("authorization:") {
                        authorization = line[line.len() - value.len()..].trim().to_owned();
                    }
                }
                log.lock().unwrap().push(authorization.clone());
                let ok = first.starts_with("GET /user ") && authorization == format!("Bearer {token}");
                let answer = if ok {
                    "HTTP/1.1 200 OK\r\ngithub-authentication-token-expiration: 2027-01-31 09:00:00 UTC\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (address, seen)
    }

    fn upstream_with_github(address: &str) -> Upstream {
        let mut config = crate::upstream::UpstreamConfig::default();
        config.clouds.github_api = Some(format!("http://{address}"));
        config.realm.insecure.push(pullpass::registry::RegistryHost::parse(address).unwrap());
        Upstream::new(config).unwrap()
    }

    fn ghcr(secret_version: u64) -> Credential {
        let mut credential = crate::broker::choose::tests::stored("ghcr", "ghcr.io", &[]).credential.clone();
        credential.provider = Provider::Ghcr;
        credential.secret_version = secret_version;
        credential
    }

    #[tokio::test]
    async fn a_ghcr_tokens_expiry_comes_from_githubs_api_and_only_its_own_token_is_sent() {
        let (address, seen) = github_fixture("ghp_fixture");
        let upstream = upstream_with_github(&address);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let learned = learn(&upstream, &ghcr(1), &SecretBytes::from_string("ghp_fixture".into()), deadline).await;
        assert_eq!(learned.map(Timestamp::to_rfc3339).as_deref(), Some("2027-01-31T09:00:00Z"));
        // A token GitHub refuses, and a keyless credential: nothing learned.
        assert_eq!(learn(&upstream, &ghcr(1), &SecretBytes::from_string("ghp_other".into()), deadline).await, None);
        assert_eq!(learn(&upstream, &ghcr(0), &SecretBytes::from_string("ghp_fixture".into()), deadline).await, None);
        assert_eq!(*seen.lock().unwrap(), ["Bearer ghp_fixture", "Bearer ghp_other"]);
    }

    #[tokio::test]
    async fn githubs_api_over_plain_http_is_refused_unless_its_host_is_an_insecure_registry() {
        let (address, seen) = github_fixture("ghp_fixture");
        let mut config = crate::upstream::UpstreamConfig::default();
        config.clouds.github_api = Some(format!("http://{address}"));
        let upstream = Upstream::new(config).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        assert_eq!(learn(&upstream, &ghcr(1), &SecretBytes::from_string("ghp_fixture".into()), deadline).await, None);
        assert!(seen.lock().unwrap().is_empty(), "the token was sent over plain http");
    }

    #[test]
    fn githubs_expiry_header_is_read_in_utc_or_with_an_offset_and_anything_else_is_none() {
        let utc = github_expiry("2027-01-31 09:00:00 UTC").unwrap();
        assert_eq!(utc.to_rfc3339(), "2027-01-31T09:00:00Z");
        assert_eq!(github_expiry("2027-01-31 02:00:00 -0700"), Some(utc));
        for bad in ["", "2027-01-31", "2027-01-31T09:00:00Z", "2027-01-31 09:00:00 PST", "soon"] {
            assert_eq!(github_expiry(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_gitlab_token_goes_only_to_the_instance_its_registry_is_on() {
        assert!(on_instance("registry.gitlab.com", GITLAB_API));
        assert!(on_instance("gitlab.example.com:5050", "https://gitlab.example.com"));
        assert!(on_instance("registry.gitlab.example.com", "https://gitlab.example.com/"));
        assert!(on_instance("127.0.0.1:5000", "http://127.0.0.1:8080"));
        for (host, api) in [
            ("registry.example.org", "https://gitlab.example.com"),
            ("gitlab.com", "https://evil.example"),
            ("registry.gitlab.com.evil.example", GITLAB_API),
            ("notregistry.gitlab.com", GITLAB_API),
            ("registry.gitlab.com", "https://registry.gitlab.com.evil.example"),
        ] {
            assert!(!on_instance(host, api), "{host} → {api}");
        }
    }

    #[test]
    fn gitlabs_expires_at_is_the_start_of_that_day_utc() {
        assert_eq!(gitlab_expiry("2027-01-31").unwrap().to_rfc3339(), "2027-01-31T00:00:00Z");
        assert_eq!(gitlab_expiry("2027-01-31T00:00:00Z"), None);
        assert_eq!(gitlab_expiry(""), None);
    }
}
