//! Workload identity end to end: callers that present a JWT from an issuer
//! that is not ours (the PyJWT issuer of `support/identity.rs`, with the
//! Kubernetes, GitHub and GitLab claim layouts; npm's oidc-provider) instead
//! of a `pp_` token, against the real `pullpassd`, the real docker-registry
//! and its token issuer. No kube-apiserver can run here: Kubernetes tokens
//! are minted with the real claim layout.

use std::time::Duration;

use pullpass::v1::{
    CreateIdentityBindingRequest, CreateIdentityProviderRequest, DeleteIdentityBindingRequest, IdentityBinding,
    IdentityProvider, IssueRegistryAuthRequest, Role, TestIdentityTokenRequest,
};
use pullpass_client::Client;
use pullpass_tests::error_reason;
use pullpass_tests::identity::{AUDIENCE, Hostile, IdentityIssuer, bind, create_provider};
use pullpass_tests::registry::world::{ALICE_PASSWORD, World};
use pullpass_tests::replicas::within;
use tonic::Code;

/// A world with credential `reg` (alice: `team/*`), a provider `k8s` for
/// `issuer`, and a binding of namespace `ci` to LAUNCHER for `rnaseq`.
async fn world_with_binding(issuer: &IdentityIssuer) -> World {
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    create_provider(&world.client, "k8s", issuer).await;
    bind(
        &world.client,
        "ci",
        "k8s",
        &[("/kubernetes.io/namespace", "ci"), ("sub", "system:serviceaccount:ci:*")],
        &["rnaseq"],
    )
    .await
    .expect("create the binding");
    world
}

/// A lease for `team/app:1.0` for `project`, asked with `jwt`.
async fn lease(world: &World, jwt: &str, project: &str) -> Result<pullpass::v1::RegistryAuth, tonic::Status> {
    let client = world.server.client_with(Some(jwt)).await;
    client
        .registry_auth_service()
        .issue_registry_auth(IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            project: project.into(),
            images: vec![world.registry.image("team/app:1.0")],
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().auths.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_service_account_token_leases_for_its_bound_project_only_and_no_longer_once_unbound() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world_with_binding(&issuer).await;
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);

    let leased = lease(&world, &ci, "rnaseq").await.expect("the bound namespace leases");
    assert_eq!(leased.status.as_ref().map(|s| s.code), Some(0), "{leased:?}");
    assert!(!leased.token.is_empty());
    // The audit trail says which identity and binding leased (group-committed
    // a little after the answer).
    let who = "identityProviders/k8s/subjects/system:serviceaccount:ci:builder via workspaces/acme/identityBindings/ci";
    pullpass_tests::eventually("the lease's audit event", Duration::from_secs(5), || async {
        let events = world.client.list_audit_events("acme", "action = \"IssueRegistryAuth\"", 100).await.unwrap();
        events.iter().any(|e| e.principal == who).then_some(())
    })
    .await;
    let other_project = lease(&world, &ci, "other").await.unwrap_err();
    assert_eq!(other_project.code(), Code::PermissionDenied, "{other_project:?}");

    let prod = issuer.mint_kubernetes("prod", "builder", AUDIENCE);
    let unbound = lease(&world, &prod, "rnaseq").await.unwrap_err();
    assert_eq!(unbound.code(), Code::PermissionDenied, "{unbound:?}");
    assert_eq!(error_reason(&unbound).as_deref(), Some("IDENTITY_NOT_BOUND"));
    assert!(!unbound.message().contains("prod"), "no claim value in the refusal: {}", unbound.message());

    world
        .client
        .access()
        .delete_identity_binding(DeleteIdentityBindingRequest { name: "workspaces/acme/identityBindings/ci".into() })
        .await
        .unwrap();
    let refused = within(Duration::from_secs(1), || async {
        lease(&world, &ci, "rnaseq").await.is_err_and(|s| s.code() == Code::PermissionDenied)
    })
    .await;
    assert!(refused.is_some(), "a deleted binding refuses the next call within a second");

    // The tokens are nowhere at rest or in the logs.
    let mut server = world.server;
    server.stop();
    for jwt in [&ci, &prod] {
        assert!(server.stored_files_containing(jwt.as_bytes()).is_empty(), "a JWT at rest");
        assert!(!server.logs().contains(jwt.as_str()), "a JWT in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_fail_verification_are_unauthenticated_and_say_which_check_failed() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world_with_binding(&issuer).await;
    let kubernetes = |overrides: serde_json::Value| {
        let mut request = serde_json::json!({
            "kind": "kubernetes", "namespace": "ci", "service_account": "builder", "audience": [AUDIENCE],
        });
        for (key, value) in overrides.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong audience", issuer.mint(kubernetes(serde_json::json!({"audience": ["someone-else"]}))), "audience"),
        ("audience as a string", issuer.mint(kubernetes(serde_json::json!({"audience": "someone-else"}))), "audience"),
        ("expired", issuer.mint(kubernetes(serde_json::json!({"exp_offset": -600, "iat_offset": -900}))), "expired"),
        ("not yet valid", issuer.mint(kubernetes(serde_json::json!({"nbf_offset": 600}))), "not yet valid"),
        ("lifetime over the cap", issuer.mint(kubernetes(serde_json::json!({"lifetime": 7200}))), "lifetime"),
        ("alg none", issuer.mint_hostile(Hostile::AlgNone, kubernetes(serde_json::json!({}))).token, "algorithm"),
        (
            "HS256 keyed with the public key",
            issuer.mint_hostile(Hostile::Hs256WithPublicKey, kubernetes(serde_json::json!({}))).token,
            "algorithm",
        ),
        ("exp as a string", issuer.mint_hostile(Hostile::ExpAsString, kubernetes(serde_json::json!({}))).token, "exp"),
        ("nbf as a string", issuer.mint_hostile(Hostile::NbfAsString, kubernetes(serde_json::json!({}))).token, "nbf"),
        ("a jku header", issuer.mint_hostile(Hostile::JkuHeader, kubernetes(serde_json::json!({}))).token, "header"),
        (
            "another issuer's key",
            issuer.mint_hostile(Hostile::ForeignKey, kubernetes(serde_json::json!({}))).token,
            "key",
        ),
    ];
    for (what, jwt, says) in cases {
        let refused = lease(&world, &jwt, "rnaseq").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
        assert!(refused.message().to_lowercase().contains(says), "{what}: `{}` should say {says}", refused.message());
        assert!(!refused.message().contains(&jwt), "{what}: the token echoed");
    }
    assert_eq!(issuer.stats().foreign_fetches, 0, "a key a token names is never fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_must_bind_an_identifying_claim_and_grant_at_most_launcher() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world_with_binding(&issuer).await;
    let only_audience = bind(&world.client, "aud-only", "k8s", &[("aud", AUDIENCE)], &[]).await.unwrap_err();
    assert_eq!(only_audience.code(), Code::InvalidArgument, "{only_audience:?}");
    let admin = world
        .client
        .access()
        .create_identity_binding(CreateIdentityBindingRequest {
            parent: "workspaces/acme".into(),
            identity_binding_id: "admin".into(),
            identity_binding: Some(IdentityBinding {
                identity_provider: "identityProviders/k8s".into(),
                bound_claims: [("sub".to_owned(), "system:serviceaccount:ci:admin".to_owned())].into(),
                role: Role::Admin as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(admin.code(), Code::InvalidArgument, "{admin:?}");
    assert!(admin.message().contains("role"), "{}", admin.message());

    // A glob never crosses `:` or `/`.
    bind(&world.client, "glob", "k8s", &[("sub", "system:serviceaccount:build:*")], &[]).await.unwrap();
    let crossing = issuer.mint(serde_json::json!({
        "kind": "kubernetes", "namespace": "build", "service_account": "builder", "audience": [AUDIENCE],
        "claims": {"sub": "system:serviceaccount:build:a:b"},
    }));
    let refused = lease(&world, &crossing, "rnaseq").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_identity_token_explains_each_bound_claim_and_never_echoes_the_token() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world_with_binding(&issuer).await;
    let prod = issuer.mint_kubernetes("prod", "deployer", AUDIENCE);
    let explained = world
        .client
        .access()
        .test_identity_token(TestIdentityTokenRequest { parent: "workspaces/acme".into(), token: prod.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.identity_provider, "identityProviders/k8s");
    assert!(explained.refusal.is_empty(), "{}", explained.refusal);
    assert_eq!(explained.role, 0, "no binding matches");
    let binding = &explained.bindings[0];
    assert_eq!(binding.identity_binding, "workspaces/acme/identityBindings/ci");
    assert!(!binding.matched);
    let namespace = binding.claims.iter().find(|c| c.claim == "/kubernetes.io/namespace").unwrap();
    assert_eq!((namespace.pattern.as_str(), namespace.value.as_str(), namespace.matched), ("ci", "prod", false));
    let text = format!("{explained:?}");
    assert!(!text.contains(&prod), "the token echoed");
    assert!(!text.contains("deployer-uid") && !text.contains("node"), "a claim no binding names: {text}");

    let expired = issuer.mint(serde_json::json!({
        "kind": "kubernetes", "namespace": "ci", "service_account": "builder", "audience": [AUDIENCE],
        "exp_offset": -600, "iat_offset": -900,
    }));
    let refused = world
        .client
        .access()
        .test_identity_token(TestIdentityTokenRequest { parent: "workspaces/acme".into(), token: expired })
        .await
        .unwrap()
        .into_inner();
    assert!(refused.refusal.contains("expired"), "{}", refused.refusal);
}

/// A gateway world (registry `local` on the gateway, credential `reg`
/// serving `team/*`) with provider `k8s` and binding `ci` (namespace `ci`,
/// all projects).
async fn gateway_world_with_binding(issuer: &IdentityIssuer) -> pullpass_tests::gateway::GatewayWorld {
    let gw = pullpass_tests::gateway::GatewayWorld::start().await;
    create_provider(&gw.world.client, "k8s", issuer).await;
    bind(&gw.world.client, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &[]).await.expect("bind");
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_the_gateway_with_a_service_account_token_as_the_password() {
    let issuer = IdentityIssuer::start_kubernetes();
    let gw = gateway_world_with_binding(&issuer).await;
    let jwt = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let skopeo = pullpass_tests::gateway::Skopeo::new();
    skopeo.copy(&gw.image("team/app:1.0"), &format!("any-username:{jwt}")).expect("skopeo pulls with the JWT");
    let other = issuer.mint_kubernetes("prod", "builder", AUDIENCE);
    assert!(skopeo.copy(&gw.image("team/app:1.0"), &format!("x:{other}")).is_err(), "an unbound namespace is refused");
    let mut server = gw.world.server;
    server.stop();
    assert!(!server.logs().contains(jwt.as_str()), "the JWT in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_password_asked_with_a_jwt_works_until_its_binding_changes() {
    let issuer = IdentityIssuer::start_kubernetes();
    let gw = gateway_world_with_binding(&issuer).await;
    let jwt = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let password = gw.password_with(&jwt, "team/app:1.0").await;
    let manifest = |password: String| {
        let url = gw.url(&format!("/v2/{}/team/app/manifests/1.0", pullpass_tests::gateway::ALIAS));
        async move {
            pullpass_tests::gateway::http_client()
                .get(url)
                .header("authorization", pullpass_tests::gateway::basic("pullpass", &password))
                .header("accept", pullpass_tests::gateway::OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(manifest(password.clone()).await, 200);
    // The binding changes (a narrower pattern): the password it stood on ends.
    world_update_binding(&gw.world.client).await;
    let ended = within(Duration::from_secs(1), || async { manifest(password.clone()).await == 401 }).await;
    assert!(ended.is_some(), "a password whose binding changed is refused within a second");
}

async fn world_update_binding(client: &Client) {
    client
        .access()
        .update_identity_binding(pullpass::v1::UpdateIdentityBindingRequest {
            identity_binding: Some(IdentityBinding {
                name: "workspaces/acme/identityBindings/ci".into(),
                bound_claims: [
                    ("/kubernetes.io/namespace".to_owned(), "ci".to_owned()),
                    ("sub".to_owned(), "system:serviceaccount:ci:builder".to_owned()),
                ]
                .into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["bound_claims".into()] }),
        })
        .await
        .expect("update the binding");
}

/// Leases `team/app:1.0` for no project with `jwt`; true when served.
async fn leases(world: &World, jwt: &str) -> bool {
    leases_for(world, jwt, "").await
}

/// The same for `project`.
async fn leases_for(world: &World, jwt: &str, project: &str) -> bool {
    lease(world, jwt, project).await.is_ok_and(|auth| auth.status.is_some_and(|s| s.code == 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_tokens_bind_on_the_owners_immutable_id_and_gitlab_tokens_on_a_protected_project_path() {
    let github = IdentityIssuer::start();
    let gitlab = IdentityIssuer::start();
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    create_provider(&world.client, "github", &github).await;
    create_provider(&world.client, "gitlab", &gitlab).await;
    bind(&world.client, "gh-org", "github", &[("repository_owner_id", "424242")], &[]).await.unwrap();
    bind(&world.client, "gl-main", "gitlab", &[("project_path", "acme/pipelines"), ("ref_protected", "true")], &[])
        .await
        .unwrap();
    assert!(leases(&world, &github.mint_github("acme/app", "424242", AUDIENCE)).await, "the bound owner id");
    assert!(
        !leases(&world, &github.mint_github("acme/app", "999", AUDIENCE)).await,
        "a repository of the same name under another owner is not the bound one"
    );
    assert!(leases(&world, &gitlab.mint_gitlab("acme/pipelines", true, AUDIENCE)).await, "a protected ref");
    assert!(!leases(&world, &gitlab.mint_gitlab("acme/pipelines", false, AUDIENCE)).await, "an unprotected ref");
    // One provider's token never matches the other's bindings.
    assert!(!leases(&world, &gitlab.mint_github("acme/app", "424242", AUDIENCE)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_certified_oidc_provider_that_is_a_separate_program_are_accepted_by_discovery() {
    let provider = pullpass_tests::identity::OidcProvider::start();
    let world = World::start().await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    let audience = "https://pullpass.test/api";
    world
        .client
        .access()
        .create_identity_provider(CreateIdentityProviderRequest {
            identity_provider_id: "oidc".into(),
            identity_provider: Some(IdentityProvider {
                issuer: provider.issuer(),
                audiences: vec![audience.into()],
                ..Default::default()
            }),
        })
        .await
        .expect("a provider found by OIDC discovery");
    bind(&world.client, "team", "oidc", &[("team", "pipelines")], &[]).await.unwrap();
    assert!(leases(&world, &provider.token(audience, serde_json::json!({"team": "pipelines"}))).await);
    assert!(!leases(&world, &provider.token(audience, serde_json::json!({"team": "other"}))).await);
    let wrong_audience = lease(&world, &provider.token("https://elsewhere.test", serde_json::json!({})), "").await;
    assert_eq!(wrong_audience.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_once_refetched_and_a_removed_key_stops_working() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = world_with_binding(&issuer).await;
    let before = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    assert!(leases_for(&world, &before, "rnaseq").await);
    // A new key signs from now on; the old one leaves the key set.
    let rotation = issuer.rotate(true);
    let retired = rotation.removed.first().expect("the old key was removed").clone();
    let after = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    // Its unknown kid makes pullpass fetch the key set again, at most once
    // per 30 s per provider.
    let accepted = within(Duration::from_secs(40), || async { leases_for(&world, &after, "rnaseq").await }).await;
    println!("a token signed by the new key was accepted after {accepted:?}");
    assert!(accepted.is_some(), "a rotated key is accepted within the refetch cooldown");
    let fresh_old = issuer.mint(serde_json::json!({
        "kind": "kubernetes", "namespace": "ci", "service_account": "other", "audience": [AUDIENCE],
        "signing_key": retired,
    }));
    let refused = lease(&world, &fresh_old, "rnaseq").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "a key removed from the set no longer verifies: {refused:?}");
    // Nor does a token it signed that was verified (and remembered) before.
    let remembered = lease(&world, &before, "rnaseq").await.unwrap_err();
    assert_eq!(remembered.code(), Code::Unauthenticated, "a remembered token outlived its key: {remembered:?}");
}

/// The `pullpass_identity_verifications` samples for provider `k8s`, by
/// result, from the text exposition.
async fn verifications(metrics: &str) -> (std::collections::BTreeMap<String, f64>, String) {
    let response =
        pullpass_tests::gateway::http_client().get(format!("http://{metrics}/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    let counts = text
        .lines()
        .filter(|line| line.starts_with("pullpass_identity_verifications") && line.contains("provider=\"k8s\""))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let result = series.split("result=\"").nth(1)?.split('"').next()?;
            Some((result.to_owned(), value.parse().ok()?))
        })
        .collect();
    (counts, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_are_counted_by_provider_and_failed_check_and_no_jwt_reaches_the_metrics() {
    let issuer = IdentityIssuer::start_kubernetes();
    let world = World::start_with(&["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()]).await;
    world.add("reg", world.credential("", "alice", ALICE_PASSWORD)).await;
    create_provider(&world.client, "k8s", &issuer).await;
    bind(&world.client, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &["rnaseq"]).await.expect("bind");
    let ci = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let expired = issuer.mint(serde_json::json!({
        "kind": "kubernetes", "namespace": "ci", "service_account": "builder", "audience": [AUDIENCE],
        "exp_offset": -600, "iat_offset": -900,
    }));
    // A verified token is remembered: its second call is not verified again.
    for _ in 0..2 {
        let leased = lease(&world, &ci, "rnaseq").await.expect("a lease");
        assert_eq!(leased.status.as_ref().map(|s| s.code), Some(0), "{leased:?}");
    }
    assert_eq!(lease(&world, &expired, "rnaseq").await.unwrap_err().code(), Code::Unauthenticated);

    let wanted = [("verified".to_owned(), 1.0), ("expired".to_owned(), 1.0)];
    let (counts, text) = pullpass_tests::eventually("the verification counters", Duration::from_secs(5), || async {
        let (counts, text) = verifications(&world.server.metrics).await;
        wanted.iter().all(|(result, n)| counts.get(result) == Some(n)).then_some((counts, text))
    })
    .await;
    assert_eq!(counts.len(), 2, "only the two results seen: {counts:?}");
    for jwt in [&ci, &expired] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!text.contains(jwt.as_str()) && !text.contains(signature), "a JWT in the metrics");
    }
    assert!(!text.contains("builder") && !text.contains("system:serviceaccount"), "no claim value in a label");
}
