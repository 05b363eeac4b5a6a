//! Short-lived registry auth as the SDK returns it, and the renderers that
//! turn it into what each consumer takes: an HTTP header, skopeo arguments, a
//! docker `config.json`, a Kubernetes `dockerconfigjson` Secret, Apptainer
//! environment variables.
//!
//! Kubelet, credential helpers and Apptainer take only a username and
//! password: their renderers refuse a bearer token with an error that says
//! what to do instead, rather than producing something that cannot work.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use pullpass_client::lease::{Grant, Lease, Source, docker_config, kubernetes_secret, shell_exports};
//! use zeroize::Zeroizing;
//!
//! // What `client.registry_auth("ghcr.io/acme/aligner:2.1")…send()` returns
//! // for a token-flow registry: a bearer token for exactly that repository.
//! let bearer = Lease {
//!     image: "ghcr.io/acme/aligner:2.1".into(),
//!     normalized_image: "ghcr.io/acme/aligner:2.1".into(),
//!     grant: Grant::Bearer { token: Zeroizing::new("eyJ-example".into()) },
//!     registry: "ghcr.io".into(),
//!     expire_time: SystemTime::now() + Duration::from_secs(300),
//!     issue_time: SystemTime::now(),
//!     requested_scope: "repository:acme/aligner:pull".into(),
//!     granted_scope: Some("repository:acme/aligner:pull".into()),
//!     credential: "workspaces/acme/credentials/ghcr".into(),
//!     source: Source::Registry,
//!     gateway_image: None,
//! };
//! assert_eq!(bearer.authorization_header().as_str(), "Bearer eyJ-example");
//! let args: Vec<String> = bearer.skopeo_args().iter().map(|a| a.to_string()).collect();
//! assert_eq!(args, ["--registry-token", "eyJ-example"]);
//! assert!(docker_config(std::slice::from_ref(&bearer)).contains("\"registrytoken\": \"eyJ-example\""));
//! // Password-only consumers refuse it, saying what to ask for instead.
//! let refused = kubernetes_secret(std::slice::from_ref(&bearer), "pull-secret", Some("jobs")).unwrap_err();
//! assert!(refused.message.contains("username and password"));
//! assert!(bearer.apptainer_env().is_err());
//!
//! // Through the pull gateway (`.via_gateway()`), any registry's lease is a
//! // short-lived username and password for the gateway host.
//! let gateway = Lease {
//!     grant: Grant::Basic { username: "pullpass".into(), password: Zeroizing::new("ppg_example".into()) },
//!     registry: "gw.example:50052".into(),
//!     gateway_image: Some("gw.example:50052/ghcr.io/acme/aligner:2.1".into()),
//!     ..bearer.clone()
//! };
//! assert_eq!(gateway.pull_image(), "gw.example:50052/ghcr.io/acme/aligner:2.1");
//! assert!(kubernetes_secret(std::slice::from_ref(&gateway), "pull-secret", None).is_ok());
//!
//! // An ECR (or Google, or passthrough) lease is a username and password.
//! let basic = Lease {
//!     grant: Grant::Basic { username: "AWS".into(), password: Zeroizing::new("short-lived".into()) },
//!     ..bearer.clone()
//! };
//! assert_eq!(basic.skopeo_args()[1].as_str(), "AWS:short-lived");
//! let secret = kubernetes_secret(&[basic.clone()], "pull-secret", Some("jobs")).unwrap();
//! assert!(secret.contains("kubernetes.io/dockerconfigjson"));
//! let exports = shell_exports(&basic.apptainer_env().unwrap());
//! assert!(exports.contains("export APPTAINER_DOCKER_USERNAME='AWS'"));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pullpass::reference::ImageRef;
use zeroize::Zeroizing;

/// The key docker's `config.json` uses for Docker Hub.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// The form of a lease.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// A bearer token.
    Bearer {
        /// The token.
        token: Zeroizing<String>,
    },
    /// A username and password.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Zeroizing<String>,
    },
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
            Grant::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Where a lease came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Issued by the registry for this request.
    Registry,
    /// Served from pullpass's cache.
    ServerCache,
    /// Served from this client's cache (no RPC).
    ClientCache,
}

/// Short-lived auth for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The image as asked for.
    pub image: String,
    /// The normalized image (`docker.io/library/ubuntu:latest`).
    pub normalized_image: String,
    /// The token or username/password.
    pub grant: Grant,
    /// The host to present it to (`registry-1.docker.io`).
    pub registry: String,
    /// When it stops working.
    pub expire_time: SystemTime,
    /// When it was issued.
    pub issue_time: SystemTime,
    /// The scope asked for.
    pub requested_scope: String,
    /// The scope granted, when the registry says.
    pub granted_scope: Option<String>,
    /// The credential that served it.
    pub credential: String,
    /// Where it came from.
    pub source: Source,
    /// With `.via_gateway()`: the reference to pull from the pull gateway
    /// (`gw.example:50052/ghcr.io/acme/aligner:2.1`); the lease is then a
    /// username and password for the gateway host.
    pub gateway_image: Option<String>,
}

/// A lease that a consumer cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The consumer (`Kubernetes`, `Apptainer`…).
    pub consumer: &'static str,
    /// Why, and what to do instead.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.consumer, self.message)
    }
}

impl std::error::Error for RenderError {}

fn basic_only(consumer: &'static str, lease: &Lease) -> Result<(), RenderError> {
    match lease.grant {
        Grant::Basic { .. } => Ok(()),
        Grant::Bearer { .. } => Err(RenderError {
            consumer,
            message: format!(
                "{consumer} takes only a username and password, but {} has a bearer token. \
                 Pull through the pullpass gateway instead (`.via_gateway()`, `pullpass auth --via-gateway`): \
                 it gives a short-lived username and password for any registry, and the registry's secret stays in pullpass. \
                 Or ask with `.basic()` (accept BASIC): ECR and Google credentials give short-lived passwords; \
                 other registries need allow_passthrough on the credential. \
                 Bearer tokens work with skopeo --registry-token and Authorization headers.",
                lease.normalized_image
            ),
        }),
    }
}

impl Lease {
    /// How long it is still valid.
    pub fn remaining(&self) -> Duration {
        self.expire_time.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
    }

    /// The bearer token, if it is one.
    pub fn token(&self) -> Option<&str> {
        match &self.grant {
            Grant::Bearer { token } => Some(token),
            Grant::Basic { .. } => None,
        }
    }

    /// Username and password, if it is basic auth.
    pub fn basic(&self) -> Option<(&str, &str)> {
        match &self.grant {
            Grant::Basic { username, password } => Some((username, password)),
            Grant::Bearer { .. } => None,
        }
    }

    /// The `Authorization` header value: `Bearer …` or `Basic …`.
    pub fn authorization_header(&self) -> Zeroizing<String> {
        Zeroizing::new(match &self.grant {
            Grant::Bearer { token } => format!("Bearer {}", token.as_str()),
            Grant::Basic { username, password } => {
                format!("Basic {}", STANDARD.encode(format!("{username}:{}", password.as_str())))
            }
        })
    }

    /// The arguments to put before `docker://IMAGE` in a skopeo command:
    /// `--registry-token TOKEN` or `--creds USER:PASSWORD`.
    pub fn skopeo_args(&self) -> Vec<Zeroizing<String>> {
        match &self.grant {
            Grant::Bearer { token } => vec![Zeroizing::new("--registry-token".into()), token.clone()],
            Grant::Basic { username, password } => {
                vec![Zeroizing::new("--creds".into()), Zeroizing::new(format!("{username}:{}", password.as_str()))]
            }
        }
    }

    /// The image to pull: the gateway's reference for a gateway lease, the
    /// normalized image otherwise.
    pub fn pull_image(&self) -> &str {
        self.gateway_image.as_deref().unwrap_or(&self.normalized_image)
    }

    /// The `config.json` key of the image's registry (Docker Hub's is
    /// `https://index.docker.io/v1/`). A gateway lease is keyed by its
    /// repository on the gateway (`gw.example:50052/ghcr.io/acme/aligner`),
    /// which kubelet and containers/image (podman, skopeo) match by path,
    /// since each gateway password covers only the repositories it names.
    pub fn config_key(&self) -> String {
        if let Some(gateway_image) = &self.gateway_image {
            return match ImageRef::parse(gateway_image) {
                Ok(image) => image.name(),
                Err(_) => self.registry.clone(),
            };
        }
        match ImageRef::parse(&self.normalized_image) {
            Ok(image) if image.registry().is_docker_hub() => DOCKER_HUB_CONFIG_KEY.to_owned(),
            Ok(image) => image.registry().to_string(),
            Err(_) => self.registry.clone(),
        }
    }

    /// Apptainer/Singularity variables for `docker://` pulls (basic only).
    pub fn apptainer_env(&self) -> Result<Vec<(&'static str, Zeroizing<String>)>, RenderError> {
        basic_only("Apptainer", self)?;
        let (username, password) = self.basic().unwrap_or_default();
        Ok(vec![
            ("APPTAINER_DOCKER_USERNAME", Zeroizing::new(username.to_owned())),
            ("APPTAINER_DOCKER_PASSWORD", Zeroizing::new(password.to_owned())),
            ("SINGULARITY_DOCKER_USERNAME", Zeroizing::new(username.to_owned())),
            ("SINGULARITY_DOCKER_PASSWORD", Zeroizing::new(password.to_owned())),
        ])
    }
}

/// A docker `config.json` for the leases: `registrytoken` for bearer
/// tokens, `auth` (base64 `user:password`) for basic auth.
///
/// Note: skopeo and containerd ignore `registrytoken`; give them
/// [`Lease::skopeo_args`] or a basic lease instead.
pub fn docker_config(leases: &[Lease]) -> Zeroizing<String> {
    let mut auths = serde_json::Map::new();
    for lease in leases {
        let entry = match &lease.grant {
            Grant::Bearer { token } => serde_json::json!({ "registrytoken": token.as_str() }),
            Grant::Basic { username, password } => serde_json::json!({
                "auth": STANDARD.encode(format!("{username}:{}", password.as_str())),
            }),
        };
        auths.insert(lease.config_key(), entry);
    }
    if let Some((host, lease)) = gateway_host_entry(leases) {
        let (username, password) = lease.basic().unwrap_or_default();
        auths.insert(host, serde_json::json!({ "auth": STANDARD.encode(format!("{username}:{password}")) }));
    }
    Zeroizing::new(serde_json::to_string_pretty(&serde_json::json!({ "auths": auths })).unwrap_or_default())
}

/// When every gateway lease among `leases` carries the same password (one
/// image, or one request), the gateway host itself can be keyed too, for
/// clients that match by host only (the docker CLI).
fn gateway_host_entry(leases: &[Lease]) -> Option<(String, &Lease)> {
    let mut gateway = leases.iter().filter(|l| l.gateway_image.is_some());
    let first = gateway.next()?;
    let same = gateway.all(|l| l.registry == first.registry && l.basic() == first.basic());
    same.then(|| (first.registry.clone(), first))
}

/// A Kubernetes `kubernetes.io/dockerconfigjson` Secret (as JSON, which is
/// valid YAML for `kubectl apply -f`). Basic leases only: the kubelet
/// cannot use a bearer token.
pub fn kubernetes_secret(
    leases: &[Lease],
    name: &str,
    namespace: Option<&str>,
) -> Result<Zeroizing<String>, RenderError> {
    let mut auths = serde_json::Map::new();
    for lease in leases {
        basic_only("Kubernetes", lease)?;
        let (username, password) = lease.basic().unwrap_or_default();
        auths.insert(lease.config_key(), kubernetes_entry(username, password));
    }
    if let Some((host, lease)) = gateway_host_entry(leases) {
        let (username, password) = lease.basic().unwrap_or_default();
        auths.insert(host, kubernetes_entry(username, password));
    }
    let config = Zeroizing::new(serde_json::json!({ "auths": auths }).to_string());
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(namespace) = namespace {
        metadata["namespace"] = namespace.into();
    }
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/dockerconfigjson",
        "data": { ".dockerconfigjson": STANDARD.encode(config.as_bytes()) },
    });
    Ok(Zeroizing::new(serde_json::to_string_pretty(&secret).unwrap_or_default()))
}

fn kubernetes_entry(username: &str, password: &str) -> serde_json::Value {
    serde_json::json!({
        "username": username,
        "password": password,
        "auth": STANDARD.encode(format!("{username}:{password}")),
    })
}

/// `export NAME='value'` lines for a shell, single-quoted.
pub fn shell_exports(variables: &[(&str, Zeroizing<String>)]) -> Zeroizing<String> {
    let mut out = String::new();
    for (name, value) in variables {
        out.push_str(&format!("export {name}='{}'\n", value.replace('\'', r"'\''")));
    }
    Zeroizing::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(grant: Grant, image: &str) -> Lease {
        Lease {
            image: image.into(),
            normalized_image: ImageRef::parse(image).unwrap().to_string(),
            grant,
            registry: "registry.example.com".into(),
            expire_time: SystemTime::now() + Duration::from_secs(300),
            issue_time: SystemTime::now(),
            requested_scope: "repository:team/app:pull".into(),
            granted_scope: None,
            credential: "workspaces/a/credentials/c".into(),
            source: Source::Registry,
            gateway_image: None,
        }
    }

    fn gateway(image: &str, password: &str) -> Lease {
        Lease {
            registry: "gw.example:50052".into(),
            gateway_image: Some(format!("gw.example:50052/{image}")),
            ..lease(Grant::Basic { username: "pullpass".into(), password: Zeroizing::new(password.into()) }, image)
        }
    }

    fn bearer(image: &str) -> Lease {
        lease(Grant::Bearer { token: Zeroizing::new("tok-123".into()) }, image)
    }

    fn basic(image: &str) -> Lease {
        lease(Grant::Basic { username: "AWS".into(), password: Zeroizing::new("it's-secret".into()) }, image)
    }

    #[test]
    fn headers_and_skopeo_arguments_follow_the_grant() {
        assert_eq!(bearer("ghcr.io/a/b").authorization_header().as_str(), "Bearer tok-123");
        assert_eq!(
            basic("ghcr.io/a/b").authorization_header().as_str(),
            format!("Basic {}", STANDARD.encode("AWS:it's-secret"))
        );
        let args: Vec<String> = bearer("ghcr.io/a/b").skopeo_args().iter().map(|a| a.to_string()).collect();
        assert_eq!(args, ["--registry-token", "tok-123"]);
        let args: Vec<String> = basic("ghcr.io/a/b").skopeo_args().iter().map(|a| a.to_string()).collect();
        assert_eq!(args, ["--creds", "AWS:it's-secret"]);
    }

    #[test]
    fn docker_config_uses_registrytoken_or_auth_and_the_hub_key() {
        let config: serde_json::Value =
            serde_json::from_str(&docker_config(&[bearer("ubuntu"), basic("registry.example.com:5000/team/app")]))
                .unwrap();
        assert_eq!(config["auths"][DOCKER_HUB_CONFIG_KEY]["registrytoken"], "tok-123");
        assert_eq!(config["auths"]["registry.example.com:5000"]["auth"], STANDARD.encode("AWS:it's-secret"));
    }

    #[test]
    fn kubernetes_and_apptainer_refuse_bearer_tokens_and_take_basic_ones() {
        let refused = kubernetes_secret(&[bearer("ghcr.io/a/b")], "pull", None).unwrap_err();
        assert!(refused.message.contains("username and password"), "{refused}");
        assert!(!refused.message.contains("tok-123"));
        assert!(bearer("ghcr.io/a/b").apptainer_env().is_err());
        let secret: serde_json::Value =
            serde_json::from_str(&kubernetes_secret(&[basic("ghcr.io/a/b")], "pull", Some("ci")).unwrap()).unwrap();
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(secret["metadata"]["namespace"], "ci");
        let inner = STANDARD.decode(secret["data"][".dockerconfigjson"].as_str().unwrap()).unwrap();
        let inner: serde_json::Value = serde_json::from_slice(&inner).unwrap();
        assert_eq!(inner["auths"]["ghcr.io"]["username"], "AWS");
        let env = shell_exports(&basic("ghcr.io/a/b").apptainer_env().unwrap());
        assert!(env.contains(r"export APPTAINER_DOCKER_PASSWORD='it'\''s-secret'"), "{}", env.as_str());
    }

    #[test]
    fn gateway_leases_are_keyed_by_repository_and_by_host_when_they_share_a_password() {
        let one = [gateway("ghcr.io/acme/a:1", "ppg_one")];
        let config: serde_json::Value = serde_json::from_str(&docker_config(&one)).unwrap();
        assert_eq!(config["auths"]["gw.example:50052/ghcr.io/acme/a"]["auth"], STANDARD.encode("pullpass:ppg_one"));
        assert_eq!(config["auths"]["gw.example:50052"]["auth"], STANDARD.encode("pullpass:ppg_one"));
        let two = [gateway("ghcr.io/acme/a:1", "ppg_one"), gateway("quay.io/x/y:2", "ppg_two")];
        let config: serde_json::Value = serde_json::from_str(&docker_config(&two)).unwrap();
        assert_eq!(config["auths"]["gw.example:50052/quay.io/x/y"]["auth"], STANDARD.encode("pullpass:ppg_two"));
        assert!(config["auths"].get("gw.example:50052").is_none(), "two passwords cannot share the host key");
        let secret: serde_json::Value = serde_json::from_str(&kubernetes_secret(&two, "s", None).unwrap()).unwrap();
        let inner = STANDARD.decode(secret["data"][".dockerconfigjson"].as_str().unwrap()).unwrap();
        let inner: serde_json::Value = serde_json::from_slice(&inner).unwrap();
        assert_eq!(inner["auths"]["gw.example:50052/ghcr.io/acme/a"]["password"], "ppg_one");
        assert_eq!(gateway("ubuntu", "p").pull_image(), "gw.example:50052/ubuntu");
        let refused = kubernetes_secret(&[bearer("ghcr.io/a/b")], "pull", None).unwrap_err();
        assert!(refused.message.contains("via-gateway"), "{refused}");
    }

    #[test]
    fn debug_never_shows_the_token_or_password() {
        let shown = format!("{:?} {:?}", bearer("a/b"), basic("a/b"));
        assert!(!shown.contains("tok-123") && !shown.contains("it's-secret"), "{shown}");
    }
}
