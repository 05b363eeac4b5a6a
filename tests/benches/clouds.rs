//! Keyless cloud credentials, against the real `pullpassd` binary at default
//! settings (info logs to a file, audit on; `--rate-limit 0`, as in the
//! broker bench, since one token drives every call) and the cloud peers of
//! `tests/cloud_federation.rs` on loopback (moto behind a recording proxy,
//! the Entra, Google and Quay fixtures, the docker-registry front):
//!
//! 1. a cold lease per provider: a credential's first lease (every
//!    intermediate token fetched), and a further repository of a warm
//!    credential (only the scoped call): upstream round trips, as the
//!    peers recorded them, and latency p50;
//! 2. the cached lease of each, next to a GENERIC credential's;
//! 3. a 200-way cold burst over 10 repositories per provider: how many
//!    STS, Entra, exchange and token calls it cost (the target is one per
//!    repository).
//!
//! The peers are Python fixtures, so absolute cold figures include their
//! answer time (a few ms each); the round trips are the figure to compare
//! with a real cloud's latency.
//!
//! Run: `scripts/bench.sh clouds` (installs the peers, builds release
//! binaries). Environment: `BENCH_COLD` (credentials per cold figure,
//! default 20), `BENCH_CACHED` (cached calls, default 2000), `BENCH_BURST`
//! (callers of the burst, default 200).

use std::time::{Duration, Instant};

use pullpass::v1::{Credential, IssueRegistryAuthRequest, Provider};
use pullpass_tests::bench::{env_count, percentile};
use pullpass_tests::clouds::{self, CLIENT_SECRET, CloudWorld, ECR_REGISTRY, ROLE_ARN, SERVICE_ACCOUNT};

fn main() {
    let cold = env_count("BENCH_COLD", 20);
    let cached = env_count("BENCH_CACHED", 2000);
    let burst = env_count("BENCH_BURST", 200);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(cold, cached, burst));
}

/// One provider's credential, and where its images live.
struct Kind {
    label: &'static str,
    credential: fn(&CloudWorld) -> Credential,
    registry: fn(&CloudWorld) -> String,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            label: "ECR role, pullpass's token (AssumeRoleWithWebIdentity)",
            credential: |_| clouds::ecr_role(ROLE_ARN, true, ""),
            registry: |_| ECR_REGISTRY.into(),
        },
        Kind {
            label: "ECR role, pullpass's own identity (AssumeRole)",
            credential: |_| clouds::ecr_role(ROLE_ARN, false, ""),
            registry: |_| ECR_REGISTRY.into(),
        },
        Kind {
            label: "ACR, federated app (Entra assertion)",
            credential: |w| clouds::acr("", &w.clouds.front.address),
            registry: |w| w.clouds.front.address.clone(),
        },
        Kind {
            label: "ACR, client secret",
            credential: |w| clouds::acr(CLIENT_SECRET, &w.clouds.front.address),
            registry: |w| w.clouds.front.address.clone(),
        },
        Kind {
            label: "Google federation (STS + generateAccessToken)",
            credential: |w| clouds::google_federation(&w.registry.address, SERVICE_ACCOUNT, Some(w.issuer.peer.url())),
            registry: |w| w.registry.address.clone(),
        },
        Kind {
            label: "Quay robot federation",
            credential: |w| clouds::quay_robot(&w.clouds.front.address),
            registry: |w| w.clouds.front.address.clone(),
        },
    ]
}

/// Every request pullpass sent the peers so far (see [`tally`]).
fn round_trips(world: &CloudWorld) -> usize {
    tally(world).values().sum()
}

async fn issue(world: &CloudWorld, image: &str) -> Duration {
    let request = IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![image.into()],
        ..Default::default()
    };
    let started = Instant::now();
    let auths = world.client.registry_auth_service().issue_registry_auth(request).await.expect("IssueRegistryAuth");
    let elapsed = started.elapsed();
    let status = auths.into_inner().auths.remove(0).status.unwrap_or_default();
    assert_eq!(status.code, 0, "{image}: {}", status.message);
    elapsed
}

/// Calls the peers answered so far, by kind (the STS or ECR action, the
/// fixture endpoint, and the registry token issuer's requests).
fn tally(world: &CloudWorld) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for entry in world.clouds.recorded() {
        let name = entry["action"].as_str().or(entry["endpoint"].as_str()).unwrap_or("other").to_owned();
        *counts.entry(name).or_default() += 1;
    }
    // The registry front asks the token issuer once per ACR scoped token
    // and per token request it passes on: those requests are the front's,
    // not pullpass's.
    let fronts = counts.get("acr_token").copied().unwrap_or(0) + counts.get("front_token_get").copied().unwrap_or(0);
    let tokens = (world.issuer.peer.count("token_requests") as usize).saturating_sub(fronts);
    counts.insert("registry token".into(), tokens);
    counts
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(cold: usize, cached: usize, burst: usize) {
    // Default settings but `--rate-limit 0`, as the broker bench: one
    // token drives every call.
    let world = CloudWorld::start_with(
        &[("AWS_ACCESS_KEY_ID", "AKIABENCHOWNIDENTITY"), ("AWS_SECRET_ACCESS_KEY", "bench-own-identity-secret")],
        &["--rate-limit", "0", "--aws-own-identity-role", "arn:aws:iam::123456789012:role/*"],
    )
    .await;
    world.clouds.trust_every_credential();
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!(
        "pullpass keyless cloud credentials bench ({cpus} CPUs; peers on loopback: moto, fixtures, docker-registry)"
    );
    println!("pullpassd at default settings (but --rate-limit 0): info logs to a file, audit on");
    println!();
    println!("1. cold leases: a credential's first lease, and a further repository of a warm credential ({cold} each)");
    let mut serial = 0;
    for kind in kinds() {
        let registry = (kind.registry)(&world);
        let (mut first, mut further) = (Vec::new(), Vec::new());
        let (mut first_trips, mut further_trips) = (0, 0);
        for _ in 0..cold {
            serial += 1;
            let id = format!("c{serial}");
            world.add(&id, (kind.credential)(&world)).await;
            let before = round_trips(&world);
            first.push(issue(&world, &format!("{registry}/team/a{serial}:1.0")).await);
            let middle = round_trips(&world);
            further.push(issue(&world, &format!("{registry}/team/b{serial}:1.0")).await);
            first_trips += middle - before;
            further_trips += round_trips(&world) - middle;
            world.client.delete_credential("acme", &id).await.expect("delete");
        }
        first.sort();
        further.sort();
        println!("   {}", kind.label);
        println!(
            "     first lease:       {:.1} upstream round trips, p50 {}, p99 {}",
            first_trips as f64 / cold as f64,
            ms(percentile(&first, 0.5)),
            ms(percentile(&first, 0.99))
        );
        println!(
            "     another repository: {:.1} upstream round trips, p50 {}, p99 {}",
            further_trips as f64 / cold as f64,
            ms(percentile(&further, 0.5)),
            ms(percentile(&further, 0.99))
        );
    }
    println!();

    println!("2. cached leases: {cached} sequential calls for one image, p50 (p99)");
    let generic = Credential {
        provider: Provider::Generic as i32,
        registry_server: world.registry.address.clone(),
        username: "alice".into(),
        secret: pullpass_tests::registry::world::ALICE_PASSWORD.into(),
        token_realm_allowlist: vec![world.issuer.peer.url()],
        ..Default::default()
    };
    let mut rows = vec![("GENERIC (a stored password)", generic, world.registry.address.clone())];
    for kind in kinds() {
        rows.push((kind.label, (kind.credential)(&world), (kind.registry)(&world)));
    }
    for (label, credential, registry) in rows {
        serial += 1;
        let id = format!("c{serial}");
        world.add(&id, credential).await;
        let image = format!("{registry}/team/app:1.0");
        issue(&world, &image).await;
        let mut latencies = Vec::with_capacity(cached);
        for _ in 0..cached {
            latencies.push(issue(&world, &image).await);
        }
        latencies.sort();
        println!("   {label}: {} ({})", ms(percentile(&latencies, 0.5)), ms(percentile(&latencies, 0.99)));
        world.client.delete_credential("acme", &id).await.expect("delete");
    }
    println!();

    let repositories = 10;
    println!("3. a {burst}-way cold burst over {repositories} repositories, per provider: calls upstream");
    for kind in kinds() {
        serial += 1;
        let id = format!("c{serial}");
        world.add(&id, (kind.credential)(&world)).await;
        let registry = (kind.registry)(&world);
        let before = tally(&world);
        let started = Instant::now();
        let calls = (0..burst).map(|i| {
            let image = format!("{registry}/team/burst{serial}x{}:1.0", i % repositories);
            let world = &world;
            async move { issue(world, &image).await }
        });
        futures_util::future::join_all(calls).await;
        let elapsed = started.elapsed();
        let mut counts = tally(&world);
        for (name, count) in &before {
            if let Some(now) = counts.get_mut(name) {
                *now -= count;
            }
        }
        counts.retain(|_, count| *count > 0);
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("   {}: {} in {} ({} per repository at most)", kind.label, summary.join(", "), ms(elapsed), {
            counts.values().map(|v| v.div_ceil(repositories)).max().unwrap_or(0)
        });
        world.client.delete_credential("acme", &id).await.expect("delete");
    }
}
