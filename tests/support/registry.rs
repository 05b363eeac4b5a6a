//! Real registry peers: the Debian `docker-registry` (CNCF distribution 2.8)
//! with `auth: token`, the token-issuer and other fixtures of
//! `support/fixtures/peers.py`, and `skopeo`. Everything listens on
//! 127.0.0.1 with ephemeral ports; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{repo_root, tools_dir};

/// The fixture script.
fn peers_script() -> PathBuf {
    repo_root().join("tests/support/fixtures/peers.py")
}

/// The virtualenv's Python (with cryptography, botocore, google-auth).
pub fn python() -> PathBuf {
    let path = tools_dir().join("venv/bin/python");
    assert!(path.exists(), "{} missing: run scripts/install-test-deps.sh", path.display());
    path
}

/// Fails with the install hint when a Debian peer is missing.
fn require(program: &str) {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success());
    assert!(found, "{program} not found: run scripts/install-test-deps.sh");
}

/// A running `peers.py` server; it exits when dropped (its stdin closes).
#[derive(Debug)]
pub struct Peer {
    child: Child,
    _stdin: ChildStdin,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Peer {
    /// Starts `peers.py ARGS…` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(python());
        command.arg(peers_script()).args(args).stderr(Stdio::inherit());
        Self::spawn(command, &format!("peers.py {args:?}"))
    }

    /// Starts `command` (any fixture that prints `listening on ADDRESS`
    /// when ready and exits when its stdin closes, like `peers.py`) and
    /// waits for that line; `what` names it in the panic if it never comes.
    /// The caller chooses where its stderr goes.
    pub fn spawn(command: Command, what: &str) -> Self {
        Self::try_spawn(command).unwrap_or_else(|e| panic!("{what} did not start: {e}"))
    }

    /// Like [`Peer::spawn`], saying why it did not start instead of
    /// panicking (for a caller that adds what the fixture logged).
    pub fn try_spawn(mut command: Command) -> Result<Self, String> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let Some(address) = wait_for_line(stdout, "listening on ", Duration::from_secs(20)) else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("no `listening on` line within 20 s ({status})"));
        };
        Ok(Self { child, _stdin: stdin, address })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The fixture's request counters.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_request(&self.address, "GET", "/stats", None);
        assert_eq!(status, 200, "stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// One counter (0 when absent).
    pub fn count(&self, name: &str) -> u64 {
        self.stats().get(name).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    /// Changes the fixture's behaviour (see `peers.py`).
    pub fn control(&self, settings: serde_json::Value) {
        let (status, body) = http_request(&self.address, "POST", "/control", Some(&settings.to_string()));
        assert_eq!(status, 200, "control: {body}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines until one starts with `prefix`; returns the rest of it.
/// Keeps draining the stream in the background afterwards.
fn wait_for_line(stream: impl Read + Send + 'static, prefix: &str, limit: Duration) -> Option<String> {
    wait_for_line_keeping(stream, prefix, limit, None)
}

/// Like [`wait_for_line`], appending every line to `kept` too.
fn wait_for_line_keeping(
    stream: impl Read + Send + 'static,
    prefix: &str,
    limit: Duration,
    kept: Option<Arc<Mutex<Vec<String>>>>,
) -> Option<String> {
    let (sender, receiver) = mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(kept) = &kept {
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
            }
            if !sent && let Some(at) = line.find(&prefix) {
                let rest =
                    line[at + prefix.len()..].trim_end_matches('"').split_whitespace().next().unwrap_or("").to_owned();
                let rest = rest.trim_end_matches(['"', ',']).to_owned();
                let _ = sender.send(rest);
                sent = true;
            }
        }
    });
    receiver.recv_timeout(limit).ok()
}

/// A minimal HTTP/1.1 request to 127.0.0.1 (test peers only).
pub fn http_request(address: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_request_with(address, method, path, &[("Content-Type", "application/json")], body)
}

/// Like [`http_request`], with these request headers (and no others but
/// Host, Connection and Content-Length).
pub fn http_request_with(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to peer");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let body = body.unwrap_or("");
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The token issuer (with its OAuth and ECR endpoints) and its state.
#[derive(Debug)]
pub struct Issuer {
    /// The running fixture.
    pub peer: Peer,
    /// Where `bundle.pem`, `users.json`… live.
    pub state: TempDir,
}

impl Issuer {
    /// Starts an issuer granting per `users` (see `peers.py`).
    pub fn start(users: serde_json::Value) -> Self {
        let state = tempfile::Builder::new().prefix("pullpass-issuer-").tempdir().expect("temp dir");
        std::fs::write(state.path().join("users.json"), users.to_string()).expect("users.json");
        let peer = Peer::start(&["issuer", state.path().to_str().expect("utf-8 path")]);
        Self { peer, state }
    }

    /// Replaces the users.
    pub fn set_users(&self, users: serde_json::Value) {
        std::fs::write(self.state.path().join("users.json"), users.to_string()).expect("users.json");
    }

    /// The realm URL for a registry config.
    pub fn realm(&self) -> String {
        format!("{}/token", self.peer.url())
    }

    /// The certificate bundle the registry must trust.
    pub fn bundle(&self) -> PathBuf {
        self.state.path().join("bundle.pem")
    }

    /// Puts a file in the issuer's state directory.
    pub fn write_state(&self, name: &str, content: &str) {
        std::fs::write(self.state.path().join(name), content).expect("state file");
    }
}

/// A running `docker-registry serve` with token auth.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub address: String,
    config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// The static server blobs are redirected to (redirect middleware).
    pub blob_server: Option<Peer>,
    _root: TempDir,
}

/// One request the registry served, from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// GET, HEAD…
    pub method: String,
    /// The request URI (path and query).
    pub uri: String,
    /// The status it answered.
    pub status: u16,
}

/// The `service` the test registries announce.
pub const SERVICE: &str = "pullpass-test-registry";
/// The `issuer` their tokens must carry.
pub const ISSUER: &str = "pullpass-test-issuer";

impl Registry {
    /// Starts a registry whose token realm is `realm`, trusting `bundle`.
    pub fn start(realm: &str, bundle: &Path) -> Self {
        Self::start_with_tls(realm, bundle, None)
    }

    /// Like [`Registry::start`], serving https with `(certificate, key)`.
    pub fn start_with_tls(realm: &str, bundle: &Path, tls: Option<(&Path, &Path)>) -> Self {
        Self::start_configured(realm, bundle, tls, false)
    }

    /// Like [`Registry::start`], with the `redirect` storage middleware in
    /// front of a static file server on its storage: every blob GET answers
    /// a real `307` to that server, as CDN-backed registries do.
    pub fn start_redirecting(realm: &str, bundle: &Path) -> Self {
        Self::start_configured(realm, bundle, None, true)
    }

    fn start_configured(realm: &str, bundle: &Path, tls: Option<(&Path, &Path)>, redirect: bool) -> Self {
        require("docker-registry");
        let root = tempfile::Builder::new().prefix("pullpass-registry-").tempdir().expect("temp dir");
        let config = root.path().join("config.yml");
        let storage = root.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let blob_server = redirect.then(|| Peer::start(&["static", storage.to_str().expect("utf-8 path")]));
        let middleware = blob_server
            .as_ref()
            .map(|server| {
                format!(
                    "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {}/\n",
                    server.url()
                )
            })
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{middleware}http:\n  addr: 127.0.0.1:0\n{}auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                storage.display(),
                tls.map(|(cert, key)| format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()))
                    .unwrap_or_default(),
                bundle.display()
            ),
        )
        .expect("registry config");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, address) = spawn_registry(&config, None, &log);
        Self { child: Some(child), address, config, log, blob_server, _root: root }
    }

    /// Every request the registry has answered so far, oldest first: from
    /// its `response completed` log lines, and its `error authorizing
    /// context` lines (the 401 challenges, which it logs only so).
    pub fn served(&self) -> Vec<Served> {
        let lines = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lines.iter().filter_map(|l| parse_served(l)).collect()
    }

    /// Sends the (plain-http) registry a request of its own and waits until
    /// the registry has logged it; returns how many requests it had served
    /// then. Every request the registry answered before the mark is in
    /// `served()[..mark]`, so `served()[mark..]` holds only what came
    /// after: a test can say "the registry heard nothing" without racing
    /// the thread that reads its log.
    pub async fn mark(&self) -> usize {
        static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = format!(
            "/v2/pullpass-test-mark-{}-{}/tags/list",
            std::process::id(),
            MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(&self.address).expect("connect to the registry");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
            write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.address)
                .expect("send the mark");
            let _ = stream.read_to_end(&mut Vec::new());
        }
        crate::eventually("the registry to log the mark", Duration::from_secs(10), || {
            let served = self.served();
            std::future::ready(served.iter().position(|s| s.uri == path).map(|at| at + 1))
        })
        .await
    }

    /// Stops the registry (a later [`Registry::restart`] brings it back on
    /// the same port).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn_registry(&self.config, Some(&self.address), &self.log);
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT/repo:tag`.
    pub fn image(&self, reference: &str) -> String {
        format!("{}/{reference}", self.address)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `http.request.method=GET http.request.uri="/v2/…" http.response.status=200`
/// of one log line.
fn parse_served(line: &str) -> Option<Served> {
    let field = |name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[at..];
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted[..quoted.find('"')?].to_owned(),
            None => rest.split_whitespace().next()?.to_owned(),
        })
    };
    let status = if line.contains("msg=\"response completed\"") {
        field("http.response.status")?.parse().ok()?
    } else if line.contains("msg=\"error authorizing context") {
        401
    } else {
        return None;
    };
    Some(Served { method: field("http.request.method")?, uri: field("http.request.uri")?, status })
}

fn spawn_registry(config: &Path, address: Option<&str>, log: &Arc<Mutex<Vec<String>>>) -> (Child, String) {
    let mut command = Command::new("docker-registry");
    command.arg("serve").arg(config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(address) = address {
        command.env("REGISTRY_HTTP_ADDR", address);
    }
    let mut child = command.spawn().expect("start docker-registry");
    let stderr = child.stderr.take().expect("stderr");
    let address = wait_for_line_keeping(stderr, "listening on ", Duration::from_secs(20), Some(Arc::clone(log)))
        .expect("docker-registry did not start");
    // Ready when /v2/ answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(&address).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, address)
}

/// Builds a small OCI image and pushes it with skopeo as `user`.
pub fn seed(registry: &Registry, repository_and_tag: &str, user: &str, password: &str) {
    seed_with_layer(registry, repository_and_tag, user, password, None);
}

/// Like [`seed`], with a layer holding `layer_bytes` random bytes when
/// given; returns the manifest digest.
pub fn seed_with_layer(
    registry: &Registry,
    repository_and_tag: &str,
    user: &str,
    password: &str,
    layer_bytes: Option<u64>,
) -> String {
    require("skopeo");
    let layout = tempfile::tempdir().expect("temp dir");
    let tag = repository_and_tag.rsplit(':').next().expect("tag");
    let mut args = vec!["make-oci".to_owned(), layout.path().to_str().unwrap().to_owned(), tag.to_owned()];
    args.extend(layer_bytes.map(|n| n.to_string()));
    let made = Command::new(python()).arg(peers_script()).args(&args).output().unwrap();
    assert!(made.status.success(), "make-oci: {made:?}");
    let digest = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    let pushed = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{user}:{password}"),
        &format!("oci:{}:{tag}", layout.path().display()),
        &format!("docker://{}", registry.image(repository_and_tag)),
    ]);
    assert!(pushed.status.success(), "seeding {repository_and_tag}: {}", String::from_utf8_lossy(&pushed.stderr));
    digest
}

/// A private CA and a server certificate for 127.0.0.1 signed by it:
/// `(ca.pem, server.pem, server.key)` in a temporary directory.
pub fn private_ca() -> (TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let made =
        Command::new(python()).arg(peers_script()).args(["make-tls", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(made.status.success(), "make-tls: {made:?}");
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    (dir, ca, cert, key)
}

/// Runs skopeo (with no stdin, a private policy, and a bounded time).
pub fn skopeo(args: &[&str]) -> Output {
    require("skopeo");
    let home = tempfile::tempdir().expect("temp dir");
    let policy = home.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).expect("policy");
    let mut command = Command::new("timeout");
    command.arg("60").arg("skopeo").arg("--policy").arg(&policy);
    command.args(args).env("HOME", home.path()).env("XDG_RUNTIME_DIR", home.path()).stdin(Stdio::null());
    command.output().expect("run skopeo")
}

/// `skopeo inspect` of `image` with a bearer token, over plain http.
pub fn inspect_with_token(registry: &Registry, image: &str, token: &str) -> Output {
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--registry-token",
        token,
        &format!("docker://{}", registry.image(image)),
    ])
}

/// A registry with two seeded images, its issuer, and a pullpassd that may
/// reach both over plain http: the common set-up of the broker tests.
pub mod world {
    use pullpass::v1::{Action, Credential, IssueRegistryAuthRequest, Provider, RegistryAuth};
    use pullpass_client::Client;
    use tonic::Code;

    use super::{Issuer, Registry, seed};
    use crate::{Options, Pullpassd, create_workspace, error_reason};

    /// alice's password (a canary: it must never appear at rest or in logs).
    pub const ALICE_PASSWORD: &str = "alice-CANARY-7d41e9";

    /// The access key id the issuer's ECR endpoint knows (AWS's documented example).
    pub const ECR_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    /// Its secret access key (AWS's documented example).
    pub const ECR_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// The 12-hour registry password the ECR endpoint hands out.
    pub const ECR_PASSWORD: &str = "ecr-12h-password";

    /// The issuer's users: who may do what on which repository.
    pub fn users() -> serde_json::Value {
        serde_json::json!({
            "seed": {"password": "seed-pw", "grants": {"*": ["*"]}},
            "alice": {"password": ALICE_PASSWORD, "grants": {"team/*": ["pull"]}},
            "ops": {"password": "ops-pw", "grants": {"other/*": ["pull"]}},
            "pusher": {"password": "pusher-pw", "grants": {"team/app": ["pull", "push"]}},
            "oauth2accesstoken": {"grants": {"team/*": ["pull"]}},
        })
    }

    /// A registry with two seeded images, its issuer, and pullpassd allowed to
    /// reach both over plain http.
    #[allow(missing_debug_implementations)]
    pub struct World {
        /// The token issuer.
        pub issuer: Issuer,
        /// The registry.
        pub registry: Registry,
        /// pullpassd.
        pub server: Pullpassd,
        /// A root client.
        pub client: Client,
    }

    impl World {
        /// Starts everything with default flags.
        pub async fn start() -> Self {
            Self::start_with(&[]).await
        }

        /// Starts everything with extra pullpassd flags.
        pub async fn start_with(extra_args: &[String]) -> Self {
            Self::start_configured(|_| extra_args.to_vec()).await
        }

        /// Starts everything with the pullpassd flags `extra` makes from the
        /// started registry (to name its address).
        pub async fn start_configured(extra: impl FnOnce(&Registry) -> Vec<String>) -> Self {
            let issuer = Issuer::start(users());
            let registry = Registry::start(&issuer.realm(), &issuer.bundle());
            seed(&registry, "team/app:1.0", "seed", "seed-pw");
            seed(&registry, "other/tool:1.0", "seed", "seed-pw");
            let mut args = vec![
                "--insecure-registry".to_owned(),
                registry.address.clone(),
                "--insecure-registry".to_owned(),
                issuer.peer.address.clone(),
                "--google-token-uri".to_owned(),
                format!("{}/oauth2/token", issuer.peer.url()),
                "--ecr-endpoint".to_owned(),
                format!("{}/ecr/", issuer.peer.url()),
            ];
            args.extend(extra(&registry));
            let server = Pullpassd::start_with(Options { args, ..Default::default() }).expect("pullpassd starts");
            let client = server.client().await;
            create_workspace(&client, "acme").await;
            Self { issuer, registry, server, client }
        }

        /// A GENERIC credential for the registry (or a namespace of it) whose
        /// realm (the issuer) is allow-listed.
        pub fn credential(&self, namespace: &str, username: &str, password: &str) -> Credential {
            let registry = if namespace.is_empty() {
                self.registry.address.clone()
            } else {
                format!("{}/{namespace}", self.registry.address)
            };
            Credential {
                provider: Provider::Generic as i32,
                registry_server: registry,
                username: username.into(),
                secret: password.into(),
                token_realm_allowlist: vec![self.issuer.peer.url()],
                ..Default::default()
            }
        }

        /// Makes the issuer's ECR endpoint accept `ECR_ACCESS_KEY_ID` with
        /// `ECR_SECRET_ACCESS_KEY` for `registry` (region eu-west-1), answering
        /// with `ECR_PASSWORD`; returns an ECR credential for it holding
        /// `secret` (the right key or a wrong one).
        pub fn ecr_account(&self, registry: &str, secret: &str) -> Credential {
            self.issuer.write_state(
                "aws.json",
                &serde_json::json!({
                    "access_key_id": ECR_ACCESS_KEY_ID,
                    "secret_access_key": ECR_SECRET_ACCESS_KEY,
                    "region": "eu-west-1",
                    "registry": registry,
                    "registry_password": ECR_PASSWORD,
                })
                .to_string(),
            );
            Credential {
                provider: Provider::Ecr as i32,
                registry_server: registry.into(),
                username: ECR_ACCESS_KEY_ID.into(),
                secret: secret.into(),
                ..Default::default()
            }
        }

        /// Creates a credential in workspace acme.
        pub async fn add(&self, id: &str, credential: Credential) {
            self.client.create_credential("acme", id, credential).await.expect("create credential");
        }

        /// Issues auth for images (default options).
        pub async fn issue(&self, images: &[&str], actions: &[Action]) -> Vec<RegistryAuth> {
            self.issue_with(IssueRegistryAuthRequest {
                images: images.iter().map(|i| i.to_string()).collect(),
                actions: actions.iter().map(|a| *a as i32).collect(),
                ..Default::default()
            })
            .await
            .expect("IssueRegistryAuth")
        }

        /// Issues auth with a full request (workspace filled in).
        pub async fn issue_with(
            &self,
            mut request: IssueRegistryAuthRequest,
        ) -> Result<Vec<RegistryAuth>, tonic::Status> {
            request.workspace = "workspaces/acme".into();
            self.client.registry_auth_service().issue_registry_auth(request).await.map(|r| r.into_inner().auths)
        }

        /// Token requests the issuer has served.
        pub fn token_requests(&self) -> u64 {
            self.issuer.peer.count("token_requests")
        }
    }

    /// Asserts an OK per-image status.
    pub fn ok(auth: &RegistryAuth) -> &RegistryAuth {
        let status = auth.status.as_ref().expect("status");
        assert_eq!(status.code, 0, "{}: {}", auth.image, status.message);
        auth
    }

    /// The code and ErrorInfo reason of a per-image status.
    pub fn code_and_reason(auth: &RegistryAuth) -> (Code, String) {
        let status = auth.status.clone().expect("status");
        let tonic_status = tonic::Status::with_details(
            Code::from(status.code),
            status.message.clone(),
            prost::Message::encode_to_vec(&status).into(),
        );
        (Code::from(status.code), error_reason(&tonic_status).unwrap_or_default())
    }
}
