//! The pull gateway against real peers: the Debian docker-registry (with
//! token auth, and a second one whose blobs redirect to a static server),
//! skopeo (direct references and a `registries.conf` mirror), containerd's
//! `ctr` with a private daemon, podman when it runs here, and the pull
//! checks of the OCI distribution-spec conformance suite, ported.

use std::time::Duration;

use pullpass::v1::AuthKind;
use pullpass_tests::gateway::{ALIAS, GatewayWorld, Skopeo, basic, http_client, oci_manifest_digest, sha256};
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
    let through = skopeo.home.path().join("through");
    let copied = skopeo.run(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("pullpass:{}", auth.password),
            &format!("docker://{}", auth.gateway_image),
            &format!("oci:{}:1.0", through.display()),
        ],
        &[],
    );
    assert!(copied.status.success(), "skopeo through the gateway: {}", String::from_utf8_lossy(&copied.stderr));
    let direct = skopeo.home.path().join("direct");
    let copied = skopeo.run(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("alice:{ALICE_PASSWORD}"),
            &format!("docker://{}", gw.world.registry.image("team/app:1.0")),
            &format!("oci:{}:1.0", direct.display()),
        ],
        &[],
    );
    assert!(copied.status.success(), "skopeo direct: {}", String::from_utf8_lossy(&copied.stderr));
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
