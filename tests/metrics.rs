//! Prometheus metrics on `--metrics-listen`, end to end: every counter
//! moves by exactly the number of calls made, against the real registry,
//! its token issuer and the pull gateway; the exposition parses with the
//! reference parser (Python `prometheus-client`) in both formats; labels
//! never carry a workspace, credential, image or secret.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pullpass::v1::{Credential, IssueRegistryAuthRequest, ListWorkspacesRequest, Provider};
use pullpass_tests::files_containing;
use pullpass_tests::gateway::{GatewayWorld, basic, http_client};
use pullpass_tests::registry::world::{ALICE_PASSWORD, ok};
use pullpass_tests::registry::{Peer, python};
use pullpass_tests::{Pullpassd, binary};

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed (OpenMetrics or 0.0.4 sample lines are alike).
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').expect("label=value");
                        (key.to_owned(), value.trim_matches('"').to_owned())
                    })
                    .collect();
                Sample { name: name.to_owned(), labels, value: value.parse().expect("a number") }
            })
            .collect();
        Scrape(samples)
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }
}

async fn scrape_as(metrics: &str, accept: Option<&str>) -> (String, String) {
    let mut request = http_client().get(format!("http://{metrics}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

async fn scrape(metrics: &str) -> Scrape {
    Scrape::parse(&scrape_as(metrics, None).await.1)
}

/// Scrapes until `check` holds (audit events are committed a few
/// milliseconds after the call), at most 5 s; returns the last scrape.
async fn scrape_until(metrics: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = scrape(metrics).await;
        if check(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const N: u32 = 7;

/// The labels of a unary pullpass.v1 method.
fn grpc(method: &str) -> [(&'static str, &str); 3] {
    let service = match method {
        "IssueRegistryAuth" => "pullpass.v1.RegistryAuthService",
        "ListWorkspaces" | "CreateWorkspace" => "pullpass.v1.AccessService",
        _ => "pullpass.v1.CredentialService",
    };
    [("grpc_type", "unary"), ("grpc_service", service), ("grpc_method", method)]
}

fn handled<'a>(method: &'a str, code: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut labels = grpc(method).to_vec();
    labels.push(("grpc_code", code));
    labels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_moves_by_exactly_the_number_of_calls_made() {
    let gw = GatewayWorld::start().await;
    let metrics = gw.world.server.metrics.clone();
    assert!(!metrics.is_empty(), "pullpassd printed no metrics address");
    let n = f64::from(N);

    // Writes: N credentials created. The root token's first use (starting
    // the world) writes its last use in the background: once that landed,
    // the server writes nothing but what this test asks for.
    pullpass_tests::eventually("the root token's last use to be written", Duration::from_secs(10), || {
        let pending = gw
            .world
            .server
            .sql_text("SELECT count(*) FROM access_tokens WHERE workspace_id IS NULL AND last_used_time IS NULL");
        std::future::ready((pending.trim() == "0").then_some(()))
    })
    .await;
    let before = scrape(&metrics).await;
    for i in 0..N {
        let credential = Credential {
            provider: Provider::Generic as i32,
            registry_server: format!("registry-{i}.example"),
            username: "u".into(),
            secret: "metrics-CANARY-secret".into(),
            ..Default::default()
        };
        gw.world.add(&format!("made{i}"), credential).await;
    }
    let after = scrape(&metrics).await;
    let started = "grpc_server_started_total";
    assert_eq!(after.value(started, &grpc("CreateCredential")) - before.value(started, &grpc("CreateCredential")), n);
    let ok_creates = handled("CreateCredential", "OK");
    let moved =
        |name: &str, labels: &[(&str, &str)], a: &Scrape, b: &Scrape| a.value(name, labels) - b.value(name, labels);
    assert_eq!(moved("grpc_server_handled_total", &ok_creates, &after, &before), n);
    assert_eq!(moved("grpc_server_handling_seconds_count", &grpc("CreateCredential"), &after, &before), n);
    assert_eq!(moved("pullpass_store_write_duration_seconds_count", &[("backend", "sqlite")], &after, &before), n);

    // Leases: N repositories never asked for (misses, one token request
    // each), then the same N again (hits).
    let before = scrape(&metrics).await;
    let tokens_before = gw.world.token_requests();
    let images: Vec<String> = (0..N).map(|i| gw.world.registry.image(&format!("team/app{i}:1.0"))).collect();
    let mut issued_tokens = Vec::new();
    for image in &images {
        issued_tokens.push(ok(&gw.world.issue(&[image], &[]).await[0]).token.clone());
    }
    for image in &images {
        assert!(ok(&gw.world.issue(&[image], &[]).await[0]).cached);
    }
    assert_eq!(gw.world.token_requests() - tokens_before, u64::from(N));
    let after = scrape_until(&metrics, |s| {
        s.value("pullpass_audit_events_written_total", &[]) - before.value("pullpass_audit_events_written_total", &[])
            >= 2.0 * n
    })
    .await;
    let lease = |cache| [("form", "bearer"), ("cache", cache)];
    assert_eq!(moved("pullpass_leases_issued_total", &lease("miss"), &after, &before), n);
    assert_eq!(moved("pullpass_leases_issued_total", &lease("hit"), &after, &before), n);
    let token_ok = [("kind", "token"), ("outcome", "2xx")];
    assert_eq!(moved("pullpass_upstream_requests_total", &token_ok, &after, &before), n);
    assert_eq!(moved("grpc_server_handled_total", &handled("IssueRegistryAuth", "OK"), &after, &before), 2.0 * n);
    assert_eq!(moved("pullpass_audit_events_queued_total", &[], &after, &before), 2.0 * n);
    assert_eq!(moved("pullpass_audit_events_written_total", &[], &after, &before), 2.0 * n);
    assert_eq!(moved("pullpass_audit_events_dropped_total", &[], &after, &before), 0.0);
    assert!(after.value("pullpass_lease_cache_entries", &[]) >= n);

    // Refused tokens: N unknown, N missing.
    let before = scrape(&metrics).await;
    let unknown = gw.world.server.client_with(Some("pp_notarealtokennotarealtokennotarealtoken00")).await;
    let anonymous = gw.world.server.client_with(None).await;
    for _ in 0..N {
        let request = ListWorkspacesRequest::default();
        assert!(unknown.access().list_workspaces(request.clone()).await.is_err());
        assert!(anonymous.access().list_workspaces(request).await.is_err());
    }
    let after = scrape(&metrics).await;
    let failures = |a: &Scrape, b: &Scrape| {
        ["missing", "malformed", "unknown"]
            .map(|reason| moved("pullpass_authentication_failures_total", &[("reason", reason)], a, b))
    };
    let [missing, malformed, unknown_tokens] = failures(&after, &before);
    assert_eq!((missing, malformed + unknown_tokens), (n, n), "malformed or unknown, as the token's shape says");
    assert_eq!(
        moved("grpc_server_handled_total", &handled("ListWorkspaces", "Unauthenticated"), &after, &before),
        2.0 * n
    );

    // The gateway: N manifests, N refusals before the path is understood.
    let before = scrape(&metrics).await;
    let authorization = basic("pullpass", &gw.password("team/app:1.0").await);
    let client = http_client();
    for _ in 0..N {
        let manifest = client
            .get(gw.url("/v2/local/team/app/manifests/1.0"))
            .header("authorization", &authorization)
            .header("accept", pullpass_tests::gateway::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(manifest.status(), 200);
        manifest.bytes().await.unwrap();
        let refused = client.get(gw.url("/v2/")).send().await.unwrap();
        assert_eq!(refused.status(), 401);
    }
    // The gateway counts a request when its body ends, a little after the
    // client has read it.
    let gateway = |kind, code| [("method", "GET"), ("kind", kind), ("code", code)];
    let after = scrape_until(&metrics, |after| {
        moved("pullpass_gateway_requests_total", &gateway("manifest", "2xx"), after, &before) >= n
            && moved("pullpass_gateway_requests_total", &gateway("other", "4xx"), after, &before) >= n
    })
    .await;
    assert_eq!(moved("pullpass_gateway_requests_total", &gateway("manifest", "2xx"), &after, &before), n);
    assert_eq!(moved("pullpass_gateway_requests_total", &gateway("other", "4xx"), &after, &before), n);
    assert!(moved("pullpass_gateway_response_bytes_total", &[("kind", "manifest")], &after, &before) >= n * 100.0);

    // A registry asking to wait: one 429, then N exchanges held back
    // (last: the block holds for the credential, whatever the repository).
    let before = scrape(&metrics).await;
    gw.world.issuer.peer.control(serde_json::json!({"token_status": 429, "retry_after": "60"}));
    let limited = gw.world.registry.image("team/limited:1.0");
    for _ in 0..=N {
        let auths = gw.world.issue(&[&limited], &[]).await;
        assert_eq!(auths[0].status.as_ref().unwrap().code, tonic::Code::ResourceExhausted as i32);
    }
    gw.world.issuer.peer.control(serde_json::json!({}));
    let after = scrape(&metrics).await;
    assert_eq!(moved("pullpass_upstream_rate_limited_total", &[("kind", "token")], &after, &before), 1.0);
    assert_eq!(moved("pullpass_upstream_held_back_total", &[], &after, &before), n);
    assert_eq!(
        moved("pullpass_upstream_requests_total", &[("kind", "token"), ("outcome", "429")], &after, &before),
        1.0
    );

    // Nothing anyone named or any secret became a label or a value.
    let (_, text) = scrape_as(&metrics, None).await;
    for needle in ["acme", "made0", "team/app", "CANARY", "alice", "pp_", "registry-0.example", &authorization[6..]] {
        assert!(!text.contains(needle), "the exposition names `{needle}`");
    }
    // Nor is any secret in the database, its WAL or the logs.
    let gateway_password = gw.password("team/app:1.0").await;
    let mut secrets = vec!["metrics-CANARY-secret".to_owned(), ALICE_PASSWORD.to_owned(), gateway_password];
    secrets.extend(issued_tokens);
    for secret in &secrets {
        let found = files_containing(&gw.world.server.home, secret.as_bytes());
        assert!(found.is_empty(), "a secret is in {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatches_are_counted_once_per_bad_manifest() {
    let hostile = Peer::start(&["hostile-registry", "mallory", "mallory-pw"]);
    let alias = format!("evil={}", hostile.address);
    let gw = GatewayWorld::start_with(&["--gateway-alias", &alias, "--insecure-registry", &hostile.address]).await;
    let credential = Credential {
        provider: Provider::Generic as i32,
        registry_server: hostile.address.clone(),
        username: "mallory".into(),
        secret: "mallory-pw".into(),
        ..Default::default()
    };
    gw.world.add("evil", credential).await;
    let (_, image) = pullpass_tests::registry::http_request(&hostile.address, "GET", "/image", None);
    let image: serde_json::Value = serde_json::from_str(&image).unwrap();
    let digest = image["manifest"].as_str().unwrap().to_owned();
    let request = IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![format!("{}/a/app:hostile", hostile.address)],
        via_gateway: true,
        ..Default::default()
    };
    let auths = gw.world.client.registry_auth_service().issue_registry_auth(request).await.unwrap().into_inner().auths;
    let authorization = basic("pullpass", &ok(&auths[0]).password);
    hostile.control(serde_json::json!({"corrupt": "manifest"}));
    let before = scrape(&gw.world.server.metrics).await;
    for _ in 0..N {
        let response = http_client()
            .get(gw.url(&format!("/v2/evil/a/app/manifests/{digest}")))
            .header("authorization", &authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
    }
    let bad_gateway = [("method", "GET"), ("kind", "manifest"), ("code", "5xx")];
    let name = "pullpass_gateway_requests_total";
    let after = scrape_until(&gw.world.server.metrics, |after| {
        after.value(name, &bad_gateway) - before.value(name, &bad_gateway) >= f64::from(N)
    })
    .await;
    let name = "pullpass_gateway_digest_mismatches_total";
    assert_eq!(after.value(name, &[("kind", "manifest")]) - before.value(name, &[("kind", "manifest")]), f64::from(N));
    let name = "pullpass_gateway_requests_total";
    assert_eq!(after.value(name, &bad_gateway) - before.value(name, &bad_gateway), f64::from(N));
}

/// Parses an exposition with Python's prometheus-client (the reference
/// parser): `families` is name → type, `samples` is sample → value.
fn reference_parse(text: &str, openmetrics: bool) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::write(&path, text).unwrap();
    let parser = if openmetrics { "prometheus_client.openmetrics.parser" } else { "prometheus_client.parser" };
    let script = format!(
        "import json, sys\nfrom {parser} import text_string_to_metric_families\n\
         families, samples = {{}}, {{}}\n\
         for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
         \x20   families[f.name] = f.type\n\
         \x20   for s in f.samples:\n\
         \x20       samples[s.name + json.dumps(s.labels, sort_keys=True)] = s.value\n\
         print(json.dumps({{'families': families, 'samples': samples}}))\n"
    );
    let output = std::process::Command::new(python()).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "prometheus-client refused the exposition: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_parses_with_prometheus_client_in_both_formats() {
    let server = Pullpassd::start();
    let client = server.client().await;
    pullpass_tests::create_workspace(&client, "acme").await;
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, openmetrics) = scrape_as(&server.metrics, Some(prometheus)).await;
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n"));
    let (content_type, text) = scrape_as(&server.metrics, Some("text/plain;version=0.0.4")).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");

    let parsed_om = reference_parse(&openmetrics, true);
    let parsed_text = reference_parse(&text, false);
    for (family, kind) in [
        ("grpc_server_started", "counter"),
        ("grpc_server_handled", "counter"),
        ("grpc_server_handling_seconds", "histogram"),
        ("pullpass_store_write_duration_seconds", "histogram"),
        ("pullpass_lease_cache_entries", "gauge"),
    ] {
        assert_eq!(parsed_om["families"][family], kind, "OpenMetrics: {family} in {:#}", parsed_om["families"]);
        assert_eq!(parsed_text["families"][family], kind, "text 0.0.4: {family} in {:#}", parsed_text["families"]);
    }
    let key = r#"grpc_server_handled_total{"grpc_code": "OK", "grpc_method": "CreateWorkspace", "grpc_service": "pullpass.v1.AccessService", "grpc_type": "unary"}"#;
    assert_eq!(parsed_om["samples"][key], 1.0, "{:#}", parsed_om["samples"]);
    assert_eq!(parsed_text["samples"][key], 1.0);

    // Only /metrics, only GET and HEAD.
    let other = http_client().get(format!("http://{}/", server.metrics)).send().await.unwrap();
    assert_eq!(other.status(), 404);
    let post = http_client().post(format!("http://{}/metrics", server.metrics)).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[test]
fn metrics_on_a_non_loopback_address_in_plaintext_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(binary("pullpassd"))
        .args(["--dev", "--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--gateway-listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0", "--console-listen", "127.0.0.1:0"])
        .env_remove("PULLPASS_MASTER_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to serve plaintext metrics") && stderr.contains("--insecure-plaintext"),
        "{stderr}"
    );
}
