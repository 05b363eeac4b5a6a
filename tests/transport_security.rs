//! Transport security: TLS with a CA made in the test, used by the stock
//! grpcurl; mutual TLS refusing clients without a certificate; certificate
//! reload on SIGHUP without dropping connections; plaintext refused on
//! non-loopback addresses; per-token rate limits and request size limits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pullpass::v1::access_service_client::AccessServiceClient;
use pullpass::v1::{CreateCredentialRequest, Credential, ListWorkspacesRequest, Provider};
use pullpass_tests::registry::private_ca;
use pullpass_tests::{Options, Pullpassd, binary, create_workspace, grpcurl};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn new_pki() -> Pki {
    let (dir, ca, cert, key) = private_ca();
    let client_cert = dir.path().join("client.pem");
    let client_key = dir.path().join("client.key");
    Pki { _dir: dir, ca, cert, key, client_cert, client_key }
}

fn grpcurl_tls(address: &str, extra: &[&str], token: Option<&str>, method: &[&str]) -> std::process::Output {
    let mut command = Command::new(grpcurl());
    command.args(["-max-time", "20"]).args(extra);
    if let Some(token) = token {
        command.arg("-H").arg(format!("authorization: Bearer {token}"));
    }
    command.arg(address).args(method).stdin(Stdio::null()).output().expect("grpcurl")
}

async fn tls_channel(address: &str, ca: &Path) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    Endpoint::from_shared(format!("https://{address}")).unwrap().tls_config(tls)?.connect().await
}

/// pullpassd serving TLS with `cert` and `key`; with `client_ca`, it
/// requires client certificates issued by it.
fn tls_server(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Pullpassd {
    let mut args = vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()];
    if let Some(client_ca) = client_ca {
        args.extend(["--client-ca".into(), client_ca.display().to_string()]);
    }
    Pullpassd::start_with(Options { args, ..Default::default() }).unwrap()
}

async fn list_workspaces(channel: Channel, token: &str) -> Result<usize, tonic::Status> {
    let mut request = tonic::Request::new(ListWorkspacesRequest::default());
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    AccessServiceClient::new(channel).list_workspaces(request).await.map(|r| r.into_inner().workspaces.len())
}

#[test]
fn grpcurl_works_over_tls_with_the_test_ca_and_plaintext_is_refused() {
    let pki = new_pki();
    let server = tls_server(&pki.cert, &pki.key, None);
    let ca = pki.ca.display().to_string();
    let listed = grpcurl_tls(&server.address, &["-cacert", &ca], None, &["list"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("pullpass.v1.CredentialService"));
    let created = grpcurl_tls(
        &server.address,
        &["-cacert", &ca, "-d", r#"{"workspace_id": "acme", "workspace": {"kind": "ORGANIZATION"}}"#],
        Some(&server.root_token),
        &["pullpass.v1.AccessService/CreateWorkspace"],
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let plaintext = grpcurl_tls(&server.address, &["-plaintext"], None, &["list"]);
    assert!(!plaintext.status.success(), "plaintext must fail against a TLS server");
    let untrusted = grpcurl_tls(&server.address, &[], None, &["list"]);
    assert!(!untrusted.status.success(), "a client that does not trust the CA must fail");
}

#[test]
fn with_a_client_ca_clients_without_a_certificate_are_refused() {
    let pki = new_pki();
    let server = tls_server(&pki.cert, &pki.key, Some(&pki.ca));
    let ca = pki.ca.display().to_string();
    let without = grpcurl_tls(&server.address, &["-cacert", &ca], None, &["list"]);
    assert!(!without.status.success(), "no client certificate must be refused");
    let (cert, key) = (pki.client_cert.display().to_string(), pki.client_key.display().to_string());
    let with = grpcurl_tls(&server.address, &["-cacert", &ca, "-cert", &cert, "-key", &key], None, &["list"]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let other = new_pki();
    let (cert, key) = (other.client_cert.display().to_string(), other.client_key.display().to_string());
    let foreign = grpcurl_tls(&server.address, &["-cacert", &ca, "-cert", &cert, "-key", &key], None, &["list"]);
    assert!(!foreign.status.success(), "a certificate from another CA must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let (first, second) = (new_pki(), new_pki());
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let server = tls_server(&cert, &key, None);
    let established = tls_channel(&server.address, &first.ca).await.expect("TLS with the first CA");
    assert_eq!(list_workspaces(established.clone(), &server.root_token).await.unwrap(), 0);

    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let _ = Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.current_logs().contains("TLS certificate reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", server.current_logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The established connection keeps working.
    assert_eq!(list_workspaces(established, &server.root_token).await.unwrap(), 0);
    // New connections get the new certificate.
    let renewed = tls_channel(&server.address, &second.ca).await.expect("TLS with the second CA");
    assert_eq!(list_workspaces(renewed, &server.root_token).await.unwrap(), 0);
    let stale = match tls_channel(&server.address, &first.ca).await {
        Err(_) => true,
        Ok(channel) => list_workspaces(channel, &server.root_token).await.is_err(),
    };
    assert!(stale, "a client trusting only the old CA must now fail");
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused_unless_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(binary("pullpassd"))
        .args([
            "--dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("PULLPASS_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refusing to serve plaintext") && stderr.contains("--tls-cert"), "{stderr}");
    assert!(stderr.contains("--insecure-plaintext"), "{stderr}");

    let log = dir.path().join("stdout.log");
    let mut allowed = Command::new(binary("pullpassd"))
        .args([
            "--dev",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--insecure-plaintext",
            "--console-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("PULLPASS_MASTER_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let serving = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving on 0.0.0.0:") {
            break true;
        }
        if Instant::now() > deadline || allowed.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = allowed.kill();
    let _ = allowed.wait();
    assert!(serving, "with --insecure-plaintext it serves: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_is_rate_limited_with_retry_info_and_large_requests_are_refused() {
    let server = Pullpassd::start_with(Options {
        args: vec!["--rate-limit".into(), "5".into(), "--max-request-bytes".into(), "4096".into()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let mut limited = None;
    for _ in 0..30 {
        if let Err(status) = client.access().list_workspaces(ListWorkspacesRequest::default()).await {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("the rate limit must trigger within 30 calls");
    assert_eq!(status.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = status.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry <= Duration::from_millis(250), "{retry:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let big = client
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: "big".into(),
            credential: Some(Credential {
                provider: Provider::Generic as i32,
                registry_server: "r.example.com".into(),
                username: "u".into(),
                secret: "s".repeat(8192),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(matches!(big.code(), Code::OutOfRange | Code::ResourceExhausted), "{big:?}");
}
