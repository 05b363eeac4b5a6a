//! Request paths, parsed once into what they ask for ([`Route`]).
//!
//! * `/v2/` — the API root.
//! * `/v2/<upstream>/<repository>/manifests/<tag|digest>`
//! * `/v2/<upstream>/<repository>/blobs/<digest>`
//! * `/v2/<upstream>/<repository>/tags/list`
//!
//! `<upstream>` is a registry host (`ghcr.io`, `docker.io`) or a gateway
//! alias. containerd's mirror form puts the registry in the query instead
//! (`/v2/<repository>/…?ns=<host[:port]>`); with `override_path` it sends
//! both, and a first component that names the `ns` registry is dropped.
//! There is no `_catalog`, and nothing that writes.

use pullpass::registry::{RegistryHost, is_path_component};

use crate::pulls::ManifestRef;
use crate::pulls::address::Addressing;
use crate::pulls::digest::Digest;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Root,
    /// Content of one repository.
    Pull(GatewayRef),
}

/// A repository on an upstream registry, and what of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRef {
    /// The registry.
    pub registry: RegistryHost,
    /// The repository path (`acme/aligner`), as the client wrote it.
    pub repository: String,
    /// The path prefix the client used before the repository (`/v2/local/`
    /// or, in the `ns` form, `/v2/`), for rewriting `Link` headers.
    pub prefix: String,
    /// The `ns` the client sent, if any.
    pub ns: Option<String>,
    /// What is asked for.
    pub target: Target,
}

/// The endpoint within a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A manifest by tag or digest.
    Manifest(ManifestRef),
    /// A blob by digest.
    Blob(Digest),
    /// The tag list.
    Tags,
}

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such endpoint on this gateway (`UNSUPPORTED`, 404).
    Unsupported(String),
    /// No upstream registry could be read from the path (`NAME_UNKNOWN`, 404).
    NoUpstream(String),
    /// A malformed name, tag or digest (400), with its distribution code.
    Invalid(&'static str, String),
}

/// Longest path considered.
const MAX_PATH_LEN: usize = 2048;

/// Parses a request's path and query.
pub fn parse(path: &str, query: Option<&str>, addressing: &Addressing) -> Result<Route, RouteError> {
    if path.len() > MAX_PATH_LEN {
        return Err(RouteError::Unsupported("the path is too long".into()));
    }
    let Some(rest) = path.strip_prefix("/v2") else {
        return Err(RouteError::Unsupported(format!("`{}` is not an OCI distribution path (/v2/…)", short(path))));
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Root);
    }
    let rest = rest.strip_prefix('/').ok_or_else(|| RouteError::Unsupported("not a /v2/ path".into()))?;
    let segments: Vec<String> = rest.split('/').map(decode).collect::<Result<_, _>>()?;
    let n = segments.len();
    if segments.first().is_some_and(|s| s == "_catalog") {
        return Err(RouteError::Unsupported("the gateway has no catalog".into()));
    }
    let (name, target) = if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
        (&segments[..n - 2], Target::Tags)
    } else if n >= 3 && segments[n - 2] == "manifests" {
        (&segments[..n - 2], Target::Manifest(manifest_ref(&segments[n - 1])?))
    } else if n >= 3 && segments[n - 2] == "blobs" {
        let digest = Digest::parse(&segments[n - 1]).map_err(|e| RouteError::Invalid("DIGEST_INVALID", e))?;
        (&segments[..n - 2], Target::Blob(digest))
    } else {
        return Err(RouteError::Unsupported(format!(
            "`{}` is not served: the gateway serves manifests, blobs and tags/list, read only",
            short(path)
        )));
    };
    let ns = query_param(query, "ns");
    let (registry, repository, prefix) = match &ns {
        Some(ns) => {
            let registry = RegistryHost::parse(ns)
                .map_err(|e| RouteError::Invalid("NAME_INVALID", format!("ns `{}`: {e}", short(ns))))?;
            if name.len() >= 2 && addressing.names(&name[0], &registry) {
                let prefix = format!("/v2/{}/", name[0]);
                (registry, &name[1..], prefix)
            } else {
                (registry, name, "/v2/".to_owned())
            }
        }
        None => {
            let first = &name[0];
            let registry = addressing.upstream_of(first).ok_or_else(|| {
                RouteError::NoUpstream(format!(
                    "`{}` is neither a registry host nor a gateway alias: pull /v2/<registry>/<repository>/…, such as /v2/ghcr.io/acme/app/…",
                    short(first)
                ))
            })?;
            (registry, &name[1..], format!("/v2/{first}/"))
        }
    };
    if repository.is_empty() {
        return Err(RouteError::Invalid("NAME_INVALID", format!("no repository after registry {registry}")));
    }
    if let Some(bad) = repository.iter().find(|c| !is_path_component(c)) {
        return Err(RouteError::Invalid(
            "NAME_INVALID",
            format!("repository component `{}` is not lowercase letters and digits with separators", short(bad)),
        ));
    }
    Ok(Route::Pull(GatewayRef { registry, repository: repository.join("/"), prefix, ns, target }))
}

fn manifest_ref(text: &str) -> Result<ManifestRef, RouteError> {
    if text.contains(':') {
        return Digest::parse(text).map(ManifestRef::Digest).map_err(|e| RouteError::Invalid("DIGEST_INVALID", e));
    }
    let bytes = text.as_bytes();
    let ok = (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(ManifestRef::Tag(text.to_owned()))
    } else {
        Err(RouteError::Invalid(
            "TAG_INVALID",
            format!("`{}` is not a tag (up to 128 letters, digits, `_`, `.`, `-`) nor a digest", short(text)),
        ))
    }
}

/// The first value of a query parameter (percent-decoded).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).and_then(|(_, value)| {
        percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8().ok().map(|v| v.into_owned())
    })
}

fn decode(segment: &str) -> Result<String, RouteError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RouteError::Invalid("NAME_INVALID", "the path is not UTF-8".into()))
}

fn short(text: &str) -> String {
    crate::domain::ids::shorten(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addressing() -> Addressing {
        Addressing::for_tests()
    }

    fn pull(path: &str, query: Option<&str>) -> GatewayRef {
        match parse(path, query, &addressing()) {
            Ok(Route::Pull(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn prefixed_paths_name_the_registry_then_the_repository() {
        let r = pull("/v2/ghcr.io/acme/aligner/manifests/2.1", None);
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.prefix.as_str()),
            ("ghcr.io", "acme/aligner", "/v2/ghcr.io/")
        );
        assert_eq!(r.target, Target::Manifest(ManifestRef::Tag("2.1".into())));
        let r = pull(&format!("/v2/local/team/app/blobs/{DIGEST}"), None);
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "team/app"));
        assert_eq!(r.target, Target::Blob(Digest::parse(DIGEST).unwrap()));
        let r = pull("/v2/docker.io/library/ubuntu/tags/list", None);
        assert_eq!((r.registry.as_str(), r.target), ("docker.io", Target::Tags));
        // A repository may have components named like endpoints.
        let r = pull("/v2/quay.io/x/manifests/manifests/latest", None);
        assert_eq!(r.repository, "x/manifests");
        let encoded = pull(&format!("/v2/ghcr.io/a/b/manifests/{}", DIGEST.replace(':', "%3A")), None);
        assert_eq!(encoded.target, Target::Manifest(ManifestRef::Digest(Digest::parse(DIGEST).unwrap())));
        assert_eq!(parse("/v2/", None, &addressing()), Ok(Route::Root));
        assert_eq!(parse("/v2", None, &addressing()), Ok(Route::Root));
    }

    #[test]
    fn containerds_ns_form_with_and_without_override_path() {
        let r = pull("/v2/team/app/manifests/1.0", Some("ns=127.0.0.1%3A5000"));
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.prefix.as_str()),
            ("127.0.0.1:5000", "team/app", "/v2/")
        );
        let r = pull("/v2/local/team/app/manifests/1.0", Some("ns=127.0.0.1:5000"));
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.prefix.as_str()),
            ("127.0.0.1:5000", "team/app", "/v2/local/")
        );
        let r = pull("/v2/docker.io/library/ubuntu/manifests/latest", Some("ns=docker.io"));
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("docker.io", "library/ubuntu"));
        assert_eq!(r.ns.as_deref(), Some("docker.io"));
    }

    #[test]
    fn everything_else_is_refused_precisely() {
        let a = addressing();
        let err = |path: &str| parse(path, None, &a).unwrap_err();
        assert!(matches!(err("/v2/_catalog"), RouteError::Unsupported(_)));
        assert!(matches!(err("/v2/ghcr.io/a/b/blobs/uploads/"), RouteError::Unsupported(_)));
        assert!(matches!(err("/v1/x"), RouteError::Unsupported(_)));
        assert!(matches!(err("/v2/team/app/manifests/1.0"), RouteError::NoUpstream(_)));
        assert!(matches!(err("/v2/ghcr.io/manifests/1.0"), RouteError::Invalid("NAME_INVALID", _)));
        assert!(matches!(err("/v2/ghcr.io/Acme/app/manifests/1.0"), RouteError::Invalid("NAME_INVALID", _)));
        assert!(matches!(err("/v2/ghcr.io/a/b/manifests/-bad"), RouteError::Invalid("TAG_INVALID", _)));
        assert!(matches!(err("/v2/ghcr.io/a/b/manifests/sha256:abc"), RouteError::Invalid("DIGEST_INVALID", _)));
        assert!(matches!(err("/v2/ghcr.io/a/b/blobs/notadigest"), RouteError::Invalid("DIGEST_INVALID", _)));
        assert!(matches!(err("/v2/ghcr.io/a/b/blobs/%ff"), RouteError::Invalid(..)));
    }

    proptest! {
        #[test]
        fn any_path_parses_or_is_refused_without_panicking(path in "/v2/[a-zA-Z0-9._:%/@-]{0,120}", query in proptest::option::of("[a-z=&%:.0-9]{0,40}")) {
            if let Ok(Route::Pull(r)) = parse(&path, query.as_deref(), &addressing()) {
                // Whatever is accepted is a valid image name.
                let name = format!("{}/{}", r.registry, r.repository);
                prop_assert!(pullpass::reference::ImageRef::parse(&name).is_ok(), "{}", name);
            }
        }
    }
}
