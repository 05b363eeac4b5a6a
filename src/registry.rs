//! The registry-server grammar: `host[:port][/namespace/path]`.
//!
//! Users paste registry addresses from many places (`https://index.docker.io/v1/`
//! from a docker config, `ghcr.io`, `registry.example.com:5000/team`). This
//! module parses them once into a [`RegistryServer`], records every rewrite
//! it made so the caller can be told, and rejects the rest with an error that
//! names what is wrong.

use std::fmt;

/// The host names that all mean Docker Hub; they fold to [`DOCKER_HUB_HOST`].
pub const DOCKER_HUB_ALIASES: &[&str] =
    &["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// The canonical host of Docker Hub in references and credentials.
pub const DOCKER_HUB_HOST: &str = "docker.io";

/// Longest registry server accepted, in bytes.
pub const MAX_REGISTRY_SERVER_LEN: usize = 512;

/// A registry host with optional port, lowercase, such as `ghcr.io` or
/// `127.0.0.1:5000` or `[::1]:5000`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost(String);

impl RegistryHost {
    /// Parses `host[:port]` strictly (no scheme, no path, no folding).
    pub fn parse(input: &str) -> Result<Self, RegistryServerError> {
        parse_authority(input)
    }

    /// The host and port as written, such as `ghcr.io` or `localhost:5000`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host without port (IPv6 literals keep their brackets).
    pub fn hostname(&self) -> &str {
        match self.port_separator() {
            Some(at) => &self.0[..at],
            None => &self.0,
        }
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port_separator().and_then(|at| self.0[at + 1..].parse().ok())
    }

    /// Is this Docker Hub (`docker.io` after folding)?
    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB_HOST
    }

    fn port_separator(&self) -> Option<usize> {
        let after_bracket = self.0.rfind(']').map_or(0, |at| at + 1);
        self.0[after_bracket..].rfind(':').map(|at| at + after_bracket)
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryHost({})", self.0)
    }
}

/// A registry a credential serves: a host and an optional namespace path
/// that limits it to the repositories under that path.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryServer {
    host: RegistryHost,
    namespace: Option<String>,
}

/// A parsed registry server and the rewrites that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRegistryServer {
    /// The normalized server.
    pub server: RegistryServer,
    /// Human-readable notes, one per rewrite (removed scheme, folded alias…).
    pub normalizations: Vec<String>,
}

impl RegistryServer {
    /// Builds a server from an already-parsed host and namespace.
    pub fn new(host: RegistryHost, namespace: Option<String>) -> Result<Self, RegistryServerError> {
        if let Some(path) = &namespace {
            validate_namespace(path)?;
        }
        Ok(Self { host, namespace })
    }

    /// Parses user input, normalizing what can be normalized safely.
    pub fn parse(input: &str) -> Result<ParsedRegistryServer, RegistryServerError> {
        parse_registry_server(input)
    }

    /// The host (and port).
    pub fn host(&self) -> &RegistryHost {
        &self.host
    }

    /// The namespace path, such as `team` or `acme/tools`, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Number of path components of the namespace (0 without one); a longer
    /// namespace is a more specific match.
    pub fn namespace_depth(&self) -> usize {
        self.namespace.as_deref().map_or(0, |ns| ns.split('/').count())
    }

    /// Does this server cover `repository` on `host` (same host, and the
    /// repository equals the namespace or lies under it)?
    pub fn serves(&self, host: &RegistryHost, repository: &str) -> bool {
        if &self.host != host {
            return false;
        }
        match &self.namespace {
            None => true,
            Some(ns) => {
                repository == ns
                    || (repository.len() > ns.len()
                        && repository.starts_with(ns.as_str())
                        && repository.as_bytes()[ns.len()] == b'/')
            }
        }
    }
}

impl fmt::Display for RegistryServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}", self.host, ns),
            None => write!(f, "{}", self.host),
        }
    }
}

impl fmt::Debug for RegistryServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryServer({self})")
    }
}

/// Why a registry server (or host) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryServerError {
    /// Nothing was given.
    Empty,
    /// Longer than [`MAX_REGISTRY_SERVER_LEN`].
    TooLong,
    /// Contains a space, tab or other whitespace.
    Whitespace,
    /// A scheme other than `http://` or `https://`.
    UnsupportedScheme(String),
    /// `user@host` or `user:password@host`.
    UserInfo,
    /// A `?query`.
    Query,
    /// A `#fragment`.
    Fragment,
    /// No host before the port or path.
    EmptyHost,
    /// `a..b`, a leading or a trailing dot.
    EmptyLabel,
    /// A host label with characters other than letters, digits and `-`, longer
    /// than 63 characters, or starting/ending with `-`.
    BadHostLabel(String),
    /// A malformed `[IPv6]` literal.
    BadIpv6,
    /// A port that is not a number from 1 to 65535.
    BadPort(String),
    /// A namespace path component outside the distribution grammar.
    BadNamespace(String),
}

impl fmt::Display for RegistryServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty; expected host[:port][/namespace]"),
            Self::TooLong => write!(f, "is longer than {MAX_REGISTRY_SERVER_LEN} bytes"),
            Self::Whitespace => f.write_str("contains whitespace"),
            Self::UnsupportedScheme(s) => {
                write!(f, "has scheme `{s}://`; only https:// or http:// may be given (and are removed)")
            }
            Self::UserInfo => {
                f.write_str("contains user-info (`user@`); put the user name in `username` and the secret in `secret`")
            }
            Self::Query => f.write_str("contains a query (`?`)"),
            Self::Fragment => f.write_str("contains a fragment (`#`)"),
            Self::EmptyHost => f.write_str("has no host"),
            Self::EmptyLabel => f.write_str("has an empty host label (`..`, or a leading or trailing `.`)"),
            Self::BadHostLabel(l) => write!(
                f,
                "has host label `{l}`; labels are 1-63 letters, digits and `-`, not starting or ending with `-`"
            ),
            Self::BadIpv6 => f.write_str("has a malformed [IPv6] address"),
            Self::BadPort(p) => write!(f, "has port `{p}`; expected a number from 1 to 65535"),
            Self::BadNamespace(c) => write!(
                f,
                "has namespace component `{c}`; components are lowercase letters and digits separated by `.`, `_`, `__` or `-`"
            ),
        }
    }
}

impl std::error::Error for RegistryServerError {}

fn parse_registry_server(input: &str) -> Result<ParsedRegistryServer, RegistryServerError> {
    if input.is_empty() {
        return Err(RegistryServerError::Empty);
    }
    if input.len() > MAX_REGISTRY_SERVER_LEN {
        return Err(RegistryServerError::TooLong);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(RegistryServerError::Whitespace);
    }
    let mut normalizations = Vec::new();
    let mut rest = input;
    if let Some(at) = rest.find("://") {
        let scheme = &rest[..at];
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(RegistryServerError::UnsupportedScheme(scheme.to_owned()));
        }
        normalizations.push(format!("removed scheme `{}`", &rest[..at + 3]));
        rest = &rest[at + 3..];
    }
    if rest.contains('#') {
        return Err(RegistryServerError::Fragment);
    }
    if rest.contains('?') {
        return Err(RegistryServerError::Query);
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let mut host = parse_authority(authority)?;
    if host.as_str() != authority {
        normalizations.push(format!("lowercased host `{authority}`"));
    }
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) && host.as_str() != DOCKER_HUB_HOST {
        normalizations.push(format!("`{}` is Docker Hub: stored as `{DOCKER_HUB_HOST}`", host.as_str()));
        host = RegistryHost(DOCKER_HUB_HOST.to_owned());
    }
    let namespace = normalize_path(path, &mut normalizations)?;
    Ok(ParsedRegistryServer { server: RegistryServer { host, namespace }, normalizations })
}

/// Removes a trailing `/` and trailing API-version segments (`v1`, `v2`),
/// then validates what is left as a namespace. Every such segment goes, so
/// the normal form never ends in one and parses back to itself.
fn normalize_path(path: &str, normalizations: &mut Vec<String>) -> Result<Option<String>, RegistryServerError> {
    let without_slash = path.strip_suffix('/').unwrap_or(path);
    let mut namespace = without_slash;
    while let Some((rest, version)) = strip_api_version(namespace) {
        normalizations.push(format!("removed trailing API path `/{version}/`"));
        namespace = rest;
    }
    if namespace.len() == without_slash.len() && without_slash.len() < path.len() {
        normalizations.push("removed trailing `/`".to_owned());
    }
    if namespace.is_empty() {
        return Ok(None);
    }
    validate_namespace(namespace)?;
    Ok(Some(namespace.to_owned()))
}

/// `v2` -> `("", "v2")`, `team/v1` -> `("team", "v1")`, anything else -> None.
fn strip_api_version(path: &str) -> Option<(&str, &'static str)> {
    ["v1", "v2"].into_iter().find_map(|version| {
        if path == version {
            Some(("", version))
        } else {
            path.strip_suffix(version).and_then(|rest| rest.strip_suffix('/')).map(|rest| (rest, version))
        }
    })
}

fn validate_namespace(path: &str) -> Result<(), RegistryServerError> {
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(RegistryServerError::BadNamespace(component.to_owned()));
        }
    }
    Ok(())
}

/// Distribution `path-component`: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if expect_alnum {
            if !alnum(bytes[i]) {
                return false;
            }
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            expect_alnum = false;
        } else {
            match bytes[i] {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if i < bytes.len() && bytes[i] == b'_' {
                        i += 1;
                    }
                }
                b'-' => {
                    while i < bytes.len() && bytes[i] == b'-' {
                        i += 1;
                    }
                }
                _ => return false,
            }
            expect_alnum = true;
        }
    }
    !bytes.is_empty() && !expect_alnum
}

/// Parses `host[:port]`, lowercasing the host.
fn parse_authority(authority: &str) -> Result<RegistryHost, RegistryServerError> {
    if authority.contains('@') {
        return Err(RegistryServerError::UserInfo);
    }
    if authority.is_empty() {
        return Err(RegistryServerError::EmptyHost);
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let end = inner.find(']').ok_or(RegistryServerError::BadIpv6)?;
        let address = &inner[..end];
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(RegistryServerError::BadIpv6);
        }
        let after = &inner[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(RegistryServerError::BadIpv6),
        };
        (format!("[{}]", address.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(RegistryServerError::EmptyHost);
        }
        validate_hostname(host)?;
        (host.to_ascii_lowercase(), port)
    };
    match port {
        None => Ok(RegistryHost(host)),
        Some(port) => {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
            if !valid {
                return Err(RegistryServerError::BadPort(port.to_owned()));
            }
            Ok(RegistryHost(format!("{host}:{}", port.parse::<u16>().unwrap_or_default())))
        }
    }
}

fn validate_hostname(host: &str) -> Result<(), RegistryServerError> {
    if host.len() > 253 {
        return Err(RegistryServerError::TooLong);
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(RegistryServerError::EmptyLabel);
        }
        let ok = label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(RegistryServerError::BadHostLabel(label.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> ParsedRegistryServer {
        RegistryServer::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn plain_hosts_ports_and_namespaces_parse_unchanged() {
        for input in ["ghcr.io", "registry.example.com:5000/team", "127.0.0.1:5000", "[::1]:5000/a/b", "localhost"] {
            let parsed = parse(input);
            assert_eq!(parsed.server.to_string(), input);
            assert!(parsed.normalizations.is_empty(), "{input}: {:?}", parsed.normalizations);
        }
    }

    #[test]
    fn schemes_and_api_suffixes_are_removed_and_reported() {
        let parsed = parse("https://index.docker.io/v1/");
        assert_eq!(parsed.server.to_string(), "docker.io");
        assert_eq!(parsed.normalizations.len(), 3, "{:?}", parsed.normalizations);
        let parsed = parse("http://registry.example.com:5000/team/v2/");
        assert_eq!(parsed.server.to_string(), "registry.example.com:5000/team");
        assert_eq!(parsed.normalizations.len(), 2);
        assert_eq!(parse("HTTPS://GHCR.io/").server.to_string(), "ghcr.io");
        // Found by the registry_server fuzz target: one pass left `/v1` behind.
        let parsed = parse("https://registry.example/team/v1/v1/");
        assert_eq!(parsed.server.to_string(), "registry.example/team");
        assert_eq!(parse(&parsed.server.to_string()).normalizations, Vec::<String>::new());
    }

    #[test]
    fn every_docker_hub_alias_folds_to_docker_io() {
        for alias in DOCKER_HUB_ALIASES {
            let parsed = parse(alias);
            assert!(parsed.server.host().is_docker_hub());
            assert_eq!(parsed.normalizations.is_empty(), *alias == "docker.io");
        }
        assert_eq!(parse("registry-1.docker.io/library").server.to_string(), "docker.io/library");
    }

    #[test]
    fn malformed_servers_are_rejected_with_the_reason() {
        use RegistryServerError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("ghcr .io", E::Whitespace),
            ("ghcr.io ", E::Whitespace),
            ("user:pw@ghcr.io", E::UserInfo),
            ("https://user@ghcr.io/", E::UserInfo),
            ("ghcr.io/?x=1", E::Query),
            ("ghcr.io/#top", E::Fragment),
            ("ghcr.io:0", E::BadPort("0".into())),
            ("ghcr.io:65536", E::BadPort("65536".into())),
            ("ghcr.io:", E::BadPort(String::new())),
            ("ghcr.io:50a", E::BadPort("50a".into())),
            ("ghcr..io", E::EmptyLabel),
            (".ghcr.io", E::EmptyLabel),
            ("ghcr.io.", E::EmptyLabel),
            ("-ghcr.io", E::BadHostLabel("-ghcr".into())),
            ("gh_cr.io", E::BadHostLabel("gh_cr".into())),
            ("ftp://ghcr.io", E::UnsupportedScheme("ftp".into())),
            (":5000", E::EmptyHost),
            ("[::1", E::BadIpv6),
            ("[zz]:5000", E::BadIpv6),
            ("ghcr.io/Team", E::BadNamespace("Team".into())),
            ("ghcr.io//team", E::BadNamespace(String::new())),
            ("a:b:c", E::BadPort("b:c".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(RegistryServer::parse(input).unwrap_err(), *expected, "{input}");
        }
    }

    #[test]
    fn namespaces_cover_exactly_the_repositories_under_them() {
        let server = parse("ghcr.io/acme").server;
        let host = RegistryHost::parse("ghcr.io").unwrap();
        assert!(server.serves(&host, "acme"));
        assert!(server.serves(&host, "acme/aligner"));
        assert!(!server.serves(&host, "acmeco/aligner"));
        assert!(!server.serves(&RegistryHost::parse("quay.io").unwrap(), "acme/aligner"));
        assert_eq!(server.namespace_depth(), 1);
    }

    #[test]
    fn host_ports_are_split_for_ipv4_names_and_ipv6() {
        assert_eq!(RegistryHost::parse("[::1]:5000").unwrap().port(), Some(5000));
        assert_eq!(RegistryHost::parse("[::1]").unwrap().port(), None);
        assert_eq!(RegistryHost::parse("[::1]").unwrap().hostname(), "[::1]");
        assert_eq!(RegistryHost::parse("localhost:80").unwrap().hostname(), "localhost");
    }

    #[test]
    fn path_components_follow_the_distribution_grammar() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a0-9"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["", "A", "a..b", "a___b", "-a", "a-", "a.", "_a"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }
}
