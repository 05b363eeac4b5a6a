//! Broker figures, against the real `pullpassd` binary and a token-realm
//! fixture on loopback:
//!
//! 1. cold bursts of identical `IssueRegistryAuth` calls: upstream requests
//!    (expected: one token request, plus the registry's `/v2/` challenge on
//!    first contact) and wall time;
//! 2. an uncached lease (cache miss, one token request) next to the same
//!    token request made directly to the same realm;
//! 3. cached `IssueRegistryAuth` throughput and p99, at default settings
//!    (info logs to a file, audit on, metrics on), next to the same server's
//!    `grpc.health.v1.Health/Check`, driven by `h2load` (Debian
//!    nghttp2-client, a load generator we did not write) and by our own tonic
//!    driver; twice: with the realm's few-byte tokens, and with tokens of a
//!    registry JWT's size (1.5 KiB), whose responses cross h2's 1 KiB frame
//!    limit;
//! 4. cached `IssueRegistryAuth` with metrics served and recorded, next to a
//!    second server with `--metrics-listen off`, both at default settings
//!    (info logs to a file, audit on), rounds alternating;
//! 5. a flood of calls with a well-formed but unknown token: how many the
//!    server refuses a second and its CPU per refusal (h2load), and cached
//!    leases from a valid token with and without the flood beside them;
//! 7. workload identity: cached `IssueRegistryAuth` with a Kubernetes-shaped
//!    JWT as the caller against the same with a `pp_` LAUNCHER token (h2load,
//!    rounds alternating; target at least 0.95x); the first call with a new
//!    token (its signature checked), p50 and p99; and a key rotation: how
//!    long until a token signed by the new key is accepted;
//! 6. a large workspace (20 000 credentials) under continuous change:
//!    cached leases/s (h2load) while another client creates 50 credentials
//!    a second in the same workspace, against the same without the writer
//!    (rounds alternating); the target is at least 0.7x.
//!
//! Run: `scripts/bench.sh broker` (installs h2load, builds release binaries).
//! Environment: `BENCH_REQUESTS` (cached calls per configuration, default
//! 100000, in 5 alternating rounds), `BENCH_BURST` (default 1000),
//! `BENCH_UNCACHED` (default 500), `BENCH_TOKEN_BYTES` (the JWT-sized
//! tokens of section 3, default 1536), `BENCH_WORKSPACE_CREDENTIALS`
//! (section 6, default 20000), `BENCH_WRITES_PER_SECOND` (section 6, default
//! 50), `BENCH_ONLY=metrics` (section 4 alone), `BENCH_ONLY=cached`
//! (section 3 alone), `BENCH_ONLY=flood` (section 5 alone),
//! `BENCH_ONLY=large` (section 6 alone), `BENCH_ONLY=identity` (section 7
//! alone; `BENCH_NEW_TOKENS`, default 300, first calls to time).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message;
use pullpass::v1::{Credential, IssueRegistryAuthRequest, Provider};
use pullpass_tests::bench::h2load::{Call, H2load, ROUNDS, Round, grpc_frame, which_h2load};
use pullpass_tests::bench::{Figures, env_count, figures, measure};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::{Options, Pullpassd, create_workspace};

const USERNAME: &str = "ci";
const PASSWORD: &str = "bench-pw";
const LEASE_PATH: &str = "/pullpass.v1.RegistryAuthService/IssueRegistryAuth";
const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

fn main() {
    let requests = env_count("BENCH_REQUESTS", 100_000);
    let burst = env_count("BENCH_BURST", 1000);
    let uncached = env_count("BENCH_UNCACHED", 500);
    let realm = TokenRealm::start(3600, USERNAME, PASSWORD);
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "metrics") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        metrics_on_and_off(&runtime, &realm, requests);
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "flood") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        unauthenticated_flood(&runtime, &realm, requests);
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "identity") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        identity_callers(&runtime, &realm, requests);
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "large") {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        large_workspace_under_change(&runtime, &realm, requests);
        return;
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // A second registry whose realm issues tokens of a JWT's length, the
    // size most registries' tokens are: a lease's response is then over
    // h2's 1 KiB frame limit, as it is in production.
    let token_bytes = env_count("BENCH_TOKEN_BYTES", 1536);
    let jwt_realm = TokenRealm::start_issuing(3600, USERNAME, PASSWORD, token_bytes);
    let server = Pullpassd::start_with(Options {
        args: vec![
            "--rate-limit".into(),
            "0".into(),
            "--insecure-registry".into(),
            realm.address.clone(),
            "--insecure-registry".into(),
            jwt_realm.address.clone(),
        ],
        ..Default::default()
    })
    .expect("pullpassd starts");
    // The drivers run on one thread, leaving the other core to pullpassd.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = runtime.block_on(setup(&server, &realm));
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!("pullpass broker bench ({cpus} CPUs; token realm fixture on loopback)");
    println!();

    if only != "cached" {
        cold_and_uncached(&runtime, &server, &realm, &client, burst, uncached);
    }

    println!(
        "3. cached IssueRegistryAuth vs the same server's health Check ({requests} calls each; default settings: info logs to a file, audit on, metrics on)"
    );
    let image = format!("{}/acme/cached:1", realm.address);
    println!("   the realm's tokens: `tok-N`, a few bytes");
    print_header();
    health_vs_cached_lease(&runtime, &server, &client, &realm, &image, requests);
    runtime.block_on(add_credential(&client, "jwt-sized", &jwt_realm));
    println!("   the realm's tokens: {token_bytes} bytes, a registry JWT's size (BENCH_TOKEN_BYTES)");
    health_vs_cached_lease(
        &runtime,
        &server,
        &client,
        &jwt_realm,
        &format!("{}/acme/cached:1", jwt_realm.address),
        requests,
    );
    let (health, leases) = runtime.block_on(ours(&server, &image, requests));
    print_row("our tonic driver, 16 concurrent: health Check", &health);
    print_row("our tonic driver, 16 concurrent: IssueRegistryAuth", &leases);
    println!("   {:.2}x the health RPS", leases.per_second / health.per_second);
    let dropped = server.current_logs().matches("lease event was dropped").count();
    println!();
    println!("audit events dropped under this load: {dropped}");
    drop(server);
    if only != "cached" {
        println!();
        metrics_on_and_off(&runtime, &realm, requests);
        println!();
        unauthenticated_flood(&runtime, &realm, requests);
        println!();
        large_workspace_under_change(&runtime, &realm, requests);
        println!();
        identity_callers(&runtime, &realm, requests);
    }
}

/// Section 7: a workload-identity JWT as the caller.
fn identity_callers(runtime: &tokio::runtime::Runtime, realm: &TokenRealm, requests: usize) {
    use pullpass::v1::registry_auth_service_client::RegistryAuthServiceClient;
    let new_tokens = env_count("BENCH_NEW_TOKENS", 300);
    println!(
        "7. workload identity: cached IssueRegistryAuth with a JWT caller vs a pp_ LAUNCHER ({requests} calls each; default settings)"
    );
    let Some(h2load) = which_h2load() else {
        println!("   h2load not found: run `scripts/bench.sh broker`, which installs nghttp2-client");
        return;
    };
    let issuer = pullpass_tests::identity::IdentityIssuer::start_kubernetes();
    let server = unlimited_server(realm);
    let client = runtime.block_on(setup(&server, realm));
    let launcher = runtime
        .block_on(client.create_access_token("acme", pullpass::v1::Role::Launcher, &[], None, "bench"))
        .expect("a launcher token")
        .token;
    runtime.block_on(async {
        pullpass_tests::identity::create_provider(&client, "k8s", &issuer).await;
        pullpass_tests::identity::bind(&client, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &[])
            .await
            .expect("binding");
    });
    let jwt = issuer.mint_kubernetes("ci", "bench", "pullpass");
    let image = format!("{}/acme/cached:1", realm.address);
    let expected = runtime.block_on(warm_cache(&client, &image));
    let body = grpc_frame(&lease_request(&image));
    let call = Call { path: LEASE_PATH, body: &body, response_bytes: expected };
    let with_token = H2load { program: &h2load, address: &server.address, token: &launcher, pid: server.pid() };
    let with_jwt = H2load { program: &h2load, address: &server.address, token: &jwt, pid: server.pid() };
    with_token.run(&call, requests / 10);
    with_jwt.run(&call, requests / 10);
    let (mut tokens, mut jwts) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        tokens.push(with_token.run(&call, requests / ROUNDS));
        jwts.push(with_jwt.run(&call, requests / ROUNDS));
    }
    let ratio = Round::median_ratio(&jwts, &tokens);
    let ((tokens, token_cpu), (jwts, jwt_cpu)) = (Round::combine(tokens), Round::combine(jwts));
    print_header();
    print_row(&format!("h2load: cached lease, pp_ LAUNCHER token ({ROUNDS} rounds)"), &tokens);
    print_row(&format!("h2load: cached lease, Kubernetes JWT ({ROUNDS} rounds)"), &jwts);
    println!(
        "   {ratio:.2}x the pp_ token's RPS (median of paired rounds; target at least 0.95x); pullpassd CPU per call: token {:.1} us, JWT {:.1} us",
        token_cpu.as_secs_f64() * 1e6,
        jwt_cpu.as_secs_f64() * 1e6
    );

    // The same through the SDK, whose h2 lets HPACK index the header:
    // what is left is the JWT path itself.
    let (mut tokens, mut jwts) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        tokens.push(runtime.block_on(cached_leases_as(&server, &image, requests / ROUNDS / 4, &launcher)));
        jwts.push(runtime.block_on(cached_leases_as(&server, &image, requests / ROUNDS / 4, &jwt)));
    }
    let mut ratios: Vec<f64> = jwts.iter().zip(&tokens).map(|(j, t)| j.per_second / t.per_second).collect();
    ratios.sort_by(f64::total_cmp);
    let median = |figures: &[Figures]| {
        let mut rates: Vec<f64> = figures.iter().map(|f| f.per_second).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    println!(
        "   SDK (tonic; 4 connections, 16 in flight; {ROUNDS} rounds): pp_ token {:.0}/s, JWT {:.0}/s (medians): {:.2}x (median of paired rounds)",
        median(&tokens),
        median(&jwts),
        ratios[ratios.len() / 2]
    );

    // First calls with new tokens: each one's signature is checked.
    let minted: Vec<String> =
        (0..new_tokens).map(|i| issuer.mint_kubernetes("ci", &format!("bench-{i}"), "pullpass")).collect();
    let latencies = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.endpoint()).unwrap().connect().await.unwrap();
        let mut grpc = RegistryAuthServiceClient::new(channel);
        let mut latencies = Vec::with_capacity(minted.len());
        for jwt in &minted {
            let mut request = tonic::Request::new(lease_request(&image));
            request.metadata_mut().insert("authorization", format!("Bearer {jwt}").parse().unwrap());
            let started = Instant::now();
            let answer = grpc.issue_registry_auth(request).await.expect("a first call with a new token");
            latencies.push(started.elapsed());
            assert_eq!(answer.into_inner().auths[0].status.as_ref().map(|s| s.code), Some(0));
        }
        latencies
    });
    let first = figures(latencies, Duration::from_secs(1));
    println!(
        "   the first call with a new token ({new_tokens}, one at a time): p50 {:.3} ms, p99 {:.3} ms",
        first.p50.as_secs_f64() * 1e3,
        first.p99.as_secs_f64() * 1e3
    );

    // A rotation: the issuer signs with a new key; pullpass refetches the
    // key set on the unknown kid, at most once per 30 s per provider.
    let rotated_at = Instant::now();
    issuer.rotate(false);
    let rotated = issuer.mint_kubernetes("ci", "rotated", "pullpass");
    let accepted = runtime.block_on(async {
        let client = server.client_with(Some(&rotated)).await;
        loop {
            if let Ok(answer) =
                client.registry_auth_service().issue_registry_auth(lease_request(&image)).await.map(|r| r.into_inner())
                && answer.auths[0].status.as_ref().is_some_and(|s| s.code == 0)
            {
                break rotated_at.elapsed();
            }
            assert!(rotated_at.elapsed() < Duration::from_secs(120), "a rotated key never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!(
        "   a key rotation: a token signed by the new key was accepted {:.1} s after the rotation (the key set is refetched on an unknown kid at most once per 30 s)",
        accepted.as_secs_f64()
    );
}

/// Section 6: cached leases in a workspace of many credentials, with and
/// without a client creating credentials in it all the while.
fn large_workspace_under_change(runtime: &tokio::runtime::Runtime, realm: &TokenRealm, requests: usize) {
    let size = env_count("BENCH_WORKSPACE_CREDENTIALS", 20_000);
    let per_second = env_count("BENCH_WRITES_PER_SECOND", 50);
    println!(
        "6. a workspace of {size} credentials: cached IssueRegistryAuth ({requests} calls each; default settings), with and without a client creating {per_second} credentials a second in it"
    );
    let Some(h2load) = which_h2load() else {
        println!("   h2load not found: run `scripts/bench.sh broker`, which installs nghttp2-client");
        return;
    };
    let server = unlimited_server(realm);
    let client = runtime.block_on(setup(&server, realm));
    let started = Instant::now();
    runtime.block_on(fill_workspace(&client, size));
    println!("   {size} credentials imported in {:.1} s", started.elapsed().as_secs_f64());
    let image = format!("{}/acme/cached:1", realm.address);
    let expected = runtime.block_on(warm_cache(&client, &image));
    let body = grpc_frame(&lease_request(&image));
    let call = Call { path: LEASE_PATH, body: &body, response_bytes: expected };
    let load = H2load { program: &h2load, address: &server.address, token: &server.root_token, pid: server.pid() };
    load.run(&call, requests / 10);
    let (mut quiet, mut changing, mut written, mut writing) = (Vec::new(), Vec::new(), 0, Duration::ZERO);
    for round in 0..ROUNDS {
        quiet.push(load.run(&call, requests / ROUNDS));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (leases, (created, took)) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| create_steadily(&server, per_second, round, &stop));
            let leases = load.run(&call, requests / ROUNDS);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (leases, writer.join().unwrap())
        });
        written += created;
        writing += took;
        changing.push(leases);
    }
    let ratio = Round::median_ratio(&changing, &quiet);
    let writes_per_second = written as f64 / writing.as_secs_f64();
    let ((quiet, _), (changing, _)) = (Round::combine(quiet), Round::combine(changing));
    print_header();
    print_row(&format!("h2load: cached leases, no writer ({ROUNDS} rounds)"), &quiet);
    print_row(&format!("h2load: cached leases, {writes_per_second:.0} creates/s beside ({ROUNDS} rounds)"), &changing);
    println!("   {ratio:.2}x the leases/s without the writer (median of paired rounds; target at least 0.70x)");
}

/// Imports `size` credentials (registries `rN.bench.example`) into
/// workspace acme, a few thousand per `ImportDockerConfig`.
async fn fill_workspace(client: &pullpass_client::Client, size: usize) {
    let auth = base64::engine::general_purpose::STANDARD.encode("bench:bench-pw");
    for batch in (0..size).collect::<Vec<_>>().chunks(5000) {
        let auths: serde_json::Map<String, serde_json::Value> =
            batch.iter().map(|i| (format!("r{i}.bench.example"), serde_json::json!({ "auth": auth }))).collect();
        let config = serde_json::json!({ "auths": auths }).to_string();
        let imported = client.import_docker_config("acme", config, "", false).await.expect("import");
        assert_eq!(imported.created_count as usize, batch.len(), "every entry imported");
    }
}

/// Creates credentials in workspace acme at `per_second` until `stop`;
/// how many, in how long.
fn create_steadily(
    server: &Pullpassd,
    per_second: usize,
    round: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = server.client().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1) as u32);
        let (mut created, started) = (0, Instant::now());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            let credential = Credential {
                provider: Provider::Generic as i32,
                registry_server: format!("w{round}-{created}.writer.example"),
                username: USERNAME.into(),
                secret: PASSWORD.into(),
                ..Default::default()
            };
            client.create_credential("acme", &format!("w{round}-{created}"), credential).await.expect("create");
            created += 1;
        }
        (created, started.elapsed())
    })
}

/// Section 3's h2load rounds: the health check and a cached lease of
/// `image` (from `realm`), alternating.
fn health_vs_cached_lease(
    runtime: &tokio::runtime::Runtime,
    server: &Pullpassd,
    client: &pullpass_client::Client,
    realm: &TokenRealm,
    image: &str,
    requests: usize,
) {
    let expected_lease_bytes = runtime.block_on(warm_cache(client, image));
    let lease_body = grpc_frame(&IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![image.to_owned()],
        ..Default::default()
    });
    let health_body = grpc_frame(&tonic_health::pb::HealthCheckRequest::default());
    let expected_health_bytes = 5 + tonic_health::pb::HealthCheckResponse { status: 1 }.encoded_len();
    let Some(h2load) = which_h2load() else {
        println!("   h2load not found: run `scripts/bench.sh broker`, which installs nghttp2-client");
        return;
    };
    let tokens_before = realm.token_requests();
    let load = H2load { program: &h2load, address: &server.address, token: &server.root_token, pid: server.pid() };
    let health_call = Call { path: HEALTH_PATH, body: &health_body, response_bytes: expected_health_bytes };
    let lease_call = Call { path: LEASE_PATH, body: &lease_body, response_bytes: expected_lease_bytes };
    let (health_rounds, lease_rounds) = load.alternate(&health_call, &lease_call, requests);
    let median = Round::median_ratio(&lease_rounds, &health_rounds);
    let ((health, health_cpu), (leases, lease_cpu)) = (Round::combine(health_rounds), Round::combine(lease_rounds));
    print_row(&format!("h2load: health Check ({ROUNDS} rounds)"), &health);
    print_row(&format!("h2load: IssueRegistryAuth, cached ({ROUNDS} rounds)"), &leases);
    println!(
        "   {:.2}x the health RPS over all rounds, {median:.2}x the median of paired rounds (target >= 0.8x); response {expected_lease_bytes} bytes; token requests during the run: {}",
        leases.per_second / health.per_second,
        realm.token_requests() - tokens_before
    );
    println!(
        "   pullpassd CPU per call: health {:.1} us, cached lease {:.1} us",
        health_cpu.as_secs_f64() * 1e6,
        lease_cpu.as_secs_f64() * 1e6
    );
    // An idle server's latency: a gathered write must not cost it.
    let serial = (requests / 50).max(1000);
    print_row(
        &format!("h2load, one call at a time: health Check ({serial})"),
        &load.serial(&health_call, serial).figures(),
    );
    print_row(
        &format!("h2load, one call at a time: IssueRegistryAuth ({serial})"),
        &load.serial(&lease_call, serial).figures(),
    );
}

/// Section 5: a flood of refused calls, alone and beside valid ones.
fn unauthenticated_flood(runtime: &tokio::runtime::Runtime, realm: &TokenRealm, requests: usize) {
    println!(
        "5. a flood of calls with a well-formed unknown token ({requests} calls each; default settings: info logs to a file, audit on, metrics on)"
    );
    let Some(h2load) = which_h2load() else {
        println!("   h2load not found: run `scripts/bench.sh broker`, which installs nghttp2-client");
        return;
    };
    // The per-token rate limit off, as in section 3: one token drives the
    // leases here.
    let server = unlimited_server(realm);
    let client = runtime.block_on(setup(&server, realm));
    let image = format!("{}/acme/cached:1", realm.address);
    runtime.block_on(warm_cache(&client, &image));
    let unknown = format!("pp_{}", "Z".repeat(43));
    let flood = H2load { program: &h2load, address: &server.address, token: &unknown, pid: server.pid() };
    let health_body = grpc_frame(&tonic_health::pb::HealthCheckRequest::default());
    let expected_health_bytes = 5 + tonic_health::pb::HealthCheckResponse { status: 1 }.encoded_len();
    let health = Call { path: HEALTH_PATH, body: &health_body, response_bytes: expected_health_bytes };
    let list_body = grpc_frame(&pullpass::v1::ListWorkspacesRequest::default());
    // Refused calls end in trailers only: no DATA.
    let refused = refused_call(&list_body);
    let (health_rounds, refused_rounds) = flood.alternate(&health, &refused, requests);
    let ((health, health_cpu), (refusals, refusal_cpu)) =
        (Round::combine(health_rounds), Round::combine(refused_rounds));
    print_header();
    print_row(&format!("h2load: health Check ({ROUNDS} rounds)"), &health);
    print_row(&format!("h2load: refused, unknown token ({ROUNDS} rounds)"), &refusals);
    println!(
        "   {:.2}x the health RPS; pullpassd CPU per call: health {:.1} us, refusal {:.1} us",
        refusals.per_second / health.per_second,
        health_cpu.as_secs_f64() * 1e6,
        refusal_cpu.as_secs_f64() * 1e6
    );
    let alone = runtime.block_on(cached_leases(&server, &image, requests));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let flooding = std::thread::scope(|scope| {
        let background = scope.spawn(|| {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                flood.run(&refused_call(&list_body), 2000);
                refused += 2000;
            }
            refused
        });
        let started = Instant::now();
        let figures = runtime.block_on(cached_leases(&server, &image, requests));
        let elapsed = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let refused = background.join().unwrap();
        (figures, refused, elapsed)
    });
    let (during, refused, elapsed) = flooding;
    print_row("our tonic driver, 16 concurrent: cached leases alone", &alone);
    print_row("the same, beside the h2load flood", &during);
    println!(
        "   during the flood: {:.0} refusals/s beside {:.0} leases/s ({:.2}x the leases alone); refusal log lines: {}",
        refused as f64 / elapsed.as_secs_f64(),
        during.per_second,
        during.per_second / alone.per_second,
        server.current_logs().lines().filter(|l| l.contains("Unauthenticated")).count()
    );
}

/// A server at default settings but `--rate-limit 0` (one token drives
/// the load), for the registry behind `realm`.
fn unlimited_server(realm: &TokenRealm) -> Pullpassd {
    Pullpassd::start_with(Options {
        args: vec!["--rate-limit".into(), "0".into(), "--insecure-registry".into(), realm.address.clone()],
        ..Default::default()
    })
    .expect("pullpassd starts")
}

fn refused_call(body: &[u8]) -> Call<'_> {
    Call { path: "/pullpass.v1.AccessService/ListWorkspaces", body, response_bytes: 0 }
}

async fn cached_leases(server: &Pullpassd, image: &str, calls: usize) -> Figures {
    cached_leases_as(server, image, calls, &server.root_token).await
}

/// Cached leases over 4 SDK connections, 16 calls in flight, asked with
/// `token` (a `pp_` token or a JWT). The SDK's h2 indexes the
/// `authorization` header in HPACK, so a long token crosses the
/// connection once, not on every call.
async fn cached_leases_as(server: &Pullpassd, image: &str, calls: usize, token: &str) -> Figures {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.client_with(Some(token)).await);
    }
    measure(16, calls, |c, _| {
        let client = &clients[c % 4];
        async move {
            let response = issue(client, image).await;
            assert!(response.auths[0].cached);
        }
    })
    .await
}

/// Sections 1 and 2: cold bursts, and an uncached lease next to a direct
/// token request.
fn cold_and_uncached(
    runtime: &tokio::runtime::Runtime,
    server: &Pullpassd,
    realm: &TokenRealm,
    client: &pullpass_client::Client,
    burst: usize,
    uncached: usize,
) {
    println!("1. cold bursts: {burst} concurrent identical IssueRegistryAuth calls each, nothing cached");
    for (what, repository) in
        [("first contact with the registry", "acme/first"), ("a new repository on a known registry", "acme/burst")]
    {
        let cold = runtime.block_on(cold_burst(server, realm, repository, burst));
        println!(
            "   {what:<38} wall {:>6.1} ms; {} leases; upstream: {} token request(s), {} challenge (GET /v2/)",
            cold.wall.as_secs_f64() * 1e3,
            cold.leases,
            cold.token_requests,
            cold.other_requests
        );
    }
    println!();

    let (lease, direct) = runtime.block_on(uncached_vs_direct(client, realm, uncached));
    println!("2. uncached lease vs a direct token request to the same realm ({uncached} each, interleaved)");
    print_header();
    print_row("direct token request (HTTP/1.1 keep-alive)", &direct);
    print_row("IssueRegistryAuth, cache miss (gRPC + token request)", &lease);
    let allowed = direct.p50.mul_f64(1.1) + Duration::from_micros(500);
    println!(
        "   p50 {:.3} ms vs target <= 1.1 x {:.3} + 0.5 = {:.3} ms: {}",
        lease.p50.as_secs_f64() * 1e3,
        direct.p50.as_secs_f64() * 1e3,
        allowed.as_secs_f64() * 1e3,
        if lease.p50 <= allowed { "met" } else { "NOT met" }
    );
    println!();
}

/// Section 4: the cost of metrics on the cached lease.
fn metrics_on_and_off(runtime: &tokio::runtime::Runtime, realm: &TokenRealm, requests: usize) {
    println!(
        "4. cached IssueRegistryAuth with metrics on vs --metrics-listen off ({requests} calls each; default settings: info logs to a file, audit on)"
    );
    let Some(h2load) = which_h2load() else {
        println!("   h2load not found: run `scripts/bench.sh broker`, which installs nghttp2-client");
        return;
    };
    let start = |metrics: &str| {
        Pullpassd::start_with(Options {
            args: vec![
                "--rate-limit".into(),
                "0".into(),
                "--insecure-registry".into(),
                realm.address.clone(),
                "--metrics-listen".into(),
                metrics.into(),
            ],
            ..Default::default()
        })
        .expect("pullpassd starts")
    };
    let (on, off) = (start("127.0.0.1:0"), start("off"));
    assert!(!on.metrics.is_empty() && off.metrics.is_empty());
    let image = format!("{}/acme/metered:1", realm.address);
    let body = grpc_frame(&lease_request(&image));
    let mut rounds = Vec::new();
    for server in [&on, &off] {
        let client = runtime.block_on(setup(server, realm));
        let expected = runtime.block_on(warm_cache(&client, &image));
        let load = H2load { program: &h2load, address: &server.address, token: &server.root_token, pid: server.pid() };
        rounds.push((load, expected));
    }
    let calls: Vec<Call> =
        rounds.iter().map(|(_, bytes)| Call { path: LEASE_PATH, body: &body, response_bytes: *bytes }).collect();
    for ((load, _), call) in rounds.iter().zip(&calls) {
        load.run(call, requests / 10);
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        with.push(rounds[0].0.run(&calls[0], requests / ROUNDS));
        without.push(rounds[1].0.run(&calls[1], requests / ROUNDS));
    }
    let ((with, with_cpu), (without, without_cpu)) = (Round::combine(with), Round::combine(without));
    print_header();
    print_row("h2load: cached lease, metrics off", &without);
    print_row("h2load: cached lease, metrics on (recorded, served)", &with);
    println!(
        "   metrics on: {:.3}x the RPS with metrics off (target >= 0.95x); CPU per call {:.1} us vs {:.1} us",
        with.per_second / without.per_second,
        with_cpu.as_secs_f64() * 1e6,
        without_cpu.as_secs_f64() * 1e6
    );
    let (_, text) = pullpass_tests::registry::http_request(&on.metrics, "GET", "/metrics", None);
    let counted = text
        .lines()
        .filter(|l| l.starts_with("pullpass_leases_issued_total{") && l.contains("cache=\"hit\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();
    println!("   the metered server counted {counted} cached leases");
}

/// The workspace and a credential for the realm.
async fn setup(server: &Pullpassd, realm: &TokenRealm) -> pullpass_client::Client {
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    add_credential(&client, "fixture", realm).await;
    client
}

/// A credential `id` in workspace acme for the registry at `realm`.
async fn add_credential(client: &pullpass_client::Client, id: &str, realm: &TokenRealm) {
    client
        .create_credential(
            "acme",
            id,
            Credential {
                provider: Provider::Generic as i32,
                registry_server: realm.address.clone(),
                username: USERNAME.into(),
                secret: PASSWORD.into(),
                ..Default::default()
            },
        )
        .await
        .expect("create credential");
}

fn lease_request(image: &str) -> IssueRegistryAuthRequest {
    IssueRegistryAuthRequest { workspace: "workspaces/acme".into(), images: vec![image.into()], ..Default::default() }
}

/// One call; panics unless it returns a lease.
async fn issue(client: &pullpass_client::Client, image: &str) -> pullpass::v1::IssueRegistryAuthResponse {
    let response =
        client.registry_auth_service().issue_registry_auth(lease_request(image)).await.expect("RPC").into_inner();
    if let Some(status) = response.auths[0].status.as_ref().filter(|s| s.code != 0) {
        panic!("no lease for {image}: {}", status.message);
    }
    response
}

struct Cold {
    wall: Duration,
    leases: usize,
    token_requests: u64,
    other_requests: u64,
}

async fn cold_burst(server: &Pullpassd, realm: &TokenRealm, repository: &str, burst: usize) -> Cold {
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(server.client().await);
    }
    let image = format!("{}/{repository}:1", realm.address);
    let (tokens, all) = (realm.token_requests(), realm.requests());
    let started = Instant::now();
    let calls = (0..burst).map(|i| {
        let mut service = connections[i % connections.len()].registry_auth_service();
        let request = lease_request(&image);
        async move { service.issue_registry_auth(request).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let wall = started.elapsed();
    let leases = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.get_ref().auths[0].status.as_ref().is_none_or(|s| s.code == 0)))
        .count();
    let token_requests = realm.token_requests() - tokens;
    Cold { wall, leases, token_requests, other_requests: realm.requests() - all - token_requests }
}

/// Alternates a cache-missing lease (a new repository each time) with the
/// same token request sent straight to the realm.
async fn uncached_vs_direct(client: &pullpass_client::Client, realm: &TokenRealm, calls: usize) -> (Figures, Figures) {
    let mut direct = DirectClient::connect(&realm.address);
    issue(client, &format!("{}/acme/warm:1", realm.address)).await;
    direct.token("acme/warm");
    let (mut lease_times, mut direct_times) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    let (mut lease_total, mut direct_total) = (Duration::ZERO, Duration::ZERO);
    let tokens_before = realm.token_requests();
    for i in 0..calls {
        let t = Instant::now();
        direct.token(&format!("acme/direct{i}"));
        direct_times.push(t.elapsed());
        direct_total += t.elapsed();
        let t = Instant::now();
        let response = issue(client, &format!("{}/acme/lease{i}:1", realm.address)).await;
        lease_times.push(t.elapsed());
        lease_total += t.elapsed();
        assert!(!response.auths[0].cached, "a new repository must miss the cache");
    }
    assert_eq!(realm.token_requests() - tokens_before, 2 * calls as u64, "one token request per call");
    (figures(lease_times, lease_total), figures(direct_times, direct_total))
}

/// A keep-alive HTTP/1.1 client for the realm's token endpoint.
struct DirectClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
    authorization: String,
}

impl DirectClient {
    fn connect(address: &str) -> Self {
        let stream = TcpStream::connect(address).expect("connect to the realm");
        stream.set_nodelay(true).unwrap();
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{PASSWORD}"));
        Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            host: address.to_owned(),
            authorization: format!("Basic {credentials}"),
        }
    }

    /// A token for pulling `repository`; panics unless the realm answers 200.
    fn token(&mut self, repository: &str) -> Vec<u8> {
        let request = format!(
            "GET /token?service=fixture&scope=repository:{repository}:pull HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
            self.host, self.authorization
        );
        self.writer.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "token request: {status}");
        let mut length = 0;
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        body
    }
}

/// Puts the lease in the server's cache; returns the size of the framed
/// response a cached call gets.
async fn warm_cache(client: &pullpass_client::Client, image: &str) -> usize {
    issue(client, image).await;
    let cached = issue(client, image).await;
    assert!(cached.auths[0].cached);
    5 + cached.encoded_len()
}

/// Our own driver: 16 concurrent sequences over 4 connections.
async fn ours(server: &Pullpassd, image: &str, calls: usize) -> (Figures, Figures) {
    let mut health = Vec::new();
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::from_shared(server.endpoint()).unwrap().connect().await.unwrap();
        health.push(tonic_health::pb::health_client::HealthClient::new(channel));
    }
    let health = measure(16, calls, |c, _| {
        let mut health = health[c % 4].clone();
        async move {
            health.check(tonic_health::pb::HealthCheckRequest::default()).await.expect("health");
        }
    })
    .await;
    (health, cached_leases(server, image, calls).await)
}

fn print_header() {
    println!("   {:<56} {:>10} {:>9} {:>9}", "configuration", "calls/s", "p50 ms", "p99 ms");
}

fn print_row(name: &str, figures: &Figures) {
    println!(
        "   {name:<56} {:>10.0} {:>9.3} {:>9.3}",
        figures.per_second,
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3
    );
}
