//! Cloud registries without stored keys, against moto (AWS STS and ECR in
//! server mode, behind a recording proxy), protocol fixtures of Entra ID,
//! Google STS and IAM Credentials and Quay robot federation, and the real
//! docker-registry behind an ACR front. Every JWT pullpass sends is checked
//! by the peers with PyJWT against pullpass's own published key set.

use std::collections::HashSet;
use std::time::Duration;

use pullpass::v1::{AuthKind, AwsRole, AzureIdentity, Credential, GoogleFederation, Provider, QuayRobotFederation};
use pullpass::v1::credential::ProviderSettings;
use pullpass_tests::clouds::{
    CLIENT_ID, CLIENT_SECRET, CloudWorld, ECR_REGISTRY, GOOGLE_AUDIENCE, ROBOT, ROBOT_TOKEN, ROLE_ARN, SERVICE_ACCOUNT,
    TENANT,
};
use pullpass_tests::{error_reason, violation_fields};
use serde_json::Value;

fn ecr_role(web_identity: bool, external_id: &str) -> Credential {
    Credential {
        provider: Provider::Ecr as i32,
        registry_server: ECR_REGISTRY.into(),
        provider_settings: Some(ProviderSettings::AwsRole(AwsRole {
            role_arn: ROLE_ARN.into(),
            external_id: external_id.into(),
            web_identity,
        })),
        ..Default::default()
    }
}

fn policy_resources(entry: &Value) -> Vec<String> {
    let policy: Value = serde_json::from_str(entry["Policy"].as_str().expect("a session policy")).expect("policy JSON");
    let mut resources = Vec::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        let actions: Vec<String> = match &statement["Action"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
            other => panic!("{other}"),
        };
        for action in actions {
            resources.push(format!("{action} {}", statement["Resource"].as_str().unwrap()));
        }
    }
    resources.sort();
    resources
}

async fn create_raw(world: &CloudWorld, id: &str, credential: Credential) -> Result<Credential, tonic::Status> {
    world
        .client
        .credentials()
        .create_credential(pullpass::v1::CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: id.into(),
            credential: Some(credential),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn seconds_until(auth: &pullpass::v1::RegistryAuth) -> i64 {
    let expire = auth.expire_time.as_ref().expect("expire_time").seconds;
    expire - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecr_role_assumed_with_pullpasss_own_token_pulls_one_repository_and_stores_no_secret() {
    let world = CloudWorld::start(&[]).await;
    let created = world.add("ecr-role", ecr_role(true, "")).await;
    assert!(!created.secret_set, "a web-identity role stores no secret");
    assert_eq!(created.secret_version, 0);

    let auth = world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await;
    let status = auth.status.as_ref().unwrap();
    assert_eq!(status.code, 0, "{}", status.message);
    assert_eq!(auth.kind, AuthKind::Basic as i32);
    assert_eq!(auth.username, "AWS");
    assert_eq!(auth.granted_scope, "repository:team/app:pull", "the lease says it reaches one repository");
    // The session asked for is the shortest AWS grants, and the lease ends with it.
    let left = seconds_until(&auth);
    assert!((800..=900).contains(&left), "the lease ends with its 900 s session: {left} s left");

    let assumed = world.wait_recorded("action", "AssumeRoleWithWebIdentity", 1).await;
    let call = &assumed[0];
    assert_eq!(call["RoleArn"], ROLE_ARN);
    assert_eq!(call["DurationSeconds"], "900");
    assert_eq!(call["RoleSessionName"], "pullpass-acme-ecr-role");
    assert_eq!(
        policy_resources(call),
        vec![
            "ecr:BatchGetImage arn:aws:ecr:eu-west-1:123456789012:repository/team/app".to_owned(),
            "ecr:GetAuthorizationToken *".to_owned(),
            "ecr:GetDownloadUrlForLayer arn:aws:ecr:eu-west-1:123456789012:repository/team/app".to_owned(),
        ]
    );
    // PyJWT verified the token against pullpass's JWKS.
    let token = &call["token"];
    assert_eq!(token["sub"], "workspaces/acme/credentials/ecr-role");
    assert_eq!(token["aud"], "sts.amazonaws.com");
    assert_eq!(token["iss"], world.issuer_url.as_str());
    assert_eq!(token["alg"], "ES256");
    assert!(token["lifetime"].as_i64().unwrap() <= 600, "{token}");
    // GetAuthorizationToken went out as the assumed session.
    let get_token = world.wait_recorded("action", "GetAuthorizationToken", 1).await;
    assert_eq!(get_token[0]["session_token"], true);
    assert!(get_token[0]["key_id"].as_str().unwrap().starts_with("ASIA") || get_token[0]["key_id"] != Value::Null);

    // Another repository is another session, narrowed to it.
    let other = world.issue(&format!("{ECR_REGISTRY}/other/tool:1.0"), None).await;
    assert_eq!(other.status.as_ref().unwrap().code, 0);
    let assumed = world.wait_recorded("action", "AssumeRoleWithWebIdentity", 2).await;
    assert!(policy_resources(&assumed[1]).iter().any(|r| r.ends_with("repository/other/tool")), "{:?}", assumed[1]);
    assert!(!policy_resources(&assumed[1]).iter().any(|r| r.ends_with("repository/team/app")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_key_with_a_role_is_narrowed_too_and_pullpasss_own_identity_needs_no_key() {
    let world = CloudWorld::start(&[
        ("AWS_ACCESS_KEY_ID", "AKIAOWNIDENTITY00001"),
        ("AWS_SECRET_ACCESS_KEY", "own-identity-secret-canary"),
    ])
    .await;
    // A stored access key that assumes a role (with an external id).
    let with_key = Credential {
        username: "AKIASTOREDKEY0000001".into(),
        secret: "stored-secret-access-key-canary".into(),
        ..ecr_role(false, "acme-external-id")
    };
    assert!(world.add("ecr-key", with_key).await.secret_set);
    let auth = world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await;
    assert_eq!(auth.status.as_ref().unwrap().code, 0, "{}", auth.status.as_ref().unwrap().message);
    let assumed = world.wait_recorded("action", "AssumeRole", 1).await;
    assert_eq!(assumed[0]["key_id"], "AKIASTOREDKEY0000001", "signed with the stored key");
    assert_eq!(assumed[0]["ExternalId"], "acme-external-id");
    assert!(policy_resources(&assumed[0]).iter().any(|r| r.ends_with("repository/team/app")));

    // No key and no web identity: pullpass's own AWS identity (here the
    // environment's key) signs AssumeRole.
    world.client.delete_credential("acme", "ecr-key").await.expect("delete");
    let own = world.add("ecr-own", ecr_role(false, "")).await;
    assert!(!own.secret_set);
    let auth = world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await;
    assert_eq!(auth.status.as_ref().unwrap().code, 0, "{}", auth.status.as_ref().unwrap().message);
    let assumed = world.wait_recorded("action", "AssumeRole", 2).await;
    assert_eq!(assumed[1]["key_id"], "AKIAOWNIDENTITY00001", "signed with pullpass's own identity");
    assert_eq!(assumed[1]["RoleSessionName"], "pullpass-acme-ecr-own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_names_the_step_and_a_burst_assumes_it_once_per_repository() {
    let world = CloudWorld::start(&[]).await;
    world.add("ecr-role", ecr_role(true, "")).await;
    // Two hundred callers at once, over two repositories: one session each.
    let mut calls = Vec::new();
    for i in 0..200 {
        let image = if i % 2 == 0 { "team/app:1.0" } else { "other/tool:1.0" };
        let client = world.client.clone();
        calls.push(tokio::spawn(async move {
            let request = pullpass::v1::IssueRegistryAuthRequest {
                workspace: "workspaces/acme".into(),
                images: vec![format!("{ECR_REGISTRY}/{image}")],
                ..Default::default()
            };
            client.registry_auth_service().issue_registry_auth(request).await.map(|r| r.into_inner().auths)
        }));
    }
    for call in calls {
        let auths = call.await.unwrap().expect("IssueRegistryAuth");
        assert_eq!(auths[0].status.as_ref().unwrap().code, 0);
    }
    let assumed = world.clouds.recorded_where("action", "AssumeRoleWithWebIdentity");
    assert_eq!(assumed.len(), 2, "one session per repository: {assumed:?}");
    assert_eq!(world.clouds.recorded_where("action", "GetAuthorizationToken").len(), 2);

    // STS refuses: the error says the role was not assumed.
    world.clouds.control(serde_json::json!({"sts_status": 403}));
    let refused = world.issue(&format!("{ECR_REGISTRY}/team/new:1.0"), None).await;
    let status = refused.status.unwrap();
    assert_eq!(status.code, tonic::Code::PermissionDenied as i32, "{}", status.message);
    assert!(status.message.contains("the role was not assumed"), "{}", status.message);
    let report = world
        .client
        .credentials()
        .test_credential(pullpass::v1::TestCredentialRequest {
            name: "workspaces/acme/credentials/ecr-role".into(),
            repository: "team/app".into(),
            actions: vec![],
        })
        .await
        .expect("TestCredential")
        .into_inner();
    assert!(!report.success);
    let message = report.status.unwrap().message;
    assert!(message.contains("the role was not assumed") && message.contains("AWS STS refused"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_settings_are_checked_field_by_field() {
    let world = CloudWorld::start(&[]).await;
    let bad = Credential {
        provider_settings: Some(ProviderSettings::AwsRole(AwsRole {
            role_arn: "arn:aws:iam::123:user/nope".into(),
            external_id: String::new(),
            web_identity: true,
        })),
        secret: "a secret with web identity".into(),
        ..ecr_role(true, "")
    };
    let status = create_raw(&world, "bad", bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violation_fields(&status),
        vec!["credential.aws_role.role_arn", "credential.aws_role.web_identity"]
    );
    // Settings of another provider, and ACR without its app registration.
    let misplaced = Credential {
        provider: Provider::Ghcr as i32,
        username: "u".into(),
        secret: "s".into(),
        provider_settings: Some(ProviderSettings::QuayRobot(QuayRobotFederation { robot: ROBOT.into() })),
        ..Default::default()
    };
    let status = create_raw(&world, "misplaced", misplaced).await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["credential.quay_robot"]);
    let bare_acr = Credential {
        provider: Provider::Acr as i32,
        registry_server: "acme.azurecr.io".into(),
        ..Default::default()
    };
    let status = create_raw(&world, "bare", bare_acr).await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["credential.azure", "credential.secret"]);
    let _ = error_reason;
    let _: HashSet<u8> = HashSet::new();
    let _ = Duration::ZERO;
    let _ = (CLIENT_ID, CLIENT_SECRET, GOOGLE_AUDIENCE, ROBOT_TOKEN, SERVICE_ACCOUNT, TENANT);
    let _ = (AzureIdentity::default(), GoogleFederation::default());
}
