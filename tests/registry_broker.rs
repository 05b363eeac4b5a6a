//! The token broker against real peers: the Debian docker-registry with token
//! auth, skopeo consuming the tokens pullpass issues, and the fixtures of
//! `support/fixtures/peers.py` (token issuer, Google OAuth endpoint checked
//! with google-auth, ECR endpoint checking SigV4 with botocore, a hostile
//! realm, a Basic-only registry).

use std::time::{Duration, Instant};

use pullpass::v1::{
    Action, AuthKind, Credential, ImportDockerConfigRequest, IssueRegistryAuthRequest, Provider, TestCredentialRequest,
};
use pullpass_tests::fixtures::google_key_json;
use pullpass_tests::registry::world::{
    ALICE_PASSWORD, ECR_PASSWORD, ECR_SECRET_ACCESS_KEY, World, code_and_reason, ok, users,
};
use pullpass_tests::registry::{Issuer, Peer, Registry, inspect_with_token, seed};
use pullpass_tests::{Options, Pullpassd, create_workspace, issue_registry_auth};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_team_app_works_in_skopeo_for_that_repository_only() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let image = world.registry.image("team/app:1.0");
    let auths = world.issue(&[&image], &[]).await;
    let auth = ok(&auths[0]);
    assert_eq!(auth.kind, AuthKind::Bearer as i32);
    assert_eq!(auth.registry, world.registry.address);
    assert_eq!(auth.requested_scope, "repository:team/app:pull");
    assert_eq!(auth.granted_scope, "repository:team/app:pull");
    assert_eq!(auth.credential, "workspaces/acme/credentials/reg");
    assert_eq!(auth.normalized_image, image);
    assert!(!auth.cached);
    let expires = auth.expire_time.as_ref().unwrap().seconds - auth.issue_time.as_ref().unwrap().seconds;
    assert_eq!(expires, 300, "the registry's expires_in");

    let inspected = inspect_with_token(&world.registry, "team/app:1.0", &auth.token);
    assert!(inspected.status.success(), "skopeo: {}", String::from_utf8_lossy(&inspected.stderr));
    let denied = inspect_with_token(&world.registry, "other/tool:1.0", &auth.token);
    assert!(!denied.status.success(), "the token must not work for other/tool");

    // Served again from the cache: no second token request.
    let before = world.token_requests();
    let again = world.issue(&[&image], &[]).await;
    assert!(ok(&again[0]).cached);
    assert_eq!(again[0].token, auth.token);
    assert_eq!(world.token_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_permission_denied_naming_the_credential() {
    let world = World::start().await;
    world.add("wrong", world.credential("", "alice", "not-the-password-CANARY")).await;
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let (code, reason) = code_and_reason(&auths[0]);
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(reason, "UPSTREAM_REJECTED_CREDENTIAL");
    let message = &auths[0].status.as_ref().unwrap().message;
    assert!(message.contains("workspaces/acme/credentials/wrong"), "{message}");
    assert!(!message.contains("CANARY"), "{message}");
    assert!(auths[0].token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_unavailable_within_the_deadline() {
    let mut world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.registry.stop();
    let started = Instant::now();
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let (code, reason) = code_and_reason(&auths[0]);
    assert_eq!((code, reason.as_str()), (Code::Unavailable, "UPSTREAM_UNAVAILABLE"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A registry that accepts connections and never answers: the caller's
    // deadline bounds the wait, and the answer still arrives before it.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = blackhole.local_addr().unwrap().to_string();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in blackhole.incoming().take(20) {
            held.push(stream);
        }
    });
    let server = Pullpassd::start_with(Options {
        args: vec!["--insecure-registry".into(), address.clone()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    client
        .create_credential(
            "acme",
            "hole",
            Credential {
                provider: Provider::Generic as i32,
                registry_server: address.clone(),
                username: "u".into(),
                secret: "p".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut request = tonic::Request::new(IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![format!("{address}/team/app:1")],
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let auths = client
        .registry_auth_service()
        .issue_registry_auth(request)
        .await
        .expect("answer before the deadline")
        .into_inner()
        .auths;
    assert!(started.elapsed() < Duration::from_millis(2100), "{:?}", started.elapsed());
    assert_eq!(code_and_reason(&auths[0]).0, Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_identical_requests_cost_one_token_request() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let before = world.token_requests();
    let image = world.registry.image("team/app:1.0");
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let client = world.client.clone();
        let image = image.clone();
        tasks.push(tokio::spawn(async move { issue_registry_auth(&client, &image).await }));
    }
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        let auth = task.await.unwrap().expect("RPC");
        ok(&auth);
        tokens.insert(auth.token);
    }
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(world.token_requests() - before, 1, "exactly one token request reached the issuer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_or_redirecting_realm_receives_no_credentials() {
    let world = World::start().await;
    let hostile = Peer::start(&["recorder"]);
    // A real registry whose challenge names the hostile realm.
    let evil = Registry::start(&format!("{}/token", hostile.url()), &world.issuer.bundle());
    let server = Pullpassd::start_with(Options {
        args: vec![
            "--insecure-registry".into(),
            evil.address.clone(),
            "--insecure-registry".into(),
            hostile.address.clone(),
        ],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    client
        .create_credential(
            "acme",
            "evil",
            Credential {
                provider: Provider::Generic as i32,
                registry_server: evil.address.clone(),
                username: "alice".into(),
                secret: ALICE_PASSWORD.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let auths = client
        .registry_auth_service()
        .issue_registry_auth(IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec![format!("{}/team/app:1.0", evil.address)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .auths;
    let (code, reason) = code_and_reason(&auths[0]);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "REALM_NOT_ALLOWED"));
    assert!(auths[0].status.as_ref().unwrap().message.contains("token_realm_allowlist"));
    assert_eq!(hostile.count("requests"), 0, "the hostile realm was contacted");

    // The allowed realm redirects to the hostile one: not followed.
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.issuer.peer.control(serde_json::json!({"redirect_to": format!("{}/token", hostile.url())}));
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let (code, reason) = code_and_reason(&auths[0]);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "REALM_NOT_ALLOWED"));
    assert!(auths[0].status.as_ref().unwrap().message.contains("redirect"));
    assert_eq!(hostile.count("requests"), 0, "the redirect was followed");

    // A registry on a cloud metadata address is not contacted at all, not
    // even for its unauthenticated challenge.
    for (id, host) in [("metadata", "169.254.169.254"), ("metadata-nat64", "[64:ff9b::a9fe:a9fe]")] {
        world.add(id, Credential { registry_server: host.into(), ..world.credential("", "alice", "x") }).await;
        let started = Instant::now();
        let auths = world.issue(&[&format!("{host}/latest/meta-data:1")], &[]).await;
        let (code, reason) = code_and_reason(&auths[0]);
        assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "REALM_NOT_ALLOWED"), "{host}");
        assert!(auths[0].status.as_ref().unwrap().message.contains("metadata address"), "{host}");
        assert!(started.elapsed() < Duration::from_secs(2), "{host}: {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limiting_realm_gives_retry_info_and_no_further_calls_before_it() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "30"}));
    let first = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let status = first[0].status.clone().unwrap();
    assert_eq!(Code::from(status.code), Code::ResourceExhausted);
    let tonic_status = tonic::Status::with_details(
        Code::from(status.code),
        status.message.clone(),
        prost::Message::encode_to_vec(&status).into(),
    );
    use tonic_types::StatusExt;
    let retry = tonic_status.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry > Duration::from_secs(25) && retry <= Duration::from_secs(30), "{retry:?}");
    let calls = world.issuer.peer.count("token_429");
    let second = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    assert_eq!(Code::from(second[0].status.as_ref().unwrap().code), Code::ResourceExhausted);
    assert_eq!(world.issuer.peer.count("token_429"), calls, "no upstream call before Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_asked_with_a_read_only_secret_reports_the_narrower_grant() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.add("push", world.credential("team/app", "pusher", "pusher-pw")).await;
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[Action::Push]).await;
    let auth = ok(&auths[0]);
    assert_eq!(auth.credential, "workspaces/acme/credentials/push", "the longer namespace serves");
    assert_eq!(auth.granted_scope, "repository:team/app:pull,push");
    // Another repository of the same host: only the host-wide, read-only credential.
    let auths = world.issue(&[&world.registry.image("team/tool:1")], &[Action::Push]).await;
    let auth = ok(&auths[0]);
    assert_eq!(auth.credential, "workspaces/acme/credentials/reg");
    assert_eq!(auth.requested_scope, "repository:team/tool:pull,push");
    assert_eq!(auth.granted_scope, "repository:team/tool:pull");
    assert!(auth.status.as_ref().unwrap().message.contains("granted less"), "{:?}", auth.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_on_one_host_serve_their_own_namespaces_and_projects_are_honoured() {
    let world = World::start().await;
    world.add("team", world.credential("team", "alice", ALICE_PASSWORD)).await;
    let mut ops = world.credential("", "ops", "ops-pw");
    ops.allowed_projects = vec!["infra".into()];
    world.add("ops", ops).await;
    let request = |project: &str| IssueRegistryAuthRequest {
        project: project.into(),
        images: vec![
            world.registry.image("team/app:1.0"),
            world.registry.image("other/tool:1.0"),
            "quay.io/acme/x:1".into(),
            "Not A Ref".into(),
        ],
        ..Default::default()
    };
    let auths = world.issue_with(request("infra")).await.unwrap();
    assert_eq!(ok(&auths[0]).credential, "workspaces/acme/credentials/team");
    assert_eq!(ok(&auths[1]).credential, "workspaces/acme/credentials/ops");
    assert!(inspect_with_token(&world.registry, "team/app:1.0", &auths[0].token).status.success());
    assert!(inspect_with_token(&world.registry, "other/tool:1.0", &auths[1].token).status.success());
    let (code, reason) = code_and_reason(&auths[2]);
    assert_eq!((code, reason.as_str()), (Code::NotFound, "CREDENTIAL_NOT_FOUND_FOR_REGISTRY"));
    assert!(auths[2].status.as_ref().unwrap().message.contains("quay.io"));
    assert!(auths[2].status.as_ref().unwrap().message.contains("workspaces/acme"));
    assert_eq!(code_and_reason(&auths[3]).0, Code::InvalidArgument);

    // Another project: the ops credential is not allowed.
    let auths = world.issue_with(request("rnaseq")).await.unwrap();
    ok(&auths[0]);
    let (code, reason) = code_and_reason(&auths[1]);
    assert_eq!((code, reason.as_str()), (Code::NotFound, "CREDENTIAL_NOT_FOUND_FOR_REGISTRY"));
    assert!(auths[1].status.as_ref().unwrap().message.contains("none allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_created_or_imported_after_a_lease_are_used_at_once() {
    let world = World::start().await;
    let image = world.registry.image("team/app:1.0");
    let other = world.registry.image("other/tool:1.0");
    // The first request loads the (empty) workspace into the broker's index.
    let none = world.issue(&[&other], &[]).await;
    assert_eq!(code_and_reason(&none[0]).1, "CREDENTIAL_NOT_FOUND_FOR_REGISTRY");

    world.add("whole-host", world.credential("", "ops", "ops-pw")).await;
    let auths = world.issue(&[&other], &[]).await;
    assert_eq!(ok(&auths[0]).credential, "workspaces/acme/credentials/whole-host");

    // A narrower credential created later takes over its namespace at once.
    world.add("team", world.credential("team", "alice", ALICE_PASSWORD)).await;
    let auths = world.issue(&[&image, &other], &[]).await;
    assert_eq!(ok(&auths[0]).credential, "workspaces/acme/credentials/team");
    assert_eq!(ok(&auths[1]).credential, "workspaces/acme/credentials/whole-host");

    // So does one imported from a docker config.json.
    let config = serde_json::json!({"auths": {format!("{}/other", world.registry.address): {
        "username": "alice", "password": ALICE_PASSWORD}}});
    let report = world
        .client
        .credentials()
        .import_docker_config(ImportDockerConfigRequest {
            parent: "workspaces/acme".into(),
            config_json: config.to_string(),
            name_prefix: "imported-".into(),
            validate_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.created_count, 1);
    let imported = report.results[0].credential.as_ref().unwrap().name.clone();
    let auths = world.issue(&[&other], &[]).await;
    // The import carries no realm allow-list, so the issuer's realm (another
    // port) is refused; what matters is that the new credential was chosen.
    let message = &auths[0].status.as_ref().expect("refused realm").message;
    assert!(message.contains(&imported), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_or_deleting_a_credential_evicts_its_leases() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let image = world.registry.image("team/app:1.0");
    let first = world.issue(&[&image], &[]).await;
    ok(&first[0]);
    let description = Credential {
        name: "workspaces/acme/credentials/reg".into(),
        description: "rotated".into(),
        ..Default::default()
    };
    world.client.update_credential(description, &["description"]).await.unwrap();
    let before = world.token_requests();
    let second = world.issue(&[&image], &[]).await;
    assert!(!ok(&second[0]).cached, "the update evicted the cached lease");
    assert_eq!(world.token_requests(), before + 1);
    // A min_ttl above the remaining life fetches a new token.
    let third = world
        .issue_with(IssueRegistryAuthRequest {
            images: vec![image.clone()],
            min_ttl: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!ok(&third[0]).cached);
    world.client.delete_credential("acme", "reg").await.unwrap();
    let gone = world.issue(&[&image], &[]).await;
    assert_eq!(code_and_reason(&gone[0]).0, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_only_registry_needs_passthrough_which_returns_the_stored_credential() {
    let basic = Peer::start(&["basic-registry", "bob", "bob-CANARY-pw"]);
    let server = Pullpassd::start_with(Options {
        args: vec!["--insecure-registry".into(), basic.address.clone()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let create = |id: &str, password: &str, passthrough: bool| {
        let client = client.clone();
        let credential = Credential {
            provider: Provider::Generic as i32,
            registry_server: format!("{}/{id}", basic.address),
            username: "bob".into(),
            secret: password.into(),
            allow_passthrough: passthrough,
            ..Default::default()
        };
        let id = id.to_owned();
        async move {
            client.create_credential("acme", &id, credential).await.unwrap();
        }
    };
    create("closed", "bob-CANARY-pw", false).await;
    create("open", "bob-CANARY-pw", true).await;
    create("wrong", "not-bobs", true).await;
    let issue = |image: String| {
        let client = client.clone();
        async move {
            client
                .registry_auth_service()
                .issue_registry_auth(IssueRegistryAuthRequest {
                    workspace: "workspaces/acme".into(),
                    images: vec![image],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .auths
                .remove(0)
        }
    };
    let refused = issue(format!("{}/closed/app:1", basic.address)).await;
    let (code, reason) = code_and_reason(&refused);
    assert_eq!((code, reason.as_str()), (Code::FailedPrecondition, "PASSTHROUGH_NOT_ALLOWED"));
    assert!(refused.status.as_ref().unwrap().message.contains("allow_passthrough"));
    assert!(refused.password.is_empty());
    let open = issue(format!("{}/open/app:1", basic.address)).await;
    ok(&open);
    assert_eq!(open.kind, AuthKind::Basic as i32);
    assert_eq!((open.username.as_str(), open.password.as_str()), ("bob", "bob-CANARY-pw"));
    let lease = open.expire_time.as_ref().unwrap().seconds - open.issue_time.as_ref().unwrap().seconds;
    assert_eq!(lease, 300, "a short lease");
    let wrong = issue(format!("{}/wrong/app:1", basic.address)).await;
    assert_eq!(code_and_reason(&wrong).0, Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_service_account_key_becomes_a_registry_token_and_a_basic_lease() {
    let world = World::start().await;
    world.issuer.write_state("google.key.pem", pullpass_tests::fixtures::TEST_RSA_PKCS8_PEM);
    let key = google_key_json(
        "ci@pullpass-test.iam.gserviceaccount.com",
        &format!("{}/oauth2/token", world.issuer.peer.url()),
    );
    world
        .add(
            "gar",
            Credential {
                provider: Provider::Google as i32,
                registry_server: world.registry.address.clone(),
                secret: key,
                token_realm_allowlist: vec![world.issuer.peer.url()],
                ..Default::default()
            },
        )
        .await;
    let image = world.registry.image("team/app:1.0");
    let bearer = world.issue(&[&image], &[]).await;
    let auth = ok(&bearer[0]);
    assert_eq!(auth.kind, AuthKind::Bearer as i32);
    assert_eq!(auth.granted_scope, "repository:team/app:pull");
    assert!(inspect_with_token(&world.registry, "team/app:1.0", &auth.token).status.success());
    assert_eq!(world.issuer.peer.count("oauth_requests"), 1);
    assert_eq!(world.issuer.peer.count("oauth_rejected"), 0, "google-auth verified our JWT");

    let basic = world
        .issue_with(IssueRegistryAuthRequest {
            images: vec![image],
            accept: vec![AuthKind::Basic as i32],
            ..Default::default()
        })
        .await
        .unwrap();
    let auth = ok(&basic[0]);
    assert_eq!(auth.kind, AuthKind::Basic as i32);
    assert_eq!(auth.username, "oauth2accesstoken");
    assert!(auth.password.starts_with("ya29."));
    assert_eq!(world.issuer.peer.count("oauth_requests"), 1, "the OAuth token is reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_credentials_get_a_sigv4_signed_authorization_token_checked_by_botocore() {
    let world = World::start().await;
    let registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    world.add("ecr", world.ecr_account(registry, ECR_SECRET_ACCESS_KEY)).await;
    let auths = world.issue(&[&format!("{registry}/team/app:1")], &[]).await;
    let auth = ok(&auths[0]);
    assert_eq!(world.issuer.peer.count("ecr_rejected"), 0, "botocore verified the signature");
    assert_eq!(auth.kind, AuthKind::Basic as i32);
    assert_eq!((auth.username.as_str(), auth.password.as_str()), ("AWS", ECR_PASSWORD));
    assert_eq!(auth.registry, registry);
    let life = auth.expire_time.as_ref().unwrap().seconds - auth.issue_time.as_ref().unwrap().seconds;
    assert!((12 * 3600 - 60..=12 * 3600 + 60).contains(&life), "{life}");
    assert!(auth.granted_scope.is_empty(), "ECR tokens are not repository-scoped");

    // A wrong secret key: the signature does not verify.
    let wrong = Credential {
        name: "workspaces/acme/credentials/ecr".into(),
        secret: "wrong-secret-key".into(),
        ..Default::default()
    };
    world.client.update_credential(wrong, &["secret"]).await.unwrap();
    let auths = world.issue(&[&format!("{registry}/team/app:1")], &[]).await;
    assert_eq!(code_and_reason(&auths[0]).0, Code::PermissionDenied);
    assert_eq!(world.issuer.peer.count("ecr_rejected"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_credential_reports_success_and_failure_without_the_token() {
    let world = World::start().await;
    world.add("good", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.add("bad", world.credential("", "alice", "wrong")).await;
    let test = |name: &str, repository: &str| {
        let client = world.client.clone();
        let request = TestCredentialRequest {
            name: format!("workspaces/acme/credentials/{name}"),
            repository: repository.into(),
            actions: vec![Action::Push as i32],
        };
        async move { client.credentials().test_credential(request).await }
    };
    let good = test("good", "team/app").await.unwrap().into_inner();
    assert!(good.success);
    assert_eq!(good.kind, AuthKind::Bearer as i32);
    assert_eq!(good.requested_scope, "repository:team/app:pull,push");
    assert_eq!(good.granted_scope, "repository:team/app:pull");
    let bad = test("bad", "team/app").await.unwrap().into_inner();
    assert!(!bad.success);
    assert_eq!(bad.status.unwrap().code, Code::PermissionDenied as i32);
    let invalid = test("good", "Team/App").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_issued_tokens_stay_out_of_the_database_and_logs() {
    // At debug, so every call's line (a lease's is debug) is searched too.
    let mut world = World::start_with(&["--log-level".into(), "debug".into()]).await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let token = ok(&auths[0]).token.clone();
    world.add("wrong", world.credential("team", "alice", "wrong-CANARY-3a")).await;
    let _ = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    for needle in [ALICE_PASSWORD, "wrong-CANARY-3a", token.as_str()] {
        assert!(world.server.stored_files_containing(needle.as_bytes()).is_empty(), "{needle} at rest");
    }
    world.server.stop();
    let logs = world.server.logs();
    assert!(logs.contains("IssueRegistryAuth"));
    for needle in [ALICE_PASSWORD, "wrong-CANARY-3a", token.as_str()] {
        assert!(!logs.contains(needle), "{needle} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let world = World::start().await;
    let call = |request: IssueRegistryAuthRequest| {
        let client = world.client.clone();
        async move { client.registry_auth_service().issue_registry_auth(request).await }
    };
    let fields = |status: tonic::Status| pullpass_tests::violation_fields(&status);
    let base = || IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec!["ubuntu".into()],
        ..Default::default()
    };
    assert_eq!(
        fields(call(IssueRegistryAuthRequest { workspace: "acme".into(), ..base() }).await.unwrap_err()),
        ["workspace"]
    );
    assert_eq!(fields(call(IssueRegistryAuthRequest { images: vec![], ..base() }).await.unwrap_err()), ["images"]);
    assert_eq!(
        fields(call(IssueRegistryAuthRequest { images: vec!["x".into(); 101], ..base() }).await.unwrap_err()),
        ["images"]
    );
    assert_eq!(
        fields(call(IssueRegistryAuthRequest { project: "bad project".into(), ..base() }).await.unwrap_err()),
        ["project"]
    );
    assert_eq!(fields(call(IssueRegistryAuthRequest { actions: vec![9], ..base() }).await.unwrap_err()), ["actions"]);
    assert_eq!(fields(call(IssueRegistryAuthRequest { accept: vec![0], ..base() }).await.unwrap_err()), ["accept"]);
    let negative = Some(prost_types::Duration { seconds: -1, nanos: 0 });
    assert_eq!(fields(call(IssueRegistryAuthRequest { min_ttl: negative, ..base() }).await.unwrap_err()), ["min_ttl"]);
    let missing = call(IssueRegistryAuthRequest { workspace: "workspaces/nope".into(), ..base() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let auths = call(IssueRegistryAuthRequest { images: vec!["ghcr.io/Acme/x".into(), "ubuntu".into()], ..base() })
        .await
        .unwrap()
        .into_inner()
        .auths;
    assert_eq!(code_and_reason(&auths[0]).0, Code::InvalidArgument);
    assert_eq!(auths[1].normalized_image, "docker.io/library/ubuntu:latest");
    assert_eq!(code_and_reason(&auths[1]).0, Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_bundle_lets_pullpass_reach_an_https_registry() {
    use pullpass_tests::registry::{private_ca, skopeo};
    let issuer = Issuer::start(users());
    let (_dir, ca, cert, key) = private_ca();
    let registry = Registry::start_with_tls(&issuer.realm(), &issuer.bundle(), Some((&cert, &key)));
    seed(&registry, "team/app:1.0", "seed", "seed-pw");
    // Only the (plain http) issuer is on the insecure list: the registry is https.
    let server = Pullpassd::start_with(Options {
        args: vec!["--insecure-registry".into(), issuer.peer.address.clone()],
        ..Default::default()
    })
    .unwrap();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    for (id, bundle) in [("no-ca", String::new()), ("with-ca", ca_pem)] {
        client
            .create_credential(
                "acme",
                id,
                Credential {
                    provider: Provider::Generic as i32,
                    registry_server: format!("{}/{}", registry.address, if id == "no-ca" { "other" } else { "team" }),
                    username: "alice".into(),
                    secret: ALICE_PASSWORD.into(),
                    token_realm_allowlist: vec![issuer.peer.url()],
                    ca_bundle_pem: bundle,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let auths = client
        .registry_auth_service()
        .issue_registry_auth(IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec![registry.image("other/tool:1"), registry.image("team/app:1.0")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .auths;
    let (code, reason) = code_and_reason(&auths[0]);
    assert_eq!((code, reason.as_str()), (Code::Unavailable, "UPSTREAM_UNAVAILABLE"), "{:?}", auths[0].status);
    let auth = ok(&auths[1]);
    assert_eq!(auth.credential, "workspaces/acme/credentials/with-ca");
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, certs.path().join("ca.crt")).unwrap();
    let inspected = skopeo(&[
        "inspect",
        "--cert-dir",
        certs.path().to_str().unwrap(),
        "--registry-token",
        &auth.token,
        &format!("docker://{}", registry.image("team/app:1.0")),
    ]);
    assert!(inspected.status.success(), "skopeo over TLS: {}", String::from_utf8_lossy(&inspected.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_three_times_and_a_missing_expires_in_means_60_seconds() {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    world.issuer.peer.control(serde_json::json!({"token_status": 500}));
    let before = world.token_requests();
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    assert_eq!(code_and_reason(&auths[0]).0, Code::Unavailable);
    assert_eq!(world.token_requests() - before, 3, "one request and two retries");

    world.issuer.peer.control(serde_json::json!({"omit_expires_in": true}));
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let auth = ok(&auths[0]);
    assert_eq!(auth.expire_time.as_ref().unwrap().seconds - auth.issue_time.as_ref().unwrap().seconds, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_key_naming_a_token_uri_off_the_allow_list_is_refused_without_a_request() {
    let world = World::start().await;
    let recorder = Peer::start(&["recorder"]);
    let key = google_key_json("ci@pullpass-test.iam.gserviceaccount.com", &format!("{}/token", recorder.url()));
    world
        .add(
            "gar",
            Credential {
                provider: Provider::Google as i32,
                registry_server: world.registry.address.clone(),
                secret: key,
                ..Default::default()
            },
        )
        .await;
    let auths = world.issue(&[&world.registry.image("team/app:1.0")], &[]).await;
    let (code, _) = code_and_reason(&auths[0]);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(auths[0].status.as_ref().unwrap().message.contains("--google-token-uri"));
    assert_eq!(recorder.count("requests"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_narrowed_while_leases_are_being_worked_out_is_never_served_to_the_old_project_again() {
    let world = World::start().await;
    // A workspace large enough that working a lease out takes a while.
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:p");
    let auths: serde_json::Map<String, serde_json::Value> =
        (0..3000).map(|i| (format!("r{i}.example"), serde_json::json!({ "auth": auth }))).collect();
    let config = serde_json::json!({ "auths": auths }).to_string();
    world.client.import_docker_config("acme", config, "", false).await.expect("import");
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let image = world.registry.image("team/app:1.0");
    let issue = |project: &'static str| {
        let image = image.clone();
        let world = &world;
        async move {
            let request =
                IssueRegistryAuthRequest { images: vec![image], project: project.into(), ..Default::default() };
            let auths = world.issue_with(request).await.expect("IssueRegistryAuth");
            auths[0].status.as_ref().is_some_and(|s| s.code == 0)
        }
    };
    assert!(issue("p1").await);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (projects, allowed, denied) = (["p1", "p2"], "p2", "p1");
    for round in 0..10 {
        let (allowed, denied) = if round % 2 == 0 { (allowed, denied) } else { (denied, allowed) };
        // Leases asked for all the while; each change below makes the next
        // one work its lease out again.
        let asking = async {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for project in projects {
                    issue(project).await;
                }
            }
        };
        let changing = async {
            // A change elsewhere in the workspace, then the narrowing right
            // behind it, while the lease of `image` is being worked out.
            world.add(&format!("churn{round}"), world.credential("elsewhere", "alice", ALICE_PASSWORD)).await;
            let mut narrowed = world.client.get_credential("acme", "reg").await.unwrap();
            narrowed.allowed_projects = vec![allowed.to_owned()];
            world.client.update_credential(narrowed, &["allowed_projects"]).await.unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        tokio::join!(asking, changing);
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        // Once the narrowing returned, the old project is refused, every
        // time: nothing worked out across the change is remembered.
        for _ in 0..20 {
            assert!(!issue(denied).await, "round {round}: a lease for {denied} after reg was narrowed to {allowed}");
            assert!(issue(allowed).await, "round {round}: {allowed} is allowed");
        }
    }
}
