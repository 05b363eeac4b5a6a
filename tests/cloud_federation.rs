//! Cloud registries without stored keys, against moto (AWS STS and ECR in
//! server mode, behind a recording proxy), protocol fixtures of Entra ID,
//! Google STS and IAM Credentials and Quay robot federation, and the real
//! docker-registry behind an ACR front. Every JWT pullpass sends is checked
//! by the peers with PyJWT against pullpass's own published key set.

use std::time::Duration;

use pullpass::v1::{AuthKind, Credential, Provider};
use pullpass_tests::clouds::{
    self, CLIENT_ID, CLIENT_SECRET, CloudWorld, ECR_REGISTRY, GOOGLE_AUDIENCE, ROBOT, ROLE_ARN, SERVICE_ACCOUNT, TENANT,
};
use pullpass_tests::violation_fields;
use serde_json::Value;

fn ecr_role(web_identity: bool, external_id: &str) -> Credential {
    clouds::ecr_role(ROLE_ARN, web_identity, external_id)
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
    let world = CloudWorld::start_with(
        &[("AWS_ACCESS_KEY_ID", "AKIAOWNIDENTITY00001"), ("AWS_SECRET_ACCESS_KEY", "own-identity-secret-canary")],
        &["--aws-own-identity-role", "arn:aws:iam::123456789012:role/pullpass-*"],
    )
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
    assert_eq!(assumed[1]["ExternalId"], "pullpass:acme", "pullpass names the workspace, not the caller");
    // A role the operator did not list is not assumed with pullpass's identity.
    let other = clouds::ecr_role("arn:aws:iam::123456789012:role/someone-elses", false, "");
    world.add("ecr-other", other).await;
    let report = test_credential(&world, "ecr-other", "team/app").await;
    let message = report.status.unwrap().message;
    assert!(message.contains("--aws-own-identity-role"), "{message}");
    assert_eq!(world.clouds.recorded_where("action", "AssumeRole").len(), 2, "nothing was sent to STS");
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
        secret: "a secret with web identity".into(),
        ..clouds::ecr_role("arn:aws:iam::123:user/nope", true, "")
    };
    let status = create_raw(&world, "bad", bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violation_fields(&status), vec!["credential.aws_role.role_arn", "credential.aws_role.web_identity"]);
    // Settings of another provider, and ACR without its app registration.
    let misplaced = Credential {
        provider: Provider::Ghcr as i32,
        registry_server: String::new(),
        username: "u".into(),
        secret: "s".into(),
        ..clouds::quay_robot("")
    };
    let status = create_raw(&world, "misplaced", misplaced).await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["credential.quay_robot"]);
    let bare_acr =
        Credential { provider: Provider::Acr as i32, registry_server: "acme.azurecr.io".into(), ..Default::default() };
    let status = create_raw(&world, "bare", bare_acr).await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["credential.azure", "credential.secret"]);
}

fn acr(secret: Option<&str>, registry: &str) -> Credential {
    clouds::acr(secret.unwrap_or_default(), registry)
}

fn ok(auth: &pullpass::v1::RegistryAuth) {
    let status = auth.status.as_ref().expect("status");
    assert_eq!(status.code, 0, "{}: {}", auth.image, status.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_acr_app_gives_a_token_for_one_repository_that_skopeo_pulls_with_and_no_other() {
    let world = CloudWorld::start(&[]).await;
    let front = world.clouds.front.address.clone();
    let created = world.add("acr-federated", acr(None, &front)).await;
    assert!(!created.secret_set, "a federated app stores no secret");
    assert_eq!(created.username, CLIENT_ID);

    let auth = world.issue(&format!("{front}/team/app:1.0"), None).await;
    ok(&auth);
    assert_eq!(auth.kind, AuthKind::Bearer as i32);
    assert_eq!(auth.granted_scope, "repository:team/app:pull");
    // Entra got pullpass's token as the client assertion, and PyJWT
    // verified it against pullpass's key set.
    let entra = world.clouds.calls("entra");
    assert_eq!(entra.len(), 1, "{entra:?}");
    assert_eq!(entra[0]["assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(entra[0]["scope"], "https://containerregistry.azure.net/.default");
    assert_eq!(entra[0]["token"]["sub"], "workspaces/acme/credentials/acr-federated");
    assert_eq!(entra[0]["token"]["aud"], "api://AzureADTokenExchange");
    let exchange = world.clouds.calls("acr_exchange");
    assert_eq!(exchange.len(), 1);
    assert_eq!(exchange[0]["access_token_valid"], true);
    assert_eq!(exchange[0]["tenant"], TENANT);
    assert_eq!(exchange[0]["service"], front.as_str());
    let scoped = world.clouds.calls("acr_token");
    assert_eq!(scoped[0]["scope"], "repository:team/app:pull");

    // skopeo pulls with the lease; the real registry refuses it elsewhere.
    let skopeo = pullpass_tests::gateway::Skopeo::new();
    let pull = |image: &str| {
        let layout = skopeo.home.path().join(image.replace(['/', ':'], "_"));
        skopeo.run(
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-registry-token",
                &auth.token,
                &format!("docker://{front}/{image}"),
                &format!("oci:{}:copied", layout.display()),
            ],
            &[],
        )
    };
    let pulled = pull("team/app:1.0");
    assert!(pulled.status.success(), "{}", String::from_utf8_lossy(&pulled.stderr));
    let refused = pull("other/tool:1.0");
    assert!(!refused.status.success(), "a token for team/app must not pull other/tool");
    let why = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(why.contains("unauthorized") || why.contains("401") || why.contains("denied"), "{why}");

    // Another repository costs one scoped call: the Entra token and the
    // refresh token are kept.
    ok(&world.issue(&format!("{front}/other/tool:1.0"), None).await);
    assert_eq!(world.clouds.calls("entra").len(), 1);
    assert_eq!(world.clouds.calls("acr_exchange").len(), 1);
    assert_eq!(world.clouds.calls("acr_token").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acr_client_secret_goes_only_to_entra_and_each_refused_step_is_named() {
    let world = CloudWorld::start(&[]).await;
    let front = world.clouds.front.address.clone();
    assert!(world.add("acr", acr(Some(CLIENT_SECRET), &front)).await.secret_set);
    ok(&world.issue(&format!("{front}/team/app:1.0"), None).await);
    assert_eq!(world.clouds.calls("entra")[0]["secret"], "given");
    // A caller that takes only a username and password is sent to the gateway.
    let basic = world.issue(&format!("{front}/team/app:1.0"), Some(AuthKind::Basic)).await;
    let status = basic.status.unwrap();
    assert_eq!(status.code, tonic::Code::FailedPrecondition as i32);
    assert!(status.message.contains("via_gateway"), "{}", status.message);
    // The registry refuses the scope, then the exchange: each is named.
    world.add("acr-scope", acr(Some(CLIENT_SECRET), &front)).await;
    world.clouds.front_refuses("/oauth2/token", 401);
    let message = test_credential(&world, "acr-scope", "team/app").await.status.unwrap().message;
    assert!(message.contains("the registry's /oauth2/token refused the scope"), "{message}");
    world.add("acr-exchange", acr(Some(CLIENT_SECRET), &front)).await;
    world.clouds.front_refuses("/oauth2/exchange", 401);
    let message = test_credential(&world, "acr-exchange", "team/app").await.status.unwrap().message;
    assert!(message.contains("/oauth2/exchange refused the Entra token"), "{message}");
    // An ACR credential on a host that is no ACR login server gets no Entra token.
    world.add("acr-elsewhere", acr(Some(CLIENT_SECRET), "registry.example.com")).await;
    let message = test_credential(&world, "acr-elsewhere", "team/app").await.status.unwrap().message;
    assert!(message.contains("is not an ACR login server"), "{message}");
    // Entra refuses a new app's credentials: the report names Entra.
    world.clouds.control(serde_json::json!({"entra_status": 401}));
    world.add("acr-refused", acr(Some("wrong-secret"), &front)).await;
    let report = test_credential(&world, "acr-refused", "team/app").await;
    assert!(!report.success);
    let message = report.status.unwrap().message;
    assert!(message.contains("Entra ID refused the app's credentials"), "{message}");
}

async fn test_credential(world: &CloudWorld, id: &str, repository: &str) -> pullpass::v1::TestCredentialResponse {
    world
        .client
        .credentials()
        .test_credential(pullpass::v1::TestCredentialRequest {
            name: format!("workspaces/acme/credentials/{id}"),
            repository: repository.into(),
            actions: vec![],
        })
        .await
        .expect("TestCredential")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_federation_exchanges_pullpasss_token_at_sts_and_impersonates_the_service_account() {
    let world = CloudWorld::start(&[]).await;
    let registry = world.registry.address.clone();
    let created =
        world.add("gar", clouds::google_federation(&registry, SERVICE_ACCOUNT, Some(world.issuer.peer.url()))).await;
    assert!(!created.secret_set);
    assert_eq!(created.username, SERVICE_ACCOUNT);
    // The registry's own token flow accepts the impersonated access token.
    let auth = world.issue(&format!("{registry}/team/app:1.0"), None).await;
    ok(&auth);
    assert_eq!(auth.kind, AuthKind::Bearer as i32);
    assert_eq!(auth.granted_scope, "repository:team/app:pull");
    let sts = world.clouds.calls("google_sts");
    assert_eq!(sts.len(), 1, "{sts:?}");
    assert_eq!(sts[0]["audience"], GOOGLE_AUDIENCE);
    assert_eq!(sts[0]["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(sts[0]["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(sts[0]["token"]["aud"], format!("https:{GOOGLE_AUDIENCE}"));
    assert_eq!(sts[0]["token"]["sub"], "workspaces/acme/credentials/gar");
    let iam = world.clouds.calls("google_iam");
    assert_eq!(iam.len(), 1);
    assert_eq!(iam[0]["authorized"], true);
    assert_eq!(iam[0]["service_account"], SERVICE_ACCOUNT);
    // The federated access token reaches the project: it is never a
    // caller's password (they pull through the gateway).
    let basic = world.issue(&format!("{registry}/team/app:1.0"), Some(AuthKind::Basic)).await;
    let status = basic.status.unwrap();
    assert_eq!(status.code, tonic::Code::FailedPrecondition as i32, "{}", status.message);
    assert!(status.message.contains("via_gateway"), "{}", status.message);
    ok(&world.issue(&format!("{registry}/team/other:1.0"), None).await);
    assert_eq!(world.clouds.calls("google_sts").len(), 1, "the access token is kept");
    // STS refuses: the step is named.
    world.clouds.control(serde_json::json!({"google_sts_status": 400}));
    world.add("gar-refused", clouds::google_federation(&registry, "", None)).await;
    let report = test_credential(&world, "gar-refused", "team/app").await;
    assert!(report.status.unwrap().message.contains("Google STS refused pullpass's token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quay_robot_federation_trades_pullpasss_token_for_a_robot_token() {
    let world = CloudWorld::start(&[]).await;
    let front = world.clouds.front.address.clone();
    let created = world.add("quay", clouds::quay_robot(&front)).await;
    assert!(!created.secret_set);
    assert_eq!(created.username, ROBOT);
    let auth = world.issue(&format!("{front}/team/app:1.0"), None).await;
    ok(&auth);
    assert_eq!(auth.granted_scope, "repository:team/app:pull");
    let federation = world.clouds.calls("quay_federation");
    assert_eq!(federation.len(), 1, "{federation:?}");
    assert_eq!(federation[0]["robot"], ROBOT);
    assert_eq!(federation[0]["token"]["sub"], "workspaces/acme/credentials/quay");
    assert_eq!(federation[0]["token"]["aud"], front.as_str());
    // The robot's grants hold: other/* is not the robot's.
    let other = world.issue(&format!("{front}/other/tool:1.0"), None).await;
    assert_eq!(other.status.unwrap().code, tonic::Code::PermissionDenied as i32);
    assert_eq!(world.clouds.calls("quay_federation").len(), 1, "the robot token is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_federation_secret_reaches_the_logs_the_database_or_the_metrics() {
    let world = CloudWorld::start(&[]).await;
    let front = world.clouds.front.address.clone();
    world.add("ecr-role", ecr_role(true, "")).await;
    world.add("acr", acr(Some(CLIENT_SECRET), &front)).await;
    world.add("acr-federated", acr(None, &front)).await;
    world.add("quay", clouds::quay_robot(&front)).await;
    ok(&world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await);
    ok(&world.issue(&format!("{front}/team/app:1.0"), None).await);
    assert!(test_credential(&world, "acr-federated", "team/app").await.success);
    ok(&world.issue(&format!("{front}/team/app:1.0"), None).await);
    let metrics = pullpass_tests::registry::http_request(&world.server.metrics, "GET", "/metrics", None).1;
    let canaries = world.clouds.canaries();
    assert!(canaries.len() >= 6, "the peers saw tokens and secrets: {}", canaries.len());
    let logs = world.server.logs();
    for canary in &canaries {
        assert!(!logs.contains(canary.as_str()), "a federation secret is in the log");
        assert!(!metrics.contains(canary.as_str()), "a federation secret is in the metrics");
        let hits = world.server.stored_files_containing(canary.as_bytes());
        assert!(hits.is_empty(), "a federation secret is stored in clear: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_discovery_and_key_set_validate_with_pyjwt_and_jose_across_a_signing_key_rotation() {
    use pullpass_tests::identity::{Expect, verify_with_jose, verify_with_pyjwt};
    use pullpass_tests::registry::http_request;
    let world = CloudWorld::start_with(&[], &["--issuer-reload-seconds", "1", "--issuer-listen", "127.0.0.1:0"]).await;
    let gateway = world.issuer_url.strip_prefix("http://").expect("a loopback issuer").to_owned();
    let (status, discovery) = http_request(&gateway, "GET", "/.well-known/openid-configuration", None);
    assert_eq!(status, 200, "{discovery}");
    let discovery: Value = serde_json::from_str(&discovery).unwrap();
    assert_eq!(discovery["issuer"], world.issuer_url.as_str());
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_owned();
    assert_eq!(jwks_uri, format!("{}/.well-known/jwks.json", world.issuer_url));
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    // The same documents on --issuer-listen; nothing else there.
    let own = world
        .server
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("pullpassd: issuer documents also on http://").map(str::to_owned))
        .expect("the issuer's own listener");
    let (status, same) = http_request(&own, "GET", "/.well-known/openid-configuration", None);
    assert_eq!((status, serde_json::from_str::<Value>(&same).unwrap()), (200, discovery.clone()));
    assert_eq!(http_request(&own, "POST", "/.well-known/jwks.json", Some("{}")).0, 405);
    assert_eq!(http_request(&own, "GET", "/v2/", None).0, 404);
    let keys = |uri: &str| {
        let (status, body) = http_request(
            uri.strip_prefix("http://").unwrap().split('/').next().unwrap(),
            "GET",
            "/.well-known/jwks.json",
            None,
        );
        assert_eq!(status, 200);
        let set: Value = serde_json::from_str(&body).unwrap();
        set["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let first_keys = keys(&jwks_uri);
    assert_eq!(first_keys.len(), 1);

    world.add("ecr-role", ecr_role(true, "")).await;
    ok(&world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await);
    let expect = Expect::new(&jwks_uri, &world.issuer_url, "sts.amazonaws.com").algorithms(&["ES256"]);
    let first = world.web_identity_tokens().remove(0);
    let verified = verify_with_pyjwt(&first, &expect).expect("PyJWT verifies pullpass's token");
    assert_eq!(verified.header["kid"], first_keys[0].as_str());
    assert_eq!(verified.claims["sub"], "workspaces/acme/credentials/ecr-role");
    verify_with_jose(&first, &expect).expect("jose verifies pullpass's token");

    // A new key is published first and signs a few seconds later.
    let rotated = world.server.command(&["keys", "rotate-signing", "--activate-in", "3"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let both = pullpass_tests::eventually("both keys published", Duration::from_secs(10), || async {
        let now = keys(&jwks_uri);
        (now.len() == 2).then_some(now)
    })
    .await;
    assert!(both.contains(&first_keys[0]), "the old key stays published");
    let new_kid = both.iter().find(|k| **k != first_keys[0]).unwrap().clone();
    // The token the old key signed still verifies against the new set.
    verify_with_pyjwt(&first, &expect).expect("a token of the old key still verifies");
    // Soon tokens are signed with the new key, and verify as well.
    let mut repository = 0;
    let latest = pullpass_tests::eventually("a token signed with the new key", Duration::from_secs(20), || {
        repository += 1;
        let image = format!("{ECR_REGISTRY}/team/r{repository}:1.0");
        let (world, expect, new_kid) = (&world, &expect, &new_kid);
        async move {
            ok(&world.issue(&image, None).await);
            let token = world.web_identity_tokens().pop().unwrap();
            let verified = verify_with_pyjwt(&token, expect).expect("PyJWT verifies");
            (verified.header["kid"] == new_kid.as_str()).then_some(token)
        }
    })
    .await;
    verify_with_jose(&latest, &expect).expect("jose verifies the new key's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_issuer_a_federated_credential_says_what_to_set_and_a_plaintext_public_issuer_is_refused() {
    use pullpass_tests::{Options, Pullpassd};
    let refused = Pullpassd::start_with(Options {
        args: vec!["--issuer-url".into(), "http://pullpass.example.com".into()],
        ..Default::default()
    })
    .expect_err("an http issuer URL on a public name is refused");
    assert!(refused.stderr.contains("--issuer-url") && refused.stderr.contains("must be https"), "{}", refused.stderr);

    // --dev without a gateway has no issuer to default to.
    let server =
        Pullpassd::start_with(Options { args: vec!["--gateway-listen".into(), "off".into()], ..Default::default() })
            .unwrap_or_else(|f| panic!("{f:?}"));
    assert!(!server.stdout().contains("OIDC issuer"));
    let client = server.client().await;
    pullpass_tests::create_workspace(&client, "acme").await;
    client.create_credential("acme", "ecr-role", ecr_role(true, "")).await.expect("create");
    let request = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![format!("{ECR_REGISTRY}/team/app:1.0")],
        ..Default::default()
    };
    let auths = client.registry_auth_service().issue_registry_auth(request).await.unwrap().into_inner().auths;
    let status = auths[0].status.clone().unwrap();
    assert_eq!(status.code, tonic::Code::FailedPrecondition as i32);
    assert!(status.message.contains("start it with --issuer-url"), "{}", status.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pullpasss_own_identity_comes_from_the_ecs_endpoint_or_instance_metadata() {
    let allow = ["--aws-own-identity-role", "arn:aws:iam::123456789012:role/pullpass-*"];
    // On ECS: the container credentials endpoint, with its token.
    let world = CloudWorld::start_with(
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "{clouds}/ecs/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", pullpass_tests::clouds::ECS_TOKEN),
        ],
        &allow,
    )
    .await;
    world.add("ecr-own", ecr_role(false, "")).await;
    ok(&world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await);
    ok(&world.issue(&format!("{ECR_REGISTRY}/team/two:1.0"), None).await);
    assert_eq!(
        world.clouds.calls("ecs"),
        vec![serde_json::json!({"endpoint": "ecs", "authorized": true})],
        "fetched once"
    );
    let assumed = world.clouds.recorded_where("action", "AssumeRole");
    assert_eq!(assumed.len(), 2);
    assert!(assumed.iter().all(|a| a["key_id"] == "ASIAECSFIXTURE00001" && a["session_token"] == true), "{assumed:?}");
    drop(world);

    // On EC2: IMDSv2, a session token first, then the instance's role.
    let world = CloudWorld::start_with(
        &[("AWS_EC2_METADATA_DISABLED", "false"), ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "{clouds}")],
        &allow,
    )
    .await;
    world.add("ecr-own", ecr_role(false, "")).await;
    ok(&world.issue(&format!("{ECR_REGISTRY}/team/app:1.0"), None).await);
    assert_eq!(world.clouds.calls("imds_token").len(), 1);
    let reads = world.clouds.calls("imds");
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(reads.iter().all(|r| r["session"] == true), "every read carries the IMDSv2 session: {reads:?}");
    assert_eq!(reads[1]["role"], "pullpass-node");
    let assumed = world.clouds.recorded_where("action", "AssumeRole");
    assert_eq!(assumed[0]["key_id"], "ASIAIMDSFIXTURE0001");
    // The machine's credentials appear nowhere.
    let logs = world.server.logs();
    for canary in world.clouds.canaries() {
        assert!(!logs.contains(canary.as_str()), "a machine credential is in the log");
        assert!(world.server.stored_files_containing(canary.as_bytes()).is_empty());
    }
}
