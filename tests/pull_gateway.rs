//! The pull gateway against real peers: the Debian docker-registry (with
//! token auth, and a second one whose blobs redirect to a static server),
//! skopeo (direct references and a `registries.conf` mirror), containerd's
//! `ctr` with a private daemon, podman when it runs here, and the pull
//! checks of the OCI distribution-spec conformance suite, ported.

use std::time::Duration;

use pullpass::v1::AuthKind;
use pullpass_tests::gateway::{
    ALIAS, GatewayWorld, OCI_MANIFEST, Skopeo, basic, http_client, oci_manifest_digest, pull_like_a_runtime, sha256,
};
use pullpass_tests::registry::Served;
use pullpass_tests::registry::world::{ALICE_PASSWORD, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_the_gateway_with_a_gateway_password_and_gets_the_direct_digest() {
    let gw = GatewayWorld::start().await;
    let auths = gw.leases(&["team/app:1.0"], None).await;
    let auth = ok(&auths[0]);
    assert_eq!(auth.kind, AuthKind::Basic as i32);
    assert_eq!((auth.username.as_str(), auth.registry.as_str()), ("pullpass", gw.gateway.as_str()));
    assert_eq!(auth.gateway_image, gw.image("team/app:1.0"));
    assert!(auth.password.starts_with("ppg_") && auth.token.is_empty());
    let life = auth.expire_time.as_ref().unwrap().seconds - auth.issue_time.as_ref().unwrap().seconds;
    assert!((3590..=3600).contains(&life), "a gateway password lives an hour by default, got {life} s");

    let skopeo = Skopeo::new();
    let through =
        skopeo.copy(&auth.gateway_image, &format!("pullpass:{}", auth.password)).expect("through the gateway");
    let direct =
        skopeo.copy(&gw.world.registry.image("team/app:1.0"), &format!("alice:{ALICE_PASSWORD}")).expect("direct");
    assert_eq!(oci_manifest_digest(&through), oci_manifest_digest(&direct));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_401_with_a_basic_challenge_on_every_path_without_credentials() {
    let gw = GatewayWorld::start().await;
    let client = http_client();
    for (method, path) in [
        (reqwest::Method::GET, "/v2/"),
        (reqwest::Method::HEAD, "/v2/local/team/app/manifests/1.0"),
        (reqwest::Method::GET, "/v2/_catalog"),
        (reqwest::Method::PUT, "/v2/local/team/app/manifests/1.0"),
    ] {
        let response = client.request(method.clone(), gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"pullpass\"", "{method} {path}");
    }
    // skopeo's anonymous mirror credentials count as none.
    let response = client.get(gw.url("/v2/")).header("authorization", "Basic Og==").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    let password = gw.password("team/app:1.0").await;
    let response =
        client.get(gw.url("/v2/")).header("authorization", basic("pullpass", &password)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["docker-distribution-api-version"], "registry/2.0");
    let _ = (ALIAS, sha256(b""), Duration::ZERO);
}

/// GET (or HEAD) `path` on the gateway with `authorization` and `accept`.
async fn request(
    gw: &GatewayWorld,
    method: reqwest::Method,
    path: &str,
    authorization: &str,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut request = http_client().request(method, gw.url(path)).header("authorization", authorization);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.expect("gateway request")
}

/// The distribution error code of a response.
async fn error_code(response: reqwest::Response) -> String {
    let body = response.bytes().await.unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    parsed["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
}

/// A HEAD over a raw socket: (status line, headers, whatever followed the
/// headers before the server closed the connection).
fn raw_head(address: &str, path: &str, authorization: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "HEAD {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\nAccept: {OCI_MANIFEST}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, all[end..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_blobs_pass_the_pull_checks_of_the_distribution_conformance_suite() {
    let gw = GatewayWorld::start().await;
    let auth = basic("pullpass", &gw.password("team/app:1.0").await);
    // What the registry itself serves, with a bearer token from pullpass.
    let token = ok(&gw.world.issue(&[&gw.world.registry.image("team/app:1.0")], &[]).await[0]).token.clone();
    let direct = http_client()
        .get(format!("http://{}/v2/team/app/manifests/1.0", gw.world.registry.address))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let direct_type = direct.headers()["content-type"].to_str().unwrap().to_owned();
    let direct_digest = direct.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let direct_body = direct.bytes().await.unwrap();

    // Manifest GET by tag: the exact bytes, type, length and digest.
    let path = format!("/v2/{ALIAS}/team/app/manifests/1.0");
    let response = request(&gw, reqwest::Method::GET, &path, &auth, Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], direct_type.as_str());
    assert_eq!(response.headers()["docker-content-digest"], direct_digest.as_str());
    assert_eq!(response.headers()["content-length"], direct_body.len().to_string().as_str());
    let body = response.bytes().await.unwrap();
    assert_eq!(body, direct_body, "manifests pass through byte for byte");
    assert_eq!(sha256(&body), direct_digest);

    // Manifest GET by digest, and HEAD by tag and by digest with an empty body.
    let by_digest = format!("/v2/{ALIAS}/team/app/manifests/{direct_digest}");
    let response = request(&gw, reqwest::Method::GET, &by_digest, &auth, Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), direct_body);
    for path in [&path, &by_digest] {
        let (status, headers, rest) = raw_head(&gw.gateway, path, &auth);
        assert!(status.contains(" 200 "), "HEAD {path}: {status}");
        assert_eq!(header(&headers, "content-length"), Some(direct_body.len().to_string().as_str()), "{path}");
        assert_eq!(header(&headers, "docker-content-digest"), Some(direct_digest.as_str()), "{path}");
        assert_eq!(header(&headers, "content-type"), Some(direct_type.as_str()), "{path}");
        assert!(rest.is_empty(), "HEAD {path} sent a body of {} bytes", rest.len());
    }

    // Blob GET and HEAD, for the config and the layer.
    let manifest: serde_json::Value = serde_json::from_slice(&direct_body).unwrap();
    let mut blobs = vec![manifest["config"].clone()];
    blobs.extend(manifest["layers"].as_array().unwrap().iter().cloned());
    for blob in blobs {
        let digest = blob["digest"].as_str().unwrap();
        let size = blob["size"].as_u64().unwrap();
        let path = format!("/v2/{ALIAS}/team/app/blobs/{digest}");
        let response = request(&gw, reqwest::Method::GET, &path, &auth, None).await;
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(response.headers()["content-length"], size.to_string().as_str());
        assert_eq!(sha256(&response.bytes().await.unwrap()), digest);
        let (status, headers, rest) = raw_head(&gw.gateway, &path, &auth);
        assert!(status.contains(" 200 "), "HEAD {path}: {status}");
        assert_eq!(header(&headers, "content-length"), Some(size.to_string().as_str()));
        assert!(rest.is_empty());
        // A range is forwarded, and its 206 relayed.
        let ranged = http_client()
            .get(gw.url(&path))
            .header("authorization", &auth)
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 206, "a range of {path}");
        assert_eq!(ranged.bytes().await.unwrap().len(), 10.min(size as usize));
        let beyond = http_client()
            .get(gw.url(&path))
            .header("authorization", &auth)
            .header("range", format!("bytes={}-", size + 100))
            .send()
            .await
            .unwrap();
        assert_eq!(beyond.status(), 416, "a range past the end is the registry's 416");
        assert_eq!(beyond.headers()["content-range"], format!("bytes */{size}").as_str());
    }

    // The tag list.
    let response = request(&gw, reqwest::Method::GET, &format!("/v2/{ALIAS}/team/app/tags/list"), &auth, None).await;
    assert_eq!(response.status(), 200);
    let tags: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_references_get_the_spec_error_codes() {
    let gw = GatewayWorld::start().await;
    let auth = basic("pullpass", &gw.password("team/app:1.0").await);
    let unknown_digest = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/manifests/9.9"), 404, "MANIFEST_UNKNOWN"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/manifests/{unknown_digest}"), 404, "MANIFEST_UNKNOWN"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/blobs/{unknown_digest}"), 404, "BLOB_UNKNOWN"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/blobs/sha256:nothex"), 400, "DIGEST_INVALID"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/manifests/sha256:abc"), 400, "DIGEST_INVALID"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/team/app/manifests/.bad"), 400, "TAG_INVALID"),
        (reqwest::Method::GET, format!("/v2/{ALIAS}/Team/app/manifests/1.0"), 400, "NAME_INVALID"),
        (reqwest::Method::GET, "/v2/team/app/manifests/1.0".to_owned(), 404, "NAME_UNKNOWN"),
        (reqwest::Method::GET, "/v2/_catalog".to_owned(), 404, "UNSUPPORTED"),
        (reqwest::Method::PUT, format!("/v2/{ALIAS}/team/app/manifests/1.0"), 405, "UNSUPPORTED"),
        (reqwest::Method::POST, format!("/v2/{ALIAS}/team/app/blobs/uploads/"), 405, "UNSUPPORTED"),
        (reqwest::Method::DELETE, format!("/v2/{ALIAS}/team/app/manifests/1.0"), 405, "UNSUPPORTED"),
    ];
    for (method, path, status, code) in cases {
        let response = request(&gw, method.clone(), &path, &auth, None).await;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(error_code(response).await, code, "{method} {path}");
    }
    // A repository the registry does not know (through an access token,
    // since the password covers team/app only).
    let launcher =
        gw.world.client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let response = request(
        &gw,
        reqwest::Method::GET,
        &format!("/v2/{ALIAS}/team/nothing-here/manifests/1.0"),
        &basic("ci", &launcher.token),
        None,
    )
    .await;
    assert_eq!(response.status(), 404);
    assert!(["NAME_UNKNOWN", "MANIFEST_UNKNOWN"].contains(&error_code(response).await.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_and_revoked_passwords_get_401() {
    let gw = GatewayWorld::start().await;
    let path = format!("/v2/{ALIAS}/team/app/manifests/1.0");
    let refused = |response: &reqwest::Response| {
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Basic realm=\"pullpass\"");
    };
    // Altered: any changed character breaks the MAC.
    let password = gw.password("team/app:1.0").await;
    let mut altered = password.clone().into_bytes();
    let at = altered.len() / 2;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for wrong in [altered.as_str(), "ppg_not-a-password", "pp_tooshort", "hunter2"] {
        let response = request(&gw, reqwest::Method::GET, &path, &basic("pullpass", wrong), Some(OCI_MANIFEST)).await;
        refused(&response);
        assert_eq!(error_code(response).await, "UNAUTHORIZED", "{wrong}");
    }
    // A password never outlives the token that asked for it.
    let soon = std::time::SystemTime::now() + Duration::from_secs(3);
    let since_epoch = soon.duration_since(std::time::UNIX_EPOCH).unwrap();
    let expiring = gw
        .world
        .client
        .create_access_token(
            "acme",
            pullpass::v1::Role::Launcher,
            &[],
            Some(prost_types::Timestamp { seconds: since_epoch.as_secs() as i64, nanos: 0 }),
            "short-lived",
        )
        .await
        .unwrap();
    let wants_a_minute = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![gw.world.registry.image("team/app:1.0")],
        via_gateway: true,
        min_ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    };
    let status = gw
        .world
        .server
        .client_with(Some(&expiring.token))
        .await
        .registry_auth_service()
        .issue_registry_auth(wants_a_minute)
        .await
        .unwrap_err();
    assert_eq!(pullpass_tests::error_reason(&status).as_deref(), Some("ACCESS_TOKEN_EXPIRES_SOON"), "{status:?}");
    let auths = gw.leases(&["team/app:1.0"], Some(&expiring.token)).await;
    let short = ok(&auths[0]);
    assert!(short.expire_time.as_ref().unwrap().seconds <= since_epoch.as_secs() as i64);
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &short.password), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &short.password), Some(OCI_MANIFEST)).await;
    refused(&response);
    assert_eq!(error_code(response).await, "UNAUTHORIZED");

    // Revoking the asking token kills its passwords on the next request.
    let launcher = gw
        .world
        .client
        .create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "revoked later")
        .await
        .unwrap();
    let auths = gw.leases(&["team/app:1.0"], Some(&launcher.token)).await;
    let password = ok(&auths[0]).password.clone();
    let response = request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &password), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
    gw.world.client.revoke_access_token(&launcher.name).await.unwrap();
    for presented in [password.as_str(), launcher.token.as_str()] {
        let response =
            request(&gw, reqwest::Method::GET, &path, &basic("pullpass", presented), Some(OCI_MANIFEST)).await;
        refused(&response);
        let body = response.bytes().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("revoked"), "{}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_outside_the_grant_is_denied_without_an_upstream_request() {
    let gw = GatewayWorld::start().await;
    let auth = basic("pullpass", &gw.password("team/app:1.0").await);
    let before = gw.world.registry.mark().await;
    let tokens_before = gw.world.token_requests();
    for path in [
        format!("/v2/{ALIAS}/other/tool/manifests/1.0"),
        format!("/v2/{ALIAS}/team/tool/manifests/1.0"),
        format!("/v2/{ALIAS}/team/app/extra/blobs/sha256:{}", "1".repeat(64)),
        "/v2/ghcr.io/team/app/manifests/1.0".to_owned(),
    ] {
        let response = request(&gw, reqwest::Method::GET, &path, &auth, Some(OCI_MANIFEST)).await;
        assert_eq!(response.status(), 403, "{path}");
        assert_eq!(error_code(response).await, "DENIED", "{path}");
    }
    let after = gw.world.registry.mark().await;
    assert_eq!(
        after,
        before + 1,
        "the registry heard nothing but the marks: {:?}",
        &gw.world.registry.served()[before..]
    );
    assert_eq!(gw.world.token_requests(), tokens_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_the_workspace_has_no_credential_for_gets_no_connection() {
    let recorder = pullpass_tests::registry::Peer::start(&["recorder"]);
    let alias = format!("rec={}", recorder.address);
    let gw = GatewayWorld::start_with(&["--gateway-alias", &alias, "--insecure-registry", &recorder.address]).await;
    let launcher =
        gw.world.client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let auth = basic("pullpass", &launcher.token);
    for path in [
        "/v2/rec/team/app/manifests/1.0".to_owned(),
        format!("/v2/team/app/blobs/sha256:{}?ns={}", "2".repeat(64), recorder.address),
        "/v2/169.254.169.254/latest/manifests/1.0".to_owned(),
    ] {
        let response = request(&gw, reqwest::Method::GET, &path, &auth, None).await;
        assert_eq!(response.status(), 403, "{path}");
        let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).to_string();
        assert!(body.contains("DENIED") && body.contains("no credential"), "{path}: {body}");
    }
    assert_eq!(recorder.count("requests"), 0, "no connection to a registry without a credential");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspaces_password_is_refused() {
    let gw = GatewayWorld::start().await;
    pullpass_tests::create_workspace(&gw.world.client, "beta").await;
    let mut ops = gw.world.credential("other", "ops", "ops-pw");
    ops.registry_server = format!("{}/other", gw.world.registry.address);
    gw.world.client.create_credential("beta", "ops", ops).await.unwrap();
    let request_beta = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/beta".into(),
        images: vec![gw.world.registry.image("other/tool:1.0")],
        via_gateway: true,
        ..Default::default()
    };
    let auths =
        gw.world.client.registry_auth_service().issue_registry_auth(request_beta).await.unwrap().into_inner().auths;
    let beta = basic("pullpass", &ok(&auths[0]).password);
    // beta's password pulls beta's repository, through beta's credential...
    let response =
        request(&gw, reqwest::Method::GET, &format!("/v2/{ALIAS}/other/tool/manifests/1.0"), &beta, Some(OCI_MANIFEST))
            .await;
    assert_eq!(response.status(), 200);
    // ...and never acme's.
    let response =
        request(&gw, reqwest::Method::GET, &format!("/v2/{ALIAS}/team/app/manifests/1.0"), &beta, Some(OCI_MANIFEST))
            .await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "DENIED");
    // Once beta is gone, so is its password's use.
    gw.world.client.delete_workspace("beta", true).await.unwrap();
    let response =
        request(&gw, reqwest::Method::GET, &format!("/v2/{ALIAS}/other/tool/manifests/1.0"), &beta, Some(OCI_MANIFEST))
            .await;
    assert!([401, 403].contains(&response.status().as_u16()), "{}", response.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_work_as_passwords_and_are_authorized_like_issue_registry_auth() {
    let gw = GatewayWorld::start().await;
    let client = &gw.world.client;
    let path = format!("/v2/{ALIAS}/team/app/manifests/1.0");
    let launcher = client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("any-user", &launcher.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200, "any username with a LAUNCHER token");
    let admin = client.create_access_token("acme", pullpass::v1::Role::Admin, &[], None, "").await.unwrap();
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &admin.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200, "an ADMIN token");
    let viewer = client.create_access_token("acme", pullpass::v1::Role::Viewer, &[], None, "").await.unwrap();
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &viewer.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 403, "a VIEWER may not pull");
    // A LAUNCHER limited to a project names it as the username.
    let rnaseq =
        client.create_access_token("acme", pullpass::v1::Role::Launcher, &["rnaseq".into()], None, "").await.unwrap();
    let response =
        request(&gw, reqwest::Method::GET, &path, &basic("pullpass", &rnaseq.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 403, "no project named: only unrestricted launchers");
    let response = request(&gw, reqwest::Method::GET, &path, &basic("rnaseq", &rnaseq.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
    let response = request(&gw, reqwest::Method::GET, &path, &basic("atac", &rnaseq.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 403);
    // Credential restrictions hold too: a credential for project atac only.
    let mut restricted = gw.world.credential("other", "ops", "ops-pw");
    restricted.allowed_projects = vec!["atac".into()];
    gw.world.add("ops-atac", restricted).await;
    let other = format!("/v2/{ALIAS}/other/tool/manifests/1.0");
    let response =
        request(&gw, reqwest::Method::GET, &other, &basic("rnaseq", &rnaseq.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 403);
    let response =
        request(&gw, reqwest::Method::GET, &other, &basic("atac", &launcher.token), Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_pulls_of_a_new_image_cost_one_token_request_and_one_manifest_fetch() {
    let gw = std::sync::Arc::new(GatewayWorld::start().await);
    pullpass_tests::registry::seed(&gw.world.registry, "team/fresh:1.0", "seed", "seed-pw");
    // An access token as the password: no exchange happened when it was made.
    let launcher =
        gw.world.client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let authorization = basic("pullpass", &launcher.token);
    let tokens_before = gw.world.token_requests();
    let served_before = gw.world.registry.mark().await;
    let mut pulls = Vec::new();
    for _ in 0..50 {
        let (gw, authorization) = (std::sync::Arc::clone(&gw), authorization.clone());
        pulls.push(tokio::spawn(async move { pull_like_a_runtime(&gw, "team/fresh", "1.0", &authorization).await }));
    }
    for pull in pulls {
        pull.await.expect("a pull");
    }
    assert_eq!(gw.world.token_requests() - tokens_before, 1, "one token request for 50 runtimes");
    let served_after = gw.world.registry.mark().await;
    let served = gw.world.registry.served();
    let manifests: Vec<_> =
        served[served_before..served_after].iter().filter(|s| s.uri.contains("/manifests/")).collect();
    let (heads, gets): (Vec<&&Served>, Vec<&&Served>) = manifests.iter().partition(|s| s.method == "HEAD");
    assert_eq!(heads.len(), 1, "one HEAD of the tag, which registries do not count as a pull: {manifests:?}");
    assert_eq!(gets.len(), 1, "one manifest fetch, by digest: {manifests:?}");
    assert!(gets[0].uri.contains("/manifests/sha256:"), "{manifests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upstream_serving_wrong_bytes_makes_the_client_fail_and_nothing_is_cached() {
    let hostile = pullpass_tests::registry::Peer::start(&["hostile-registry", "mallory", "mallory-CANARY-pw"]);
    let alias = format!("evil={}", hostile.address);
    let gw = GatewayWorld::start_with(&["--gateway-alias", &alias, "--insecure-registry", &hostile.address]).await;
    gw.world
        .add(
            "evil",
            pullpass::v1::Credential {
                provider: pullpass::v1::Provider::Generic as i32,
                registry_server: hostile.address.clone(),
                username: "mallory".into(),
                secret: "mallory-CANARY-pw".into(),
                ..Default::default()
            },
        )
        .await;
    let (status, image) = pullpass_tests::registry::http_request(&hostile.address, "GET", "/image", None);
    assert_eq!(status, 200);
    let image: serde_json::Value = serde_json::from_str(&image).unwrap();
    let manifest_digest = image["manifest"].as_str().unwrap().to_owned();
    let layer = image["blobs"][0].as_str().unwrap().to_owned();
    let request_images = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: ["a", "b", "c"].iter().map(|r| format!("{}/{r}/app:hostile", hostile.address)).collect(),
        via_gateway: true,
        ..Default::default()
    };
    let auths =
        gw.world.client.registry_auth_service().issue_registry_auth(request_images).await.unwrap().into_inner().auths;
    let authorization = basic("pullpass", &ok(&auths[0]).password);
    let client = http_client();

    // A manifest by digest whose bytes do not match: 502, and asked again
    // next time (nothing kept).
    hostile.control(serde_json::json!({"corrupt": "manifest"}));
    for _ in 0..2 {
        let response = client
            .get(gw.url(&format!("/v2/evil/a/app/manifests/{manifest_digest}")))
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
    }
    assert_eq!(hostile.count("manifest_requests"), 2);

    // A blob whose bytes do not match: the client never receives it whole.
    hostile.control(serde_json::json!({"corrupt": "blob"}));
    for attempt in 1..=2 {
        let sent = client
            .get(gw.url(&format!("/v2/evil/b/app/blobs/{layer}")))
            .header("authorization", &authorization)
            .send()
            .await;
        // The registry's last bytes are held back until the digest is
        // checked, so the response breaks off (before or after its head).
        let received = match sent {
            Ok(response) => response.bytes().await.map(|b| b.to_vec()),
            Err(e) => Err(e),
        };
        assert!(received.is_err(), "attempt {attempt}: the transfer must end with an error, got {received:?}");
        assert_eq!(hostile.count("blob_requests"), attempt, "nothing of the bad blob is kept");
    }
    // A 206 that holds the whole blob is checked like a 200; a 206 to a
    // request for the whole blob is refused.
    let whole_range = client
        .get(gw.url(&format!("/v2/evil/b/app/blobs/{layer}")))
        .header("authorization", &authorization)
        .header("range", "bytes=0-")
        .send()
        .await;
    let received = match whole_range {
        Ok(response) => response.bytes().await.map(|b| b.to_vec()),
        Err(e) => Err(e),
    };
    assert!(received.is_err(), "a whole-blob range is verified too: {received:?}");
    let part = client
        .get(gw.url(&format!("/v2/evil/b/app/blobs/{layer}")))
        .header("authorization", &authorization)
        .header("range", "bytes=1-4")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206, "a true range cannot be verified and is relayed");
    assert_eq!(part.bytes().await.unwrap().len(), 4);
    hostile.control(serde_json::json!({"corrupt": "blob", "partial": true}));
    let response = client
        .get(gw.url(&format!("/v2/evil/b/app/blobs/{layer}")))
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "a 206 to a request without a range");
    hostile.control(serde_json::json!({"corrupt": "blob"}));

    // skopeo, pulling the image, fails.
    let copied = Skopeo::new()
        .copy(&format!("{}/evil/c/app:hostile", gw.gateway), &format!("pullpass:{}", ok(&auths[2]).password));
    assert!(copied.is_err(), "skopeo must not accept a blob that fails its digest");
    assert!(!gw.world.server.logs().contains("mallory-CANARY-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_of_the_registry_reach_the_client_untouched_and_skopeo_follows_them() {
    use pullpass_tests::registry::{Issuer, Registry, seed, world::users};
    let issuer = Issuer::start(users());
    let cdn = Registry::start_redirecting(&issuer.realm(), &issuer.bundle());
    seed(&cdn, "team/app:1.0", "seed", "seed-pw");
    let alias = format!("cdn={}", cdn.address);
    let gw = GatewayWorld::start_with(&[
        "--gateway-alias",
        &alias,
        "--insecure-registry",
        &cdn.address,
        "--insecure-registry",
        &issuer.peer.address,
    ])
    .await;
    let mut credential = gw.world.credential("team", "alice", ALICE_PASSWORD);
    credential.registry_server = format!("{}/team", cdn.address);
    credential.token_realm_allowlist = vec![issuer.peer.url()];
    gw.world.add("cdn", credential).await;
    let request_image = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![cdn.image("team/app:1.0")],
        via_gateway: true,
        ..Default::default()
    };
    let auths =
        gw.world.client.registry_auth_service().issue_registry_auth(request_image).await.unwrap().into_inner().auths;
    let auth = ok(&auths[0]);
    assert_eq!(auth.gateway_image, format!("{}/cdn/team/app:1.0", gw.gateway));
    let authorization = basic("pullpass", &auth.password);
    let client = http_client();
    let manifest = client
        .get(gw.url("/v2/cdn/team/app/manifests/1.0"))
        .header("authorization", &authorization)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let response = client
        .get(gw.url(&format!("/v2/cdn/team/app/blobs/{layer}")))
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307, "the registry's redirect, passed on");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let blob_server = cdn.blob_server.as_ref().unwrap();
    assert!(location.starts_with(&blob_server.url()), "{location}");
    assert_eq!(response.headers()["content-length"], "0");
    assert!(response.headers().get("authorization").is_none());
    assert!(response.bytes().await.unwrap().is_empty());

    Skopeo::new()
        .copy(&auth.gateway_image, &format!("pullpass:{}", auth.password))
        .expect("skopeo follows the redirects");
    assert!(blob_server.count("requests") >= 2, "the blobs came from the static server");
    assert_eq!(blob_server.count("requests_with_authorization"), 0, "no credentials went to the CDN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_the_upstream_name_through_a_registries_conf_mirror() {
    let gw = GatewayWorld::start().await;
    let password = gw.password("team/app:1.0").await;
    let skopeo = Skopeo::new();
    skopeo.registries_conf(&format!(
        "[[registry]]\nlocation = \"{upstream}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{gw}/{ALIAS}\"\ninsecure = true\n",
        upstream = gw.world.registry.address,
        gw = gw.gateway,
    ));
    // containers/image looks auth.json up by the mirror's namespace.
    let auth_file = skopeo.auth_file(&serde_json::json!({
        "auths": { format!("{}/{ALIAS}", gw.gateway): { "auth": base64_of(&format!("pullpass:{password}")) } }
    }));
    let out = skopeo.home.path().join("out");
    let copied = skopeo.run(
        &[
            "copy",
            "--authfile",
            auth_file.to_str().unwrap(),
            &format!("docker://{}", gw.world.registry.image("team/app:1.0")),
            &format!("oci:{}:1.0", out.display()),
        ],
        &[],
    );
    assert!(copied.status.success(), "skopeo through the mirror: {}", String::from_utf8_lossy(&copied.stderr));
    let path = format!("/v2/{ALIAS}/team/app/manifests/1.0");
    gw.world.server.wait_for_log(Duration::from_secs(5), |logs| logs.contains(&path)).await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_pulls_through_the_gateway_with_override_path_and_with_the_ns_form() {
    let gw = GatewayWorld::start().await;
    pullpass_tests::registry::seed(&gw.world.registry, "team/app:2.0", "seed", "seed-pw");
    let auths = gw.leases(&["team/app:1.0", "team/app:2.0"], None).await;
    let password = ok(&auths[0]).password.clone();
    assert_eq!(ok(&auths[1]).password, password, "one password per request");
    let containerd = pullpass_tests::gateway::Containerd::start();
    let upstream = gw.world.registry.address.clone();
    // The upstream itself is unreachable to containerd: only the gateway serves.
    let dead_server = "server = \"http://127.0.0.1:9\"\n\n";
    let override_path = containerd.hosts_dir(
        "override",
        &upstream,
        &format!(
            "{dead_server}[host.\"http://{}/v2/{ALIAS}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n",
            gw.gateway
        ),
    );
    let ns_form = containerd.hosts_dir(
        "ns",
        &upstream,
        &format!("{dead_server}[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", gw.gateway),
    );
    let user = format!("pullpass:{password}");
    for (hosts, tag, path) in [
        (&override_path, "1.0", format!("/v2/{ALIAS}/team/app/manifests/1.0")),
        (&ns_form, "2.0", "/v2/team/app/manifests/2.0".to_owned()),
    ] {
        let image = gw.world.registry.image(&format!("team/app:{tag}"));
        containerd.pull(&["--hosts-dir", hosts.to_str().unwrap()], &user, &image);
        // The gateway logs a request when its body ends.
        gw.world.server.wait_for_log(Duration::from_secs(5), |logs| logs.contains(&path)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_gateway() {
    let gw = GatewayWorld::start().await;
    let password = gw.password("team/app:1.0").await;
    let home = tempfile::Builder::new().prefix("pullpass-podman-").tempdir().unwrap();
    let podman = |args: &[&str]| {
        std::process::Command::new("timeout")
            .arg("120")
            .arg("podman")
            .arg("--root")
            .arg(home.path().join("root"))
            .arg("--runroot")
            .arg(home.path().join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("podman (installed by scripts/install-test-deps.sh)")
    };
    let info = podman(&["info", "--format", "{{.Store.GraphDriverName}}"]);
    assert!(info.status.success(), "podman does not run here: {}", String::from_utf8_lossy(&info.stderr));
    let image = gw.image("team/app:1.0");
    let pulled = podman(&["pull", "--tls-verify=false", "--creds", &format!("pullpass:{password}"), &image]);
    assert!(pulled.status.success(), "podman pull: {}", String::from_utf8_lossy(&pulled.stderr));
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&image), "{}", String::from_utf8_lossy(&listed.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_gateway_requests_are_checked_and_one_password_covers_the_request() {
    use pullpass_tests::registry::world::code_and_reason;
    let gw = GatewayWorld::start().await;
    pullpass_tests::registry::seed(&gw.world.registry, "team/tool:1.0", "seed", "seed-pw");
    let service = || gw.world.client.registry_auth_service();
    let base = pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![gw.world.registry.image("team/app:1.0")],
        via_gateway: true,
        ..Default::default()
    };
    let push =
        pullpass::v1::IssueRegistryAuthRequest { actions: vec![pullpass::v1::Action::Push as i32], ..base.clone() };
    let status = service().issue_registry_auth(push).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(pullpass_tests::violation_fields(&status), ["actions"]);
    let bearer = pullpass::v1::IssueRegistryAuthRequest { accept: vec![AuthKind::Bearer as i32], ..base.clone() };
    let status = service().issue_registry_auth(bearer).await.unwrap_err();
    assert_eq!(pullpass_tests::violation_fields(&status), ["accept"]);

    // Gateway references are accepted as input; images that fail do not
    // stop the others; the password covers exactly those that succeeded.
    let mixed = pullpass::v1::IssueRegistryAuthRequest {
        images: vec![
            gw.image("team/app:1.0"),
            gw.world.registry.image("team/tool:1.0"),
            gw.world.registry.image("other/tool:1.0"),
            format!("{}/nowhere/x:1", gw.gateway),
        ],
        ..base.clone()
    };
    let auths = service().issue_registry_auth(mixed).await.unwrap().into_inner().auths;
    assert_eq!(ok(&auths[0]).normalized_image, gw.world.registry.image("team/app:1.0"));
    assert_eq!(ok(&auths[0]).gateway_image, gw.image("team/app:1.0"));
    assert_eq!(ok(&auths[1]).gateway_image, gw.image("team/tool:1.0"));
    assert_eq!(ok(&auths[0]).password, ok(&auths[1]).password);
    assert_eq!(code_and_reason(&auths[2]), (tonic::Code::NotFound, "CREDENTIAL_NOT_FOUND_FOR_REGISTRY".to_owned()));
    assert_eq!(code_and_reason(&auths[3]).0, tonic::Code::InvalidArgument);
    let authorization = basic("pullpass", &ok(&auths[0]).password);
    for (repository, status) in [("team/app", 200), ("team/tool", 200), ("other/tool", 403)] {
        let path = format!("/v2/{ALIAS}/{repository}/manifests/1.0");
        let response = request(&gw, reqwest::Method::HEAD, &path, &authorization, Some(OCI_MANIFEST)).await;
        assert_eq!(response.status().as_u16(), status, "{repository}");
    }

    // A registry with a port and no alias cannot be named on the gateway:
    // said before any exchange.
    let hostile = pullpass_tests::registry::Peer::start(&["basic-registry", "bob", "bob-pw"]);
    gw.world
        .add(
            "basic",
            pullpass::v1::Credential {
                provider: pullpass::v1::Provider::Generic as i32,
                registry_server: hostile.address.clone(),
                username: "bob".into(),
                secret: "bob-pw".into(),
                ..Default::default()
            },
        )
        .await;
    let unnamed = pullpass::v1::IssueRegistryAuthRequest { images: vec![format!("{}/x/y:1", hostile.address)], ..base };
    let auths = service().issue_registry_auth(unnamed).await.unwrap().into_inner().auths;
    assert_eq!(code_and_reason(&auths[0]), (tonic::Code::FailedPrecondition, "GATEWAY_ALIAS_NEEDED".to_owned()));
    assert!(auths[0].status.as_ref().unwrap().message.contains("--gateway-alias"));
    assert_eq!(hostile.count("requests"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_password_too_long_for_the_header_limit_is_refused_before_any_exchange() {
    let gw = GatewayWorld::start().await;
    let repository = |i: usize| format!("team/{i:03}{}", "-long-repository-name".repeat(9));
    let long = |i: usize| gw.world.registry.image(&format!("{}:1.0", repository(i)));
    let asking = |n: usize| pullpass::v1::IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: (0..n).map(long).collect(),
        via_gateway: true,
        ..Default::default()
    };
    let exchanges = gw.world.issuer.peer.count("token_requests");
    let service = || gw.world.client.registry_auth_service();
    let status = match service().issue_registry_auth(asking(100)).await {
        Err(status) => status,
        Ok(answer) => panic!("accepted, with {} auths", answer.into_inner().auths.len()),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(pullpass_tests::violation_fields(&status), ["images"]);
    let bad_request = tonic_types::StatusExt::get_details_bad_request(&status).expect("field violations");
    let said = bad_request.field_violations[0].description.clone();
    assert!(said.contains("100 repositories") && said.contains("--max-header-bytes"), "{said}");
    assert_eq!(gw.world.issuer.peer.count("token_requests"), exchanges, "refused before any upstream exchange");
    let fitting: usize = said
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many fit: {said}"));
    assert!((1..100).contains(&fitting), "{said}");

    // As many as fit: one password for all, which a runtime can send.
    let auths = service().issue_registry_auth(asking(fitting)).await.unwrap().into_inner().auths;
    assert_eq!(auths.len(), fitting);
    let password = &ok(&auths[0]).password;
    assert!(auths.iter().all(|a| &ok(a).password == password));
    let authorization = basic("pullpass", password);
    assert!(authorization.len() <= 8 * 1024, "{} bytes", authorization.len());
    let path = format!("/v2/{ALIAS}/{}/manifests/1.0", repository(fitting - 1));
    let response = request(&gw, reqwest::Method::HEAD, &path, &authorization, Some(OCI_MANIFEST)).await;
    assert_eq!(response.status().as_u16(), 404, "authenticated and allowed; the image does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_gateway_refuses_via_gateway_with_the_reason() {
    let (_dir, server) = pullpass_tests::embedded_server(|settings| settings.gateway = None).await;
    assert!(server.gateway_address.is_none());
    let client = pullpass_client::Client::builder(server.endpoint())
        .token(server.root_token.clone().unwrap())
        .connect()
        .await
        .unwrap();
    pullpass_tests::create_workspace(&client, "acme").await;
    let status = client
        .registry_auth_service()
        .issue_registry_auth(pullpass::v1::IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec!["ghcr.io/acme/app:1".into()],
            via_gateway: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(pullpass_tests::error_reason(&status).as_deref(), Some("GATEWAY_DISABLED"));
}

/// The TCP ports `pid` listens on (its socket inodes matched against the
/// kernel's table of listening sockets).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            if *state == "0A" && inodes.iter().any(|i| i == inode) {
                let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap();
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[test]
fn dev_with_gateway_listen_off_serves_no_gateway() {
    let server = pullpass_tests::Pullpassd::start_with(pullpass_tests::Options {
        args: vec!["--gateway-listen".into(), "off".into()],
        ..Default::default()
    })
    .expect("pullpassd --dev --gateway-listen off starts");
    assert!(server.gateway.is_empty());
    assert!(!server.stdout().contains("gateway on"), "{}", server.stdout());
    let port = |address: &str| address.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let console = server.console.trim_end_matches("/console/").to_owned();
    let mut served = vec![port(&server.address), port(&server.metrics), port(&console)];
    served.sort_unstable();
    assert_eq!(listening_ports(server.pid()), served, "gRPC, metrics and console only");
    assert!(!listening_ports(server.pid()).contains(&50052), "nothing on the default gateway port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_are_audited_per_manifest_and_logged_per_request_without_secrets() {
    let gw = GatewayWorld::start().await;
    let auths = gw.leases(&["team/app:1.0"], None).await;
    let password = ok(&auths[0]).password.clone();
    let authorization = basic("pullpass", &password);
    let mut seen = Vec::new();
    pull_like_a_runtime(&gw, "team/app", "1.0", &authorization).await;
    for path in [
        format!("/v2/{ALIAS}/team/app/manifests/1.0"),
        format!("/v2/{ALIAS}/team/app/manifests/9.9"),
        format!("/v2/{ALIAS}/other/tool/manifests/1.0"),
        format!("/v2/{ALIAS}/team/app/tags/list"),
        "/v2/".to_owned(),
    ] {
        let response = request(&gw, reqwest::Method::GET, &path, &authorization, Some(OCI_MANIFEST)).await;
        seen.push(format!("{:?}", response.headers()));
        seen.push(String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned());
    }
    let wrong = request(&gw, reqwest::Method::GET, "/v2/", &basic("pullpass", ALICE_PASSWORD), None).await;
    seen.push(String::from_utf8_lossy(&wrong.bytes().await.unwrap()).into_owned());

    // One call counted per manifest request (HEAD and GET: 4), one for the
    // refused repository, none per blob or tag list (identical calls of one
    // second share an event, with their count). Pull events are committed
    // in groups a little after the answers: wait for all five.
    let events =
        pullpass_tests::eventually("five gateway pulls in the audit trail", Duration::from_secs(10), || async {
            let events = gw.world.client.list_audit_events("acme", "action = \"GatewayPull\"", 100).await.unwrap();
            (events.iter().map(|e| e.call_count).sum::<i32>() >= 5).then_some(events)
        })
        .await;
    let images: Vec<&str> = events.iter().map(|e| e.image.as_str()).collect();
    assert_eq!(events.iter().map(|e| e.call_count).sum::<i32>(), 5, "{images:?}");
    assert!(events.iter().all(|e| e.request_ids.len() == e.call_count as usize));
    let (served, refused): (Vec<_>, Vec<_>) = events.iter().partition(|e| e.status_code != 7);
    assert!(served.iter().all(|e| e.resource == "workspaces/acme/credentials/reg"));
    assert_eq!(refused.len(), 1);
    assert!(refused[0].image.ends_with("/other/tool") && refused[0].resource == "workspaces/acme", "{:?}", refused[0]);
    assert!(events.iter().all(|e| e.principal.starts_with("rootTokens/")), "{:?}", events[0].principal);
    assert_eq!(events.iter().filter(|e| e.status_code == 5).count(), 1, "the unknown tag");
    assert!(images.iter().any(|i| i.contains("@sha256:")));

    // Every request is logged (when its body ends), with its principal and
    // status; no secret is.
    let logs = gw
        .world
        .server
        .wait_for_log(Duration::from_secs(5), |logs| {
            logs.lines().filter(|l| l.contains("gateway request")).count() >= 9
        })
        .await;
    let gateway_lines: Vec<&str> = logs.lines().filter(|l| l.contains("gateway request")).collect();
    assert!(gateway_lines.iter().any(|l| l.contains("\"status\":403") && l.contains("other/tool")));
    assert!(gateway_lines.iter().any(|l| l.contains("blobs/sha256:") && l.contains("\"bytes\":")));
    let upstream_token = ok(&gw.world.issue(&[&gw.world.registry.image("team/app:1.0")], &[]).await[0]).token.clone();
    for secret in [ALICE_PASSWORD, password.as_str(), "eyJ"] {
        assert!(!logs.contains(secret), "the logs hold {secret}");
        assert!(!seen.iter().any(|s| s.contains(secret)), "a gateway response holds {secret}");
        assert!(pullpass_tests::files_containing(&gw.world.server.data_dir, secret.as_bytes()).is_empty());
    }
    assert!(!logs.contains(&upstream_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_tls_with_h2_and_refuses_plaintext_on_other_addresses() {
    let (_ca_dir, ca, cert, key) = pullpass_tests::registry::private_ca();
    let gw = GatewayWorld::start_with(&[
        "--gateway-tls-cert",
        cert.to_str().unwrap(),
        "--gateway-tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let password = gw.password("team/app:1.0").await;
    let roots = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        roots
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).no_proxy().build().unwrap();
    let response = client
        .get(format!("https://{}/v2/{ALIAS}/team/app/manifests/1.0", gw.gateway))
        .header("authorization", basic("pullpass", &password))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let skopeo = Skopeo::new();
    let cert_dir = skopeo.home.path().join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&ca, cert_dir.join("ca.crt")).unwrap();
    let inspected = skopeo.run(
        &[
            "inspect",
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--creds",
            &format!("pullpass:{password}"),
            &format!("docker://{}", gw.image("team/app:1.0")),
        ],
        &[],
    );
    assert!(inspected.status.success(), "skopeo over TLS: {}", String::from_utf8_lossy(&inspected.stderr));

    let refused = pullpass_tests::Pullpassd::start_with(pullpass_tests::Options {
        args: vec!["--gateway-listen".into(), "0.0.0.0:0".into(), "--gateway-public-host".into(), "gw.example".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(refused.stderr.contains("refusing to serve plaintext gateway"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_or_unreachable_registry_is_toomanyrequests_or_unavailable() {
    let mut gw = GatewayWorld::start().await;
    let launcher =
        gw.world.client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let authorization = basic("pullpass", &launcher.token);
    let password = basic("pullpass", &gw.password("team/app:1.0").await);
    // The token realm answers 429: the gateway says so, with Retry-After,
    // and holds back further exchanges for that credential meanwhile.
    gw.world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "41"}));
    let path = format!("/v2/{ALIAS}/team/other/manifests/1.0");
    let response = request(&gw, reqwest::Method::GET, &path, &authorization, Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((30..=41).contains(&wait), "{wait}");
    assert_eq!(error_code(response).await, "TOOMANYREQUESTS");
    let throttled = gw.world.issuer.peer.count("token_429");
    let response = request(&gw, reqwest::Method::GET, &path, &authorization, Some(OCI_MANIFEST)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(gw.world.issuer.peer.count("token_429"), throttled, "held back, not asked again");
    gw.world.issuer.peer.control(serde_json::json!({}));

    // A registry that is down: 503 UNAVAILABLE, promptly.
    gw.world.registry.stop();
    let started = std::time::Instant::now();
    let response = request(
        &gw,
        reqwest::Method::GET,
        &format!("/v2/{ALIAS}/team/app/blobs/sha256:{}", "3".repeat(64)),
        &password,
        None,
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_request_rate_is_told_to_wait_at_the_gateway_too() {
    let gw = GatewayWorld::start_with(&["--rate-limit", "5"]).await;
    let launcher =
        gw.world.client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "").await.unwrap();
    let authorization = basic("pullpass", &launcher.token);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = request(&gw, reqwest::Method::GET, "/v2/", &authorization, None).await;
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(error_code(response).await, "TOOMANYREQUESTS");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert!(statuses[..10].iter().all(|s| *s == 200), "a burst of twice the rate: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Sends `raw` as is and returns what the gateway answered before it closed
/// the connection (or 10 s passed), and how long that took.
fn raw_exchange(address: &str, raw: &[u8]) -> (String, Duration) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    stream.write_all(raw).unwrap();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    (String::from_utf8_lossy(&all).to_string(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_http_gets_precise_refusals_and_the_gateway_serves_on() {
    let gw = GatewayWorld::start_with(&["--header-timeout", "2"]).await;
    let auth = basic("pullpass", &gw.password("team/app:1.0").await);
    let get = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n{extra}Connection: close\r\n\r\n",
            gw.gateway
        )
    };

    // Traversal and encoding tricks in repository names, sent byte for byte
    // (an HTTP client library would normalize some of them away).
    for (path, code) in [
        (format!("/v2/{ALIAS}/team/../app/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/team/./app/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/team/%2e%2e/app/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/team%2fapp/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}//team/app/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/team/app%00/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/../../etc/passwd/manifests/1.0"), "NAME_INVALID"),
        (format!("/v2/{ALIAS}/team/app/manifests/..%2f1.0"), "TAG_INVALID"),
    ] {
        let (answer, _) = raw_exchange(&gw.gateway, get(&path, "").as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        assert!(answer.contains(&format!("\"code\":\"{code}\"")), "{path}: {answer}");
    }

    // Headers past --max-header-bytes (16 KiB): 431, and nothing else.
    let huge = format!("X-Padding: {}\r\n", "p".repeat(32 * 1024));
    let (answer, _) = raw_exchange(&gw.gateway, get(&format!("/v2/{ALIAS}/team/app/manifests/1.0"), &huge).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Headers that never end: the connection is closed after --header-timeout.
    let (answer, took) =
        raw_exchange(&gw.gateway, format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nX-Slow: ", gw.gateway).as_bytes());
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "{took:?}: {answer}");
    assert!(!answer.contains(" 200 "), "{answer}");

    // Range abuse: anything but one well-formed byte range is dropped, and
    // the whole blob is served.
    let manifest_path = format!("/v2/{ALIAS}/team/app/manifests/1.0");
    let manifest_bytes =
        request(&gw, reqwest::Method::GET, &manifest_path, &auth, Some(OCI_MANIFEST)).await.bytes().await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = manifest["layers"][0]["size"].as_u64().unwrap();
    let blob = format!("/v2/{ALIAS}/team/app/blobs/{digest}");
    let many = (0..500).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(",");
    for range in [
        "bytes=0-1,5-6",
        "bytes=5-2",
        "bytes=99999999999999999999999-",
        "items=0-1",
        "bytes=-0",
        "bytes=--1",
        &format!("bytes={many}"),
    ] {
        let response = http_client()
            .get(gw.url(&blob))
            .header("authorization", &auth)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "Range: {range}");
        assert_eq!(response.bytes().await.unwrap().len() as u64, size, "Range: {range}");
    }

    // And after all that, a normal pull works.
    let response =
        request(&gw, reqwest::Method::GET, &format!("/v2/{ALIAS}/team/app/manifests/1.0"), &auth, Some(OCI_MANIFEST))
            .await;
    assert_eq!(response.status(), 200);
}
