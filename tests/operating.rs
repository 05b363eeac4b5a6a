//! What an operator runs besides the server: the health probe (plaintext,
//! TLS, a server draining, nothing listening), the master key handed over
//! by systemd's `LoadCredential=`, man pages and shell completions of both
//! binaries, and the packaging checks (the unit's exposure score, the
//! Kubernetes manifests against their schemas, the Containerfile).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pullpass_tests::registry::private_ca;
use pullpass_tests::{Options, Pullpassd, binary};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(binary(program))
        .args(args)
        .env_remove("PULLPASS_MASTER_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn healthcheck_exits_zero_only_while_the_server_is_serving() {
    let mut server =
        Pullpassd::start_with(Options { args: vec!["--drain-delay".into(), "3".into()], ..Default::default() })
            .unwrap();
    let serving = run("pullpassd", &["healthcheck", &server.address]);
    assert_eq!(serving.status.code(), Some(0), "{}", text(&serving));
    assert_eq!(String::from_utf8_lossy(&serving.stdout).trim(), "SERVING");
    let service = run("pullpassd", &["healthcheck", &server.address, "--service", "pullpass.v1.CredentialService"]);
    assert_eq!(service.status.code(), Some(0), "{}", text(&service));
    let unknown = run("pullpassd", &["healthcheck", &server.address, "--service", "no.such.Service"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("NotFound"), "{}", text(&unknown));

    // SIGTERM: NOT_SERVING during the drain delay, while still answering.
    let _ = Command::new("kill").arg("-TERM").arg(server.pid().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(2);
    let draining = loop {
        let probe = run("pullpassd", &["healthcheck", &server.address]);
        if probe.status.code() == Some(1) || Instant::now() > deadline {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(draining.status.code(), Some(1), "{}", text(&draining));
    assert_eq!(String::from_utf8_lossy(&draining.stdout).trim(), "NOT_SERVING");
    assert!(server.stop(), "exit status 0 after the drain");

    let nothing = run("pullpassd", &["healthcheck", &server.address, "--timeout", "2"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(text(&nothing).contains("cannot connect"), "{}", text(&nothing));
}

#[test]
fn healthcheck_speaks_tls_with_a_private_ca() {
    let (_dir, ca, cert, key) = private_ca();
    let args = vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()];
    let server = Pullpassd::start_with(Options { args, ..Default::default() }).unwrap();
    let ok = run("pullpassd", &["healthcheck", &server.address, "--tls-ca", ca.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    // The Mozilla roots do not know the private CA.
    let untrusted = run("pullpassd", &["healthcheck", &format!("https://{}", server.address)]);
    assert_eq!(untrusted.status.code(), Some(1), "{}", text(&untrusted));
}

#[test]
fn the_master_key_comes_from_systemds_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let key = credentials.join("master.key");
    let generated = run("pullpassd", &["keys", "generate", "--key-file", key.to_str().unwrap()]);
    assert!(generated.status.success(), "{}", text(&generated));
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let list = |credentials_directory: Option<&std::path::Path>| {
        let mut command = Command::new(binary("pullpassd"));
        command.args(["keys", "list", "--data-dir", data.to_str().unwrap()]);
        command.env_remove("PULLPASS_MASTER_KEY").env_remove("CREDENTIALS_DIRECTORY").stdin(Stdio::null());
        if let Some(path) = credentials_directory {
            command.env("CREDENTIALS_DIRECTORY", path);
        }
        command.output().unwrap()
    };
    let listed = list(Some(&credentials));
    assert!(listed.status.success(), "{}", text(&listed));
    let keys = std::fs::read_to_string(&key).unwrap();
    let key_id = keys.lines().find(|l| !l.starts_with('#')).and_then(|l| l.split(':').next()).unwrap().to_owned();
    assert!(text(&listed).contains(&key_id), "{}", text(&listed));
    let without = list(None);
    assert!(!without.status.success(), "no key configured must be an error: {}", text(&without));
    let empty = tempfile::tempdir().unwrap();
    assert!(!list(Some(empty.path())).status.success(), "a credentials directory without master.key gives no key");
}

#[test]
fn both_binaries_write_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    for (program, pages) in [
        ("pullpassd", ["pullpassd.1", "pullpassd-keys-rotate.1", "pullpassd-healthcheck.1"]),
        ("pullpass", ["pullpass.1", "pullpass-auth.1", "pullpass-credentials-add.1"]),
    ] {
        let out = dir.path().join(program);
        let written = run(program, &["man", out.to_str().unwrap()]);
        assert!(written.status.success(), "{}", text(&written));
        for page in pages {
            let roff = std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{program}: {page}: {e}"));
            assert!(roff.starts_with(".ie \\n(.g .ds Aq") || roff.contains(".TH"), "{page} is not roff");
            assert!(roff.contains(".SH NAME"), "{page}");
        }
        for shell in ["bash", "zsh", "fish"] {
            let script = run(program, &["completions", shell]);
            assert!(script.status.success(), "{}", text(&script));
            assert!(String::from_utf8_lossy(&script.stdout).contains(program), "{program} {shell}");
        }
    }
    let bash = String::from_utf8_lossy(&run("pullpassd", &["completions", "bash"]).stdout).into_owned();
    assert!(bash.contains("--metrics-listen") && bash.contains("healthcheck"), "completions cover flags and commands");
}

fn check_packaging(env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(pullpass_tests::repo_root().join("scripts/check-packaging.sh"));
    command.stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run check-packaging.sh")
}

#[test]
fn the_unit_scores_at_most_2_0_and_the_manifests_and_containerfile_pass_their_checks() {
    let checked = check_packaging(&[]);
    assert!(checked.status.success(), "{}", text(&checked));
    let said = text(&checked);
    let exposure: f64 = said
        .split("exposure=")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in {said}"));
    assert!(exposure <= 2.0, "{said}");
    assert!(said.contains("manifests=12"), "{said}");
}

/// A copy of `packaging/kubernetes` under `dir`, to break.
fn copy_of_the_manifests(dir: &std::path::Path) -> std::path::PathBuf {
    let manifests = dir.join("kubernetes");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(pullpass_tests::repo_root().join("packaging/kubernetes"))
        .arg(&manifests)
        .status()
        .unwrap();
    assert!(copied.success());
    manifests
}

#[test]
fn the_packaging_check_fails_a_kubelet_credential_provider_config_that_the_plugin_or_the_rbac_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = copy_of_the_manifests(dir.path());
    let config = manifests.join("kubelet-credential-provider/credential-provider-config.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let broken = yaml
        .replacen("- --workspace\n", "- --workspaces\n", 1)
        .replacen("serviceAccountTokenAudience: pullpass", "serviceAccountTokenAudience: registry", 1)
        .replacen("cacheType: ServiceAccount", "cacheType: Pod", 1);
    assert_ne!(broken, yaml);
    std::fs::write(&config, broken).unwrap();
    let invalid = check_packaging(&[("PACKAGING_MANIFESTS", manifests.to_str().unwrap())]);
    assert!(!invalid.status.success(), "{}", text(&invalid));
    let said = text(&invalid);
    assert!(said.contains("pullpass-kubelet-credential-provider has no flag --workspaces"), "{said}");
    assert!(said.contains("cacheType must be Token or ServiceAccount"), "{said}");
    assert!(said.contains("grants request-serviceaccounts-token-audience on 'registry'"), "{said}");
}

#[test]
fn the_packaging_check_fails_an_unhardened_unit_and_an_invalid_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("pullpassd.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/pullpassd\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let open = check_packaging(&[("PACKAGING_UNIT", unit.to_str().unwrap())]);
    assert!(!open.status.success(), "an unhardened unit must fail: {}", text(&open));

    let manifests = copy_of_the_manifests(dir.path());
    let statefulset = manifests.join("sqlite/statefulset.yaml");
    let yaml = std::fs::read_to_string(&statefulset).unwrap();
    std::fs::write(&statefulset, yaml.replacen("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1)).unwrap();
    let invalid = check_packaging(&[("PACKAGING_MANIFESTS", manifests.to_str().unwrap())]);
    assert!(!invalid.status.success(), "a misspelled field must fail: {}", text(&invalid));
    assert!(text(&invalid).contains("readOnlyRootFileSystem"), "{}", text(&invalid));
}
