//! The Rust SDK against an in-process pullpassd: the high-level calls, the
//! client-side lease cache (one RPC for N identical calls, refresh after
//! expiry), and typed errors.

use std::time::Duration;

use pullpass::v1::{Credential, Provider, Role, WorkspaceKind};
use pullpass_client::{Client, Error, Source};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::{allow_insecure, embedded_server};

async fn setup(expires_in: u64) -> (tempfile::TempDir, pullpass_server::server::Embedded, TokenRealm, Client) {
    let realm = TokenRealm::start(expires_in, "ci", "sdk-pw");
    let address = realm.address.clone();
    let (dir, server) = embedded_server(|settings| allow_insecure(settings, &address)).await;
    let root = Client::builder(server.endpoint())
        .token(server.root_token.clone().expect("root token"))
        .cache_margin(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect");
    root.create_workspace("acme", WorkspaceKind::Organization, "Acme").await.unwrap();
    root.create_credential(
        "acme",
        "fixture",
        Credential {
            provider: Provider::Generic as i32,
            registry_server: realm.address.clone(),
            username: "ci".into(),
            secret: "sdk-pw".into(),
            allowed_projects: vec!["rnaseq".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (dir, server, realm, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_auth_reads_like_the_job_and_returns_a_scoped_lease() {
    let (_dir, _server, realm, client) = setup(300).await;
    let image = format!("{}/acme/aligner:2.1", realm.address);
    let lease = client.registry_auth(&image).workspace("acme").project("rnaseq").pull().send().await.unwrap();
    assert_eq!(lease.token(), Some("tok-1"));
    assert_eq!(lease.image, image);
    assert_eq!(lease.normalized_image, image);
    assert_eq!(lease.requested_scope, "repository:acme/aligner:pull");
    assert_eq!(lease.credential, "workspaces/acme/credentials/fixture");
    assert_eq!(lease.source, Source::Registry);
    assert!(lease.remaining() > Duration::from_secs(290));
    assert_eq!(lease.authorization_header().as_str(), "Bearer tok-1");

    let push = client.registry_auth(&image).workspace("workspaces/acme").project("rnaseq").push().send().await.unwrap();
    assert_eq!(push.requested_scope, "repository:acme/aligner:pull,push");

    // The batch form: one outcome per image, in order.
    let batch = client
        .registry_auths([image.clone(), "quay.io/acme/other:1".into(), "Not A Ref".into()])
        .workspace("acme")
        .project("rnaseq")
        .send_all()
        .await
        .unwrap();
    assert_eq!(batch[0].as_ref().unwrap().source, Source::ClientCache);
    assert!(matches!(batch[1], Err(Error::NotFoundForRegistry(_))));
    assert!(matches!(batch[2], Err(Error::InvalidImage { .. })));

    // A min_ttl the cached lease meets is served from the cache; one it does
    // not meet goes to pullpass, which asks the registry again.
    let rpcs = client.stats().issue_rpcs;
    let ask = |ttl| client.registry_auth(&image).workspace("acme").project("rnaseq").min_ttl(ttl).send();
    assert_eq!(ask(Duration::from_secs(200)).await.unwrap().source, Source::ClientCache);
    assert_eq!(client.stats().issue_rpcs, rpcs);
    let longer = ask(Duration::from_secs(305)).await.unwrap();
    assert_ne!(longer.source, Source::ClientCache);
    assert_eq!(client.stats().issue_rpcs, rpcs + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_cost_one_rpc_and_leases_refresh_after_expiry() {
    let (_dir, _server, realm, client) = setup(3).await;
    let image = format!("{}/acme/aligner:2.1", realm.address);
    let ask = || client.registry_auth(&image).workspace("acme").project("rnaseq").send();
    // 100 concurrent identical calls: one RPC, one registry token.
    let all = futures_util::future::join_all((0..100).map(|_| ask())).await;
    assert!(all.iter().all(|r| r.as_ref().is_ok_and(|l| l.token() == Some("tok-1"))), "{all:?}");
    assert_eq!(client.stats().issue_rpcs, 1);
    // Other tags of the same repository share the lease.
    let tagged = client
        .registry_auth(format!("{}/acme/aligner:3.0", realm.address))
        .workspace("acme")
        .project("rnaseq")
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.source, Source::ClientCache);
    assert_eq!(client.stats().issue_rpcs, 1);
    // A 3-second token with a 1-second margin is refreshed after 2 seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refreshed = ask().await.unwrap();
    assert_eq!(client.stats().issue_rpcs, 2);
    assert_ne!(refreshed.source, Source::ClientCache);
    assert_eq!(realm.token_requests(), 2);
    // no_cache always asks.
    client.registry_auth(&image).workspace("acme").project("rnaseq").no_cache().send().await.unwrap();
    assert_eq!(client.stats().issue_rpcs, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_become_typed_errors_with_their_reason() {
    let (_dir, server, realm, root) = setup(300).await;
    let image = format!("{}/acme/aligner:2.1", realm.address);
    let other_project = root.registry_auth(&image).workspace("acme").project("atac").send().await.unwrap_err();
    assert!(matches!(other_project, Error::NotFoundForRegistry(_)), "{other_project:?}");
    assert_eq!(other_project.reason(), Some("CREDENTIAL_NOT_FOUND_FOR_REGISTRY"));
    let basic = root.registry_auth(&image).workspace("acme").project("rnaseq").basic().send().await.unwrap_err();
    assert!(matches!(basic, Error::PassthroughNotAllowed(_)), "{basic:?}");
    let invalid = root.registry_auth("ghcr.io/Acme/x").workspace("acme").send().await.unwrap_err();
    assert!(matches!(invalid, Error::InvalidImage { .. }));
    let missing = root.registry_auth(&image).workspace("nowhere").send().await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let bad_field = root.registry_auth(&image).workspace("Bad Workspace").send().await.unwrap_err();
    match bad_field {
        Error::InvalidArgument { violations, .. } => assert_eq!(violations[0].0, "workspace"),
        other => panic!("{other:?}"),
    }

    let launcher = root.create_access_token("acme", Role::Launcher, &["atac".into()], None, "").await.unwrap();
    let limited = Client::builder(server.endpoint()).token(launcher.token).connect().await.unwrap();
    let denied = limited.registry_auth(&image).workspace("acme").project("rnaseq").send().await.unwrap_err();
    assert!(matches!(denied, Error::PermissionDenied { .. }), "{denied:?}");
    assert_eq!(denied.reason(), Some("ROLE_DENIED"));
    let denied_admin = limited.list_credentials("acme", "").await.unwrap_err();
    assert!(matches!(denied_admin, Error::PermissionDenied { .. }));

    let anonymous = Client::builder(server.endpoint()).token("pp_not-a-real-token").connect().await.unwrap();
    let refused = anonymous.registry_auth(&image).workspace("acme").send().await.unwrap_err();
    assert!(matches!(refused, Error::Unauthenticated(_)), "{refused:?}");

    let dead =
        Client::builder("http://127.0.0.1:1").connect_timeout(Duration::from_millis(300)).connect().await.unwrap_err();
    assert!(matches!(dead, Error::Connect(_)) && dead.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_wrappers_cover_workspaces_credentials_tokens_and_audit() {
    let (_dir, _server, realm, root) = setup(300).await;
    assert_eq!(root.list_workspaces().await.unwrap().len(), 1);
    let listed = root.list_credentials("acme", "provider = GENERIC").await.unwrap();
    assert_eq!(listed.len(), 1);
    let shown = root.get_credential("acme", "fixture").await.unwrap();
    assert_eq!(shown.registry_server, realm.address);
    let updated = root
        .update_credential(
            Credential { name: shown.name.clone(), description: "via SDK".into(), ..Default::default() },
            &["description"],
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "via SDK");
    let tested = root.test_credential("acme", "fixture", "acme/aligner", false).await.unwrap();
    assert!(tested.success, "{tested:?}");
    let token = root.create_access_token("acme", Role::Viewer, &[], None, "sdk").await.unwrap();
    assert!(token.token.starts_with("pp_"));
    assert_eq!(root.list_access_tokens("acme").await.unwrap().len(), 1);
    root.revoke_access_token(&token.name).await.unwrap();
    let imported = root
        .import_docker_config(
            "acme",
            r#"{"auths": {"r.example.com": {"username": "u", "password": "p"}}}"#.into(),
            "i-",
            true,
        )
        .await
        .unwrap();
    assert_eq!(imported.created_count, 1);
    root.delete_credential("acme", "fixture").await.unwrap();
    let events = root.list_audit_events("acme", "action = DeleteCredential", 10).await.unwrap();
    assert_eq!(events.len(), 1);
    root.delete_workspace("acme", true).await.unwrap();
}
