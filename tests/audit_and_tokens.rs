//! Access tokens and the audit trail, end to end: tokens shown once and
//! stored as hashes, revocation at the next call, events for every mutation
//! and lease, a hash chain that names the first tampered event, fail-closed
//! mutations, retention that keeps the chain verifiable.

use std::time::{Duration, Instant};

use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateCredentialRequest, Credential, DeleteCredentialRequest,
    GetAccessTokenRequest, IssueRegistryAuthRequest, ListAccessTokensRequest, ListAuditEventsRequest,
    ListCredentialsRequest, ListWorkspacesRequest, Provider, RevokeAccessTokenRequest, Role,
};
use pullpass_client::Client;
use pullpass_tests::{Options, Pullpassd, create_workspace, error_reason, violation_fields};
use tonic::Code;

async fn mint(client: &Client, role: Role, projects: &[&str]) -> Result<AccessToken, tonic::Status> {
    client
        .access()
        .create_access_token(CreateAccessTokenRequest {
            parent: "workspaces/acme".into(),
            access_token: Some(AccessToken {
                role: role as i32,
                projects: projects.iter().map(|p| p.to_string()).collect(),
                description: "test token".into(),
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn create_credential(client: &Client, id: &str, secret: &str) -> Result<Credential, tonic::Status> {
    client
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: id.into(),
            credential: Some(Credential {
                provider: Provider::Generic as i32,
                registry_server: "registry.example.com".into(),
                username: "ci".into(),
                secret: secret.into(),
                ..Default::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn events(client: &Client, parent: &str, filter: &str) -> Vec<pullpass::v1::AuditEvent> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .audit()
            .list_audit_events(ListAuditEventsRequest {
                parent: parent.into(),
                page_size: 7,
                page_token: token,
                filter: filter.into(),
            })
            .await
            .expect("ListAuditEvents")
            .into_inner();
        all.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_hashed_at_rest_and_refused_right_after_revocation() {
    let mut server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    let admin = mint(&root, Role::Admin, &[]).await.unwrap();
    assert!(admin.token.starts_with("pp_") && admin.token.len() == 46, "{}", admin.token);
    assert!(admin.name.starts_with("workspaces/acme/accessTokens/"));
    let admin_client = server.client_with(Some(&admin.token)).await;

    // An ADMIN mints LAUNCHER and VIEWER tokens, not ADMIN ones.
    let launcher = mint(&admin_client, Role::Launcher, &["rnaseq"]).await.unwrap();
    let denied = mint(&admin_client, Role::Admin, &[]).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    for (role, projects, field) in [
        (Role::Root, vec![], "access_token.role"),
        (Role::Unspecified, vec![], "access_token.role"),
        (Role::Viewer, vec!["rnaseq"], "access_token.projects"),
        (Role::Launcher, vec!["bad project"], "access_token.projects"),
    ] {
        let status = mint(&admin_client, role, &projects).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{role:?}");
        assert_eq!(violation_fields(&status), vec![field], "{role:?}");
    }
    let past = admin_client
        .access()
        .create_access_token(CreateAccessTokenRequest {
            parent: "workspaces/acme".into(),
            access_token: Some(AccessToken {
                role: Role::Viewer as i32,
                expire_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violation_fields(&past), vec!["access_token.expire_time"]);

    // Get and List never show the token string.
    let got = admin_client
        .access()
        .get_access_token(GetAccessTokenRequest { name: launcher.name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(got.token.is_empty());
    assert_eq!(got.projects, vec!["rnaseq"]);
    let listed = admin_client
        .access()
        .list_access_tokens(ListAccessTokensRequest { parent: "workspaces/acme".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.access_tokens.len(), 2);
    assert!(listed.access_tokens.iter().all(|t| t.token.is_empty()));

    // The launcher works, is recorded as used, then is revoked: refused at once.
    let launcher_client = server.client_with(Some(&launcher.token)).await;
    let ok = launcher_client
        .registry_auth_service()
        .issue_registry_auth(IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            project: "rnaseq".into(),
            images: vec!["quay.io/x/y:1".into()],
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = admin_client
            .access()
            .get_access_token(GetAccessTokenRequest { name: launcher.name.clone() })
            .await
            .unwrap()
            .into_inner();
        if seen.last_used_time.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "last_used_time was not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked = admin_client
        .access()
        .revoke_access_token(RevokeAccessTokenRequest { name: launcher.name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let refused = launcher_client.access().list_workspaces(ListWorkspacesRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");

    // No token string at rest or in the logs.
    for token in [&admin.token, &launcher.token, &server.root_token] {
        assert!(server.stored_files_containing(token.as_bytes()).is_empty());
    }
    server.stop();
    for token in [&admin.token, &launcher.token] {
        assert!(!server.logs().contains(token.as_str()));
        assert!(!server.stdout().contains(token.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_against_another_workspace_is_audited_in_the_callers_own_trail_only() {
    let server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    create_workspace(&root, "globex").await;
    let acme_admin = mint(&root, Role::Admin, &[]).await.unwrap();
    let globex_admin = root
        .access()
        .create_access_token(CreateAccessTokenRequest {
            parent: "workspaces/globex".into(),
            access_token: Some(AccessToken { role: Role::Admin as i32, ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    let globex = server.client_with(Some(&globex_admin.token)).await;
    globex
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: "workspaces/globex".into(),
            credential_id: "reg".into(),
            credential: Some(Credential {
                provider: Provider::Generic as i32,
                registry_server: "registry.example.com".into(),
                username: "ci".into(),
                secret: "globex-secret".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // ACME's admin probes globex: a real name, and text of its choosing.
    let prober = server.client_with(Some(&acme_admin.token)).await;
    let chosen = format!("workspaces/globex/credentials/reg\u{1b}[31mFORGED\n{}", "x".repeat(500));
    for name in ["workspaces/globex/credentials/reg".to_owned(), chosen] {
        let refused = prober.credentials().delete_credential(DeleteCredentialRequest { name }).await.unwrap_err();
        assert!(matches!(refused.code(), Code::NotFound | Code::InvalidArgument), "{refused:?}");
    }

    let probes = |list: &[pullpass::v1::AuditEvent]| -> Vec<pullpass::v1::AuditEvent> {
        list.iter().filter(|e| e.principal == acme_admin.name).cloned().collect()
    };
    assert_eq!(probes(&events(&globex, "workspaces/globex", "").await), [], "nothing in globex's trail");
    let acme_admin_client = server.client_with(Some(&acme_admin.token)).await;
    let own = probes(&events(&acme_admin_client, "workspaces/acme", r#"action = "DeleteCredential""#).await);
    assert_eq!(own.len(), 2, "{own:#?}");
    for event in &own {
        assert!(event.name.starts_with("workspaces/acme/auditEvents/"), "{}", event.name);
        assert!(event.resource.chars().count() <= 81, "bounded: {}", event.resource);
        assert!(!event.resource.chars().any(char::is_control), "sanitized: {:?}", event.resource);
    }
    assert_eq!(own[0].resource, "workspaces/globex/credentials/reg");
    assert!(own[1].resource.starts_with("workspaces/globex/credentials/reg?[31mFORGED?xxx"), "{}", own[1].resource);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_and_lease_leaves_an_event_that_can_be_filtered() {
    let server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    create_workspace(&root, "globex").await;
    create_credential(&root, "reg", "audit-CANARY-1").await.unwrap();
    let bad = create_credential(&root, "bad id", "audit-CANARY-2").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let viewer = mint(&root, Role::Viewer, &[]).await.unwrap();
    let viewer_client = server.client_with(Some(&viewer.token)).await;
    let denied = create_credential(&viewer_client, "nope", "audit-CANARY-3").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    root.registry_auth_service()
        .issue_registry_auth(IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec!["quay.io/x/y:1".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    // Lease events are committed within milliseconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let all = loop {
        let all = events(&root, "workspaces/acme", "").await;
        if all.iter().any(|e| e.action == "IssueRegistryAuth") {
            break all;
        }
        assert!(Instant::now() < deadline, "lease event missing: {all:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let actions: Vec<(&str, i32)> = all.iter().map(|e| (e.action.as_str(), e.status_code)).collect();
    assert_eq!(
        actions,
        [
            ("CreateWorkspace", 0),
            ("CreateCredential", 0),
            ("CreateCredential", Code::InvalidArgument as i32),
            ("CreateAccessToken", 0),
            ("CreateCredential", Code::PermissionDenied as i32),
            ("IssueRegistryAuth", Code::NotFound as i32),
        ]
    );
    let created = &all[1];
    assert_eq!(created.resource, "workspaces/acme/credentials/reg");
    assert!(created.principal.starts_with("rootTokens/"));
    assert!(!created.request_id.is_empty() && created.client_address.starts_with("127.0.0.1:"));
    assert_eq!(created.chain_hash.len(), 64);
    assert_eq!(all[4].principal, viewer.name);
    assert_eq!(all[5].image, "quay.io/x/y:1");

    // Filters and the cross-workspace view.
    assert_eq!(events(&root, "workspaces/acme", r#"action = "CreateCredential""#).await.len(), 3);
    assert_eq!(events(&root, "workspaces/acme", &format!("principal = \"{}\"", viewer.name)).await.len(), 1);
    assert_eq!(events(&root, "workspaces/acme", "resource = workspaces/acme/credentials/reg").await.len(), 1);
    assert_eq!(events(&root, "workspaces/acme", "event_time >= \"2100-01-01T00:00:00Z\"").await.len(), 0);
    assert_eq!(
        events(&root, "workspaces/acme", "event_time < \"2100-01-01T00:00:00Z\" AND action = CreateWorkspace")
            .await
            .len(),
        1
    );
    let everything = events(&root, "workspaces/-", "").await;
    assert!(everything.iter().any(|e| e.resource == "workspaces/globex"));
    assert!(everything.iter().any(|e| e.action == "CreateRootToken"));
    let viewer_sees = events(&viewer_client, "workspaces/acme", "").await;
    assert_eq!(viewer_sees.len(), all.len());
    let foreign = viewer_client
        .audit()
        .list_audit_events(ListAuditEventsRequest { parent: "workspaces/-".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied);
    let bad_filter = root
        .audit()
        .list_audit_events(ListAuditEventsRequest {
            parent: "workspaces/acme".into(),
            filter: "color = red".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation_fields(&bad_filter), vec!["filter"]);

    // Nothing secret in any audit row.
    let text = server.sql_text("SELECT * FROM audit_events");
    assert!(text.contains("workspaces/acme"), "{text}");
    for needle in ["audit-CANARY", viewer.token.as_str(), server.root_token.as_str()] {
        assert!(!text.contains(needle), "{needle} in the audit trail");
    }
}

fn audit_command(server: &Pullpassd, args: &[&str]) -> (bool, String) {
    let output = server.command(args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_first_altered_deleted_or_reordered_event() {
    let mut server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    for i in 0..8 {
        create_credential(&root, &format!("c{i}"), "pw").await.unwrap();
    }
    server.stop();
    server.sql("CREATE TABLE pristine AS SELECT * FROM audit_events");
    let restore = "DELETE FROM audit_events; INSERT INTO audit_events SELECT * FROM pristine;";
    let (ok, out) = audit_command(&server, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact: 10 event(s)"), "{out}");
    let (ok, head) = audit_command(&server, &["audit", "head"]);
    assert!(ok);
    let head: serde_json::Value = serde_json::from_str(head.lines().next().unwrap()).unwrap();
    assert_eq!(head["seq"], 10);

    let tamper = |sql: &str, expected: &str| {
        server.sql(restore);
        server.sql(sql);
        let (ok, out) = audit_command(&server, &["audit", "verify"]);
        assert!(!ok, "{sql}: {out}");
        assert!(out.contains(expected), "{sql}: expected `{expected}` in {out}");
    };
    tamper("UPDATE audit_events SET action = 'Nothing' WHERE seq = 5", "event 5 was altered");
    tamper("UPDATE audit_events SET resource = 'workspaces/acme/credentials/x' WHERE seq = 7", "event 7 was altered");
    tamper("DELETE FROM audit_events WHERE seq = 4", "event 4 is missing");
    tamper(
        "CREATE TEMP TABLE t AS SELECT * FROM audit_events WHERE seq IN (6, 7);
         UPDATE audit_events SET event_time = (SELECT event_time FROM t WHERE seq = 7), resource = (SELECT resource FROM t WHERE seq = 7),
           prev_hash = (SELECT prev_hash FROM t WHERE seq = 7), hash = (SELECT hash FROM t WHERE seq = 7) WHERE seq = 6;
         UPDATE audit_events SET event_time = (SELECT event_time FROM t WHERE seq = 6), resource = (SELECT resource FROM t WHERE seq = 6),
           prev_hash = (SELECT prev_hash FROM t WHERE seq = 6), hash = (SELECT hash FROM t WHERE seq = 6) WHERE seq = 7;",
        "event 6 does not follow",
    );
    server.sql(restore);
    let (ok, out) = audit_command(&server, &["audit", "verify"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_old_events_keeps_the_chain_verifiable() {
    let mut server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    create_credential(&root, "old", "pw").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.stop();
    let (ok, out) = audit_command(&server, &["audit", "prune", "--older-than-seconds", "1"]);
    assert!(ok, "{out}");
    assert!(out.contains("deleted 3 audit event(s)"), "{out}");
    let (ok, out) = audit_command(&server, &["audit", "verify"]);
    assert!(ok, "{out}");
    let server = server.restart();
    let root = server.client_with(Some(&server.root_token)).await;
    create_credential(&root, "new", "pw").await.unwrap();
    let mut server = server;
    server.stop();
    let (ok, out) = audit_command(&server, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 event(s) checked"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_audit_trail_cannot_be_written_the_mutation_fails_and_changes_nothing() {
    let server = Pullpassd::start_with(Options {
        args: vec!["--fault-audit-fail".into(), "CreateCredential".into()],
        ..Default::default()
    })
    .unwrap();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    let failed = create_credential(&root, "c1", "pw").await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(error_reason(&failed).as_deref(), Some("AUDIT_UNAVAILABLE"));
    let listed = root
        .credentials()
        .list_credentials(ListCredentialsRequest { parent: "workspaces/acme".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.credentials.is_empty(), "the credential must not exist");
}

/// Runs `pullpassd tokens …` against `server`'s database: success and
/// everything it printed.
fn tokens_command(server: &Pullpassd, args: &[&str]) -> (bool, String) {
    let mut full = vec!["tokens"];
    full.extend_from_slice(args);
    audit_command(server, &full)
}

/// Mints a root token offline: its name and token string.
fn create_root(server: &Pullpassd, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create-root"];
    args.extend_from_slice(extra);
    let (ok, out) = tokens_command(server, &args);
    assert!(ok, "{out}");
    let name = out.split_whitespace().find(|w| w.starts_with("rootTokens/")).expect("the token's name").to_owned();
    let token = out.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("the token").to_owned();
    (name, token)
}

/// The name of the root token `--dev` minted.
fn dev_root_name(server: &Pullpassd) -> String {
    let (ok, out) = tokens_command(server, &["list-root"]);
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.contains("created by pullpassd --dev")).unwrap_or_else(|| panic!("{out}"));
    line.split_whitespace().next().unwrap().to_owned()
}

/// Polls until `token`'s calls are refused as unauthenticated (the error's
/// message), for at most `limit`.
async fn refused_within(server: &Pullpassd, token: &str, limit: Duration) -> Option<String> {
    let client = server.client_with(Some(token)).await;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match client.access().list_workspaces(ListWorkspacesRequest::default()).await {
            Err(status) if status.code() == Code::Unauthenticated => return Some(status.message().to_owned()),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_token_revoked_offline_is_refused_by_the_running_server() {
    let server = Pullpassd::start();
    let first = server.client().await;
    first.access().list_workspaces(ListWorkspacesRequest::default()).await.expect("the root token works");
    let (second_name, second) = create_root(&server, &["--description", "second operator"]);
    let dev_name = dev_root_name(&server);
    let (ok, listed) = tokens_command(&server, &["list-root"]);
    assert!(ok && listed.contains(&second_name) && listed.contains("second operator"), "{listed}");
    // The hash as hex (SQLite's blob text here; psql's `\x…`).
    let hash_of_first = server.sql_text(&format!(
        "SELECT token_hash FROM access_tokens WHERE id = '{}'",
        dev_name.trim_start_matches("rootTokens/")
    ));
    let hash_of_first = hash_of_first.trim().trim_start_matches("\\x").to_lowercase();
    assert_eq!(hash_of_first.len(), 64, "{hash_of_first}");
    assert!(!listed.to_lowercase().contains(&hash_of_first[..16]), "never the hash: {listed}");

    let (ok, out) = tokens_command(&server, &["revoke-root", &dev_name]);
    assert!(ok, "{out}");
    assert!(!out.contains("no usable root token"), "another one is left: {out}");
    let refused = refused_within(&server, &server.root_token, Duration::from_secs(2)).await;
    assert!(refused.as_deref().is_some_and(|m| m.contains("revoked")), "still accepted: {refused:?}");
    let still = server.client_with(Some(&second)).await;
    still.access().list_workspaces(ListWorkspacesRequest::default()).await.expect("the other root token works");
    let revocations = events(&still, "workspaces/-", r#"action = "RevokeAccessToken""#).await;
    assert_eq!(revocations.len(), 1, "{revocations:#?}");
    assert_eq!(revocations[0].resource, dev_name);
    assert_eq!(revocations[0].principal, "pullpassd tokens revoke-root");

    // Clear errors for what cannot be revoked.
    let (ok, out) = tokens_command(&server, &["revoke-root", &dev_name]);
    assert!(!ok && out.contains("already revoked"), "{out}");
    let (ok, out) = tokens_command(&server, &["revoke-root", "rootTokens/nosuchtoken"]);
    assert!(!ok && out.contains("there is no root token rootTokens/nosuchtoken"), "{out}");
    let (ok, out) = tokens_command(&server, &["revoke-root", "workspaces/acme/accessTokens/abc"]);
    assert!(!ok && out.contains("not a root token name"), "{out}");
    // The last one may go offline, with the way back printed.
    let (ok, out) = tokens_command(&server, &["revoke-root", second_name.trim_start_matches("rootTokens/")]);
    assert!(ok, "{out}");
    assert!(out.contains("no usable root token is left") && out.contains("tokens create-root"), "{out}");
    assert!(refused_within(&server, &second, Duration::from_secs(2)).await.is_some());
    let (ok, out) = audit_command(&server, &["audit", "verify"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_token_minted_with_a_ttl_is_refused_once_it_expires() {
    let server = Pullpassd::start();
    // Long enough to be used once on a loaded machine, short enough to wait.
    let (name, token) = create_root(&server, &["--ttl", "8"]);
    let client = server.client_with(Some(&token)).await;
    client.access().list_workspaces(ListWorkspacesRequest::default()).await.expect("works before its expiry");
    let (_, listed) = tokens_command(&server, &["list-root"]);
    let line = listed.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(line.split_whitespace().nth(3), Some("-"), "an expiry, not revoked: {line}");
    assert!(line.split_whitespace().nth(2).is_some_and(|t| t.starts_with("20")), "{line}");
    let refused = refused_within(&server, &token, Duration::from_secs(15)).await;
    assert!(refused.as_deref().is_some_and(|m| m.contains("expired")), "{refused:?}");
    for bad in ["0", "soon", "1w"] {
        let (ok, out) = tokens_command(&server, &["create-root", "--ttl", bad]);
        assert!(!ok && out.contains("--ttl"), "{bad}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_revokes_another_root_token_over_the_api_but_never_the_last_usable_one() {
    let server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    let dev_name = dev_root_name(&server);
    let (other_name, other) = create_root(&server, &[]);
    let other_client = server.client_with(Some(&other)).await;
    other_client.access().list_workspaces(ListWorkspacesRequest::default()).await.expect("cached as valid");
    let revoke = |client: &Client, name: &str| {
        let (client, name) = (client.clone(), name.to_owned());
        async move { client.access().revoke_access_token(RevokeAccessTokenRequest { name }).await.map(|r| r.into_inner()) }
    };

    // Only ROOT may; a workspace ADMIN is denied.
    let admin = mint(&root, Role::Admin, &[]).await.unwrap();
    let denied = revoke(&server.client_with(Some(&admin.token)).await, &other_name).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    for (name, code) in [("rootTokens/nosuchtoken", Code::NotFound), ("rootTokens/NOT-AN-ID", Code::InvalidArgument)] {
        assert_eq!(revoke(&root, name).await.unwrap_err().code(), code, "{name}");
    }

    let revoked = revoke(&root, &other_name).await.unwrap();
    assert_eq!(revoked.name, other_name);
    assert!(revoked.revoke_time.is_some() && revoked.role == Role::Root as i32);
    let refused = other_client.access().list_workspaces(ListWorkspacesRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "refused from the next call on");
    assert!(revoke(&root, &other_name).await.unwrap().revoke_time == revoked.revoke_time, "again: unchanged");

    // An expired root token does not count as another one.
    let (_, expiring) = create_root(&server, &["--ttl", "1"]);
    assert!(refused_within(&server, &expiring, Duration::from_secs(5)).await.is_some());
    let last = revoke(&root, &dev_name).await.unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition, "{last:?}");
    assert_eq!(error_reason(&last).as_deref(), Some("LAST_ROOT_TOKEN"));
    assert!(last.message().contains("tokens create-root"), "{last:?}");
    root.access().list_workspaces(ListWorkspacesRequest::default()).await.expect("the last root token still works");
    let audited = events(&root, "workspaces/-", r#"action = "RevokeAccessToken""#).await;
    let outcomes: Vec<(&str, i32)> = audited.iter().map(|e| (e.resource.as_str(), e.status_code)).collect();
    assert!(outcomes.contains(&(other_name.as_str(), 0)), "{outcomes:?}");
    assert!(outcomes.contains(&(dev_name.as_str(), Code::FailedPrecondition as i32)), "{outcomes:?}");
}
