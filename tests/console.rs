//! The web console, in a real browser: Debian's `chromium` driven by npm's
//! `playwright-core` from `node:test` (`tests/console/console.test.cjs`),
//! against a real `pullpassd`, the token issuer and Debian's
//! `docker-registry`. This test starts them, hands their addresses and the
//! canary secrets to node, checks node's verdict, then greps the database,
//! its WAL and the server's log for every canary.
//!
//! `PULLPASS_UPDATE_SCREENSHOTS=1` writes the screenshots docs/console.md shows
//! into `docs/console/` (else into a temporary directory).
//!
//! The console under abuse is tested here too, over plain HTTP (no browser
//! needed): the full audit-chain check, floods of unknown session cookies
//! and login codes, slow bodies, the console's share of the connections,
//! the sign-in form's CSRF pair, the `Secure` flag behind an HTTPS proxy,
//! database errors before sign-in, and the root path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateConsoleLinkRequest, CreateCredentialRequest,
    CreateIdentityBindingRequest, Credential, GetIdentityBindingRequest, GetIdentityProviderRequest, IdentityBinding,
    Provider, Role,
};
use pullpass_tests::gateway::http_client;
use pullpass_tests::identity::{AUDIENCE, IdentityIssuer};
use pullpass_tests::registry::{Issuer, Registry, world::ALICE_PASSWORD, world::users};
use pullpass_tests::replicas::free_port;
use pullpass_tests::{Options, Pullpassd, create_workspace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_types::StatusExt;

const GHCR_PAT: &str = "ghp_consoleCANARY0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
const ROTATED_PAT: &str = "ghp_rotatedCANARY9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const IMPORT_PASSWORD: &str = "import-CANARY-52c9e1";
const BAD_NAME: &str = "bad name!";

#[test]
fn the_console_walk_through_refusals_and_accessibility_pass_in_chromium_and_no_secret_leaks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_owned();
    let modules = root.join(".tools/node/node_modules");
    assert!(
        modules.join("playwright-core").is_dir() && modules.join("axe-core").is_dir(),
        "playwright-core and axe-core are missing from {}: run scripts/install-test-deps.sh",
        modules.display()
    );
    assert!(Path::new("/usr/bin/chromium").exists(), "Debian's chromium is missing: run scripts/install-test-deps.sh");

    let issuer = Issuer::start(users());
    let registry = Registry::start(&issuer.realm(), &issuer.bundle());
    let server = Pullpassd::start_with(Options {
        args: vec![
            "--insecure-registry".into(),
            registry.address.clone(),
            "--insecure-registry".into(),
            issuer.peer.address.clone(),
        ],
        ..Default::default()
    })
    .expect("pullpassd starts");
    assert!(server.console.starts_with("http://127.0.0.1:"), "console URL: {:?}", server.console);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (bad_name_error, login_link) = runtime.block_on(async {
        let client = server.client().await;
        // The API's own words for the bad name, which the console must show.
        let refused = client
            .credentials()
            .create_credential(CreateCredentialRequest {
                parent: "workspaces/acme".into(),
                credential_id: BAD_NAME.into(),
                credential: Some(Credential { provider: Provider::Ghcr as i32, ..Default::default() }),
            })
            .await
            .expect_err("a bad id is refused");
        let details = refused.get_error_details();
        let violation = details
            .bad_request()
            .and_then(|b| b.field_violations.iter().find(|v| v.field == "credential_id").cloned())
            .expect("a credential_id violation");
        let link = client.access().create_console_link(CreateConsoleLinkRequest {}).await.expect("a login link");
        (violation.description, link.into_inner().url)
    });
    assert!(login_link.starts_with(&format!("{}login#ppl_", server.console)), "{login_link}");

    let artifacts = tempfile::tempdir().unwrap();
    let screenshots: PathBuf = if std::env::var_os("PULLPASS_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/console")
    } else {
        artifacts.path().to_owned()
    };
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = Command::new("node")
        .args(["--test", "--test-reporter=tap", "--test-timeout=240000"])
        .arg(root.join("tests/console/console.test.cjs"))
        .env("PULLPASS_NODE_MODULES", &modules)
        .env("PULLPASS_CONSOLE", &server.console)
        .env("PULLPASS_ROOT_TOKEN", &server.root_token)
        .env("PULLPASS_REGISTRY", &registry.address)
        .env("PULLPASS_REALM", issuer.peer.url())
        .env("PULLPASS_REGISTRY_USER", "alice")
        .env("PULLPASS_REGISTRY_PASSWORD", ALICE_PASSWORD)
        .env("PULLPASS_GHCR_PAT", GHCR_PAT)
        .env("PULLPASS_ROTATED_PAT", ROTATED_PAT)
        .env("PULLPASS_IMPORT_PASSWORD", IMPORT_PASSWORD)
        .env("PULLPASS_BAD_NAME", BAD_NAME)
        .env("PULLPASS_BAD_NAME_ERROR", &bad_name_error)
        .env("PULLPASS_LOGIN_LINK", &login_link)
        .env("PULLPASS_SCREENSHOTS", &screenshots)
        .env("PULLPASS_ARTIFACTS", artifacts.path())
        .env("HOME", artifacts.path())
        .output()
        .expect("run node (Debian's nodejs)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser tests failed:\n{report}");
    // The TAP reporter ends with the totals: at least one pass, no failure.
    assert!(report.lines().any(|l| l == "# fail 0") && !report.lines().any(|l| l == "# pass 0"), "{report}");
    for picture in ["credentials.png", "add-credential.png"] {
        assert!(screenshots.join(picture).metadata().is_ok_and(|m| m.len() > 10_000), "screenshot {picture}");
    }

    // No canary in the server's log, the database or its WAL.
    let code = login_link.split_once('#').map(|(_, code)| code.to_owned()).unwrap_or_default();
    let canaries = [GHCR_PAT, ROTATED_PAT, IMPORT_PASSWORD, ALICE_PASSWORD, &server.root_token, &code];
    let logs = server.current_logs();
    assert!(logs.contains("console request"), "the console logs its requests");
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("pullpass.db")) {
            stored.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(stored.iter().any(|(p, _)| p.to_string_lossy().ends_with("-wal")), "the WAL is checked too");
    for canary in canaries {
        assert!(!logs.contains(canary), "a secret in the server log");
        for (path, bytes) in &stored {
            assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()), "a secret in {}", path.display());
        }
        let network = std::fs::read_to_string(artifacts.path().join("network.log")).unwrap_or_default();
        assert!(!network.is_empty(), "node wrote the browser's network log");
    }
    drop(server);
}

/// An answer of the console, read whole.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    /// The `Set-Cookie` line of cookie `name`, if this answer sets it.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|line| line.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The value of the form's hidden `csrf` field ("" when there is none:
    /// the POST that sends it is then refused, and says so).
    fn csrf(&self) -> String {
        let rest = self.text.split_once(r#"name="csrf" value=""#).map_or("", |(_, rest)| rest);
        rest.split('"').next().unwrap_or_default().to_owned()
    }
}

/// A person at the console without a browser: plain HTTP, cookies kept by
/// hand (name → value), redirects not followed.
struct Visitor {
    origin: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Visitor {
    fn new(server: &Pullpassd) -> Self {
        Self::at(server.console.trim_end_matches('/').trim_end_matches("/console"))
    }

    /// A visitor of the console at `origin` (`http://127.0.0.1:PORT`).
    fn at(origin: &str) -> Self {
        Self { origin: origin.to_owned(), http: http_client(), cookies: BTreeMap::new() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.origin));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String =
            reqwest::Url::parse_with_params("http://x/", fields).unwrap().query().unwrap_or("").to_owned();
        let request = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    async fn send(&mut self, mut request: reqwest::RequestBuilder) -> Page {
        if !self.cookies.is_empty() {
            let header: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", header.join("; "));
        }
        let response = request.send().await.expect("the console answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for line in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let pair = line.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || line.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Page { status, headers, text: response.text().await.unwrap_or_default() }
    }

    /// Signs in with `token` through the sign-in form.
    async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200, "{}", form.text);
        self.post("/console/login", &[("token", token), ("csrf", &form.csrf())]).await
    }
}

/// A token of `role` in workspace `workspace`, minted by ROOT.
async fn mint(server: &Pullpassd, workspace: &str, role: Role) -> String {
    let root = server.client().await;
    let token = root
        .access()
        .create_access_token(CreateAccessTokenRequest {
            parent: format!("workspaces/{workspace}"),
            access_token: Some(AccessToken { role: role as i32, ..Default::default() }),
        })
        .await
        .expect("mint a token")
        .into_inner();
    token.token
}

/// Store writes so far (`pullpass_store_write_duration_seconds_count`,
/// summed over backends).
async fn store_writes(server: &Pullpassd) -> f64 {
    let text =
        http_client().get(format!("http://{}/metrics", server.metrics)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("pullpass_store_write_duration_seconds_count"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A secret of the shape `prefix` + 43 letters and digits, never made.
fn forged(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:0>43}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_audit_chain_check_is_roots_alone_and_a_second_one_right_away_is_refused() {
    let server = Pullpassd::start();
    create_workspace(&server.client().await, "acme").await;
    for role in [Role::Viewer, Role::Admin] {
        let mut visitor = Visitor::new(&server);
        assert_eq!(visitor.sign_in(&mint(&server, "acme", role).await).await.status, 303);
        let trail = visitor.get("/console/workspaces/acme/audit").await;
        assert_eq!(trail.status, 200, "{role:?}");
        assert!(!trail.text.contains("Check chain"), "{role:?} is offered no chain check");
        let check = visitor.get("/console/workspaces/acme/audit?check=1").await;
        assert_eq!(check.status, 403, "{role:?}: {}", check.text);
        assert!(check.text.contains("Checking the chain is for ROOT"), "{role:?}: {}", check.text);
        assert!(!check.text.contains("intact") && !check.text.contains("checked;"), "{role:?}: {}", check.text);
    }
    let mut root = Visitor::new(&server);
    assert_eq!(root.sign_in(&server.root_token).await.status, 303);
    assert!(root.get("/console/workspaces/acme/audit").await.text.contains("Check chain"));
    let check = root.get("/console/workspaces/acme/audit?check=1").await;
    assert_eq!(check.status, 200, "{}", check.text);
    assert!(check.text.contains("Chain check: intact."), "{}", check.text);
    let again = root.get("/console/workspaces/acme/audit?check=1").await;
    assert_eq!(again.status, 429, "{}", again.text);
    assert!(again.text.contains("This session checked the chain less than 60 s ago"), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_unknown_session_cookies_and_login_codes_from_one_address_are_limited_and_write_nothing() {
    let server = Pullpassd::start();
    let console = server.console.clone();
    // Before any other call, so that nothing else writes meanwhile.
    let writes = store_writes(&server).await;
    let mut visitor = Visitor::new(&server);
    let form = visitor.get("/console/login").await;
    let csrf = form.csrf();
    let http = http_client();

    // Attempts until both an answered one and a refused one were seen, and
    // at least 100 in all; returns (answered, refused, seconds taken).
    async fn flood<F, Fut>(mut attempt: F, answered_status: u16) -> (u32, u32, f64)
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = reqwest::Response>,
    {
        let started = Instant::now();
        let (mut answered, mut refused) = (0, 0);
        for n in 0.. {
            let response = attempt(n).await;
            match response.status().as_u16() {
                429 => {
                    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
                    refused += 1;
                }
                status => {
                    assert_eq!(status, answered_status, "{}", response.text().await.unwrap_or_default());
                    answered += 1;
                }
            }
            if n >= 100 && answered > 0 && refused > 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no refusal after {n} attempts");
        }
        (answered, refused, started.elapsed().as_secs_f64())
    }

    let codes = flood(
        |n| {
            let request = http
                .post(format!("{console}login"))
                .header(
                    "cookie",
                    format!("pullpass_signin={}", visitor.cookies.get("pullpass_signin").cloned().unwrap_or_default()),
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&token={}", forged("ppl_", n)));
            async move { request.send().await.unwrap() }
        },
        401,
    )
    .await;
    let cookies = flood(
        |n| {
            let request = http
                .get(format!("{console}workspaces"))
                .header("cookie", format!("pullpass_session={}", forged("pps_", n)));
            async move { request.send().await.unwrap() }
        },
        303,
    )
    .await;
    for (what, (answered, refused, seconds)) in [("login codes", codes), ("session cookies", cookies)] {
        // A burst of 20, then 10 a second.
        let allowed = 20.0 + 10.0 * seconds + 1.0;
        assert!(f64::from(answered) <= allowed, "{what}: {answered} answered in {seconds:.1} s, {refused} refused");
    }
    assert_eq!(store_writes(&server).await, writes, "unknown codes and cookies cost no database write");

    // A real login link still works, once the address may try again.
    let link = server.client().await.access().create_console_link(CreateConsoleLinkRequest {}).await.unwrap();
    let code = link.into_inner().url.split_once('#').unwrap().1.to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let signed_in = visitor.post("/console/login", &[("token", &code), ("csrf", &csrf)]).await;
        if signed_in.status != 429 {
            assert_eq!(signed_in.status, 303, "{}", signed_in.text);
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let home = visitor.get("/console/workspaces").await;
    assert_eq!(home.status, 200, "signed in with the link: {}", home.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_session_cookies_from_a_signed_in_persons_address_leaves_their_pages_served() {
    let server = Pullpassd::start();
    let console = server.console.clone();
    let mut person = Visitor::new(&server);
    let csrf = person.get("/console/login").await.csrf();
    let signed_in = person.post("/console/login", &[("token", &server.root_token), ("csrf", &csrf)]).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    // Behind a proxy, an attacker and the person share one address.
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        let refused = http
            .get(format!("{console}workspaces"))
            .header("cookie", format!("pullpass_session={}", forged("pps_", n)))
            .send()
            .await
            .unwrap()
            .status()
            == 429;
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "the flood was never limited");
    }
    for _ in 0..5 {
        let page = person.get("/console/workspaces").await;
        assert_eq!(page.status, 200, "a signed-in person's page during the flood: {}", page.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_that_is_slower_than_the_deadline_gets_408() {
    let server = Pullpassd::start();
    let address = server.console.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /console/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 1000\r\n\r\ntoken=pp_"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer)).await;
    let n = read.expect("answered before 20 s").unwrap();
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(13), "answered after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_console_connection_taken_grpc_calls_still_succeed() {
    let server =
        Pullpassd::start_with(Options { args: vec!["--max-connections".into(), "16".into()], ..Default::default() })
            .expect("pullpassd starts");
    let address = server.console.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    // Clients that are served once and then hold their connection open,
    // one after the other, until the console answers no more: it holds its
    // share (16 / 8 = 2) of the budget, and new clients wait in the queue.
    let mut held = Vec::new();
    loop {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = format!("GET /console/login HTTP/1.1\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut answer)).await {
            Ok(read) => {
                read.unwrap();
                assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
                held.push(stream);
            }
            Err(_) => {
                held.push(stream);
                break;
            }
        }
        assert!(held.len() <= 16, "the console took the whole budget");
    }
    assert_eq!(held.len() - 1, 2, "the console serves its share of the connections at once");
    let call = async {
        let client = server.client().await;
        create_workspace(&client, "acme").await;
    };
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("a gRPC call is served");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut visitor = Visitor::new(&server);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(1), visitor.get("/console/login")).await;
        if answer.is_ok_and(|page| page.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the console serves again once its connections close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_without_the_pair_of_its_forms_cookie_and_token_is_refused() {
    let server = Pullpassd::start();
    let mut forger = Visitor::new(&server);
    let refused = forger.post("/console/login", &[("token", &server.root_token)]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.set_cookie("pullpass_session").is_none());
    assert!(refused.text.contains("not sent from this console"), "{}", refused.text);
    // A token of another browser's form.
    let mut other = Visitor::new(&server);
    let csrf = other.get("/console/login").await.csrf();
    let mut victim = Visitor::new(&server);
    victim.get("/console/login").await;
    let mixed = victim.post("/console/login", &[("token", &server.root_token), ("csrf", &csrf)]).await;
    assert_eq!(mixed.status, 403, "{}", mixed.text);
    assert!(mixed.set_cookie("pullpass_session").is_none());
    // The console's own page pairs them.
    let signed_in = other.post("/console/login", &[("token", &server.root_token), ("csrf", &csrf)]).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    assert!(signed_in.set_cookie("pullpass_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_https_public_url_the_console_cookies_are_secure_on_plaintext_loopback() {
    let port = free_port();
    let server = Pullpassd::start_with(Options {
        args: vec![
            "--console-listen".into(),
            format!("127.0.0.1:{port}"),
            "--console-public-url".into(),
            "https://console.example.test".into(),
        ],
        ..Default::default()
    })
    .expect("pullpassd starts");
    let mut visitor = Visitor::at(&format!("http://127.0.0.1:{port}"));
    let form = visitor.get("/console/login").await;
    let form_cookie = form.set_cookie("pullpass_signin").expect("the form's cookie");
    assert!(form_cookie.contains("; Secure"), "{form_cookie}");
    let signed_in = visitor.post("/console/login", &[("token", &server.root_token), ("csrf", &form.csrf())]).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    let session = signed_in.set_cookie("pullpass_session").expect("a session cookie");
    assert!(session.contains("; Secure") && session.contains("HttpOnly"), "{session}");
    let csrf = visitor.get("/console/workspaces").await.csrf();
    let out = visitor.post("/console/logout", &[("csrf", &csrf)]).await;
    assert!(out.set_cookie("pullpass_session").is_some_and(|c| c.contains("; Secure")), "the clearing cookie too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_is_not_shown_to_a_visitor_who_is_not_signed_in() {
    let server = Pullpassd::start();
    let mut visitor = Visitor::new(&server);
    let csrf = visitor.get("/console/login").await.csrf();
    // Cheapest way to make the database fail: take away the table.
    server.sql("DROP TABLE console_sessions");
    visitor.cookies.insert("pullpass_session".into(), forged("pps_", 1));
    let page = visitor.get("/console/workspaces").await;
    visitor.cookies.remove("pullpass_session");
    let sign_in = visitor.post("/console/login", &[("token", &forged("ppl_", 2)), ("csrf", &csrf)]).await;
    for (what, page) in [("a session lookup", page), ("a sign-in", sign_in)] {
        assert_eq!(page.status, 503, "{what}: {}", page.text);
        let request_id = page.headers["x-request-id"].to_str().unwrap();
        assert!(page.text.contains(request_id), "{what} names its request id: {}", page.text);
        for detail in ["console_sessions", "storage", "sqlite", "relation", "SQL"] {
            assert!(!page.text.contains(detail), "{what} shows `{detail}`: {}", page.text);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.current_logs().contains("console_sessions") {
        assert!(Instant::now() < deadline, "the log has the detail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_path_sends_people_to_the_console() {
    let server = Pullpassd::start();
    let mut visitor = Visitor::new(&server);
    let root = visitor.get("/").await;
    assert_eq!(root.status, 303, "{}", root.text);
    assert_eq!(root.headers["location"], "/console/");
    assert_eq!(visitor.get("/elsewhere").await.status, 404);
}

// --- workload identity: providers (ROOT), bindings (ADMIN), Test a token ---

/// A text between `start` and the next `end` in a page ("" when absent).
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    text.split_once(start).and_then(|(_, rest)| rest.split_once(end)).map_or("", |(inside, _)| inside)
}

/// Form fields as `post` takes them.
fn borrowed<'a>(fields: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The field error shown under form field `name` ("" when none).
fn field_error(page: &Page, name: &str) -> String {
    between(&page.text, &format!(r#"id="{name}-error">"#), "</p>").to_owned()
}

/// Identity provider `k8s` for `issuer`, created over the API.
async fn kubernetes_provider(server: &Pullpassd, issuer: &IdentityIssuer) {
    pullpass_tests::identity::create_provider(&server.client().await, "k8s", issuer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_adds_an_identity_provider_through_the_form_and_a_viewer_or_admin_is_refused_the_provider_pages() {
    let server = Pullpassd::start();
    create_workspace(&server.client().await, "acme").await;
    create_workspace(&server.client().await, "other").await;
    let issuer = IdentityIssuer::start_kubernetes();
    let jwks_uri = issuer.jwks_uri();

    let mut root = Visitor::new(&server);
    assert_eq!(root.sign_in(&server.root_token).await.status, 303);
    let workspaces = root.get("/console/workspaces").await;
    assert!(workspaces.text.contains(r#"href="/console/identityProviders""#), "ROOT's pages link the providers");
    let list = root.get("/console/identityProviders").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains("No identity provider yet."), "{}", list.text);
    for default in [r#"value="RS256" checked"#, r#"value="ES256" checked"#, r#"value="discovery" checked"#] {
        assert!(list.text.contains(default), "the fresh form has {default}");
    }
    let mut fields = vec![
        ("csrf", list.csrf()),
        ("identity_provider_id", "k8s".to_owned()),
        ("issuer", issuer.issuer().to_owned()),
        ("key_source", "jwks_uri".to_owned()),
        ("jwks_uri", jwks_uri.clone()),
        ("jwks", String::new()),
        ("ca_certificates", String::new()),
        ("audiences", format!("{AUDIENCE}\r\nsecond-audience\r\n")),
        ("allowed_algorithms", "RS256".to_owned()),
        ("allowed_algorithms", "ES384".to_owned()),
        ("max_token_lifetime", "100000".to_owned()),
        ("clock_skew", "15".to_owned()),
        ("description", "cluster A".to_owned()),
    ];
    // Over the cap: the API's words, next to the field.
    let refused = root.post("/console/identityProviders", &borrowed(&fields)).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(field_error(&refused, "max_token_lifetime"), "between 1 s and 24 h", "{}", refused.text);
    assert!(refused.text.contains(r#"value="100000""#), "the form keeps what was typed");

    fields.retain(|(k, _)| *k != "max_token_lifetime");
    fields.push(("max_token_lifetime", "7200".to_owned()));
    let created = root.post("/console/identityProviders", &borrowed(&fields)).await;
    assert_eq!(created.status, 303, "{}", created.text);
    assert_eq!(created.headers["location"], "/console/identityProviders/k8s");
    let shown = root.get("/console/identityProviders/k8s").await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(shown.text.contains(&jwks_uri) && shown.text.contains("pullpass, second-audience"), "{}", shown.text);
    let stored = server
        .client()
        .await
        .access()
        .get_identity_provider(GetIdentityProviderRequest { name: "identityProviders/k8s".into() })
        .await
        .expect("the provider exists")
        .into_inner();
    assert_eq!(stored.issuer, issuer.issuer());
    assert_eq!(stored.jwks_uri, jwks_uri);
    assert_eq!(stored.audiences, [AUDIENCE, "second-audience"]);
    assert_eq!(stored.allowed_algorithms, ["RS256", "ES384"]);
    assert_eq!(stored.max_token_lifetime.map(|d| d.seconds), Some(7200));
    assert_eq!(stored.clock_skew.map(|d| d.seconds), Some(15));
    assert_eq!(stored.description, "cluster A");
    let again = root.post("/console/identityProviders", &borrowed(&fields)).await;
    assert_eq!(again.status, 422, "{}", again.text);
    assert!(field_error(&again, "identity_provider_id").contains("already exists"), "{}", again.text);

    // Not ROOT: refused every provider page (VIEWER and ADMIN alike), and a
    // forged POST creates nothing and is audited.
    for role in [Role::Viewer, Role::Admin] {
        let mut person = Visitor::new(&server);
        assert_eq!(person.sign_in(&mint(&server, "acme", role).await).await.status, 303);
        let own = person.get("/console/workspaces/acme/credentials").await;
        assert!(!own.text.contains("Identity providers"), "{role:?} is offered no provider pages");
        for path in
            ["/console/identityProviders", "/console/identityProviders/k8s", "/console/identityProviders/k8s/delete"]
        {
            let page = person.get(path).await;
            assert_eq!(page.status, 403, "{role:?} {path}: {}", page.text);
            assert!(!page.text.contains(&jwks_uri), "{role:?} {path} shows nothing of the provider");
        }
        let mut forged = fields.clone();
        forged.retain(|(k, _)| *k != "csrf" && *k != "identity_provider_id");
        forged.extend([("csrf", own.csrf()), ("identity_provider_id", "forged".to_owned())]);
        let refused = person.post("/console/identityProviders", &borrowed(&forged)).await;
        assert_eq!(refused.status, 403, "{role:?}: {}", refused.text);
        let bindings = person.get("/console/workspaces/acme/identityBindings").await;
        let expected = if role == Role::Admin { 200 } else { 403 };
        assert_eq!(bindings.status, expected, "{role:?} on the bindings: {}", bindings.text);
        assert_eq!(person.get("/console/workspaces/acme/test-identity-token").await.status, expected, "{role:?}");
        assert_eq!(person.get("/console/workspaces/other/identityBindings").await.status, 404, "another workspace's");
    }
    let missing = server
        .client()
        .await
        .access()
        .get_identity_provider(GetIdentityProviderRequest { name: "identityProviders/forged".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "the forged POSTs created nothing");
    let trail = root.get("/console/workspaces/acme/audit?action=CreateIdentityProvider").await;
    assert_eq!(trail.text.matches("permission denied").count(), 2, "both refusals audited: {}", trail.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_binds_through_the_form_with_the_apis_field_errors_and_test_a_token_explains_without_keeping_it() {
    let server = Pullpassd::start();
    create_workspace(&server.client().await, "acme").await;
    let issuer = IdentityIssuer::start_kubernetes();
    kubernetes_provider(&server, &issuer).await;
    // The API's own words for a binding that binds only `aud`.
    let api_refusal = server
        .client()
        .await
        .access()
        .create_identity_binding(CreateIdentityBindingRequest {
            parent: "workspaces/acme".into(),
            identity_binding_id: "aud-only".into(),
            identity_binding: Some(IdentityBinding {
                identity_provider: "identityProviders/k8s".into(),
                bound_claims: [("aud".to_owned(), AUDIENCE.to_owned())].into(),
                role: Role::Launcher as i32,
                ..Default::default()
            }),
        })
        .await
        .expect_err("a binding of aud alone is refused");
    let details = api_refusal.get_error_details();
    let words = details
        .bad_request()
        .and_then(|b| b.field_violations.iter().find(|v| v.field == "identity_binding.bound_claims").cloned())
        .expect("a bound_claims violation")
        .description;

    let mut admin = Visitor::new(&server);
    assert_eq!(admin.sign_in(&mint(&server, "acme", Role::Admin).await).await.status, 303);
    let home = admin.get("/console/workspaces/acme/credentials").await;
    assert!(
        home.text.contains(r#"href="/console/workspaces/acme/identityBindings""#),
        "the workspace links its bindings"
    );
    let list = admin.get("/console/workspaces/acme/identityBindings").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains(r#"<option value="identityProviders/k8s""#), "ADMIN chooses among the providers");
    assert!(list.text.contains(r#"href="/console/workspaces/acme/test-identity-token""#));
    let csrf = list.csrf();
    let aud_only = admin
        .post(
            "/console/workspaces/acme/identityBindings",
            &[
                ("csrf", &csrf),
                ("identity_binding_id", "aud-only"),
                ("identity_provider", "identityProviders/k8s"),
                ("bound_claims", &format!("aud = {AUDIENCE}")),
                ("role", "LAUNCHER"),
            ],
        )
        .await;
    assert_eq!(aud_only.status, 422, "{}", aud_only.text);
    assert_eq!(field_error(&aud_only, "bound_claims"), words, "the API's words next to Bound claims");
    assert!(aud_only.text.contains(r#"aria-describedby="bound_claims-hint bound_claims-error""#), "{}", aud_only.text);
    let malformed = admin
        .post(
            "/console/workspaces/acme/identityBindings",
            &[("csrf", &csrf), ("identity_binding_id", "x"), ("bound_claims", "sub ci"), ("role", "LAUNCHER")],
        )
        .await;
    assert_eq!(malformed.status, 422);
    assert!(field_error(&malformed, "bound_claims").contains("is not `claim = pattern`"), "{}", malformed.text);

    let created = admin
        .post(
            "/console/workspaces/acme/identityBindings",
            &[
                ("csrf", &csrf),
                ("identity_binding_id", "ci"),
                ("identity_provider", "identityProviders/k8s"),
                ("bound_claims", "/kubernetes.io/namespace = ci\r\nsub = system:serviceaccount:ci:*\r\n"),
                ("role", "LAUNCHER"),
                ("allowed_projects", "rnaseq"),
                ("description", "CI pods"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.text);
    assert_eq!(created.headers["location"], "/console/workspaces/acme/identityBindings/ci");
    let binding = server
        .client()
        .await
        .access()
        .get_identity_binding(GetIdentityBindingRequest { name: "workspaces/acme/identityBindings/ci".into() })
        .await
        .expect("the binding exists")
        .into_inner();
    assert_eq!(binding.bound_claims.len(), 2);
    assert_eq!(binding.bound_claims["sub"], "system:serviceaccount:ci:*");
    assert_eq!(
        (binding.role, binding.allowed_projects.as_slice()),
        (Role::Launcher as i32, &["rnaseq".to_owned()][..])
    );

    // Test a token: a GET shows the form only; the token goes in a POST.
    let form = admin.get("/console/workspaces/acme/test-identity-token").await;
    assert_eq!(form.status, 200, "{}", form.text);
    assert!(
        form.text
            .contains(r#"<form class="card" method="post" action="/console/workspaces/acme/test-identity-token">"#)
    );
    let matching = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let other = issuer.mint_kubernetes("prod", "deployer", AUDIENCE);
    let expired = issuer.mint(serde_json::json!({
        "kind": "kubernetes", "namespace": "ci", "service_account": "builder", "audience": [AUDIENCE],
        "exp_offset": -600, "iat_offset": -900,
    }));
    let mut answers = Vec::new();
    for token in [&matching, &other, &expired] {
        let answer = admin
            .post("/console/workspaces/acme/test-identity-token", &[("csrf", &form.csrf()), ("token", token)])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(!answer.text.contains(token.as_str()), "the token is never shown back");
        assert!(
            answer.text.contains(r#"spellcheck="false" aria-describedby="token-hint"></textarea>"#),
            "an empty textarea"
        );
        answers.push(answer.text);
    }
    let yes = &answers[0];
    assert!(yes.contains("Verified by identity provider <strong>k8s</strong>"), "{yes}");
    assert!(yes.contains("it gets <strong>LAUNCHER</strong> for projects rnaseq."), "{yes}");
    assert!(yes.contains("<strong>matches</strong>") && !yes.contains("no match"), "{yes}");
    assert!(yes.contains("<td><code>/kubernetes.io/namespace</code></td><td><code>ci</code></td><td><code>ci</code></td><td class=\"ok\">match</td>"), "{yes}");
    let no = &answers[1];
    assert!(no.contains("No binding of acme matches it: it gets nothing here."), "{no}");
    assert!(no.contains("<strong>does not match</strong>"), "{no}");
    assert!(no.contains("<td><code>/kubernetes.io/namespace</code></td><td><code>ci</code></td><td><code>prod</code></td><td class=\"failed\">no match</td>"), "{no}");
    assert!(
        no.contains("<td><code>system:serviceaccount:prod:deployer</code></td><td class=\"failed\">no match</td>"),
        "{no}"
    );
    for unnamed in ["deployer-0", "node-1"] {
        assert!(!no.contains(unnamed), "a claim no binding names is not shown: {unnamed}");
    }
    assert!(
        answers[2].contains("The token was refused: </strong>") && answers[2].contains("expired"),
        "{}",
        answers[2]
    );
    let empty =
        admin.post("/console/workspaces/acme/test-identity-token", &[("csrf", &form.csrf()), ("token", "")]).await;
    assert_eq!(empty.status, 422, "{}", empty.text);
    assert!(field_error(&empty, "token").contains("is required"), "{}", empty.text);
    let not_a_jwt = admin.get("/console/workspaces/acme/test-identity-token?token=pp_notAjwt").await;
    assert!(!not_a_jwt.text.contains("Result"), "a GET never tests a token");

    // The tokens are nowhere: not in the log, the database or its WAL.
    let mut server = server;
    server.stop();
    let logs = server.logs();
    assert!(logs.contains("test-identity-token"), "the console logged its requests");
    for token in [&matching, &other, &expired] {
        assert!(!logs.contains(token.as_str()), "a token in the server log");
        assert!(server.stored_files_containing(token.as_bytes()).is_empty(), "a token at rest");
        let signature = token.rsplit('.').next().unwrap();
        assert!(server.stored_files_containing(signature.as_bytes()).is_empty(), "a token's signature at rest");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_edited_and_deleted_and_a_provider_is_deleted_with_its_bindings_only_when_asked() {
    let server = Pullpassd::start();
    create_workspace(&server.client().await, "acme").await;
    let issuer = IdentityIssuer::start_kubernetes();
    kubernetes_provider(&server, &issuer).await;
    let mut admin = Visitor::new(&server);
    assert_eq!(admin.sign_in(&mint(&server, "acme", Role::Admin).await).await.status, 303);
    let csrf = admin.get("/console/workspaces/acme/identityBindings").await.csrf();
    for id in ["ci", "build"] {
        let created = admin
            .post(
                "/console/workspaces/acme/identityBindings",
                &[
                    ("csrf", &csrf),
                    ("identity_binding_id", id),
                    ("identity_provider", "identityProviders/k8s"),
                    ("bound_claims", &format!("/kubernetes.io/namespace = {id}")),
                    ("role", "LAUNCHER"),
                ],
            )
            .await;
        assert_eq!(created.status, 303, "{}", created.text);
    }
    let page = admin.get("/console/workspaces/acme/identityBindings/ci").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("/kubernetes.io/namespace = ci</textarea>"), "{}", page.text);
    assert!(page.text.contains(issuer.issuer()), "the binding's page names its provider's issuer");
    let refused = admin
        .post(
            "/console/workspaces/acme/identityBindings/ci",
            &[("csrf", &csrf), ("bound_claims", "/kubernetes.io/namespace = ci"), ("role", "ADMIN")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(field_error(&refused, "role").contains("LAUNCHER or VIEWER"), "{}", refused.text);
    let saved = admin
        .post(
            "/console/workspaces/acme/identityBindings/ci",
            &[
                ("csrf", &csrf),
                ("bound_claims", "/kubernetes.io/namespace = ci\nsub = system:serviceaccount:ci:builder"),
                ("role", "VIEWER"),
                ("description", "read only"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert!(saved.text.contains("Saved."), "{}", saved.text);
    let binding = server
        .client()
        .await
        .access()
        .get_identity_binding(GetIdentityBindingRequest { name: "workspaces/acme/identityBindings/ci".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (binding.role, binding.description.as_str(), binding.bound_claims.len()),
        (Role::Viewer as i32, "read only", 2)
    );
    assert_eq!(binding.identity_provider, "identityProviders/k8s");

    let confirm = admin.get("/console/workspaces/acme/identityBindings/build/delete").await;
    assert_eq!(confirm.status, 200, "{}", confirm.text);
    let deleted =
        admin.post("/console/workspaces/acme/identityBindings/build/delete", &[("csrf", &confirm.csrf())]).await;
    assert_eq!(deleted.status, 303, "{}", deleted.text);
    assert_eq!(admin.get("/console/workspaces/acme/identityBindings/build").await.status, 404);

    // ROOT: the provider is named by `ci`, so deleting it needs the box.
    let mut root = Visitor::new(&server);
    assert_eq!(root.sign_in(&server.root_token).await.status, 303);
    let confirm = root.get("/console/identityProviders/k8s/delete").await;
    assert_eq!(confirm.status, 200, "{}", confirm.text);
    assert!(confirm.text.contains("workspaces/acme/identityBindings/ci"), "the confirmation names the bindings");
    assert!(confirm.text.contains("Also delete the bindings that name it"));
    let kept = root.post("/console/identityProviders/k8s/delete", &[("csrf", &confirm.csrf())]).await;
    assert_eq!(kept.status, 409, "{}", kept.text);
    assert!(kept.text.contains("is named by 1 identity binding(s)"), "{}", kept.text);
    assert_eq!(root.get("/console/identityProviders/k8s").await.status, 200, "still there");
    let forced =
        root.post("/console/identityProviders/k8s/delete", &[("csrf", &confirm.csrf()), ("force", "on")]).await;
    assert_eq!(forced.status, 303, "{}", forced.text);
    assert_eq!(root.get("/console/identityProviders/k8s").await.status, 404);
    assert_eq!(admin.get("/console/workspaces/acme/identityBindings/ci").await.status, 404, "its binding went too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_list_badges_expiring_and_failing_credentials_filters_them_and_charts_the_days_leases() {
    use pullpass_tests::registry::world::{World, code_and_reason, ok};
    let world = World::start().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let in_three_days = prost_types::Timestamp { seconds: now + 3 * 86_400 + 3600, nanos: 0 };
    world.add("fine", world.credential("team", "alice", ALICE_PASSWORD)).await;
    world
        .add(
            "soon",
            Credential { expire_time: Some(in_three_days), ..world.credential("zzz", "alice", ALICE_PASSWORD) },
        )
        .await;
    // A credential the realm refuses: its lease fails, and it is failing.
    let server = &world.server;
    world.add("broken", world.credential("other", "alice", "console-CANARY-wrong")).await;
    for image in ["team/app:1.0", "team/app:1.0", "team/app:1.0"] {
        ok(&world.issue(&[&world.registry.image(image)], &[]).await[0]);
    }
    let refused = world.issue(&[&world.registry.image("other/tool:1.0")], &[]).await;
    assert_eq!(code_and_reason(&refused[0]).1, "UPSTREAM_REJECTED_CREDENTIAL");
    pullpass_tests::eventually("the refusal to be recorded", Duration::from_secs(10), || async {
        world.client.get_credential("acme", "broken").await.ok()?.last_failure
    })
    .await;

    let mut root = Visitor::new(server);
    assert_eq!(root.sign_in(&server.root_token).await.status, 303);
    // The lease events are group-committed a few milliseconds after the calls.
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let page = root.get("/console/workspaces/acme/credentials").await;
        if page.text.contains("3 leases in the last 24 hours") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list.status, 200);
    let row = |id: &str| {
        let start = list.text.find(&format!(">{id}</a>")).unwrap_or_else(|| panic!("{id} listed"));
        list.text[start..].split("</tr>").next().unwrap().to_owned()
    };
    assert!(row("soon").contains("expires in 3 days"), "{}", row("soon"));
    assert!(row("broken").contains("failing since"), "{}", row("broken"));
    assert!(!row("fine").contains("badge expiring") && !row("fine").contains("failing"), "{}", row("fine"));
    // The chart is drawn here: an SVG with a bar per hour, no script.
    let svg = list.text.split_once("<svg").map(|(_, rest)| rest.split_once("</svg>").unwrap().0).expect("a chart");
    assert_eq!(svg.matches("<rect").count(), 24, "{svg}");
    assert!(svg.contains("3 leases"), "{svg}");
    assert!(list.text.contains("Needs attention (2)"), "the filter counts the two");

    let attention = root.get("/console/workspaces/acme/credentials?attention=1").await;
    assert_eq!(attention.status, 200);
    assert!(attention.text.contains(">soon</a>") && attention.text.contains(">broken</a>"));
    assert!(!attention.text.contains(">fine</a>"), "a healthy credential is filtered out");

    // The edit page shows the expiry and the failure, and the form takes a new date.
    let edit = root.get("/console/workspaces/acme/credentials/broken").await;
    assert!(edit.text.contains("the registry rejected the secret"), "{}", edit.text);
    let soon = root.get("/console/workspaces/acme/credentials/soon").await;
    let date = pullpass::time::format_rfc3339(now + 3 * 86_400 + 3600)[..10].to_owned();
    assert!(soon.text.contains(&format!(r#"name="expires" value="{date}""#)), "{}", soon.text);
    assert!(!list.text.contains("console-CANARY-wrong") && !edit.text.contains("console-CANARY-wrong"));
    assert!(!server.logs().contains("console-CANARY-wrong"), "the secret in the log");
    let leaks = pullpass_tests::files_containing(&server.data_dir, b"console-CANARY-wrong");
    assert!(leaks.is_empty(), "the secret in clear in {leaks:?}");
}
