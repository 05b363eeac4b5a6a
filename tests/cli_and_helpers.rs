//! The `pullpass` CLI, `docker-credential-pullpass` and the kubelet plugin,
//! against the real registry and skopeo.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pullpass::v1::{Credential, Provider, Role};
use pullpass_tests::binaries::{run, text};
use pullpass_tests::fixtures::google_key_json;
use pullpass_tests::registry::world::{ALICE_PASSWORD, ECR_PASSWORD, ECR_SECRET_ACCESS_KEY, World};
use pullpass_tests::registry::{Registry, seed, skopeo};
use pullpass_tests::{Pullpassd, binary, create_workspace};

fn env_for(server: &Pullpassd, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PULLPASS_ENDPOINT", server.endpoint()),
        ("PULLPASS_TOKEN", token.to_owned()),
        ("PULLPASS_WORKSPACE", "acme".into()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_format_skopeo_args_feeds_skopeo_inspect() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let env = env_for(&world.server, &world.server.root_token);
    let image = world.registry.image("team/app:1.0");
    let output = run("pullpass", &["auth", &image, "--format", "skopeo-args"], &as_refs(&env), None);
    assert!(output.status.success(), "{}", text(&output));
    let args: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(args.len(), 2);
    assert_eq!(args[0], "--registry-token");
    let mut skopeo_args: Vec<&str> = vec!["inspect", "--tls-verify=false"];
    skopeo_args.extend(args.iter().map(String::as_str));
    let target = format!("docker://{image}");
    skopeo_args.push(&target);
    let inspected = skopeo(&skopeo_args);
    assert!(inspected.status.success(), "{}", String::from_utf8_lossy(&inspected.stderr));

    // The JSON form has every field, and a header form one line per image.
    let json = run("pullpass", &["auth", &image, "--format", "json"], &as_refs(&env), None);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed[0]["kind"], "BEARER");
    assert_eq!(parsed[0]["granted_scope"], "repository:team/app:pull");
    assert_eq!(parsed[0]["credential"], "workspaces/acme/credentials/reg");
    assert!(parsed[0]["expire_time"].as_str().unwrap().ends_with('Z'));
    let header = run("pullpass", &["auth", &image, "--format", "header"], &as_refs(&env), None);
    assert!(String::from_utf8_lossy(&header.stdout).starts_with("Bearer "));
    // Password-only consumers refuse a bearer-only registry, explaining why.
    let k8s = run("pullpass", &["auth", &image, "--format", "k8s-secret"], &as_refs(&env), None);
    assert_eq!(k8s.status.code(), Some(6), "{}", text(&k8s));
    assert!(text(&k8s).contains("allow_passthrough"), "{}", text(&k8s));
    // --out writes a private file.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auth.json");
    let written = run(
        "pullpass",
        &["auth", &image, "--format", "docker-config", "--out", out.to_str().unwrap()],
        &as_refs(&env),
        None,
    );
    assert!(written.status.success(), "{}", text(&written));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(config["auths"][&world.registry.address]["registrytoken"].is_string());
}

fn authfile(dir: &Path, hosts: &[&str]) -> std::path::PathBuf {
    let helpers: serde_json::Map<String, serde_json::Value> =
        hosts.iter().map(|h| (h.to_string(), "pullpass".into())).collect();
    let path = dir.join("auth.json");
    std::fs::write(&path, serde_json::json!({ "auths": {}, "credHelpers": helpers }).to_string()).unwrap();
    path
}

/// skopeo inspect with an authfile whose credHelpers run docker-credential-pullpass.
fn inspect_with_helper(registry: &Registry, authfile: &Path, env: &[(&'static str, String)]) -> Output {
    let bin_dir = binary("docker-credential-pullpass").parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let home = tempfile::tempdir().unwrap();
    let policy = home.path().join("policy.json");
    std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let mut command = Command::new("timeout");
    command
        .args(["60", "skopeo", "--policy", policy.to_str().unwrap(), "inspect", "--tls-verify=false", "--authfile"])
        .arg(authfile)
        .arg(format!("docker://{}", registry.image("team/app:1.0")))
        .env("PATH", path)
        .env("HOME", home.path())
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_credential_helper_serves_basic_leases_to_skopeo_and_explains_bearer_only_registries() {
    let world = World::start().await;
    let google_registry = Registry::start(&world.issuer.realm(), &world.issuer.bundle());
    seed(&google_registry, "team/app:1.0", "seed", "seed-pw");
    let bearer_registry = Registry::start(&world.issuer.realm(), &world.issuer.bundle());
    seed(&bearer_registry, "team/app:1.0", "seed", "seed-pw");
    // pullpassd must reach the extra registries over http too.
    let mut world = world;
    world.server.stop();
    let server = Pullpassd::start_with(pullpass_tests::Options {
        home: Some(world.server.home.clone()),
        args: vec![
            "--insecure-registry".into(),
            world.registry.address.clone(),
            "--insecure-registry".into(),
            google_registry.address.clone(),
            "--insecure-registry".into(),
            bearer_registry.address.clone(),
            "--insecure-registry".into(),
            world.issuer.peer.address.clone(),
            "--google-token-uri".into(),
            format!("{}/oauth2/token", world.issuer.peer.url()),
        ],
        ..Default::default()
    })
    .unwrap();
    let root_token = world.server.root_token.clone();
    let client = server.client_with(Some(&root_token)).await;
    let mut passthrough = world.credential("", "alice", ALICE_PASSWORD);
    passthrough.allow_passthrough = true;
    client.create_credential("acme", "passthrough", passthrough).await.unwrap();
    world.issuer.write_state("google.key.pem", pullpass_tests::fixtures::TEST_RSA_PKCS8_PEM);
    let key = google_key_json(
        "ci@pullpass-test.iam.gserviceaccount.com",
        &format!("{}/oauth2/token", world.issuer.peer.url()),
    );
    client
        .create_credential(
            "acme",
            "google",
            Credential {
                provider: Provider::Google as i32,
                registry_server: google_registry.address.clone(),
                secret: key,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client
        .create_credential(
            "acme",
            "bearer-only",
            Credential {
                provider: Provider::Generic as i32,
                registry_server: bearer_registry.address.clone(),
                username: "alice".into(),
                secret: ALICE_PASSWORD.into(),
                token_realm_allowlist: vec![world.issuer.peer.url()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let launcher = client.create_access_token("acme", Role::Launcher, &[], None, "helper").await.unwrap();
    let env = env_for(&server, &launcher.token);
    let dir = tempfile::tempdir().unwrap();

    // The protocol itself.
    let got = run("docker-credential-pullpass", &["get"], &as_refs(&env), Some(&world.registry.address));
    assert!(got.status.success(), "{}", text(&got));
    let answer: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(answer["ServerURL"], world.registry.address);
    assert_eq!(answer["Username"], "alice");
    assert_eq!(answer["Secret"], ALICE_PASSWORD);
    let stored = run("docker-credential-pullpass", &["store"], &as_refs(&env), Some("{}"));
    assert_eq!(stored.status.code(), Some(1));
    assert!(text(&stored).contains("read-only"));
    let unknown = run("docker-credential-pullpass", &["get"], &as_refs(&env), Some("quay.io"));
    assert_eq!(String::from_utf8_lossy(&unknown.stdout).trim(), "credentials not found in native keychain");

    // skopeo with credHelpers: passthrough, then Google.
    let file = authfile(dir.path(), &[&world.registry.address, &google_registry.address, &bearer_registry.address]);
    let inspected = inspect_with_helper(&world.registry, &file, &env);
    assert!(inspected.status.success(), "passthrough: {}", String::from_utf8_lossy(&inspected.stderr));
    let inspected = inspect_with_helper(&google_registry, &file, &env);
    assert!(inspected.status.success(), "google: {}", String::from_utf8_lossy(&inspected.stderr));
    // A bearer-only credential: refused with the documented message.
    let refused = inspect_with_helper(&bearer_registry, &file, &env);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("pullpass cannot answer the credential-helper protocol"), "{message}");
    assert!(message.contains("--registry-token"), "{message}");
    assert!(!message.contains(ALICE_PASSWORD));

    // `list` needs a role that may list credentials.
    let admin_env = env_for(&server, &root_token);
    let listed = run("docker-credential-pullpass", &["list"], &as_refs(&admin_env), None);
    let hosts: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(hosts[&world.registry.address], "alice");
    assert_eq!(hosts[&google_registry.address], "oauth2accesstoken");
    assert!(hosts.get(&bearer_registry.address).is_none());
    let listed = run("docker-credential-pullpass", &["list"], &as_refs(&env), None);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "{}");
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_plugin_answers_a_credential_provider_request() {
    let world = World::start().await;
    let registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    world.add("ecr", world.ecr_account(registry, ECR_SECRET_ACCESS_KEY)).await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", world.server.root_token)).unwrap();
    let args =
        ["--endpoint", &world.server.endpoint(), "--workspace", "acme", "--token-file", token_file.to_str().unwrap()];
    let request = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": format!("{registry}/team/app:1.0"),
    })
    .to_string();
    let answered = run("pullpass-kubelet-credential-provider", &args, &[], Some(&request));
    assert!(answered.status.success(), "{}", text(&answered));
    let response: serde_json::Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(response["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(response["kind"], "CredentialProviderResponse");
    assert_eq!(response["cacheKeyType"], "Image");
    let cache: u64 = response["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(cache > 11 * 3600 && cache < 12 * 3600, "{cache}");
    let auth = &response["auth"][format!("{registry}/team/app")];
    assert_eq!(auth["username"], "AWS");
    assert_eq!(auth["password"], ECR_PASSWORD);

    let bearer_only = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": world.registry.image("team/app:1.0"),
    })
    .to_string();
    let refused = run("pullpass-kubelet-credential-provider", &args, &[], Some(&bearer_only));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("the kubelet takes only a username and password"), "{}", text(&refused));
    let garbage = run("pullpass-kubelet-credential-provider", &args, &[], Some("{\"kind\": \"Something\"}"));
    assert_eq!(garbage.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_never_takes_secrets_as_arguments_and_its_json_and_exit_codes_are_stable() {
    let server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    let env = env_for(&server, &server.root_token);
    let env = as_refs(&env);

    let with_secret_flag = run(
        "pullpass",
        &[
            "credentials",
            "add",
            "c1",
            "--provider",
            "generic",
            "--registry",
            "r.example.com",
            "--username",
            "u",
            "--secret",
            "s3cret",
        ],
        &env,
        None,
    );
    assert_eq!(with_secret_flag.status.code(), Some(2), "{}", text(&with_secret_flag));
    let no_secret = run(
        "pullpass",
        &["credentials", "add", "c1", "--provider", "generic", "--registry", "r.example.com", "--username", "u"],
        &env,
        None,
    );
    assert_eq!(no_secret.status.code(), Some(2));
    assert!(text(&no_secret).contains("--secret-stdin"), "{}", text(&no_secret));
    let added = run(
        "pullpass",
        &[
            "credentials",
            "add",
            "c1",
            "--provider",
            "generic",
            "--registry",
            "https://r.example.com/v2/",
            "--username",
            "u",
            "--secret-stdin",
            "-o",
            "json",
        ],
        &env,
        Some("cli-CANARY-secret\n"),
    );
    assert!(added.status.success(), "{}", text(&added));
    let credential: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    assert_eq!(credential["name"], "workspaces/acme/credentials/c1");
    assert_eq!(credential["registry_server"], "r.example.com");
    assert_eq!(credential["secret_version"], 1);
    assert!(credential["normalizations"].as_array().unwrap().len() == 2);
    assert!(!text(&added).contains("cli-CANARY"));

    let listed = run("pullpass", &["credentials", "list", "-o", "json"], &env, None);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let keys: Vec<&str> = listed[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "provider",
            "registry_server",
            "username",
            "secret_set",
            "secret_version",
            "allowed_projects",
            "allow_passthrough",
            "description",
            "token_realm_allowlist",
            "ca_bundle_set",
            "create_time",
            "update_time",
            "normalizations"
        ]
    );
    let table = run("pullpass", &["credentials", "list"], &env, None);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("ID"), "{}", text(&table));

    let rotated = run(
        "pullpass",
        &["credentials", "update", "c1", "--secret-stdin", "--description", "rotated", "-o", "json"],
        &env,
        Some("new"),
    );
    let rotated: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(rotated["secret_version"], 2);

    let token = run("pullpass", &["tokens", "create", "--role", "viewer", "-o", "json"], &env, None);
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).unwrap();
    assert_eq!(token["role"], "VIEWER");
    let viewer_token = token["token"].as_str().unwrap().to_owned();
    let tokens = run("pullpass", &["tokens", "list", "-o", "json"], &env, None);
    let tokens: serde_json::Value = serde_json::from_slice(&tokens.stdout).unwrap();
    assert!(tokens[0].get("token").is_none(), "listing never shows token strings");

    let workspaces = run("pullpass", &["workspaces", "list", "-o", "json"], &env, None);
    let workspaces: serde_json::Value = serde_json::from_slice(&workspaces.stdout).unwrap();
    assert_eq!(workspaces[0]["name"], "workspaces/acme");
    assert_eq!(workspaces[0]["kind"], "ORGANIZATION");
    let audit = run("pullpass", &["audit", "-o", "json", "--filter", "action = UpdateCredential"], &env, None);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(audit[0]["resource"], "workspaces/acme/credentials/c1");

    let parsed = run("pullpass", &["parse-ref", "ubuntu"], &[], None);
    let parsed: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({
            "registry": "docker.io", "endpoint": "registry-1.docker.io", "repository": "library/ubuntu",
            "tag": "latest", "digest": null, "normalized": "docker.io/library/ubuntu:latest"
        })
    );
    let invalid = run("pullpass", &["parse-ref", "ghcr.io/Acme/x"], &[], None);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(text(&invalid).contains("lowercase"));

    // Exit codes: not found, permission, unavailable.
    assert_eq!(run("pullpass", &["credentials", "show", "nope"], &env, None).status.code(), Some(3));
    let viewer_env = [
        ("PULLPASS_ENDPOINT", server.endpoint()),
        ("PULLPASS_TOKEN", viewer_token),
        ("PULLPASS_WORKSPACE", "acme".to_owned()),
    ];
    let denied = run("pullpass", &["credentials", "rm", "c1"], &as_refs(&viewer_env), None);
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied));
    let down = run("pullpass", &["workspaces", "list", "--endpoint", "http://127.0.0.1:1"], &env, None);
    assert_eq!(down.status.code(), Some(5), "{}", text(&down));
    let completions = run("pullpass", &["completions", "bash"], &[], None);
    assert!(String::from_utf8_lossy(&completions.stdout).contains("pullpass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runtime_helper_serves_bearer_only_registries_through_the_gateway() {
    use pullpass_tests::gateway::{ALIAS, GatewayWorld, Skopeo, oci_manifest_digest};
    let gw = GatewayWorld::start().await;
    let server = &gw.world.server;
    let launcher = gw.world.client.create_access_token("acme", Role::Launcher, &[], None, "helpers").await.unwrap();
    let env = env_for(server, &launcher.token);
    let upstream_image = gw.world.registry.image("team/app:1.0");
    let gateway_image = gw.image("team/app:1.0");
    let bin_dir = binary("docker-credential-pullpass").parent().unwrap().to_owned();
    let copy = |skopeo: &Skopeo, extra: &[&str], env: &[(&str, &str)]| {
        let out = skopeo.home.path().join(format!("out-{}", extra.len()));
        let mut args = vec!["copy", "--src-tls-verify=false"];
        args.extend_from_slice(extra);
        let source = format!("docker://{gateway_image}");
        let target = format!("oci:{}:1.0", out.display());
        args.push(&source);
        args.push(&target);
        let output = skopeo.run(&args, env);
        assert!(output.status.success(), "skopeo {extra:?}: {}", String::from_utf8_lossy(&output.stderr));
        oci_manifest_digest(&out)
    };

    // `pullpass auth --via-gateway`: the rewritten image, and a docker config.
    let image = run("pullpass", &["auth", &upstream_image, "--via-gateway", "--format", "image"], &as_refs(&env), None);
    assert!(image.status.success(), "{}", text(&image));
    assert_eq!(String::from_utf8_lossy(&image.stdout).trim(), gateway_image);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let rendered = run(
        "pullpass",
        &["auth", &upstream_image, "--via-gateway", "--format", "docker-config", "--out", config.to_str().unwrap()],
        &as_refs(&env),
        None,
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    assert!(String::from_utf8_lossy(&rendered.stderr).contains(&format!("pull {gateway_image}")));
    let skopeo = Skopeo::new();
    let digest = copy(&skopeo, &["--authfile", config.to_str().unwrap()], &[]);
    let secret =
        run("pullpass", &["auth", &upstream_image, "--via-gateway", "--format", "k8s-secret"], &as_refs(&env), None);
    assert!(secret.status.success(), "k8s-secret takes a gateway lease: {}", text(&secret));
    let exports =
        run("pullpass", &["auth", &upstream_image, "--via-gateway", "--format", "apptainer-env"], &as_refs(&env), None);
    assert!(String::from_utf8_lossy(&exports.stdout).contains("export APPTAINER_DOCKER_USERNAME='pullpass'"));

    // docker-credential-pullpass, asked for the gateway host.
    let mut helper_env = env.clone();
    helper_env.push(("PULLPASS_GATEWAY", gw.gateway.clone()));
    let got = run("docker-credential-pullpass", &["get"], &as_refs(&helper_env), Some(&gw.gateway));
    assert!(got.status.success(), "{}", text(&got));
    let answer: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(answer["Username"], "pullpass");
    let skopeo = Skopeo::new().with_path(&bin_dir);
    let helpers =
        skopeo.auth_file(&serde_json::json!({ "auths": {}, "credHelpers": { gw.gateway.clone(): "pullpass" } }));
    let helper_env: Vec<(&str, &str)> = as_refs(&helper_env);
    assert_eq!(copy(&skopeo, &["--authfile", helpers.to_str().unwrap()], &helper_env), digest);

    // The kubelet plugin, asked for an image on the gateway host.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &launcher.token).unwrap();
    let args = [
        "--endpoint",
        &server.endpoint(),
        "--workspace",
        "acme",
        "--token-file",
        token_file.to_str().unwrap(),
        "--gateway",
        &gw.gateway,
    ];
    let request = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": gateway_image,
    })
    .to_string();
    let answered = run("pullpass-kubelet-credential-provider", &args, &[], Some(&request));
    assert!(answered.status.success(), "{}", text(&answered));
    let response: serde_json::Value = serde_json::from_slice(&answered.stdout).unwrap();
    let auth = &response["auth"][format!("{}/{ALIAS}/team/app", gw.gateway)];
    assert_eq!(auth["username"], "pullpass");
    let cache: u64 = response["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(cache > 0 && cache < 3600, "below the password's life: {cache}");
    let password = auth["password"].as_str().unwrap().to_owned();
    assert!(password.starts_with("ppg_"));
    let creds = format!("pullpass:{password}");
    assert_eq!(copy(&Skopeo::new(), &["--src-creds", &creds], &[]), digest);
}
