//! Where a secret may be sent: the realm policy.
//!
//! A credential's secret goes only to an origin the policy allows: the
//! registry's own origin, the provider's known realm hosts (Docker Hub's
//! `auth.docker.io`, GitLab.com's `gitlab.com`), or an origin in the
//! credential's `token_realm_allowlist`. Plain http is allowed only for hosts
//! on the server's `--insecure-registry` list. Link-local and cloud metadata
//! addresses are refused whatever the list says (see also
//! [`super::http::SafeResolver`], which applies the same rule after DNS).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pullpass::registry::RegistryHost;
use reqwest::Url;

use crate::domain::credential::{RealmOrigin, without_default_port};
use crate::domain::{Credential, Provider};

/// The server-wide part of the policy.
#[derive(Debug, Clone, Default)]
pub struct RealmPolicy {
    /// `host[:port]` entries reachable over plain http.
    pub insecure: Vec<RegistryHost>,
}

/// Why a URL may not receive a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not http(s), or not parseable.
    BadUrl(String),
    /// http to a host not on the insecure list.
    Plaintext(String),
    /// An origin the credential may not send its secret to.
    NotAllowed(String),
    /// A link-local or metadata address.
    Forbidden(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadUrl(url) => write!(f, "`{url}` is not an http(s) URL"),
            Self::Plaintext(origin) => {
                write!(f, "`{origin}` uses plain http; only hosts given to pullpassd with --insecure-registry may")
            }
            Self::NotAllowed(origin) => write!(
                f,
                "the token realm `{origin}` is not the registry's own origin nor a known realm of its provider; add it to the credential's token_realm_allowlist if it is trusted"
            ),
            Self::Forbidden(host) => write!(f, "`{host}` is a link-local or cloud metadata address"),
        }
    }
}

impl RealmPolicy {
    /// Is `host[:port]` reachable over plain http?
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h.as_str() == host)
    }

    /// The scheme to reach a registry host with.
    pub fn scheme_for(&self, host: &str) -> &'static str {
        if self.is_insecure(host) { "http" } else { "https" }
    }

    /// Checks that `url` may receive `credential`'s secret when the image's
    /// registry endpoint is `endpoint`.
    pub fn check(&self, credential: &Credential, endpoint: &str, url: &Url) -> Result<(), Refusal> {
        let origin = origin_of(url).ok_or_else(|| Refusal::BadUrl(url.to_string()))?;
        self.check_transport(url)?;
        let allowed = same_host(&origin, endpoint)
            || known_realms(credential).contains(&origin)
            || credential.token_realm_allowlist.contains(&origin);
        if allowed { Ok(()) } else { Err(Refusal::NotAllowed(origin.to_string())) }
    }

    /// Checks scheme and address of a URL, without the origin allow-list (for
    /// Google token URIs and ECR endpoints, which have their own lists).
    pub fn check_transport(&self, url: &Url) -> Result<(), Refusal> {
        let origin = origin_of(url).ok_or_else(|| Refusal::BadUrl(url.to_string()))?;
        if let Some(ip) = url.host_str().and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            && is_forbidden_address(ip)
        {
            return Err(Refusal::Forbidden(origin.host.to_string()));
        }
        if !origin.secure && !self.is_insecure(origin.host.as_str()) {
            return Err(Refusal::Plaintext(origin.to_string()));
        }
        Ok(())
    }
}

/// The `scheme://host[:port]` of a URL (default ports omitted).
pub fn origin_of(url: &Url) -> Option<RealmOrigin> {
    let secure = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let host = url.host_str()?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    RegistryHost::parse(&authority).ok().map(|host| RealmOrigin { secure, host })
}

/// Is `origin` on the registry endpoint `host[:port]` (a default port
/// written out or not)?
fn same_host(origin: &RealmOrigin, endpoint: &str) -> bool {
    origin.host.as_str() == endpoint
        || RegistryHost::parse(endpoint)
            .is_ok_and(|host| without_default_port(host, origin.secure).as_str() == origin.host.as_str())
}

/// Realm origins a provider is known to use.
fn known_realms(credential: &Credential) -> Vec<RealmOrigin> {
    let host = credential.registry.host().as_str();
    let https = |h: &str| RegistryHost::parse(h).ok().map(|host| RealmOrigin { secure: true, host });
    let known: &[&str] = match credential.provider {
        Provider::DockerHub => &["auth.docker.io"],
        Provider::Gitlab if host == "registry.gitlab.com" => &["gitlab.com"],
        _ => &[],
    };
    known.iter().filter_map(|h| https(h)).collect()
}

/// Link-local (169.254/16, fe80::/10) and well-known metadata addresses,
/// also when an IPv6 address embeds one (mapped, compatible, NAT64, 6to4).
pub fn is_forbidden_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 169 && o[1] == 254) || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || embedded_ipv4(v6).is_some_and(|v4| is_forbidden_address(IpAddr::V4(v4)))
        }
    }
}

/// The IPv4 address an IPv6 address carries: `::ffff:a.b.c.d` (mapped),
/// `::a.b.c.d` (compatible), `64:ff9b::a.b.c.d` (NAT64) or `2002:AABB:CCDD::`
/// (6to4).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CredentialId, CredentialName, CredentialUid, Timestamp, WorkspaceId};
    use pullpass::registry::RegistryServer;

    fn credential(provider: Provider, registry: &str, allow: &[&str]) -> Credential {
        Credential {
            name: CredentialName {
                workspace: WorkspaceId::parse("a").unwrap(),
                credential: CredentialId::parse("c").unwrap(),
            },
            uid: CredentialUid([0; 16]),
            provider,
            registry: RegistryServer::parse(registry).unwrap().server,
            username: "u".into(),
            secret_version: 1,
            settings: Default::default(),
            allowed_projects: vec![],
            allow_passthrough: false,
            token_realm_allowlist: allow.iter().map(|o| RealmOrigin::parse(o).unwrap()).collect(),
            ca_bundle_pem: String::new(),
            description: String::new(),
            create_time: Timestamp::from_micros(0),
            update_time: Timestamp::from_micros(0),
            last_used_time: None,
            expire_time: None,
            last_failure: None,
        }
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn own_origin_provider_realms_and_the_allow_list_pass() {
        let policy = RealmPolicy::default();
        let ghcr = credential(Provider::Ghcr, "ghcr.io", &[]);
        assert!(policy.check(&ghcr, "ghcr.io", &url("https://ghcr.io/token")).is_ok());
        let hub = credential(Provider::DockerHub, "docker.io", &[]);
        assert!(policy.check(&hub, "registry-1.docker.io", &url("https://auth.docker.io/token")).is_ok());
        let gitlab = credential(Provider::Gitlab, "registry.gitlab.com", &[]);
        assert!(policy.check(&gitlab, "registry.gitlab.com", &url("https://gitlab.com/jwt/auth")).is_ok());
        let own = credential(Provider::Generic, "r.example.com", &["https://auth.example.com"]);
        assert!(policy.check(&own, "r.example.com", &url("https://auth.example.com/token?x=1")).is_ok());
    }

    #[test]
    fn default_ports_written_out_or_not_are_the_same_origin() {
        let policy = RealmPolicy::default();
        let explicit = credential(Provider::Generic, "r.example.com:443", &["https://auth.example.com:443/"]);
        assert!(policy.check(&explicit, "r.example.com:443", &url("https://r.example.com/token")).is_ok());
        assert!(policy.check(&explicit, "r.example.com:443", &url("https://auth.example.com/token")).is_ok());
        assert!(policy.check(&explicit, "r.example.com", &url("https://r.example.com:443/token")).is_ok());
        assert_eq!(explicit.token_realm_allowlist[0].to_string(), "https://auth.example.com");
        // Another port is another origin.
        assert!(matches!(
            policy.check(&explicit, "r.example.com:443", &url("https://r.example.com:8443/token")),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(matches!(
            policy.check(&explicit, "r.example.com:80", &url("https://r.example.com/token")),
            Err(Refusal::NotAllowed(_))
        ));
    }

    #[test]
    fn other_origins_plaintext_and_metadata_addresses_are_refused() {
        let policy = RealmPolicy { insecure: vec![RegistryHost::parse("127.0.0.1:5000").unwrap()] };
        let c = credential(Provider::Generic, "r.example.com", &["https://auth.example.com"]);
        assert!(matches!(
            policy.check(&c, "r.example.com", &url("https://evil.example.com/t")),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(matches!(
            policy.check(&c, "r.example.com", &url("https://auth.example.com:8443/t")),
            Err(Refusal::NotAllowed(_))
        ));
        assert!(matches!(
            policy.check(&c, "r.example.com", &url("http://r.example.com/t")),
            Err(Refusal::Plaintext(_))
        ));
        assert!(matches!(
            policy.check(&c, "r.example.com", &url("https://u:p@r.example.com/t")),
            Err(Refusal::BadUrl(_))
        ));
        let local = credential(Provider::Generic, "127.0.0.1:5000", &["http://169.254.169.254"]);
        assert!(policy.check(&local, "127.0.0.1:5000", &url("http://127.0.0.1:5000/token")).is_ok());
        assert!(matches!(
            policy.check(&local, "127.0.0.1:5000", &url("http://169.254.169.254/token")),
            Err(Refusal::Forbidden(_))
        ));
        let forbidden = [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.1.1",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "100.100.100.200",
            "::ffff:100.100.100.200",
        ];
        for address in forbidden {
            assert!(is_forbidden_address(address.parse().unwrap()), "{address}");
        }
        for address in ["127.0.0.1", "10.0.0.1", "::1", "8.8.8.8", "2002:0808:0808::1", "64:ff9b::808:808"] {
            assert!(!is_forbidden_address(address.parse().unwrap()), "{address}");
        }
    }
}
