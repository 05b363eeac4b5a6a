//! The wire contract outside Rust: `examples/python/launcher.py`, with stubs
//! grpcio-tools generates from `proto/` as it starts, asks a real
//! `pullpassd` for registry auth and writes a docker config that `skopeo`
//! pulls the real registry's image with (through the gateway, since
//! skopeo takes only a username and password). Per-image failures come back
//! as a `google.rpc.Status` with its ErrorInfo reason, and a RetryInfo the
//! launcher reports.

use std::process::{Command, Output, Stdio};

use pullpass::v1::Role;
use pullpass_tests::gateway::{GatewayWorld, Skopeo, oci_manifest_digest};
use pullpass_tests::registry::python;
use pullpass_tests::repo_root;

fn launcher(server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(repo_root().join("examples/python/launcher.py"))
        .args(["--endpoint", server, "--workspace", "workspaces/acme"])
        .args(args)
        .env("PULLPASS_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("run the launcher")
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_launcher_writes_a_docker_config_skopeo_pulls_with() {
    let gw = GatewayWorld::start().await;
    let launcher_token =
        gw.world.client.create_access_token("acme", Role::Launcher, &[], None, "python").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let image = gw.world.registry.image("team/app:1.0");
    let nobody = "nothing.example/acme/tool:1";
    let ran = launcher(
        &gw.world.server.address,
        &launcher_token.token,
        &["--via-gateway", "--out", config.to_str().unwrap(), &image, nobody],
    );
    let stderr = String::from_utf8_lossy(&ran.stderr).into_owned();
    assert_eq!(ran.status.code(), Some(1), "one image has no credential: {stderr}");
    let answers = lines(&ran);
    assert_eq!(answers[0]["ok"], true, "{answers:?} {stderr}");
    assert_eq!(answers[0]["pull"], gw.image("team/app:1.0"));
    assert_eq!(answers[1]["ok"], false);
    assert_eq!(answers[1]["code"], tonic::Code::NotFound as i32);
    assert_eq!(answers[1]["reason"], "CREDENTIAL_NOT_FOUND_FOR_REGISTRY", "{answers:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    let skopeo = Skopeo::new();
    let out = skopeo.home.path().join("pulled");
    let source = format!("docker://{}", gw.image("team/app:1.0"));
    let target = format!("oci:{}:1.0", out.display());
    let copied =
        skopeo.run(&["copy", "--src-tls-verify=false", "--authfile", config.to_str().unwrap(), &source, &target], &[]);
    assert!(copied.status.success(), "skopeo: {}", String::from_utf8_lossy(&copied.stderr));
    assert!(oci_manifest_digest(&out).starts_with("sha256:"));
    assert!(!stderr.contains(&launcher_token.token), "the launcher never prints its token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_launcher_waits_out_retry_info_within_its_budget_and_reports_it_past_that() {
    let gw = GatewayWorld::start().await;
    let token = gw.world.client.create_access_token("acme", Role::Launcher, &[], None, "python").await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let image = gw.world.registry.image("team/app:1.0");
    // A Retry-After within the budget: the launcher waits and asks again,
    // and the registry has recovered by then.
    gw.world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "2"}));
    let waiting = Command::new(python())
        .arg(repo_root().join("examples/python/launcher.py"))
        .args(["--endpoint", &gw.world.server.address, "--workspace", "workspaces/acme"])
        .args(["--out", config.to_str().unwrap(), "--max-wait", "10", "--timeout", "10", &image])
        .env("PULLPASS_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let asked = std::time::Instant::now();
    while gw.world.issuer.peer.count("token_429") == 0 && asked.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gw.world.issuer.peer.control(serde_json::json!({}));
    let waited = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&waited.stderr).into_owned();
    assert_eq!(waited.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert_eq!(lines(&waited)[0]["ok"], true);

    // A Retry-After past the budget: reported, not waited for.
    gw.world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "120"}));
    let uncached = gw.world.registry.image("team/other:1.0");
    let ran =
        launcher(&gw.world.server.address, &token, &["--out", config.to_str().unwrap(), "--max-wait", "5", &uncached]);
    assert_eq!(ran.status.code(), Some(1), "{}", String::from_utf8_lossy(&ran.stderr));
    let answer = &lines(&ran)[0];
    assert_eq!(answer["code"], tonic::Code::ResourceExhausted as i32, "{answer}");
    assert_eq!(answer["reason"], "UPSTREAM_RATE_LIMITED");
    let retry_after = answer["retry_after"].as_f64().expect("RetryInfo was read");
    assert!((100.0..=120.0).contains(&retry_after), "{retry_after}");

    // Bad usage of the API: a wrong token is the call's own status.
    let bad = launcher(&gw.world.server.address, "pp_not-a-token", &["--out", config.to_str().unwrap(), &image]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
