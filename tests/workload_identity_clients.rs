//! Presenting a workload identity from the client side, end to end against
//! the real `pullpassd`: the kubelet plugin with the pod's service-account
//! token (KEP-4412), the CLI with a token file that rotates, with
//! `PULLPASS_IDENTITY_TOKEN` and with the GitHub Actions job token fetched
//! from a runner's endpoint, `docker-credential-pullpass` with a token
//! file, and the SDK re-reading its file between calls. The JWTs come from
//! an issuer that is not ours (`support/identity.rs`); no binary ever
//! prints one (but the credential helper answering the gateway with it as
//! the password, which is its job).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use pullpass::v1::{DeleteIdentityBindingRequest, IssueRegistryAuthRequest};
use pullpass_client::{Client, Error};
use pullpass_tests::binaries::{run, text};
use pullpass_tests::create_workspace;
use pullpass_tests::github_actions::ActionsTokenEndpoint;
use pullpass_tests::identity::{AUDIENCE, IdentityIssuer, bind, create_provider};
use pullpass_tests::registry::world::{ALICE_PASSWORD, ECR_PASSWORD, ECR_SECRET_ACCESS_KEY, World};
use pullpass_tests::replicas::within;

/// An ECR registry: the kubelet and the credential helper take only a
/// username and password, which ECR leases are.
const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const PLUGIN: &str = "pullpass-kubelet-credential-provider";

/// A world with an ECR credential, the docker-registry's credential `reg`
/// (bearer tokens), the identity provider `k8s` for `issuer`, and namespace
/// `ci` bound to LAUNCHER for project `rnaseq` only.
async fn world(issuer: &IdentityIssuer) -> World {
    let world = World::start().await;
    world.add("ecr", world.ecr_account(ECR, ECR_SECRET_ACCESS_KEY)).await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    create_provider(&world.client, "k8s", issuer).await;
    bind(&world.client, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &["rnaseq"])
        .await
        .expect("bind namespace ci");
    world
}

async fn unbind(world: &World, id: &str) {
    world
        .client
        .access()
        .delete_identity_binding(DeleteIdentityBindingRequest {
            name: format!("workspaces/acme/identityBindings/{id}"),
        })
        .await
        .expect("delete the binding");
}

/// Waits (at most 2 s) until pullpassd refuses `jwt` for project
/// `rnaseq`: a deleted binding is seen by the next call within a second.
async fn until_refused(world: &World, jwt: &str) {
    let client = world.server.client_with(Some(jwt)).await;
    let refused = within(Duration::from_secs(2), || async {
        let request = IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            project: "rnaseq".into(),
            images: vec![format!("{ECR}/team/app:1.0")],
            ..Default::default()
        };
        client.registry_auth_service().issue_registry_auth(request).await.is_err()
    })
    .await;
    assert!(refused.is_some(), "the token is still accepted after its binding was deleted");
}

/// A `CredentialProviderRequest` as the kubelet writes it.
fn provider_request(image: &str, service_account_token: Option<&str>, annotations: serde_json::Value) -> String {
    let mut request = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": image,
    });
    if let Some(token) = service_account_token {
        request["serviceAccountToken"] = token.into();
        request["serviceAccountAnnotations"] = annotations;
    }
    request.to_string()
}

/// Asserts the plugin answered ECR's username and password for `image`,
/// cached no longer than the 12 h lease lives, and returns the answer.
fn assert_ecr_answer(answered: &Output) -> serde_json::Value {
    assert!(answered.status.success(), "{}", text(answered));
    let response: serde_json::Value = serde_json::from_slice(&answered.stdout).expect("a JSON response");
    assert_eq!(response["kind"], "CredentialProviderResponse");
    let auth = &response["auth"][format!("{ECR}/team/app")];
    assert_eq!((auth["username"].as_str(), auth["password"].as_str()), (Some("AWS"), Some(ECR_PASSWORD)));
    let cache: u64 = response["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(cache > 11 * 3600 && cache < 12 * 3600, "below the lease's remaining life: {cache}");
    response
}

fn assert_no_jwt(output: &Output, jwts: &[&str]) {
    let all = text(output);
    for jwt in jwts {
        assert!(!all.contains(jwt), "a JWT in the output: {all}");
        // Nor its signature alone.
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!all.contains(signature), "a JWT's signature in the output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_plugin_presents_the_pods_service_account_token_for_its_namespaces_project_only() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world(&issuer).await;
    let image = format!("{ECR}/team/app:1.0");
    let endpoint = world.server.endpoint();
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let prod = issuer.mint_kubernetes("prod", "builder", AUDIENCE);
    let plugin = |args: &[&str], request: &str| {
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        run(PLUGIN, &all, &[], Some(request))
    };

    // No token file anywhere: the pod's own token leases for its project.
    let answered = plugin(
        &["--workspace", "acme", "--project", "rnaseq"],
        &provider_request(&image, Some(&ci), serde_json::json!({})),
    );
    assert_ecr_answer(&answered);
    assert_no_jwt(&answered, &[&ci]);

    // Another project: the binding allows rnaseq only.
    let other = plugin(
        &["--workspace", "acme", "--project", "other"],
        &provider_request(&image, Some(&ci), serde_json::json!({})),
    );
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    assert!(text(&other).contains("permission denied"), "{}", text(&other));
    assert_no_jwt(&other, &[&ci]);

    // Another namespace: no binding matches, and the plugin says what to do.
    let unbound = plugin(
        &["--workspace", "acme", "--project", "rnaseq"],
        &provider_request(&image, Some(&prod), serde_json::json!({})),
    );
    assert_eq!(unbound.status.code(), Some(1), "{}", text(&unbound));
    assert!(text(&unbound).contains("No identity binding of the workspace matches"), "{}", text(&unbound));
    assert!(!text(&unbound).contains("prod"), "no claim value in the refusal: {}", text(&unbound));
    assert_no_jwt(&unbound, &[&prod]);

    // Without a token and without a token file: unauthenticated, as before.
    let anonymous = plugin(&["--workspace", "acme"], &provider_request(&image, None, serde_json::json!({})));
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(text(&anonymous).contains("not authenticated"), "{}", text(&anonymous));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_annotations_route_the_plugin_to_a_workspace_and_project_and_the_bindings_decide() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world(&issuer).await;
    create_workspace(&world.client, "unbound").await;
    let image = format!("{ECR}/team/app:1.0");
    let endpoint = world.server.endpoint();
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let plugin = |args: &[&str], request: &str| {
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        run(PLUGIN, &all, &[], Some(request))
    };
    let routed = |workspace: &str, project: &str| serde_json::json!({"pullpass.dev/workspace": workspace, "pullpass.dev/project": project});

    // The node's configuration names a workspace that binds nothing.
    let configured = plugin(&["--workspace", "unbound"], &provider_request(&image, Some(&ci), serde_json::json!({})));
    assert_eq!(configured.status.code(), Some(1), "{}", text(&configured));

    // The service account's annotations route it to acme and rnaseq.
    let answered = plugin(&["--workspace", "unbound"], &provider_request(&image, Some(&ci), routed("acme", "rnaseq")));
    assert_ecr_answer(&answered);
    // With no workspace configured at all, too.
    let answered = plugin(&[], &provider_request(&image, Some(&ci), routed("acme", "rnaseq")));
    assert_ecr_answer(&answered);
    assert_no_jwt(&answered, &[&ci]);

    // Annotations only route: the binding still decides the project.
    let denied = plugin(&[], &provider_request(&image, Some(&ci), routed("acme", "other")));
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied));
    assert!(text(&denied).contains("permission denied"), "{}", text(&denied));

    // No workspace from anywhere: says where one comes from.
    let nowhere = plugin(&[], &provider_request(&image, Some(&ci), serde_json::json!({})));
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(text(&nowhere).contains("pullpass.dev/workspace"), "{}", text(&nowhere));

    // Without the pod's token (a node token file), annotations are ignored.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("launcher-token");
    std::fs::write(&token_file, &world.server.root_token).unwrap();
    let mut request: serde_json::Value =
        serde_json::from_str(&provider_request(&image, None, serde_json::json!({}))).unwrap();
    request["serviceAccountAnnotations"] = routed("unbound", "other");
    let answered = plugin(&["--workspace", "acme", "--token-file", token_file.to_str().unwrap()], &request.to_string());
    assert_ecr_answer(&answered);
}

/// Replaces `path` with `content` as a projected volume does: a new file
/// renamed over the old one.
fn swap(path: &Path, content: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, content).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_sdk_read_a_rotated_identity_token_file_on_the_next_call() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world(&issuer).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let ops = issuer.mint_kubernetes("ops", "builder", AUDIENCE);
    std::fs::write(&file, format!("{ci}\n")).unwrap();
    let image = world.registry.image("team/app:1.0");
    let endpoint = world.server.endpoint();
    let cli = || {
        run(
            "pullpass",
            &["auth", &image, "-w", "acme", "--project", "rnaseq", "--identity-token-file", file.to_str().unwrap()],
            &[("PULLPASS_ENDPOINT", endpoint.as_str())],
            None,
        )
    };
    let sdk = Client::builder(endpoint.clone()).identity_token_file(&file).connect().await.expect("connect");
    let lease = || sdk.registry_auth(image.clone()).workspace("acme").project("rnaseq").no_cache().send();

    let first = cli();
    assert!(first.status.success(), "{}", text(&first));
    let leased: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(!leased[0]["token"].as_str().unwrap_or_default().is_empty(), "{leased}");
    assert_no_jwt(&first, &[&ci]);
    lease().await.expect("the SDK leases with the file's token");

    // Namespace ops is bound and ci no longer; the file still holds ci's.
    bind(&world.client, "ops", "k8s", &[("/kubernetes.io/namespace", "ops")], &["rnaseq"]).await.unwrap();
    unbind(&world, "ci").await;
    until_refused(&world, &ci).await;
    let stale = cli();
    assert_eq!(stale.status.code(), Some(4), "{}", text(&stale));
    assert_no_jwt(&stale, &[&ci]);
    assert!(matches!(lease().await, Err(Error::PermissionDenied { .. })));

    // The kubelet rotates the projected token: the next call presents it.
    swap(&file, &ops);
    let second = cli();
    assert!(second.status.success(), "{}", text(&second));
    assert_no_jwt(&second, &[&ci, &ops]);
    lease().await.expect("the same SDK client presents the rotated token");

    // A file that is gone fails the call, naming the file and not a token.
    std::fs::remove_file(&file).unwrap();
    let gone = lease().await.unwrap_err();
    assert!(matches!(gone, Error::Unauthenticated(_)), "{gone:?}");
    assert!(gone.to_string().contains("identity token file"), "{gone}");
    let missing = cli();
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("identity token file"), "{}", text(&missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_in_the_environment_serves_the_cli_and_the_credential_helper() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world(&issuer).await;
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let endpoint = world.server.endpoint();
    let image = world.registry.image("team/app:1.0");

    // GitLab's id_tokens: the JWT itself in a variable.
    let env = [("PULLPASS_ENDPOINT", endpoint.as_str()), ("PULLPASS_IDENTITY_TOKEN", ci.as_str())];
    let leased =
        run("pullpass", &["auth", &image, "-w", "acme", "--project", "rnaseq", "--format", "header"], &env, None);
    assert!(leased.status.success(), "{}", text(&leased));
    assert!(String::from_utf8_lossy(&leased.stdout).starts_with("Bearer "), "{}", text(&leased));
    assert_no_jwt(&leased, &[&ci]);

    // An access token too is a usage error that names both sources only.
    let root = world.server.root_token.clone();
    let both = [("PULLPASS_TOKEN", root.as_str()), env[0], env[1]];
    let refused = run("pullpass", &["auth", &image, "-w", "acme", "--project", "rnaseq"], &both, None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("both PULLPASS_TOKEN and PULLPASS_IDENTITY_TOKEN are given"), "{}", text(&refused));
    assert!(!text(&refused).contains(&root));
    assert_no_jwt(&refused, &[&ci]);

    // docker-credential-pullpass with a token file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &ci).unwrap();
    let helper_env = [
        ("PULLPASS_ENDPOINT", endpoint.as_str()),
        ("PULLPASS_WORKSPACE", "acme"),
        ("PULLPASS_PROJECT", "rnaseq"),
        ("PULLPASS_IDENTITY_TOKEN_FILE", file.to_str().unwrap()),
    ];
    let got = run("docker-credential-pullpass", &["get"], &helper_env, Some(ECR));
    assert!(got.status.success(), "{}", text(&got));
    let answer: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!((answer["Username"].as_str(), answer["Secret"].as_str()), (Some("AWS"), Some(ECR_PASSWORD)));
    assert_no_jwt(&got, &[&ci]);
    let unbound = run("docker-credential-pullpass", &["get"], &helper_env[..3], Some(ECR));
    assert_eq!(unbound.status.code(), Some(1), "no token at all: {}", text(&unbound));

    // For the pull gateway, the helper's password is the JWT as the file
    // holds it now (the gateway takes a JWT as the Basic password).
    let gateway = [("PULLPASS_GATEWAY", "gw.example:50052"), helper_env[3]];
    let got = run("docker-credential-pullpass", &["get"], &gateway, Some("gw.example:50052"));
    assert!(got.status.success(), "{}", text(&got));
    let answer: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(answer["Secret"].as_str(), Some(ci.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_fetches_the_github_actions_job_token_for_its_audience() {
    let issuer = IdentityIssuer::start();
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    create_provider(&world.client, "github", &issuer).await;
    bind(&world.client, "acme-org", "github", &[("repository_owner_id", "4242")], &["rnaseq"]).await.unwrap();
    let runner = ActionsTokenEndpoint::start(&issuer, "acme/pipelines", "4242");
    let endpoint = world.server.endpoint();
    let image = world.registry.image("team/app:1.0");
    let job_env = runner.env();
    let mut env: Vec<(&str, &str)> = job_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("PULLPASS_ENDPOINT", endpoint.as_str()));
    let auth = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["auth", image.as_str(), "-w", "acme", "--project", "rnaseq"];
        args.extend_from_slice(extra);
        run("pullpass", &args, env, None)
    };

    let leased = auth(&["--identity-token-from", "github-actions"], &env);
    assert!(leased.status.success(), "{}", text(&leased));
    let asked = runner.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].authorized, "the runner's request token was sent");
    assert_eq!(asked[0].audience.as_deref(), Some(AUDIENCE), "the default audience");
    let minted = asked[0].token.clone().unwrap();
    assert_no_jwt(&leased, &[&minted]);
    assert!(!text(&leased).contains(runner.request_token()));

    // Another audience is asked for as given, and pullpassd refuses it.
    let other = auth(&["--identity-token-from", "github-actions", "--identity-audience", "sigstore/ci tool"], &env);
    assert_eq!(other.status.code(), Some(4), "{}", text(&other));
    assert!(text(&other).contains("audience"), "{}", text(&other));
    let asked = runner.asked();
    assert_eq!(asked[1].audience.as_deref(), Some("sigstore/ci tool"), "URL-encoded, decoded by the runner");
    assert_no_jwt(&other, &[asked[1].token.as_deref().unwrap()]);

    // A wrong request token: the runner refuses, the CLI says so (not the token).
    let mut wrong = env.clone();
    wrong[1] = ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-this-jobs-token");
    let refused = auth(&["--identity-token-from", "github-actions"], &wrong);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(text(&refused).contains("HTTP 401"), "{}", text(&refused));
    assert!(!text(&refused).contains("not-this-jobs-token") && !text(&refused).contains("idtoken"));
    assert!(!runner.asked()[2].authorized);

    // Outside a job with `id-token: write`: says what is missing.
    let outside = auth(&["--identity-token-from", "github-actions"], &[("PULLPASS_ENDPOINT", endpoint.as_str())]);
    assert_eq!(outside.status.code(), Some(2), "{}", text(&outside));
    assert!(text(&outside).contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set"), "{}", text(&outside));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_pulls_through_the_gateway_with_the_plugins_answer_for_a_pods_service_account_token() {
    let issuer = IdentityIssuer::start_kubernetes();
    let gw = pullpass_tests::gateway::GatewayWorld::start().await;
    create_provider(&gw.world.client, "k8s", &issuer).await;
    bind(&gw.world.client, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &[]).await.expect("bind");
    let jwt = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    // The pod's image names the gateway; the kubelet hands the plugin the
    // pod's token and nothing else.
    let image = gw.image("team/app:1.0");
    let endpoint = gw.world.server.endpoint();
    let answered = run(
        PLUGIN,
        &["--endpoint", &endpoint, "--workspace", "acme", "--gateway", &gw.gateway],
        &[],
        Some(&provider_request(&image, Some(&jwt), serde_json::json!({}))),
    );
    assert!(answered.status.success(), "{}", text(&answered));
    assert_no_jwt(&answered, &[&jwt]);
    let response: serde_json::Value = serde_json::from_slice(&answered.stdout).expect("a JSON response");
    let repository = image.rsplit_once(':').unwrap().0;
    let auth = &response["auth"][repository];
    let (username, password) = (auth["username"].as_str().unwrap(), auth["password"].as_str().unwrap());
    assert!(password.starts_with("ppg_"), "a gateway password, not the pod's token");
    let cache: u64 = response["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(cache <= 3600, "no longer than the gateway password lives: {cache}");

    // containerd pulls with that answer, as the kubelet would have it do.
    let containerd = pullpass_tests::gateway::Containerd::start();
    let user = format!("{username}:{password}");
    containerd.pull(&["--plain-http"], &user, &image);

    // A pod of an unbound namespace gets no answer to pull with.
    let prod = issuer.mint_kubernetes("prod", "builder", AUDIENCE);
    let refused = run(
        PLUGIN,
        &["--endpoint", &endpoint, "--workspace", "acme", "--gateway", &gw.gateway],
        &[],
        Some(&provider_request(&image, Some(&prod), serde_json::json!({}))),
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert_no_jwt(&refused, &[&prod]);
    assert!(!containerd.log().contains(jwt.as_str()), "the pod's token reached containerd");
}
