//! Traces, in process with the OpenTelemetry SDK's in-memory exporter: a
//! call carrying a fixed W3C `traceparent` yields an RPC span in that trace,
//! with store, seal and upstream spans under it; health checks are not
//! traced; and no span name or attribute carries a secret, token,
//! workload-identity JWT, or a keyless credential's federation token or AWS
//! session credentials.

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use pullpass::v1::{Credential, IssueRegistryAuthRequest, Provider};
use pullpass_server::config::{LogFormat, Settings};
use pullpass_server::server::Embedded;
use pullpass_tests::clouds::{self, Clouds, ECR_REGISTRY, ROLE_ARN};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::identity::{AUDIENCE, IdentityIssuer, bind, create_provider};
use pullpass_tests::registry::world::users;
use pullpass_tests::registry::{Issuer, Registry};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const PASSWORD: &str = "trace-CANARY-password";

fn with_traceparent<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("traceparent", format!("00-{TRACE_ID}-{PARENT}-01").parse().unwrap());
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn everything_said(span: &SpanData) -> String {
    let attributes: Vec<String> = span.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
    format!("{} {}", span.name, attributes.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_traceparent_continues_that_trace_down_to_store_seal_and_upstream() {
    let exporter = InMemorySpanExporter::default();
    assert!(pullpass_server::logging::init_with_span_exporter(LogFormat::Json, "warn", exporter.clone()));
    let realm = TokenRealm::start(300, "ci", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::dev(dir.path().to_owned()).unwrap();
    settings.upstream.realm.insecure.push(pullpass::registry::RegistryHost::parse(&realm.address).unwrap());
    // The cloud peers of keyless credentials (moto as AWS STS and ECR).
    let peers = Issuer::start(users());
    let registry = Registry::start(&peers.realm(), &peers.bundle());
    let clouds = Clouds::start(&peers, &registry);
    settings.upstream.realm.insecure.push(pullpass::registry::RegistryHost::parse(&clouds.clouds.address).unwrap());
    settings.upstream.aws.sts_endpoint = Some(format!("{}/", clouds.clouds.url()));
    settings.upstream.ecr_endpoint = Some(format!("{}/", clouds.clouds.url()));
    let server = Embedded::start(settings).await.unwrap();
    clouds.trust(&format!("http://{}", server.gateway_address.unwrap()));
    let root = server.root_token.clone().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint()).unwrap().connect().await.unwrap();
    let mut access = pullpass::v1::access_service_client::AccessServiceClient::new(channel.clone());
    let mut credentials = pullpass::v1::credential_service_client::CredentialServiceClient::new(channel.clone());
    let mut auth = pullpass::v1::registry_auth_service_client::RegistryAuthServiceClient::new(channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);

    access
        .create_workspace(with_traceparent(
            pullpass::v1::CreateWorkspaceRequest {
                workspace_id: "acme".into(),
                workspace: Some(pullpass::v1::Workspace {
                    kind: pullpass::v1::WorkspaceKind::Organization as i32,
                    ..Default::default()
                }),
            },
            &root,
        ))
        .await
        .unwrap();
    credentials
        .create_credential(with_traceparent(
            pullpass::v1::CreateCredentialRequest {
                parent: "workspaces/acme".into(),
                credential_id: "realm".into(),
                credential: Some(Credential {
                    provider: Provider::Generic as i32,
                    registry_server: realm.address.clone(),
                    username: "ci".into(),
                    secret: PASSWORD.into(),
                    ..Default::default()
                }),
            },
            &root,
        ))
        .await
        .unwrap();
    let request = IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![format!("{}/acme/app:1", realm.address)],
        ..Default::default()
    };
    let lease = auth.issue_registry_auth(with_traceparent(request.clone(), &root)).await.unwrap().into_inner();
    let lease_token = lease.auths[0].token.clone();
    assert!(!lease_token.is_empty(), "{:?}", lease.auths[0].status);
    let mut probe = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
    probe.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{PARENT}-01").parse().unwrap());
    health.check(probe).await.unwrap();
    // A workload identity's call, in a trace of its own: its JWT is in no
    // span either.
    let issuer = IdentityIssuer::start_kubernetes();
    let admin = pullpass_client::Client::builder(server.endpoint()).token(&root).connect().await.unwrap();
    create_provider(&admin, "k8s", &issuer).await;
    bind(&admin, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &[]).await.unwrap();
    let jwt = issuer.mint_kubernetes("ci", "builder", AUDIENCE);
    let mut by_identity = tonic::Request::new(request.clone());
    by_identity.metadata_mut().insert("authorization", format!("Bearer {jwt}").parse().unwrap());
    let leased = auth.issue_registry_auth(by_identity).await.unwrap().into_inner();
    assert_eq!(leased.auths[0].status.as_ref().map(|s| s.code), Some(0), "{:?}", leased.auths[0].status);
    let jwt_signature = jwt.rsplit('.').next().unwrap().to_owned();
    // A keyless ECR credential: pullpass's own federation token and the
    // AWS session credentials are in no span either.
    admin.create_credential("acme", "ecr-role", clouds::ecr_role(ROLE_ARN, true, "")).await.unwrap();
    let keyless = IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![format!("{ECR_REGISTRY}/team/app:1.0")],
        ..Default::default()
    };
    let leased = auth.issue_registry_auth(with_traceparent(keyless, &root)).await.unwrap().into_inner();
    assert_eq!(leased.auths[0].status.as_ref().map(|s| s.code), Some(0), "{:?}", leased.auths[0].status);
    let federation_secrets = clouds.canaries();
    assert!(federation_secrets.len() >= 3, "the web identity token and the session's secret and token");
    server.shutdown().await.unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let wanted = TraceId::from_hex(TRACE_ID).unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    let (rpcs, untraced): (Vec<&SpanData>, Vec<&SpanData>) =
        spans.iter().filter(|s| s.name.starts_with("pullpass.v1.")).partition(|s| s.span_context.trace_id() == wanted);
    assert_eq!(rpcs.len(), 4, "one span per RPC: {names:?}");
    assert_eq!(untraced.len(), 4, "the calls without a traceparent start traces of their own: {names:?}");
    for rpc in &untraced {
        assert_eq!(rpc.parent_span_id, opentelemetry::trace::SpanId::INVALID, "{} is a root span", rpc.name);
    }
    for rpc in &rpcs {
        assert_eq!(rpc.span_context.trace_id(), wanted, "{} continues the caller's trace", rpc.name);
        assert_eq!(rpc.parent_span_id.to_string(), PARENT);
    }
    let issue = rpcs.iter().find(|s| s.name == "pullpass.v1.RegistryAuthService/IssueRegistryAuth").unwrap();
    assert!(
        issue.attributes.iter().any(|kv| kv.key.as_str() == "rpc.grpc.status_code" && kv.value.as_str() == "0"),
        "{:?}",
        issue.attributes
    );
    for child in [
        "store.write",
        "seal.seal",
        "seal.open",
        "upstream.exchange",
        "upstream.challenge",
        "upstream.token",
        "upstream.sts",
        "upstream.ecr",
    ] {
        // Background work (the audit flusher, start-up) has traces of its own.
        let in_trace = spans.iter().any(|s| s.name == child && s.span_context.trace_id() == wanted);
        assert!(in_trace, "no {child} span in the caller's trace: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("Health")), "health checks are not traced: {names:?}");
    for span in &spans {
        let said = everything_said(span);
        for secret in [PASSWORD, &root, &lease_token, &jwt, &jwt_signature, "Bearer", "acme"] {
            assert!(!said.contains(secret), "span `{}` carries `{secret}`: {said}", span.name);
        }
        for secret in &federation_secrets {
            assert!(!said.contains(secret.as_str()), "span `{}` carries a federation secret", span.name);
        }
    }
}
