//! Every RPC × every kind of caller, against the real binary: one table says
//! what each principal gets, and an RPC of the contract without a row fails
//! the test.

use std::collections::BTreeSet;
use std::time::Duration;

use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateConsoleLinkRequest, CreateCredentialRequest,
    CreateIdentityBindingRequest, CreateIdentityProviderRequest, CreateWorkspaceRequest, Credential,
    DeleteCredentialRequest, DeleteIdentityBindingRequest, DeleteIdentityProviderRequest, DeleteWorkspaceRequest,
    GetAccessTokenRequest, GetCredentialRequest, GetIdentityBindingRequest, GetIdentityProviderRequest,
    GetWorkspaceRequest, IdentityBinding, IdentityProvider, ImportDockerConfigRequest, IssueRegistryAuthRequest,
    ListAccessTokensRequest, ListAuditEventsRequest, ListCredentialsRequest, ListIdentityBindingsRequest,
    ListIdentityProvidersRequest, ListWorkspacesRequest, Provider, RevokeAccessTokenRequest, Role,
    TestCredentialRequest, TestIdentityTokenRequest, UpdateCredentialRequest, UpdateIdentityBindingRequest,
    UpdateIdentityProviderRequest, Workspace, WorkspaceKind,
};
use pullpass_client::Client;
use pullpass_tests::{Options, Pullpassd, create_workspace};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    Admin,
    Launcher,
    LauncherOtherProject,
    Viewer,
    AdminOfOtherWorkspace,
    NoToken,
    Revoked,
    Expired,
}

const EVERYONE: [Who; 9] = [
    Who::Root,
    Who::Admin,
    Who::Launcher,
    Who::LauncherOtherProject,
    Who::Viewer,
    Who::AdminOfOtherWorkspace,
    Who::NoToken,
    Who::Revoked,
    Who::Expired,
];

use Code::{NotFound as NF, Ok as OK, PermissionDenied as PD};

/// Expected outcome for the authenticated principals, in the order Root,
/// Admin, Launcher, LauncherOtherProject, Viewer, AdminOfOtherWorkspace.
/// Tokens that are missing, revoked or expired always get UNAUTHENTICATED.
const TABLE: &[(&str, [Code; 6])] = &[
    ("pullpass.v1.AccessService/CreateWorkspace", [OK, PD, PD, PD, PD, PD]),
    ("pullpass.v1.AccessService/GetWorkspace", [OK, OK, OK, OK, OK, NF]),
    ("pullpass.v1.AccessService/ListWorkspaces", [OK, OK, OK, OK, OK, OK]),
    ("pullpass.v1.AccessService/DeleteWorkspace", [OK, PD, PD, PD, PD, PD]),
    ("pullpass.v1.AccessService/CreateAccessToken", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/GetAccessToken", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/ListAccessTokens", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/RevokeAccessToken", [OK, OK, PD, PD, PD, NF]),
    // A link signs in as the caller: any console role, for its own token.
    ("pullpass.v1.AccessService/CreateConsoleLink", [OK, OK, PD, PD, OK, OK]),
    ("pullpass.v1.CredentialService/CreateCredential", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.CredentialService/GetCredential", [OK, OK, PD, PD, OK, NF]),
    ("pullpass.v1.CredentialService/ListCredentials", [OK, OK, PD, PD, OK, NF]),
    ("pullpass.v1.CredentialService/UpdateCredential", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.CredentialService/DeleteCredential", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.CredentialService/TestCredential", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.CredentialService/ImportDockerConfig", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.RegistryAuthService/IssueRegistryAuth", [OK, OK, OK, PD, PD, NF]),
    ("pullpass.v1.AuditService/ListAuditEvents", [OK, OK, PD, PD, OK, NF]),
    // Identity providers are ROOT's; any workspace's ADMIN may read them to
    // bind their identities.
    ("pullpass.v1.AccessService/CreateIdentityProvider", [OK, PD, PD, PD, PD, PD]),
    ("pullpass.v1.AccessService/GetIdentityProvider", [OK, OK, PD, PD, PD, OK]),
    ("pullpass.v1.AccessService/ListIdentityProviders", [OK, OK, PD, PD, PD, OK]),
    ("pullpass.v1.AccessService/UpdateIdentityProvider", [OK, PD, PD, PD, PD, PD]),
    ("pullpass.v1.AccessService/DeleteIdentityProvider", [OK, PD, PD, PD, PD, PD]),
    // A workspace's identity bindings, and explaining a token against them,
    // are its ADMIN's.
    ("pullpass.v1.AccessService/CreateIdentityBinding", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/GetIdentityBinding", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/ListIdentityBindings", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/UpdateIdentityBinding", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/DeleteIdentityBinding", [OK, OK, PD, PD, PD, NF]),
    ("pullpass.v1.AccessService/TestIdentityToken", [OK, OK, PD, PD, PD, NF]),
];

fn expected(rpc: &str, who: Who) -> Code {
    let row = TABLE.iter().find(|(name, _)| *name == rpc).map(|(_, row)| row).expect("row");
    match who {
        Who::Root => row[0],
        Who::Admin => row[1],
        Who::Launcher => row[2],
        Who::LauncherOtherProject => row[3],
        Who::Viewer => row[4],
        Who::AdminOfOtherWorkspace => row[5],
        Who::NoToken | Who::Revoked | Who::Expired => Code::Unauthenticated,
    }
}

/// Every `Service/Method` of `pullpass.v1`, read from the descriptor set.
fn contract_rpcs() -> BTreeSet<String> {
    let set: prost_types::FileDescriptorSet = prost::Message::decode(pullpass::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .filter(|f| f.package() == "pullpass.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(move |m| format!("pullpass.v1.{}/{}", s.name(), m.name())))
        .collect()
}

#[test]
fn the_table_has_exactly_one_row_per_rpc_of_the_contract() {
    let table: BTreeSet<String> = TABLE.iter().map(|(rpc, _)| rpc.to_string()).collect();
    assert_eq!(table.len(), TABLE.len(), "duplicate rows");
    assert_eq!(table, contract_rpcs(), "every RPC needs a row in TABLE (and only those)");
}

async fn mint(
    root: &Client,
    workspace: &str,
    role: Role,
    projects: &[&str],
    expire_in: Option<Duration>,
) -> AccessToken {
    let expire_time = expire_in.map(|d| {
        let at = std::time::SystemTime::now() + d;
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
        prost_types::Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
    });
    root.access()
        .create_access_token(CreateAccessTokenRequest {
            parent: format!("workspaces/{workspace}"),
            access_token: Some(AccessToken {
                role: role as i32,
                projects: projects.iter().map(|p| p.to_string()).collect(),
                expire_time,
                description: format!("{role:?} for the matrix"),
                ..Default::default()
            }),
        })
        .await
        .expect("mint token")
        .into_inner()
}

fn generic(registry: &str) -> Credential {
    Credential {
        provider: Provider::Generic as i32,
        registry_server: registry.into(),
        username: "u".into(),
        secret: "matrix-secret".into(),
        ..Default::default()
    }
}

/// Calls `rpc` as `client`; `n` makes names unique per attempt. Resources a
/// call consumes are created beforehand with `root`.
/// An inline key set (one RSA public key) for the providers the table
/// makes: nothing is fetched.
fn inline_jwks() -> String {
    let issuer = pullpass_tests::identity::IdentityIssuer::start_kubernetes();
    let keys = pullpass_tests::gateway::http_client().get(issuer.jwks_uri()).send();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| runtime.block_on(async { keys.await.unwrap().text().await.unwrap() }))
}

/// Provider `id`, trusting the issuer `https://issuer-{n}.example` (issuers
/// are unique) with the key set `jwks`.
fn provider(id: &str, jwks: &str, n: usize) -> CreateIdentityProviderRequest {
    CreateIdentityProviderRequest {
        identity_provider_id: id.into(),
        identity_provider: Some(IdentityProvider {
            issuer: format!("https://issuer-{n}.example"),
            jwks: jwks.into(),
            audiences: vec!["pullpass".into()],
            ..Default::default()
        }),
    }
}

/// Binding `id` in acme of provider `base`'s namespace `ci` to LAUNCHER.
fn binding(id: &str) -> CreateIdentityBindingRequest {
    CreateIdentityBindingRequest {
        parent: "workspaces/acme".into(),
        identity_binding_id: id.into(),
        identity_binding: Some(IdentityBinding {
            identity_provider: "identityProviders/base".into(),
            bound_claims: [("/kubernetes.io/namespace".to_owned(), "ci".to_owned())].into(),
            role: Role::Launcher as i32,
            ..Default::default()
        }),
    }
}

/// A well-formed JWT of an issuer pullpass does not trust: the answer
/// explains its refusal, so the call itself succeeds for whoever may ask.
const UNTRUSTED_JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL25vYm9keS5leGFtcGxlIiwic3ViIjoieCIsImF1ZCI6InB1bGxwYXNzIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.c2lnbmF0dXJl";

async fn call(rpc: &str, client: &Client, root: &Client, n: usize, jwks: &str) -> Code {
    let jwks = jwks.to_owned();
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let ws = "workspaces/acme".to_owned();
    match rpc {
        "pullpass.v1.AccessService/CreateWorkspace" => code(
            client
                .access()
                .create_workspace(CreateWorkspaceRequest {
                    workspace_id: format!("new-{n}"),
                    workspace: Some(Workspace { kind: WorkspaceKind::Personal as i32, ..Default::default() }),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/GetWorkspace" => {
            code(client.access().get_workspace(GetWorkspaceRequest { name: ws }).await.map(drop))
        }
        "pullpass.v1.AccessService/ListWorkspaces" => {
            code(client.access().list_workspaces(ListWorkspacesRequest::default()).await.map(drop))
        }
        "pullpass.v1.AccessService/DeleteWorkspace" => {
            create_workspace(root, &format!("doomed-{n}")).await;
            code(
                client
                    .access()
                    .delete_workspace(DeleteWorkspaceRequest { name: format!("workspaces/doomed-{n}"), force: false })
                    .await
                    .map(drop),
            )
        }
        "pullpass.v1.AccessService/CreateAccessToken" => code(
            client
                .access()
                .create_access_token(CreateAccessTokenRequest {
                    parent: ws,
                    access_token: Some(AccessToken { role: Role::Launcher as i32, ..Default::default() }),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/CreateConsoleLink" => {
            code(client.access().create_console_link(CreateConsoleLinkRequest {}).await.map(drop))
        }
        "pullpass.v1.AccessService/GetAccessToken" => {
            let token = mint(root, "acme", Role::Viewer, &[], None).await;
            code(client.access().get_access_token(GetAccessTokenRequest { name: token.name }).await.map(drop))
        }
        "pullpass.v1.AccessService/ListAccessTokens" => code(
            client
                .access()
                .list_access_tokens(ListAccessTokensRequest { parent: ws, ..Default::default() })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/RevokeAccessToken" => {
            let token = mint(root, "acme", Role::Launcher, &[], None).await;
            code(client.access().revoke_access_token(RevokeAccessTokenRequest { name: token.name }).await.map(drop))
        }
        "pullpass.v1.CredentialService/CreateCredential" => code(
            client
                .credentials()
                .create_credential(CreateCredentialRequest {
                    parent: ws,
                    credential_id: format!("made-{n}"),
                    credential: Some(generic("127.0.0.1:1")),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.CredentialService/GetCredential" => code(
            client
                .credentials()
                .get_credential(GetCredentialRequest { name: "workspaces/acme/credentials/base".into() })
                .await
                .map(drop),
        ),
        "pullpass.v1.CredentialService/ListCredentials" => code(
            client
                .credentials()
                .list_credentials(ListCredentialsRequest { parent: ws, ..Default::default() })
                .await
                .map(drop),
        ),
        "pullpass.v1.CredentialService/UpdateCredential" => code(
            client
                .credentials()
                .update_credential(UpdateCredentialRequest {
                    credential: Some(Credential {
                        name: "workspaces/acme/credentials/base".into(),
                        description: format!("update {n}"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.CredentialService/DeleteCredential" => {
            root.credentials()
                .create_credential(CreateCredentialRequest {
                    parent: ws.clone(),
                    credential_id: format!("doomed-{n}"),
                    credential: Some(generic("127.0.0.1:1")),
                })
                .await
                .expect("create credential to delete");
            code(
                client
                    .credentials()
                    .delete_credential(DeleteCredentialRequest { name: format!("{ws}/credentials/doomed-{n}") })
                    .await
                    .map(drop),
            )
        }
        "pullpass.v1.CredentialService/TestCredential" => code(
            client
                .credentials()
                .test_credential(TestCredentialRequest {
                    name: "workspaces/acme/credentials/base".into(),
                    repository: "team/app".into(),
                    actions: vec![],
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.CredentialService/ImportDockerConfig" => code(
            client
                .credentials()
                .import_docker_config(ImportDockerConfigRequest {
                    parent: ws,
                    config_json: r#"{"auths": {"r.example.com": {"username": "u", "password": "p"}}}"#.into(),
                    name_prefix: format!("imp{n}-"),
                    validate_only: false,
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.RegistryAuthService/IssueRegistryAuth" => code(
            client
                .registry_auth_service()
                .issue_registry_auth(IssueRegistryAuthRequest {
                    workspace: ws,
                    project: "rnaseq".into(),
                    images: vec!["quay.io/nobody/here:1".into()],
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.AuditService/ListAuditEvents" => code(
            client
                .audit()
                .list_audit_events(ListAuditEventsRequest { parent: ws, ..Default::default() })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/CreateIdentityProvider" => {
            code(client.access().create_identity_provider(provider(&format!("p-{n}"), &jwks, n)).await.map(drop))
        }
        "pullpass.v1.AccessService/GetIdentityProvider" => code(
            client
                .access()
                .get_identity_provider(GetIdentityProviderRequest { name: "identityProviders/base".into() })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/ListIdentityProviders" => {
            code(client.access().list_identity_providers(ListIdentityProvidersRequest::default()).await.map(drop))
        }
        "pullpass.v1.AccessService/UpdateIdentityProvider" => code(
            client
                .access()
                .update_identity_provider(UpdateIdentityProviderRequest {
                    identity_provider: Some(IdentityProvider {
                        name: "identityProviders/base".into(),
                        description: format!("changed {n}"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/DeleteIdentityProvider" => {
            root.access().create_identity_provider(provider(&format!("doomed-{n}"), &jwks, n)).await.unwrap();
            code(
                client
                    .access()
                    .delete_identity_provider(DeleteIdentityProviderRequest {
                        name: format!("identityProviders/doomed-{n}"),
                        force: false,
                    })
                    .await
                    .map(drop),
            )
        }
        "pullpass.v1.AccessService/CreateIdentityBinding" => {
            code(client.access().create_identity_binding(binding(&format!("b-{n}"))).await.map(drop))
        }
        "pullpass.v1.AccessService/GetIdentityBinding" => code(
            client
                .access()
                .get_identity_binding(GetIdentityBindingRequest { name: format!("{ws}/identityBindings/base") })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/ListIdentityBindings" => code(
            client
                .access()
                .list_identity_bindings(ListIdentityBindingsRequest { parent: ws, ..Default::default() })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/UpdateIdentityBinding" => code(
            client
                .access()
                .update_identity_binding(UpdateIdentityBindingRequest {
                    identity_binding: Some(IdentityBinding {
                        name: format!("{ws}/identityBindings/base"),
                        description: format!("changed {n}"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["description".into()] }),
                })
                .await
                .map(drop),
        ),
        "pullpass.v1.AccessService/DeleteIdentityBinding" => {
            root.access().create_identity_binding(binding(&format!("doomed-{n}"))).await.unwrap();
            code(
                client
                    .access()
                    .delete_identity_binding(DeleteIdentityBindingRequest {
                        name: format!("{ws}/identityBindings/doomed-{n}"),
                    })
                    .await
                    .map(drop),
            )
        }
        "pullpass.v1.AccessService/TestIdentityToken" => code(
            client
                .access()
                .test_identity_token(TestIdentityTokenRequest { parent: ws, token: UNTRUSTED_JWT.into() })
                .await
                .map(drop),
        ),
        other => panic!("no call for {other}: add one"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_principal_as_the_table_says() {
    let server = Pullpassd::start_with(Options {
        args: vec!["--insecure-registry".into(), "127.0.0.1:1".into(), "--upstream-timeout".into(), "3".into()],
        ..Default::default()
    })
    .expect("pullpassd starts");
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    create_workspace(&root, "globex").await;
    root.credentials()
        .create_credential(CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: "base".into(),
            credential: Some(generic("127.0.0.1:1")),
        })
        .await
        .unwrap();
    let jwks = inline_jwks();
    root.access().create_identity_provider(provider("base", &jwks, 0)).await.expect("provider base");
    root.access().create_identity_binding(binding("base")).await.expect("binding base");
    let admin = mint(&root, "acme", Role::Admin, &[], None).await;
    let launcher = mint(&root, "acme", Role::Launcher, &[], None).await;
    let launcher_other = mint(&root, "acme", Role::Launcher, &["atac"], None).await;
    let viewer = mint(&root, "acme", Role::Viewer, &[], None).await;
    let other_admin = mint(&root, "globex", Role::Admin, &[], None).await;
    let revoked = mint(&root, "acme", Role::Admin, &[], None).await;
    root.access().revoke_access_token(RevokeAccessTokenRequest { name: revoked.name.clone() }).await.unwrap();
    let expired = mint(&root, "acme", Role::Admin, &[], Some(Duration::from_secs(2))).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut clients = Vec::new();
    for who in EVERYONE {
        let token = match who {
            Who::Root => Some(server.root_token.clone()),
            Who::Admin => Some(admin.token.clone()),
            Who::Launcher => Some(launcher.token.clone()),
            Who::LauncherOtherProject => Some(launcher_other.token.clone()),
            Who::Viewer => Some(viewer.token.clone()),
            Who::AdminOfOtherWorkspace => Some(other_admin.token.clone()),
            Who::NoToken => None,
            Who::Revoked => Some(revoked.token.clone()),
            Who::Expired => Some(expired.token.clone()),
        };
        clients.push((who, server.client_with(token.as_deref()).await));
    }
    let mut mismatches = Vec::new();
    let mut n = 0;
    for (rpc, _) in TABLE {
        for (who, client) in &clients {
            n += 1;
            let got = call(rpc, client, &root, n, &jwks).await;
            let want = expected(rpc, *who);
            if got != want {
                mismatches.push(format!("{rpc} as {who:?}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatch(es):\n{}", mismatches.len(), mismatches.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_name_the_role_and_what_it_lacks_and_other_workspaces_stay_invisible() {
    let server = Pullpassd::start();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    create_workspace(&root, "globex").await;
    let launcher = mint(&root, "acme", Role::Launcher, &["atac"], None).await;
    let client = server.client_with(Some(&launcher.token)).await;
    let denied = client
        .credentials()
        .list_credentials(ListCredentialsRequest { parent: "workspaces/acme".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("LAUNCHER"), "{denied:?}");
    assert!(denied.message().contains("ADMIN or VIEWER"), "{denied:?}");
    let hidden = client
        .credentials()
        .list_credentials(ListCredentialsRequest { parent: "workspaces/globex".into(), ..Default::default() })
        .await
        .unwrap_err();
    let absent = client
        .credentials()
        .list_credentials(ListCredentialsRequest { parent: "workspaces/initech".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((hidden.code(), absent.code()), (Code::NotFound, Code::NotFound));
    assert_eq!(
        hidden.message().replace("globex", "X"),
        absent.message().replace("initech", "X"),
        "an existing foreign workspace looks exactly like a missing one"
    );
    let listed = client.access().list_workspaces(ListWorkspacesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.workspaces.len(), 1);
    assert_eq!(listed.workspaces[0].name, "workspaces/acme");
}
