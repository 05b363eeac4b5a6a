//! How images are named on the pull gateway.
//!
//! The gateway serves every upstream registry under a path prefix, as the
//! AWS and Google pull-through caches do: `ghcr.io/acme/aligner:2.1` is
//! pulled as `GW/ghcr.io/acme/aligner:2.1`, Docker Hub's images under
//! `GW/docker.io/…`. A registry with a port cannot be a path component of
//! an image reference (the grammar forbids `:`), so an operator names it
//! with an alias (`--gateway-alias local=127.0.0.1:5000`):
//! `GW/local/team/app:1.0`.

use pullpass::reference::ImageRef;
use pullpass::registry::{RegistryHost, is_path_component};

/// `NAME=HOST[:PORT]`: a path prefix standing for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The path component (`local`).
    pub name: String,
    /// The registry it stands for (`127.0.0.1:5000`).
    pub target: RegistryHost,
}

impl Alias {
    /// Parses `NAME=HOST[:PORT]`. The name is a lowercase path component
    /// without dots, so it can never be mistaken for a registry host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, target) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not NAME=HOST[:PORT] (such as local=127.0.0.1:5000)"))?;
        let name = name.trim();
        if !is_path_component(name) || name.contains('.') || name == "localhost" {
            return Err(format!(
                "alias name `{name}` must be lowercase letters and digits (with `-` or `_`), without dots, and not `localhost`"
            ));
        }
        let target = RegistryHost::parse(target.trim()).map_err(|e| format!("alias `{name}`: registry {e}"))?;
        Ok(Self { name: name.to_owned(), target })
    }
}

/// The gateway's public name and its aliases.
#[derive(Debug, Clone)]
pub struct Addressing {
    /// The `host[:port]` runtimes reach the gateway at.
    pub public_host: RegistryHost,
    /// Path prefixes naming registries.
    pub aliases: Vec<Alias>,
}

impl Addressing {
    /// The registry a path's first component names: an alias, or a host
    /// (a component with a `.` or `:`, or `localhost`). `None` for a
    /// component that is a repository path component instead.
    pub fn upstream_of(&self, component: &str) -> Option<RegistryHost> {
        if let Some(alias) = self.aliases.iter().find(|a| a.name == component) {
            return Some(alias.target.clone());
        }
        if !(component.contains(['.', ':']) || component == "localhost") {
            return None;
        }
        RegistryHost::parse(component).ok()
    }

    /// Does `component` name `registry` (as itself or by an alias)?
    pub fn names(&self, component: &str, registry: &RegistryHost) -> bool {
        self.upstream_of(component).is_some_and(|named| same_registry(&named, registry))
    }

    /// The path prefix of `registry` on the gateway (`ghcr.io`, `docker.io`,
    /// or the alias of a host with a port).
    pub fn prefix_of(&self, registry: &RegistryHost) -> Result<String, String> {
        if let Some(alias) = self.aliases.iter().find(|a| same_registry(&a.target, registry)) {
            return Ok(alias.name.clone());
        }
        if registry.port().is_some() || registry.as_str().starts_with('[') {
            return Err(format!(
                "registry {registry} has a port (or is an IPv6 address), which cannot be a path component of an image reference; \
                 name it on the gateway with --gateway-alias NAME={registry}"
            ));
        }
        Ok(registry.as_str().to_owned())
    }

    /// The reference to pull `image` through the gateway, such as
    /// `gw.example:50052/ghcr.io/acme/aligner:2.1`.
    pub fn gateway_image(&self, image: &ImageRef) -> Result<String, String> {
        let name = format!("{}/{}/{}", self.public_host, self.prefix_of(image.registry())?, image.repository());
        Ok(with_reference(name, image))
    }

    /// For an image on the gateway host (`GW/ghcr.io/acme/aligner:2.1`),
    /// the upstream image it stands for (`ghcr.io/acme/aligner:2.1`);
    /// `None` for images of other registries.
    pub fn upstream_image(&self, image: &ImageRef) -> Option<Result<String, String>> {
        if image.registry() != &self.public_host {
            return None;
        }
        let (first, rest) = match image.repository().split_once('/') {
            Some(split) => split,
            None => {
                return Some(Err(format!(
                    "`{image}` is on the gateway but names no registry: use {}/<registry>/<repository>",
                    self.public_host
                )));
            }
        };
        let Some(upstream) = self.upstream_of(first) else {
            return Some(Err(format!(
                "`{first}` in `{image}` is neither a registry host nor a gateway alias: use {}/<registry>/<repository>",
                self.public_host
            )));
        };
        Some(Ok(with_reference(format!("{upstream}/{rest}"), image)))
    }

    /// The gateway of the unit tests: `gw.example:50052`, with
    /// `local=127.0.0.1:5000`.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            public_host: RegistryHost::parse("gw.example:50052").expect("a host"),
            aliases: vec![Alias::parse("local=127.0.0.1:5000").expect("an alias")],
        }
    }
}

/// `name` with `image`'s `:tag` and `@digest`.
fn with_reference(mut name: String, image: &ImageRef) -> String {
    if let Some(tag) = image.tag() {
        name.push(':');
        name.push_str(tag);
    }
    if let Some(digest) = image.digest() {
        name.push('@');
        name.push_str(digest);
    }
    name
}

/// Registries are the same when they fold to the same name (Docker Hub's
/// aliases are one registry).
fn same_registry(a: &RegistryHost, b: &RegistryHost) -> bool {
    a == b || (a.is_docker_hub_alias() && b.is_docker_hub_alias())
}

trait DockerHubAlias {
    fn is_docker_hub_alias(&self) -> bool;
}

impl DockerHubAlias for RegistryHost {
    fn is_docker_hub_alias(&self) -> bool {
        self.is_docker_hub() || pullpass::registry::DOCKER_HUB_ALIASES.contains(&self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing() -> Addressing {
        Addressing::for_tests()
    }

    #[test]
    fn images_are_rewritten_under_their_registry_or_alias() {
        let a = addressing();
        let image = |t: &str| ImageRef::parse(t).unwrap();
        assert_eq!(
            a.gateway_image(&image("ghcr.io/acme/aligner:2.1")).unwrap(),
            "gw.example:50052/ghcr.io/acme/aligner:2.1"
        );
        assert_eq!(a.gateway_image(&image("ubuntu")).unwrap(), "gw.example:50052/docker.io/library/ubuntu:latest");
        assert_eq!(
            a.gateway_image(&image("127.0.0.1:5000/team/app:1.0")).unwrap(),
            "gw.example:50052/local/team/app:1.0"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            a.gateway_image(&image(&format!("quay.io/x/y@{digest}"))).unwrap(),
            format!("gw.example:50052/quay.io/x/y@{digest}")
        );
        let error = a.gateway_image(&image("127.0.0.1:6000/team/app:1.0")).unwrap_err();
        assert!(error.contains("--gateway-alias NAME=127.0.0.1:6000"), "{error}");
        // Every rewritten image parses, and maps back to where it came from.
        for original in ["ghcr.io/acme/aligner:2.1", "ubuntu", "127.0.0.1:5000/team/app:1.0", "localhost/a/b:c"] {
            let rewritten = ImageRef::parse(&a.gateway_image(&image(original)).unwrap()).unwrap();
            let back = a.upstream_image(&rewritten).unwrap().unwrap();
            assert_eq!(image(&back), image(original), "{original}");
        }
    }

    #[test]
    fn path_components_name_registries_by_host_or_alias_only() {
        let a = addressing();
        assert_eq!(a.upstream_of("local").unwrap().as_str(), "127.0.0.1:5000");
        assert_eq!(a.upstream_of("ghcr.io").unwrap().as_str(), "ghcr.io");
        assert_eq!(a.upstream_of("127.0.0.1:5000").unwrap().as_str(), "127.0.0.1:5000");
        assert_eq!(a.upstream_of("localhost").unwrap().as_str(), "localhost");
        assert_eq!(a.upstream_of("team"), None);
        assert!(a.names("docker.io", &RegistryHost::parse("docker.io").unwrap()));
        assert!(a.names("index.docker.io", &RegistryHost::parse("docker.io").unwrap()));
        assert!(a.names("local", &RegistryHost::parse("127.0.0.1:5000").unwrap()));
        assert!(!a.names("team", &RegistryHost::parse("127.0.0.1:5000").unwrap()));
        assert!(a.upstream_image(&ImageRef::parse("ghcr.io/acme/x").unwrap()).is_none());
        assert!(a.upstream_image(&ImageRef::parse("gw.example:50052/team/app").unwrap()).unwrap().is_err());
    }

    #[test]
    fn alias_names_must_be_dotless_path_components() {
        assert!(Alias::parse("local=127.0.0.1:5000").is_ok());
        for bad in ["local", "Local=h:1", "a.b=h:1", "localhost=h:1", "=h:1", "x=", "x=http://h"] {
            assert!(Alias::parse(bad).is_err(), "{bad}");
        }
    }
}
