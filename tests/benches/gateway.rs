//! Pull gateway figures, against the real `pullpassd` binary at default
//! settings (info logs to a file, audit on), the Debian docker-registry with
//! token auth and its token-issuer fixture, all on loopback:
//!
//! 1. blob throughput for a 256 MiB blob the registry serves itself (no
//!    redirect), through the gateway and straight from the registry, in
//!    alternating rounds, with a client that hashes what it receives (as
//!    every runtime does) and one that only counts the bytes;
//! 2. warm manifest GET latency by tag, through the gateway and direct;
//! 3. a cold pull of a new image by 50 runtimes at once, before pullpassd
//!    has contacted the registry (run first, printed third): what reached
//!    the registry and its token issuer, by kind;
//! 4. pullpassd's RSS while 8 blobs stream at once, for a 64 MiB and a
//!    256 MiB blob: it must not grow with the blob's size.
//!
//! Run: `scripts/bench.sh gateway` (installs the peers, builds release
//! binaries). Environment: `BENCH_BLOB_MIB` (default 256), `BENCH_ROUNDS`
//! (default 3), `BENCH_MANIFESTS` (default 2000), `BENCH_PULLERS` (50).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pullpass::v1::IssueRegistryAuthRequest;
use pullpass_tests::bench::{Figures, env_count, figures};
use pullpass_tests::gateway::{ALIAS, GatewayWorld, OCI_MANIFEST, basic, http_client, pull_like_a_runtime};
use pullpass_tests::process::{cpu_time, rss_kib};
use pullpass_tests::registry::seed_with_layer;
use pullpass_tests::registry::world::ok;

const MIB: u64 = 1024 * 1024;

fn main() {
    let blob_mib = env_count("BENCH_BLOB_MIB", 256) as u64;
    let rounds = env_count("BENCH_ROUNDS", 3);
    let manifests = env_count("BENCH_MANIFESTS", 2000);
    let pullers = env_count("BENCH_PULLERS", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(blob_mib, rounds, manifests, pullers));
}

async fn run(blob_mib: u64, rounds: usize, manifests: usize, pullers: usize) {
    let gw = Arc::new(GatewayWorld::start_with(&["--log-format", "text"]).await);
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!(
        "pullpass gateway bench ({cpus} CPUs; docker-registry {} with token auth on loopback)",
        registry_version()
    );
    println!("pullpassd at default settings: info logs to a file, audit on");
    println!();

    // First, while pullpassd has not yet contacted the registry.
    let cold = cold_pull(&gw, pullers).await;
    let started = Instant::now();
    seed_with_layer(&gw.world.registry, "team/medium:1.0", "seed", "seed-pw", Some(64 * MIB));
    seed_with_layer(&gw.world.registry, "team/big:1.0", "seed", "seed-pw", Some(blob_mib * MIB));
    println!("(seeded 64 MiB and {blob_mib} MiB layers in {:.1} s)", started.elapsed().as_secs_f64());
    let pid = gw.world.server.pid();
    let direct_token = ok(&gw.world.issue(&[&gw.world.registry.image("team/big:1.0")], &[]).await[0]).token.clone();
    let direct_auth = format!("Bearer {direct_token}");
    let auths = gw.leases(&["team/big:1.0", "team/medium:1.0"], None).await;
    let gateway_auth = basic("pullpass", &ok(&auths[0]).password);
    let big_layer = layer_of(&gw, "team/big", &gateway_auth).await;
    let medium_layer = layer_of(&gw, "team/medium", &gateway_auth).await;
    let direct_base = format!("http://{}/v2", gw.world.registry.address);
    let gateway_base = gw.url(&format!("/v2/{ALIAS}"));

    println!("1. one {blob_mib} MiB blob, served by the registry itself (no redirect); {rounds} alternating rounds");
    for verify in [true, false] {
        let (mut direct, mut through) = (Vec::new(), Vec::new());
        let mut gateway_cpu = Duration::ZERO;
        let (mut direct_busy, mut through_busy) = (0.0, 0.0);
        for _ in 0..rounds {
            let url = format!("{direct_base}/team/big/blobs/{big_layer}");
            let busy = busy_ticks();
            direct.push(transfer(&url, &direct_auth, &big_layer, verify).await);
            direct_busy += busy_ticks().since(&busy);
            let url = format!("{gateway_base}/team/big/blobs/{big_layer}");
            let cpu = cpu_time(pid);
            let busy = busy_ticks();
            through.push(transfer(&url, &gateway_auth, &big_layer, verify).await);
            through_busy += busy_ticks().since(&busy);
            gateway_cpu += cpu_time(pid).saturating_sub(cpu);
        }
        let (direct, through) = (median(direct), median(through));
        let client = if verify { "client hashing (as runtimes do)" } else { "client counting bytes only" };
        println!(
            "   {client:<34} direct {:>7.0} MiB/s, through the gateway {:>7.0} MiB/s: {:.2}x (target >= 0.8x): {}",
            direct,
            through,
            through / direct,
            if through / direct >= 0.8 { "met" } else { "NOT met" }
        );
        let per_mib = gateway_cpu.as_secs_f64() / (rounds as f64 * blob_mib as f64);
        println!(
            "   {:<34} pullpassd CPU {:.2} ms per MiB streamed (one core streams {:.0} MiB/s); machine busy {:.0}% direct, {:.0}% through the gateway",
            "",
            per_mib * 1e3,
            1.0 / per_mib,
            100.0 * direct_busy / rounds as f64,
            100.0 * through_busy / rounds as f64
        );
    }
    println!();

    println!("2. warm manifest GET by tag, {manifests} sequential requests each, alternating halves");
    let direct_url = format!("{direct_base}/team/big/manifests/1.0");
    let gateway_url = format!("{gateway_base}/team/big/manifests/1.0");
    let client = http_client();
    let mut sides = [
        (&direct_url, &direct_auth, Vec::new(), Duration::ZERO),
        (&gateway_url, &gateway_auth, Vec::new(), Duration::ZERO),
    ];
    for (url, auth, _, _) in &sides {
        get_manifest(&client, url, auth).await;
    }
    for _ in 0..2 {
        for (url, auth, latencies, elapsed) in sides.iter_mut() {
            let started = Instant::now();
            for _ in 0..manifests / 2 {
                let t = Instant::now();
                get_manifest(&client, url, auth).await;
                latencies.push(t.elapsed());
            }
            *elapsed += started.elapsed();
        }
    }
    let [(_, _, direct, direct_elapsed), (_, _, through, through_elapsed)] = sides;
    let count = direct.len();
    let (direct, through) = (figures(direct, direct_elapsed), figures(through, through_elapsed));
    print_latency("direct from the registry", &direct);
    print_latency("through the gateway (warm)", &through);
    println!(
        "   ({count} each: {:.2} s direct, {:.2} s through the gateway)",
        direct_elapsed.as_secs_f64(),
        through_elapsed.as_secs_f64()
    );
    let allowed = direct.p50 + Duration::from_millis(1);
    println!(
        "   gateway p50 {:.3} ms vs target <= direct + 1 ms = {:.3} ms: {}",
        ms(through.p50),
        ms(allowed),
        if through.p50 <= allowed { "met" } else { "NOT met" }
    );
    println!();

    println!("3. a cold pull of a new image by {pullers} runtimes at once (one gateway password, asked by a launcher)");
    println!("{cold}");
    println!();

    println!("4. pullpassd RSS while 8 clients stream a blob through the gateway at once");
    let idle = rss_kib(pid);
    for (size, layer, repository) in [(64, &medium_layer, "team/medium"), (blob_mib, &big_layer, "team/big")] {
        let (peak, mib_per_s) =
            streaming_rss(pid, &format!("{gateway_base}/{repository}/blobs/{layer}"), &gateway_auth).await;
        println!(
            "   {size:>4} MiB blob x 8: RSS {:.1} MiB before, peak {:.1} MiB while streaming ({:.0} MiB/s in all)",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            mib_per_s
        );
    }
    let dropped = gw.world.server.current_logs().matches("lease event was dropped").count();
    println!();
    println!("audit events dropped: {dropped}");
}

/// 50 runtimes pulling a new image at once, before pullpassd has contacted
/// the registry: what reached the registry and its issuer, by kind.
async fn cold_pull(gw: &Arc<GatewayWorld>, pullers: usize) -> String {
    pullpass_tests::registry::seed(&gw.world.registry, "team/cold:1.0", "seed", "seed-pw");
    let tokens_before = gw.world.token_requests();
    let served_before = gw.world.registry.served().len();
    let started = Instant::now();
    let cold = IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![gw.world.registry.image("team/cold:1.0")],
        via_gateway: true,
        ..Default::default()
    };
    let cold = gw.world.client.registry_auth_service().issue_registry_auth(cold).await.unwrap().into_inner().auths;
    let cold_auth = basic("pullpass", &ok(&cold[0]).password);
    let pulls: Vec<_> = (0..pullers)
        .map(|_| {
            let (gw, auth) = (Arc::clone(gw), cold_auth.clone());
            tokio::spawn(async move { pull_like_a_runtime(&gw, "team/cold", "1.0", &auth).await })
        })
        .collect();
    for pulled in pulls {
        pulled.await.expect("a pull");
    }
    let wall = started.elapsed();
    let served = gw.world.registry.served();
    let served = &served[served_before..];
    let kind =
        |method: &str, f: &dyn Fn(&str) -> bool| served.iter().filter(|s| s.method == method && f(&s.uri)).count();
    let blobs = kind("GET", &|u| u.contains("/blobs/"));
    format!(
        "   wall {:.0} ms (password included); upstream: {} token request(s), {} challenge (GET /v2/), {} manifest HEAD(s), {} manifest GET(s), {} blob GET(s) ({:.0} per runtime: its 2 blobs)",
        ms(wall),
        gw.world.token_requests() - tokens_before,
        kind("GET", &|u| u == "/v2/"),
        kind("HEAD", &|u| u.contains("/manifests/")),
        kind("GET", &|u| u.contains("/manifests/")),
        blobs,
        blobs as f64 / pullers as f64,
    )
}

fn registry_version() -> String {
    let output = std::process::Command::new("docker-registry").arg("--version").output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(2).unwrap_or("?").to_owned())
        .unwrap_or_default()
}

async fn layer_of(gw: &GatewayWorld, repository: &str, auth: &str) -> String {
    let manifest =
        get_manifest(&http_client(), &gw.url(&format!("/v2/{ALIAS}/{repository}/manifests/1.0")), auth).await;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    manifest["layers"][0]["digest"].as_str().unwrap().to_owned()
}

async fn get_manifest(client: &reqwest::Client, url: &str, auth: &str) -> bytes::Bytes {
    let response = client.get(url).header("authorization", auth).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.bytes().await.unwrap()
}

/// MiB/s of one GET of `url`, hashing (and checking) the bytes or not.
async fn transfer(url: &str, auth: &str, digest: &str, verify: bool) -> f64 {
    let started = Instant::now();
    let mut response = http_client().get(url).header("authorization", auth).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let mut hasher = verify.then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&chunk);
        }
    }
    let elapsed = started.elapsed();
    if let Some(hasher) = hasher {
        let hex: String = hasher.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(format!("sha256:{hex}"), digest);
    }
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Peak RSS (KiB) of `pid` while 8 clients GET `url` at once, and the
/// aggregate rate.
async fn streaming_rss(pid: u32, url: &str, auth: &str) -> (u64, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let streams: Vec<_> = (0..8)
        .map(|_| {
            let (url, auth) = (url.to_owned(), auth.to_owned());
            tokio::spawn(async move {
                let mut response = http_client().get(&url).header("authorization", &auth).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let mut bytes = 0u64;
                while let Some(chunk) = response.chunk().await.unwrap() {
                    bytes += chunk.len() as u64;
                }
                bytes
            })
        })
        .collect();
    let mut total = 0;
    for stream in streams {
        total += stream.await.unwrap();
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (peak.load(Ordering::Relaxed), total as f64 / MIB as f64 / elapsed.as_secs_f64())
}

/// The machine's busy and total CPU ticks (from `/proc/stat`).
struct Ticks {
    busy: u64,
    total: u64,
}

impl Ticks {
    /// The busy share of the ticks since `earlier`.
    fn since(&self, earlier: &Ticks) -> f64 {
        (self.busy - earlier.busy) as f64 / (self.total - earlier.total).max(1) as f64
    }
}

fn busy_ticks() -> Ticks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ticks { busy: total - idle, total }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print_latency(what: &str, figures: &Figures) {
    println!(
        "   {what:<28} p50 {:>7.3} ms, p99 {:>7.3} ms ({:.0}/s)",
        ms(figures.p50),
        ms(figures.p99),
        figures.per_second
    );
}
