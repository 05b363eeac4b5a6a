//! CredentialService and workspace rules, end to end through the real
//! binary: every validation rule answers with its exact code and field, and
//! good input round-trips.

use pullpass::v1::{
    CreateCredentialRequest, CreateWorkspaceRequest, Credential, DeleteCredentialRequest, DeleteWorkspaceRequest,
    GetCredentialRequest, GetWorkspaceRequest, ImportDockerConfigRequest, ListCredentialsRequest,
    ListWorkspacesRequest, Provider, UpdateCredentialRequest, Workspace, WorkspaceKind,
};
use pullpass_client::Client;
use pullpass_tests::fixtures::{credential, google_key_json};
use pullpass_tests::{Pullpassd, create_workspace, error_reason, violation_fields};
use tonic::Code;

async fn create(client: &Client, workspace: &str, id: &str, c: Credential) -> Result<Credential, tonic::Status> {
    client
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: format!("workspaces/{workspace}"),
            credential_id: id.into(),
            credential: Some(c),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(violation_fields(&status).iter().any(|f| f == field), "expected field {field}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_is_accepted_with_its_own_rules_and_normalizations() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;

    let hub = create(&client, "acme", "hub", credential(Provider::DockerHub, "dckr_pat_x")).await.unwrap();
    assert_eq!(hub.registry_server, "docker.io");
    assert!(hub.normalizations.iter().any(|n| n.contains("https://")), "{:?}", hub.normalizations);
    assert!(hub.normalizations.iter().any(|n| n.contains("/v1/")), "{:?}", hub.normalizations);
    assert!(hub.secret.is_empty() && hub.secret_set && hub.secret_version == 1);

    let ghcr = create(&client, "acme", "ghcr", credential(Provider::Ghcr, "ghp_x")).await.unwrap();
    assert_eq!(ghcr.registry_server, "ghcr.io");

    let gitlab = create(&client, "acme", "gitlab", credential(Provider::Gitlab, "gldt-x")).await.unwrap();
    assert_eq!(gitlab.registry_server, "gitlab.example.com:5050/group");

    let key = google_key_json("ci@pullpass-test.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token");
    let google = create(&client, "acme", "gar", credential(Provider::Google, &key)).await.unwrap();
    assert_eq!(google.username, "ci@pullpass-test.iam.gserviceaccount.com");

    let ecr = create(&client, "acme", "ecr", credential(Provider::Ecr, "wJalrXUtnFEMI/K7MDENG")).await.unwrap();
    assert_eq!(ecr.registry_server, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");

    create(&client, "acme", "quay", credential(Provider::Quay, "robot-token")).await.unwrap();
    let generic = Credential {
        allowed_projects: vec!["rnaseq".into(), "atac".into(), "rnaseq".into()],
        allow_passthrough: true,
        description: "CI pulls".into(),
        ..credential(Provider::Generic, "pw")
    };
    let generic = create(&client, "acme", "generic_1", generic).await.unwrap();
    assert_eq!(generic.allowed_projects, vec!["atac", "rnaseq"]);
    assert!(generic.allow_passthrough);

    let got = client
        .credentials()
        .get_credential(GetCredentialRequest { name: "workspaces/acme/credentials/generic_1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.description, "CI pulls");
    assert!(got.normalizations.is_empty(), "normalizations are reported on writes only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_names_parents_and_fields_are_invalid_argument_naming_the_field() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let good = || credential(Provider::Generic, "pw");

    for id in ["", "has space", "dot.ted", &"x".repeat(65), "ümlaut"] {
        assert_invalid(create(&client, "acme", id, good()).await, "credential_id");
    }
    assert!(create(&client, "acme", &"x".repeat(64), good()).await.is_ok());
    assert_invalid(create(&client, "Not_A_Workspace", "c", good()).await, "parent");
    let missing = client
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: "c".into(),
            credential: None,
        })
        .await;
    assert_invalid(missing, "credential");

    for registry in [
        "reg istry.example.com",
        "user:pw@registry.example.com",
        "registry.example.com/?tag=1",
        "registry.example.com/#frag",
        "registry.example.com:0",
        "registry.example.com:70000",
        "registry.example.com:https",
        "registry..example.com",
        ".registry.example.com",
        "ftp://registry.example.com",
        "registry.example.com/Team",
    ] {
        let c = Credential { registry_server: registry.into(), ..good() };
        assert_invalid(create(&client, "acme", "c", c).await, "credential.registry_server");
    }
    assert_invalid(create(&client, "acme", "c", Credential { provider: 0, ..good() }).await, "credential.provider");
    assert_invalid(create(&client, "acme", "c", Credential { provider: 99, ..good() }).await, "credential.provider");
    assert_invalid(
        create(&client, "acme", "c", Credential { secret: String::new(), ..good() }).await,
        "credential.secret",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { username: String::new(), ..good() }).await,
        "credential.username",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { username: "a:b".into(), ..good() }).await,
        "credential.username",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { allowed_projects: vec!["bad project".into()], ..good() }).await,
        "credential.allowed_projects",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { description: "d".repeat(501), ..good() }).await,
        "credential.description",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { token_realm_allowlist: vec!["auth.example.com".into()], ..good() })
            .await,
        "credential.token_realm_allowlist",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { ca_bundle_pem: "not a pem".into(), ..good() }).await,
        "credential.ca_bundle_pem",
    );
    // Provider-specific rules.
    assert_invalid(
        create(
            &client,
            "acme",
            "c",
            Credential { registry_server: "quay.io".into(), ..credential(Provider::Ghcr, "x") },
        )
        .await,
        "credential.registry_server",
    );
    assert_invalid(
        create(&client, "acme", "c", credential(Provider::Google, "{\"type\":\"service_account\"}")).await,
        "credential.secret",
    );
    assert_invalid(create(&client, "acme", "c", credential(Provider::Google, "not json")).await, "credential.secret");
    assert_invalid(
        create(
            &client,
            "acme",
            "c",
            Credential { registry_server: "ecr.example.com".into(), ..credential(Provider::Ecr, "s") },
        )
        .await,
        "credential.registry_server",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { username: "not-a-key-id".into(), ..credential(Provider::Ecr, "s") })
            .await,
        "credential.username",
    );
    assert_invalid(
        create(&client, "acme", "c", Credential { registry_server: String::new(), ..good() }).await,
        "credential.registry_server",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_per_workspace_and_missing_workspaces_are_not_found() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_workspace(&client, "globex").await;
    create(&client, "acme", "shared-name", credential(Provider::Generic, "a")).await.unwrap();
    let again = create(&client, "acme", "shared-name", credential(Provider::Generic, "b")).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert!(again.message().contains("workspaces/acme/credentials/shared-name"));
    create(&client, "globex", "shared-name", credential(Provider::Generic, "c")).await.unwrap();
    let nowhere = create(&client, "initech", "x", credential(Provider::Generic, "d")).await.unwrap_err();
    assert_eq!(nowhere.code(), Code::NotFound);
    assert!(nowhere.message().contains("workspaces/initech"), "{nowhere:?}");
    let get = client
        .credentials()
        .get_credential(GetCredentialRequest { name: "workspaces/acme/credentials/absent".into() })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let bad_name =
        client.credentials().get_credential(GetCredentialRequest { name: "credentials/absent".into() }).await;
    assert_invalid(bad_name, "name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_follow_the_field_mask_and_secret_rotation_bumps_the_version() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let created = create(&client, "acme", "ci", credential(Provider::Generic, "first")).await.unwrap();
    let name = created.name.clone();
    let update = |credential: Credential, paths: &[&str]| {
        let client = client.clone();
        let mask = (!paths.is_empty())
            .then(|| prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
        async move {
            client
                .credentials()
                .update_credential(UpdateCredentialRequest { credential: Some(credential), update_mask: mask })
                .await
                .map(tonic::Response::into_inner)
        }
    };

    let described = update(
        Credential { name: name.clone(), description: "new".into(), username: "ignored".into(), ..Default::default() },
        &["description"],
    )
    .await
    .unwrap();
    assert_eq!(described.description, "new");
    assert_eq!(described.username, "ci", "fields outside the mask are kept");
    assert_eq!(described.secret_version, 1);
    let seconds = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(seconds(&described.update_time) > seconds(&created.update_time));
    assert_eq!(described.create_time, created.create_time);

    let rotated = update(Credential { name: name.clone(), secret: "second".into(), ..Default::default() }, &["secret"])
        .await
        .unwrap();
    assert_eq!(rotated.secret_version, 2);
    assert_eq!(rotated.description, "new");

    // Without a mask: every field given a value.
    let implied = update(
        Credential {
            name: name.clone(),
            secret: "third".into(),
            allowed_projects: vec!["p1".into()],
            ..Default::default()
        },
        &[],
    )
    .await
    .unwrap();
    assert_eq!(implied.secret_version, 3);
    assert_eq!(implied.allowed_projects, vec!["p1"]);
    assert_eq!(implied.description, "new");

    let cleared = update(Credential { name: name.clone(), ..Default::default() }, &["allowed_projects", "description"])
        .await
        .unwrap();
    assert!(cleared.allowed_projects.is_empty() && cleared.description.is_empty());

    let moved = update(
        Credential {
            name: name.clone(),
            registry_server: "https://other.example.com/v2/".into(),
            ..Default::default()
        },
        &["registry_server"],
    )
    .await
    .unwrap();
    assert_eq!(moved.registry_server, "other.example.com");
    assert!(!moved.normalizations.is_empty());

    assert_invalid(update(Credential { name: name.clone(), ..Default::default() }, &["nonsense"]).await, "update_mask");
    assert_invalid(
        update(Credential { name: name.clone(), provider: Provider::Ghcr as i32, ..Default::default() }, &["provider"])
            .await,
        "update_mask",
    );
    assert_invalid(
        update(Credential { name: name.clone(), ..Default::default() }, &["secret_version"]).await,
        "update_mask",
    );
    assert_invalid(
        update(Credential { name: name.clone(), ..Default::default() }, &["secret"]).await,
        "credential.secret",
    );
    assert_invalid(update(Credential { name: name.clone(), ..Default::default() }, &[]).await, "update_mask");
    assert_invalid(
        update(
            Credential { name: name.clone(), registry_server: "a b".into(), ..Default::default() },
            &["registry_server"],
        )
        .await,
        "credential.registry_server",
    );
    assert_invalid(
        update(Credential { name: "nope".into(), ..Default::default() }, &["description"]).await,
        "credential.name",
    );
    let missing = update(
        Credential { name: "workspaces/acme/credentials/absent".into(), ..Default::default() },
        &["description"],
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A failed update changed nothing.
    let after =
        client.credentials().get_credential(GetCredentialRequest { name: name.clone() }).await.unwrap().into_inner();
    assert_eq!(after.secret_version, 3);
    assert_eq!(after.registry_server, "other.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_immediate_and_a_second_delete_is_not_found() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let created = create(&client, "acme", "gone", credential(Provider::Generic, "pw")).await.unwrap();
    client.credentials().delete_credential(DeleteCredentialRequest { name: created.name.clone() }).await.unwrap();
    let get =
        client.credentials().get_credential(GetCredentialRequest { name: created.name.clone() }).await.unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let again = client
        .credentials()
        .delete_credential(DeleteCredentialRequest { name: created.name.clone() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    // The name can be used again.
    create(&client, "acme", "gone", credential(Provider::Generic, "pw2")).await.unwrap();
}

async fn list_page(
    client: &Client,
    workspace: &str,
    page_size: i32,
    page_token: &str,
    filter: &str,
) -> Result<(Vec<String>, String), tonic::Status> {
    let response = client
        .credentials()
        .list_credentials(ListCredentialsRequest {
            parent: format!("workspaces/{workspace}"),
            page_size,
            page_token: page_token.into(),
            filter: filter.into(),
        })
        .await?
        .into_inner();
    Ok((
        response.credentials.into_iter().map(|c| c.name.rsplit('/').next().unwrap().to_owned()).collect(),
        response.next_page_token,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_are_stable_under_concurrent_inserts_and_tokens_are_bound_to_their_query() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_workspace(&client, "globex").await;
    for i in 0..120 {
        let c = if i % 3 == 0 { credential(Provider::Ghcr, "t") } else { credential(Provider::Generic, "t") };
        create(&client, "acme", &format!("c{i:03}"), c).await.unwrap();
    }
    let (first, token) = list_page(&client, "acme", 0, "", "").await.unwrap();
    assert_eq!(first.len(), 50, "default page size");
    assert!(!token.is_empty());
    // Inserts before and after the cursor while paging.
    create(&client, "acme", "a-before", credential(Provider::Generic, "t")).await.unwrap();
    create(&client, "acme", "z-after", credential(Provider::Generic, "t")).await.unwrap();
    let mut seen = first.clone();
    let mut token = token;
    while !token.is_empty() {
        let (page, next) = list_page(&client, "acme", 50, &token, "").await.unwrap();
        seen.extend(page);
        token = next;
    }
    let mut expected: Vec<String> = (0..120).map(|i| format!("c{i:03}")).collect();
    expected.push("z-after".into());
    assert_eq!(seen, expected, "no duplicates, nothing skipped, later inserts appear in order");

    let (all, token) = list_page(&client, "acme", 5000, "", "").await.unwrap();
    assert_eq!(all.len(), 122, "page_size above 1000 is reduced, not refused");
    assert!(token.is_empty());
    assert_invalid(list_page(&client, "acme", -1, "", "").await, "page_size");

    let (_, token) = list_page(&client, "acme", 10, "", "").await.unwrap();
    assert_invalid(list_page(&client, "globex", 10, &token, "").await, "page_token");
    assert_invalid(list_page(&client, "acme", 10, &token, "provider = GHCR").await, "page_token");
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 2.., if forged.ends_with("AA") { "BB" } else { "AA" });
    assert_invalid(list_page(&client, "acme", 10, &forged, "").await, "page_token");
    assert_invalid(list_page(&client, "acme", 10, "garbage!", "").await, "page_token");

    let (ghcr, _) = list_page(&client, "acme", 1000, "", "provider = GHCR").await.unwrap();
    assert_eq!(ghcr.len(), 40);
    let (by_registry, _) =
        list_page(&client, "acme", 1000, "", r#"registry_server = "https://ghcr.io/""#).await.unwrap();
    assert_eq!(by_registry, ghcr);
    let (both, _) =
        list_page(&client, "acme", 1000, "", "registry_server = registry.example.com:5000 AND provider = GENERIC")
            .await
            .unwrap();
    assert_eq!(both.len(), 82);
    let (paged, token) = list_page(&client, "acme", 30, "", "provider = GHCR").await.unwrap();
    let (rest, _) = list_page(&client, "acme", 30, &token, "provider = GHCR").await.unwrap();
    assert_eq!([paged, rest].concat(), ghcr);
    assert_invalid(list_page(&client, "acme", 10, "", "username = x").await, "filter");
    assert_invalid(list_page(&client, "acme", 10, "", "provider = NOPE").await, "filter");
    let missing = list_page(&client, "initech", 10, "", "").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_config_import_creates_one_credential_per_registry_and_reports_every_entry() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let document = serde_json::json!({
        "auths": {
            "https://index.docker.io/v1/": {"auth": b64("alice:hub-IMPORT-canary")},
            "ghcr.io": {"username": "octo", "password": "ghcr-IMPORT-canary"},
            "registry.example.com:5000": {"auth": b64("ci:generic-IMPORT-canary")},
            "oidc.example.com": {"identitytoken": "refresh-IMPORT-canary"},
            "bearer.example.com": {"registrytoken": "bearer-IMPORT-canary"},
            "empty.example.com": {},
        },
        "credHelpers": {"gcr.io": "gcloud"},
        "credsStore": "desktop",
    })
    .to_string();
    let import = |validate_only: bool, config_json: String| {
        let client = client.clone();
        async move {
            client
                .credentials()
                .import_docker_config(ImportDockerConfigRequest {
                    parent: "workspaces/acme".into(),
                    config_json,
                    name_prefix: "imported-".into(),
                    validate_only,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let dry = import(true, document.clone()).await.unwrap();
    assert_eq!(dry.created_count, 3);
    let (names, _) = list_page(&client, "acme", 100, "", "").await.unwrap();
    assert!(names.is_empty(), "validate_only stores nothing");

    let report = import(false, document.clone()).await.unwrap();
    assert_eq!(report.created_count, 3);
    let keys: Vec<&str> = report.results.iter().map(|r| r.config_key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "https://index.docker.io/v1/",
            "ghcr.io",
            "registry.example.com:5000",
            "oidc.example.com",
            "bearer.example.com",
            "empty.example.com",
            "gcr.io",
            "credsStore"
        ]
    );
    let hub = report.results[0].credential.as_ref().unwrap();
    assert_eq!(hub.name, "workspaces/acme/credentials/imported-docker-io");
    assert_eq!(hub.provider, Provider::DockerHub as i32);
    assert_eq!(report.results[1].credential.as_ref().unwrap().provider, Provider::Ghcr as i32);
    for (index, needle) in
        [(3, "identitytoken"), (4, "registrytoken"), (5, "no credentials"), (6, "credHelpers"), (7, "credsStore")]
    {
        let status = report.results[index].status.as_ref().unwrap();
        assert_ne!(status.code, 0, "{index}");
        assert!(status.message.contains(needle), "{index}: {}", status.message);
        assert!(report.results[index].credential.is_none());
    }
    let text = format!("{report:?}");
    assert!(!text.contains("IMPORT-canary"), "{text}");

    // Importing again: the three exist already, per entry.
    let again = import(false, document).await.unwrap();
    assert_eq!(again.created_count, 0);
    assert_eq!(again.results[0].status.as_ref().unwrap().code, Code::AlreadyExists as i32);

    // A malformed document changes nothing.
    for bad in [r#"{"auths": {"x.example.com": {"auth": "#.to_string(), "[]".to_string(), r#"{"auths": 5}"#.to_string()]
    {
        let status = import(false, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violation_fields(&status), vec!["config_json"]);
    }
    let (names, _) = list_page(&client, "acme", 100, "", "").await.unwrap();
    assert_eq!(names.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_are_validated_listed_and_deleted_only_when_empty_or_forced() {
    let server = Pullpassd::start();
    let client = server.client().await;
    let create_ws = |id: &str, kind: WorkspaceKind, display: &str| {
        let client = client.clone();
        let request = CreateWorkspaceRequest {
            workspace_id: id.into(),
            workspace: Some(Workspace { kind: kind as i32, display_name: display.into(), ..Default::default() }),
        };
        async move { client.access().create_workspace(request).await.map(tonic::Response::into_inner) }
    };
    let me = create_ws("me", WorkspaceKind::Personal, "Just me").await.unwrap();
    assert_eq!(me.name, "workspaces/me");
    assert_eq!(me.kind, WorkspaceKind::Personal as i32);
    assert_eq!(create_ws("me", WorkspaceKind::Personal, "").await.unwrap_err().code(), Code::AlreadyExists);
    for bad in ["", "1abc", "Upper", "trailing-", "under_score", &"a".repeat(64)] {
        assert_invalid(create_ws(bad, WorkspaceKind::Organization, "").await, "workspace_id");
    }
    assert_invalid(create_ws("nokind", WorkspaceKind::Unspecified, "").await, "workspace.kind");
    assert_invalid(create_ws("long", WorkspaceKind::Organization, &"n".repeat(201)).await, "workspace.display_name");

    create_ws("acme", WorkspaceKind::Organization, "Acme").await.unwrap();
    create(&client, "acme", "c1", credential(Provider::Generic, "pw")).await.unwrap();
    let listed = client
        .access()
        .list_workspaces(ListWorkspacesRequest { page_size: 1, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workspaces.len(), 1);
    assert_eq!(listed.workspaces[0].name, "workspaces/acme");
    let rest = client
        .access()
        .list_workspaces(ListWorkspacesRequest { page_size: 1, page_token: listed.next_page_token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.workspaces[0].name, "workspaces/me");

    let refused = client
        .access()
        .delete_workspace(DeleteWorkspaceRequest { name: "workspaces/acme".into(), force: false })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&refused).as_deref(), Some("WORKSPACE_NOT_EMPTY"));
    client
        .access()
        .delete_workspace(DeleteWorkspaceRequest { name: "workspaces/acme".into(), force: true })
        .await
        .unwrap();
    let gone = client.access().get_workspace(GetWorkspaceRequest { name: "workspaces/acme".into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // Its credentials went with it.
    create_ws("acme", WorkspaceKind::Organization, "Acme again").await.unwrap();
    let (names, _) = list_page(&client, "acme", 10, "", "").await.unwrap();
    assert!(names.is_empty());
    client
        .access()
        .delete_workspace(DeleteWorkspaceRequest { name: "workspaces/me".into(), force: false })
        .await
        .unwrap();
}
