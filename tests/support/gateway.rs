//! Peers and helpers for the pull gateway's tests: a world whose pullpassd
//! serves the gateway with the test registry under the alias `local`, an
//! HTTP client for protocol checks, skopeo with its own `$HOME` (for
//! `registries.conf` and `auth.json`), and a private containerd daemon for
//! `ctr`. Everything is on 127.0.0.1; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pullpass::v1::{AuthKind, IssueRegistryAuthRequest, RegistryAuth};
use tempfile::TempDir;

use crate::registry::world::{ALICE_PASSWORD, World, ok};

/// The alias the test registry has on the gateway.
pub const ALIAS: &str = "local";
/// The OCI image manifest media type (the test images' manifests).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A [`World`] whose gateway serves the registry as `local`, with
/// credential `reg` (alice, who may pull `team/*`) in workspace acme.
#[allow(missing_debug_implementations)]
pub struct GatewayWorld {
    /// Issuer, registry, pullpassd, root client.
    pub world: World,
    /// The gateway's `127.0.0.1:PORT`.
    pub gateway: String,
}

impl GatewayWorld {
    /// Starts everything and adds credential `reg`.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts everything with extra pullpassd flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let world = World::start_configured(|registry| {
            let mut args = vec!["--gateway-alias".to_owned(), format!("{ALIAS}={}", registry.address)];
            args.extend(extra);
            args
        })
        .await;
        world.add("reg", world.credential("team", "alice", ALICE_PASSWORD)).await;
        let gateway = world.server.gateway.clone();
        assert!(!gateway.is_empty(), "pullpassd printed no gateway address");
        Self { world, gateway }
    }

    /// `GW/local/<reference>`: the gateway's name of a registry image.
    pub fn image(&self, reference: &str) -> String {
        format!("{}/{ALIAS}/{reference}", self.gateway)
    }

    /// Gateway leases (via_gateway) for the registry's `references`, asked
    /// with `token` (root when `None`).
    pub async fn leases(&self, references: &[&str], token: Option<&str>) -> Vec<RegistryAuth> {
        let request = IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: references.iter().map(|r| self.world.registry.image(r)).collect(),
            via_gateway: true,
            ..Default::default()
        };
        let client = match token {
            Some(token) => self.world.server.client_with(Some(token)).await,
            None => self.world.client.clone(),
        };
        client.registry_auth_service().issue_registry_auth(request).await.expect("IssueRegistryAuth").into_inner().auths
    }

    /// A gateway password for the registry's `reference`, asked with
    /// `token` (an access token or a workload-identity JWT).
    pub async fn password_with(&self, token: &str, reference: &str) -> String {
        let auths = self.leases(&[reference], Some(token)).await;
        ok(&auths[0]).password.clone()
    }

    /// A gateway password for the registry's `reference`.
    pub async fn password(&self, reference: &str) -> String {
        let auths = self.leases(&[reference], None).await;
        let auth = ok(&auths[0]);
        assert_eq!(auth.kind, AuthKind::Basic as i32);
        assert_eq!(auth.username, "pullpass");
        auth.password.clone()
    }

    /// `http://GW<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }
}

/// An HTTP client for the gateway and registries: no redirects followed,
/// no proxy, bounded time.
pub fn http_client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// The sha256 digest of `bytes`, as `sha256:<hex>`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Pulls `repository:tag` through the gateway the way a runtime does, over
/// HTTP: HEAD the tag, GET the manifest by digest, GET every blob; checks
/// every digest.
pub async fn pull_like_a_runtime(gw: &GatewayWorld, repository: &str, tag: &str, authorization: &str) {
    let client = http_client();
    let base = gw.url(&format!("/v2/{ALIAS}/{repository}"));
    let get = |url: String, method: reqwest::Method| {
        client.request(method, url).header("authorization", authorization).header("accept", OCI_MANIFEST).send()
    };
    let head = get(format!("{base}/manifests/{tag}"), reqwest::Method::HEAD).await.expect("HEAD the tag");
    assert_eq!(head.status(), 200, "HEAD {repository}:{tag}");
    let digest = head.headers()["docker-content-digest"].to_str().expect("a digest").to_owned();
    let manifest = get(format!("{base}/manifests/{digest}"), reqwest::Method::GET).await.expect("GET the manifest");
    let manifest = manifest.bytes().await.expect("the manifest");
    assert_eq!(sha256(&manifest), digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    let mut blobs = vec![manifest["config"]["digest"].as_str().expect("a config").to_owned()];
    blobs.extend(
        manifest["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str()).map(str::to_owned),
    );
    for blob in blobs {
        let body = get(format!("{base}/blobs/{blob}"), reqwest::Method::GET).await.expect("GET a blob");
        assert_eq!(sha256(&body.bytes().await.expect("the blob")), blob);
    }
}

/// skopeo with its own `$HOME` (so `~/.config/containers/registries.conf`
/// and credential helpers can be set per test), no stdin, a permissive
/// signature policy, a bounded time.
#[derive(Debug)]
pub struct Skopeo {
    /// The `$HOME`.
    pub home: TempDir,
    path: Option<String>,
}

impl Skopeo {
    /// A fresh home.
    pub fn new() -> Self {
        let home = tempfile::Builder::new().prefix("pullpass-skopeo-").tempdir().expect("temp dir");
        std::fs::write(home.path().join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)
            .expect("policy");
        Self { home, path: None }
    }

    /// Writes `~/.config/containers/registries.conf`.
    pub fn registries_conf(&self, text: &str) {
        let dir = self.home.path().join(".config/containers");
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(dir.join("registries.conf"), text).expect("registries.conf");
    }

    /// Writes `auth.json` in the home; returns its path.
    pub fn auth_file(&self, json: &serde_json::Value) -> PathBuf {
        let path = self.home.path().join("auth.json");
        std::fs::write(&path, json.to_string()).expect("auth.json");
        path
    }

    /// Puts `dir` first on skopeo's `PATH` (for credential helpers).
    pub fn with_path(mut self, dir: &Path) -> Self {
        self.path = Some(format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()));
        self
    }

    /// `skopeo copy --src-creds CREDS docker://IMAGE oci:DIR` over plain
    /// http; the OCI layout's directory, or skopeo's error.
    pub fn copy(&self, image: &str, creds: &str) -> Result<PathBuf, String> {
        let layout = self.home.path().join(format!("copy-{}", image.replace(['/', ':', '@'], "_")));
        let copied = self.run(
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                creds,
                &format!("docker://{image}"),
                &format!("oci:{}:copied", layout.display()),
            ],
            &[],
        );
        if copied.status.success() { Ok(layout) } else { Err(String::from_utf8_lossy(&copied.stderr).into_owned()) }
    }

    /// Runs skopeo with `args` (and `env`).
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("timeout");
        command.arg("120").arg("skopeo").arg("--policy").arg(self.home.path().join("policy.json"));
        command.args(args).env("HOME", self.home.path()).env("XDG_RUNTIME_DIR", self.home.path());
        command.env_remove("REGISTRY_AUTH_FILE").stdin(Stdio::null());
        if let Some(path) = &self.path {
            command.env("PATH", path);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run skopeo")
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

/// The manifest digest of the one image in an OCI layout.
pub fn oci_manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).expect("index.json"))
            .expect("index JSON");
    index["manifests"][0]["digest"].as_str().expect("a manifest digest").to_owned()
}

/// A private containerd daemon (Debian's `containerd`): its own root,
/// state, socket and config, CRI off. Stopped when dropped.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: TempDir,
    /// Its gRPC socket.
    pub socket: PathBuf,
}

impl Containerd {
    /// Starts a daemon and waits (at most 20 s) until `ctr version` answers.
    pub fn start() -> Self {
        let found = Command::new("sh").arg("-c").arg("command -v containerd && command -v ctr").output();
        assert!(found.is_ok_and(|o| o.status.success()), "containerd/ctr not found: run scripts/install-test-deps.sh");
        // Short paths: containerd's shim sockets must fit in sun_path.
        let dir = tempfile::Builder::new().prefix("ppctrd-").tempdir_in("/tmp").expect("temp dir");
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = \"{socket}\"\n\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut daemon = Self { child: Some(child), dir, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if daemon.ctr(&["version"]).status.success() {
                return daemon;
            }
            if let Some(child) = daemon.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("containerd exited ({status}): {}", daemon.log());
            }
            assert!(Instant::now() < deadline, "containerd did not start: {}", daemon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `ctr --address SOCKET --namespace pullpass ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg("ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg("pullpass")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr images pull OPTIONS… --user USER --snapshotter native IMAGE`;
    /// panics with ctr's and the daemon's words unless it succeeded and
    /// `image` is then listed.
    pub fn pull(&self, options: &[&str], user: &str, image: &str) {
        let mut args = vec!["images", "pull"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--user", user, "--snapshotter", "native", image]);
        let pulled = self.ctr(&args);
        assert!(
            pulled.status.success(),
            "ctr pull {image}: {}{}\ncontainerd: {}",
            String::from_utf8_lossy(&pulled.stdout),
            String::from_utf8_lossy(&pulled.stderr),
            self.log()
        );
        let listed = self.ctr(&["images", "ls", "-q"]);
        assert!(String::from_utf8_lossy(&listed.stdout).lines().any(|l| l == image), "{image} is in containerd");
    }

    /// A hosts directory for `ctr --hosts-dir`: `DIR/<upstream>/hosts.toml`
    /// with `hosts_toml`.
    pub fn hosts_dir(&self, name: &str, upstream: &str, hosts_toml: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join(upstream)).expect("hosts dir");
        std::fs::write(dir.join(upstream).join("hosts.toml"), hosts_toml).expect("hosts.toml");
        dir
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
