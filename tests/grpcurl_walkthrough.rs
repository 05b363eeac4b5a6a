//! The stock grpcurl (v1.8.6, reflection v1alpha only) can discover, describe
//! and drive pullpassd: the walk-through of docs/api.md, run for real.

use pullpass_tests::{Pullpassd, grpcurl_call};

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn grpcurl_lists_every_service_through_reflection_without_a_token() {
    let server = Pullpassd::start();
    let listed = stdout(&grpcurl_call(None, &[&server.address, "list"]));
    for service in [
        "pullpass.v1.CredentialService",
        "pullpass.v1.RegistryAuthService",
        "pullpass.v1.AccessService",
        "pullpass.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(listed.lines().any(|l| l.trim() == service), "{service} missing from:\n{listed}");
    }
}

#[test]
fn grpcurl_describe_shows_the_proto_comments() {
    let server = Pullpassd::start();
    let described = stdout(&grpcurl_call(None, &[&server.address, "describe", "pullpass.v1.Credential"]));
    assert!(described.contains("// A registry credential of a workspace."), "{described}");
    assert!(described.contains("Never returned"), "{described}");
    assert!(described.contains("field_behavior"), "{described}");
    let service = stdout(&grpcurl_call(None, &[&server.address, "describe", "pullpass.v1.CredentialService"]));
    assert!(service.contains("rpc ImportDockerConfig"), "{service}");
    assert!(service.contains("// Stores a new credential, sealing its secret."), "{service}");
}

#[test]
fn grpcurl_health_check_needs_no_token_and_reports_serving() {
    let server = Pullpassd::start();
    let health = stdout(&grpcurl_call(None, &[&server.address, "grpc.health.v1.Health/Check"]));
    assert!(health.contains("SERVING"), "{health}");
    let one = stdout(&grpcurl_call(
        None,
        &["-d", r#"{"service":"pullpass.v1.CredentialService"}"#, &server.address, "grpc.health.v1.Health/Check"],
    ));
    assert!(one.contains("SERVING"), "{one}");
}

#[test]
fn grpcurl_creates_and_lists_a_workspace_and_a_credential_with_the_root_token() {
    let server = Pullpassd::start();
    let token = Some(server.root_token.as_str());
    let created = stdout(&grpcurl_call(
        token,
        &[
            "-d",
            r#"{"workspace_id":"acme","workspace":{"kind":"ORGANIZATION","display_name":"Acme Inc."}}"#,
            &server.address,
            "pullpass.v1.AccessService/CreateWorkspace",
        ],
    ));
    assert!(created.contains(r#""name": "workspaces/acme""#), "{created}");
    let credential = stdout(&grpcurl_call(
        token,
        &[
            "-d",
            r#"{"parent":"workspaces/acme","credential_id":"ghcr","credential":{"provider":"GHCR","username":"octocat","secret":"ghp_grpcurlCANARY0001"}}"#,
            &server.address,
            "pullpass.v1.CredentialService/CreateCredential",
        ],
    ));
    assert!(credential.contains(r#""registryServer": "ghcr.io""#), "{credential}");
    assert!(credential.contains(r#""secretSet": true"#), "{credential}");
    assert!(!credential.contains("grpcurlCANARY"), "{credential}");
    let listed = stdout(&grpcurl_call(
        token,
        &["-d", r#"{"parent":"workspaces/acme"}"#, &server.address, "pullpass.v1.CredentialService/ListCredentials"],
    ));
    assert!(listed.contains("workspaces/acme/credentials/ghcr"), "{listed}");
    assert!(!listed.contains("grpcurlCANARY"), "{listed}");
    let workspaces = stdout(&grpcurl_call(token, &[&server.address, "pullpass.v1.AccessService/ListWorkspaces"]));
    assert!(workspaces.contains("Acme Inc."), "{workspaces}");
}

#[test]
fn grpcurl_without_a_token_is_unauthenticated_and_errors_are_decoded() {
    let server = Pullpassd::start();
    let denied = grpcurl_call(
        None,
        &["-d", r#"{"parent":"workspaces/acme"}"#, &server.address, "pullpass.v1.CredentialService/ListCredentials"],
    );
    assert!(!denied.status.success());
    let text = String::from_utf8_lossy(&denied.stderr);
    assert!(text.contains("Unauthenticated"), "{text}");
    let bad = grpcurl_call(
        Some(&server.root_token),
        &[
            "-d",
            r#"{"workspace_id":"Bad_Id","workspace":{"kind":"PERSONAL"}}"#,
            &server.address,
            "pullpass.v1.AccessService/CreateWorkspace",
        ],
    );
    let text = String::from_utf8_lossy(&bad.stdout).into_owned() + &String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("InvalidArgument"), "{text}");
    assert!(text.contains(r#""field":"workspace_id""#), "decoded BadRequest details expected: {text}");
}
