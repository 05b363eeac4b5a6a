//! Image references in the distribution grammar, normalized the way the
//! docker CLI does it.
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path
//! domain      := host [ ":" port ]          (a name with `.` or `:`, or `localhost`,
//!                                            or with uppercase letters)
//! path        := component ( "/" component )*   component := [a-z0-9]+ ( sep [a-z0-9]+ )*
//! tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest      := algorithm ":" hex          (sha256: 64 hex, sha512: 128 hex)
//! ```
//!
//! `ubuntu` is `docker.io/library/ubuntu:latest`; Docker Hub's aliases fold to
//! `docker.io`, whose API endpoint is `registry-1.docker.io`. A reference
//! without tag or digest gets the tag `latest`.

use std::fmt;

use crate::registry::{DOCKER_HUB_ALIASES, DOCKER_HUB_HOST, RegistryHost, is_path_component};

/// The API host of Docker Hub (`docker.io` is only a name).
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// Longest accepted name (domain and path), as in distribution.
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted reference as a whole.
pub const MAX_REFERENCE_LEN: usize = 1024;

/// A parsed, normalized image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: RegistryHost,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Nothing was given.
    Empty,
    /// Longer than [`MAX_REFERENCE_LEN`] or the name longer than [`MAX_NAME_LEN`].
    TooLong,
    /// The repository path has uppercase letters.
    Uppercase,
    /// A path component outside the grammar.
    BadComponent(String),
    /// The domain is not a host name, IP literal or `host:port`.
    BadDomain(String),
    /// The tag is outside `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    BadTag(String),
    /// The digest is not `algorithm:hex` of the right length.
    BadDigest(String),
    /// A 64-character hexadecimal string, which names an image id, not a repository.
    HexIdentifier,
    /// A registry host with no dot and no port that is read as a host only
    /// because of its capital letters (`Intranet/app`); lowercased, it would
    /// name a Docker Hub repository instead, so it cannot be normalized.
    AmbiguousDomain(String),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TooLong => write!(
                f,
                "is too long (at most {MAX_REFERENCE_LEN} characters in all once normalized, {MAX_NAME_LEN} for the name)"
            ),
            Self::Uppercase => f.write_str("has uppercase letters in the repository name (it must be lowercase)"),
            Self::BadComponent(c) => write!(
                f,
                "has repository component `{c}`: use lowercase letters and digits separated by `.`, `_`, `__` or `-`"
            ),
            Self::BadDomain(d) => write!(f, "has registry `{d}`, which is not a host[:port]"),
            Self::BadTag(t) => write!(
                f,
                "has tag `{t}`: use up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
            ),
            Self::BadDigest(d) => {
                write!(f, "has digest `{d}`: expected `sha256:` and 64 hex digits (or another `algorithm:hex`)")
            }
            Self::HexIdentifier => f.write_str("is a 64-character hexadecimal image id, not a repository name"),
            Self::AmbiguousDomain(d) => write!(
                f,
                "has registry `{d}`, a host only because of its capital letters; write it with its port or full domain (`{}:443`, `{}.example`)",
                d.to_ascii_lowercase(),
                d.to_ascii_lowercase()
            ),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl ImageRef {
    /// Parses and normalizes a reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() > MAX_REFERENCE_LEN {
            return Err(ReferenceError::TooLong);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |at| at + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(at) => {
                let tag = &rest[last_slash + at + 1..];
                (&rest[..last_slash + at], Some(parse_tag(tag)?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (domain, path) = split_domain(name);
        let registry = match domain {
            None => {
                RegistryHost::parse(DOCKER_HUB_HOST).map_err(|_| ReferenceError::BadDomain(DOCKER_HUB_HOST.into()))?
            }
            Some(domain) => {
                if !domain.contains(['.', ':']) && domain != "localhost" {
                    return Err(ReferenceError::AmbiguousDomain(shorten(domain)));
                }
                let host = RegistryHost::parse(domain).map_err(|_| ReferenceError::BadDomain(shorten(domain)))?;
                if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
                    RegistryHost::parse(DOCKER_HUB_HOST).map_err(|_| ReferenceError::BadDomain(domain.into()))?
                } else {
                    host
                }
            }
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        for component in path.split('/') {
            if !is_path_component(component) {
                return Err(ReferenceError::BadComponent(shorten(component)));
            }
        }
        if domain.is_none() && path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexIdentifier);
        }
        let repository =
            if registry.is_docker_hub() && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        if registry.as_str().len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong);
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        // The normal form is what is printed and sent on: it must fit the
        // limit too, and it can be longer than the input (`docker.io/library/`,
        // `:latest`), so a reference is accepted only if its normal form
        // parses back.
        let normalized_len = registry.as_str().len()
            + 1
            + repository.len()
            + tag.as_ref().map_or(0, |t| 1 + t.len())
            + digest.as_ref().map_or(0, |d| 1 + d.len());
        if normalized_len > MAX_REFERENCE_LEN {
            return Err(ReferenceError::TooLong);
        }
        Ok(Self { registry, repository, tag, digest })
    }

    /// The registry as named (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    /// The host to send API requests to (`registry-1.docker.io` for Docker
    /// Hub, the registry itself otherwise).
    pub fn endpoint(&self) -> &str {
        if self.registry.is_docker_hub() { DOCKER_HUB_ENDPOINT } else { self.registry.as_str() }
    }

    /// The repository path (`library/ubuntu`, `acme/aligner`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any (`sha256:…`).
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

/// Splits `name` into an optional domain and the path, as the docker CLI
/// does: the first component is a domain when it contains `.` or `:`, is
/// `localhost`, or has uppercase letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok =
        (1..=128).contains(&bytes.len()) && word(bytes[0]) && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok { Ok(tag.to_owned()) } else { Err(ReferenceError::BadTag(shorten(tag))) }
}

fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadDigest(shorten(digest));
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '-', '_']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let length_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => true,
    };
    // Known algorithms use lowercase hex.
    let case_ok = !matches!(algorithm, "sha256" | "sha512") || !hex.bytes().any(|b| b.is_ascii_uppercase());
    if algorithm_ok && hex_ok && length_ok && case_ok { Ok(digest.to_owned()) } else { Err(bad()) }
}

fn shorten(input: &str) -> String {
    let printable: String = input.chars().map(|c| if c.is_control() { '?' } else { c }).take(80).collect();
    if input.chars().count() > 80 { format!("{printable}…") } else { printable }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(input: &str) -> String {
        ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}")).to_string()
    }

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn docker_hub_short_names_expand_like_the_docker_cli() {
        assert_eq!(normalized("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(normalized("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(normalized("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(normalized("docker.io/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(normalized("index.docker.io/library/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(normalized("registry-1.docker.io/bitnami/redis:7"), "docker.io/bitnami/redis:7");
        let image = ImageRef::parse("ubuntu").unwrap();
        assert_eq!(image.endpoint(), DOCKER_HUB_ENDPOINT);
        assert_eq!(image.repository(), "library/ubuntu");
    }

    #[test]
    fn domains_ports_localhost_tags_and_digests() {
        assert_eq!(normalized("ghcr.io/acme/aligner:2.1"), "ghcr.io/acme/aligner:2.1");
        assert_eq!(normalized("localhost/app"), "localhost/app:latest");
        assert_eq!(normalized("localhost:5000/team/app:1.0"), "localhost:5000/team/app:1.0");
        assert_eq!(normalized("127.0.0.1:5000/team/app"), "127.0.0.1:5000/team/app:latest");
        assert_eq!(normalized("[::1]:5000/team/app"), "[::1]:5000/team/app:latest");
        assert_eq!(normalized(&format!("quay.io/a/b@{DIGEST}")), format!("quay.io/a/b@{DIGEST}"));
        assert_eq!(normalized(&format!("quay.io/a/b:v1@{DIGEST}")), format!("quay.io/a/b:v1@{DIGEST}"));
        assert_eq!(normalized("Registry.Example.com/team/app"), "registry.example.com/team/app:latest");
        let image = ImageRef::parse("localhost:5000/team/app:1.0").unwrap();
        assert_eq!(image.endpoint(), "localhost:5000");
        assert_eq!(image.tag(), Some("1.0"));
        assert_eq!(image.digest(), None);
        assert_eq!(normalized("a__b/c---d/e.f_g:t_1.2-3"), "docker.io/a__b/c---d/e.f_g:t_1.2-3");
    }

    #[test]
    fn a_reference_whose_normal_form_fits_the_limit_is_accepted_and_parses_back() {
        // docker.io/library/app@custom:… is 1024 characters exactly.
        let input = format!("app@custom:{}", "a".repeat(995));
        let image = ImageRef::parse(&input).unwrap();
        let printed = image.to_string();
        assert_eq!(printed.len(), MAX_REFERENCE_LEN);
        assert_eq!(ImageRef::parse(&printed).unwrap(), image);
    }

    #[test]
    fn invalid_references_are_rejected_with_the_reason() {
        use ReferenceError as E;
        let cases: Vec<(String, E)> = vec![
            (String::new(), E::Empty),
            ("Ubuntu".into(), E::Uppercase),
            ("ghcr.io/Acme/app".into(), E::Uppercase),
            ("ghcr.io/acme/app:".into(), E::BadTag(String::new())),
            ("ghcr.io/acme/app:-bad".into(), E::BadTag("-bad".into())),
            (format!("ghcr.io/acme/app:{}", "t".repeat(129)), E::BadTag("t".repeat(80) + "…")),
            ("ghcr.io/acme/app@sha256:abc".into(), E::BadDigest("sha256:abc".into())),
            ("ghcr.io/acme/app@md5".into(), E::BadDigest("md5".into())),
            ("ghcr.io/acme//app".into(), E::BadComponent(String::new())),
            ("ghcr.io/acme/app-".into(), E::BadComponent("app-".into())),
            ("ghcr.io/acme/a..b".into(), E::BadComponent("a..b".into())),
            ("ghcr.io:99999/acme/app".into(), E::BadDomain("ghcr.io:99999".into())),
            ("gh_cr.io/acme/app".into(), E::BadDomain("gh_cr.io".into())),
            ("a".repeat(64), E::HexIdentifier),
            (format!("ghcr.io/{}", "a/".repeat(130) + "a"), E::TooLong),
            // 1011 characters as written; normalized (`docker.io/library/`)
            // 1029, over the limit: found by the image_reference fuzzer.
            (format!("app@custom:{}", "a".repeat(1000)), E::TooLong),
            ("ghcr.io/acme/app with space".into(), E::BadComponent("app with space".into())),
            ("Intranet/app".into(), E::AmbiguousDomain("Intranet".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(ImageRef::parse(&input).unwrap_err(), expected, "{input}");
        }
    }
}
