//! The web console, in a real browser: Debian's `chromium` driven by npm's
//! `playwright-core` from `node:test` (`tests/console/console.test.cjs`),
//! against a real `pullpassd`, the token issuer and Debian's
//! `docker-registry`. This test starts them, hands their addresses and the
//! canary secrets to node, checks node's verdict, then greps the database,
//! its WAL and the server's log for every canary.
//!
//! `PULLPASS_UPDATE_SCREENSHOTS=1` writes the screenshots the README shows
//! into `docs/console/` (else into a temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;

use pullpass::v1::{CreateConsoleLinkRequest, CreateCredentialRequest, Credential, Provider};
use pullpass_tests::registry::{Issuer, Registry, world::ALICE_PASSWORD, world::users};
use pullpass_tests::{Options, Pullpassd};
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
