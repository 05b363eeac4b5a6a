//! Replica figures, against the real `pullpassd` binary (release build), a
//! real PostgreSQL 15 with its default durability (fsync and synchronous
//! commit on), the real docker-registry and its token issuer, all on this
//! machine. Servers run at default settings (info logs to a file, audit
//! on) except `--rate-limit 0`, so the per-token limit does not cap the
//! load generator.
//!
//! 1. `CreateCredential` commits/s and p50/p99 on PostgreSQL vs SQLite, with
//!    1 and 16 concurrent clients;
//! 2. cached `IssueRegistryAuth` RPS with 1 and 2 replicas, driven by
//!    `h2load` (one h2load per replica, at once);
//! 3. how long a change on A takes to be seen on B (a token revoked on A,
//!    polled on B every millisecond): p50 and p99;
//! 4. `store copy` of an SQLite installation of N credentials (default
//!    100 000) into PostgreSQL: rows/s;
//! 5. the staleness bound as measured: B's path to PostgreSQL goes silent
//!    (a proxy that forwards nothing and refuses nothing), a token is
//!    revoked on A, and B is polled with it every 50 ms: the time from the
//!    revocation's commit to B's last stale answer, p50 and max over N cuts
//!    (default 10), at the default `--max-staleness` (10 s).
//!
//! Run: `scripts/bench.sh replicas`. Environment: `BENCH_WRITES` (default
//! 2000 per configuration), `BENCH_REQUESTS` (default 20000 per h2load run),
//! `BENCH_CHANGES` (default 100), `BENCH_COPY_CREDENTIALS` (default 100000),
//! `BENCH_CUTS` (default 10), `BENCH_ONLY=cached` (section 2 alone),
//! `BENCH_ONLY=staleness` (section 5 alone).

use std::time::{Duration, Instant};

use pullpass::v1::{CreateCredentialRequest, Credential, IssueRegistryAuthRequest, Provider, Role};
use pullpass_tests::bench::h2load::{Call, H2load, grpc_frame, which_h2load};
use pullpass_tests::bench::{Figures, env_count, figures, measure};
use pullpass_tests::faults::SilentPath;
use pullpass_tests::postgres::{Cluster, Database};
use pullpass_tests::replicas::Replicas;
use pullpass_tests::{Options, Pullpassd, create_workspace, issue_registry_auth, pullpassd_command_on};

fn main() {
    let writes = env_count("BENCH_WRITES", 2000);
    let requests = env_count("BENCH_REQUESTS", 20_000);
    let changes = env_count("BENCH_CHANGES", 100);
    let copy_credentials = env_count("BENCH_COPY_CREDENTIALS", 100_000);
    let cuts = env_count("BENCH_CUTS", 10);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cluster = Cluster::start_with(true);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "staleness" {
        staleness(&runtime, &cluster, cuts);
        return;
    }
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    println!(
        "pullpass replicas bench ({cpus} CPUs; PostgreSQL 15 with fsync and synchronous_commit on, on this machine)"
    );
    println!();

    if only != "cached" {
        println!(
            "1. CreateCredential, {writes} per configuration (commit before the answer, audit event in the same transaction)"
        );
        println!("   {:<46} {:>10} {:>9} {:>9}", "configuration", "commits/s", "p50 ms", "p99 ms");
        let sqlite = server(None);
        let postgres = server(Some(Database::in_cluster(&cluster)));
        for clients in [1, 16] {
            for (name, server) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
                let figures = runtime.block_on(creates(server, clients, writes));
                print_row(&format!("{name}, {clients} client(s)"), &figures);
            }
        }
        drop((sqlite, postgres));
        println!();
    }

    let replicas = runtime.block_on(Replicas::start_on(Database::in_cluster(&cluster), &["--rate-limit", "0"]));
    println!(
        "2. cached IssueRegistryAuth, {requests} calls per replica per run (h2load: 4 connections x 16 streams each)"
    );
    match which_h2load() {
        Some(h2load) => {
            let image = replicas.image("team/app:1.0");
            let expected = runtime.block_on(warm(&replicas, &image));
            let body = grpc_frame(&IssueRegistryAuthRequest {
                workspace: "workspaces/acme".into(),
                images: vec![image.clone()],
                ..Default::default()
            });
            let call = Call {
                path: "/pullpass.v1.RegistryAuthService/IssueRegistryAuth",
                body: &body,
                response_bytes: expected,
            };
            let token = &replicas.a.root_token;
            let a = H2load { program: &h2load, address: &replicas.a.address, token, pid: replicas.a.pid() };
            let b = H2load { program: &h2load, address: &replicas.b.address, token, pid: replicas.b.pid() };
            a.run(&call, requests / 10);
            b.run(&call, requests / 10);
            let before = replicas.token_requests();
            let one = a.run(&call, requests);
            let one = figures(one.latencies, one.elapsed);
            let (ra, rb) = std::thread::scope(|s| {
                let ra = s.spawn(|| a.run(&call, requests));
                let rb = s.spawn(|| b.run(&call, requests));
                (ra.join().unwrap(), rb.join().unwrap())
            });
            let wall = ra.elapsed.max(rb.elapsed);
            let both = figures(ra.latencies.into_iter().chain(rb.latencies).collect(), wall);
            println!("   {:<46} {:>10} {:>9} {:>9}", "configuration", "calls/s", "p50 ms", "p99 ms");
            print_row("1 replica", &one);
            print_row("2 replicas (one h2load each, at once)", &both);
            println!(
                "   {:.2}x with 2 replicas on these {cpus} CPUs (shared by both replicas, PostgreSQL and h2load); token requests meanwhile: {}",
                both.per_second / one.per_second,
                replicas.token_requests() - before
            );
        }
        None => println!("   h2load not found: run `scripts/bench.sh replicas`, which installs nghttp2-client"),
    }
    println!();
    if only == "cached" {
        return;
    }

    let propagation = runtime.block_on(propagation(&replicas, changes));
    println!("3. a token revoked on A, refused on B ({changes} revocations; B polled every 1 ms)");
    println!(
        "   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target: within 1 s)",
        propagation.p50.as_secs_f64() * 1e3,
        propagation.p99.as_secs_f64() * 1e3,
        propagation.max.as_secs_f64() * 1e3
    );
    drop(replicas);
    println!();

    println!("4. store copy of {copy_credentials} credentials, SQLite -> PostgreSQL");
    let (rows, elapsed) = runtime.block_on(store_copy(&cluster, copy_credentials));
    println!(
        "   {rows} rows (credentials, their audit events, workspaces, keys) in {:.1} s: {:.0} rows/s, {:.0} credentials/s",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        copy_credentials as f64 / elapsed.as_secs_f64()
    );
    println!();
    staleness(&runtime, &cluster, cuts);
}

/// Section 5: how long a cut-off replica honours a revocation made on the
/// other, at default settings.
fn staleness(runtime: &tokio::runtime::Runtime, cluster: &Cluster, cuts: usize) {
    println!(
        "5. B cut off from PostgreSQL (packets dropped: nothing forwarded, nothing refused), a token revoked on A, B polled with it every 50 ms ({cuts} cuts, default --max-staleness 10 s)"
    );
    let (replicas, path) =
        runtime.block_on(Replicas::start_with_b_cuttable(Database::in_cluster(cluster), &["--rate-limit", "0"]));
    runtime.block_on(async { replicas.add(&replicas.a.client().await, "reg").await });
    let (mut bounds, mut refused_within) = (Vec::new(), Vec::new());
    for cut in 0..cuts {
        let (bound, refused) = runtime.block_on(one_cut(&replicas, &path, cut));
        bounds.push(bound);
        refused_within.push(refused);
    }
    bounds.sort();
    refused_within.sort();
    println!(
        "   from the revocation's commit to B's last stale answer: p50 {:.2} s, max {:.2} s (limit 10 s)",
        bounds[bounds.len() / 2].as_secs_f64(),
        bounds.last().copied().unwrap_or_default().as_secs_f64()
    );
    println!(
        "   to B's first refusal (UNAVAILABLE, REPLICA_STALE): p50 {:.2} s, max {:.2} s",
        refused_within[refused_within.len() / 2].as_secs_f64(),
        refused_within.last().copied().unwrap_or_default().as_secs_f64()
    );
}

/// One cut: a token B has cached is revoked on A while B is cut off, and B
/// is asked for a lease it has cached with it; the time from the commit to
/// B's last answer honouring the token, and to its first refusal. The path
/// is healed and B is back in service before it returns.
async fn one_cut(replicas: &Replicas, path: &SilentPath, cut: usize) -> (Duration, Duration) {
    let a = replicas.a.client().await;
    let token = a.create_access_token("acme", Role::Launcher, &[], None, &format!("cut {cut}")).await.unwrap();
    let on_b = pullpass_client::Client::builder(replicas.b.endpoint())
        .token(token.token.clone())
        .timeout(Duration::from_secs(2))
        .retries(0)
        .connect()
        .await
        .unwrap();
    let image = replicas.image("team/app:1.0");
    let list = || {
        let (on_b, image) = (on_b.clone(), image.clone());
        async move {
            issue_registry_auth(&on_b, &image).await.and_then(|auth| match auth.status {
                Some(status) if status.code != 0 => Err(tonic::Status::new(status.code.into(), status.message)),
                _ => Ok(auth),
            })
        }
    };
    // B serves the token (and has cached it) before the cut.
    let deadline = Instant::now() + Duration::from_secs(30);
    while list().await.is_err() {
        assert!(Instant::now() < deadline, "B does not serve before cut {cut}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    path.silence();
    a.revoke_access_token(&token.name).await.unwrap();
    let committed = Instant::now();
    let mut last_stale = Duration::ZERO;
    let refused = loop {
        match list().await {
            Ok(_) => last_stale = committed.elapsed(),
            Err(_) => break committed.elapsed(),
        }
        assert!(committed.elapsed() < Duration::from_secs(60), "B kept honouring a revoked token for a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    path.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match list().await {
            Err(status) if status.code() == tonic::Code::Unauthenticated => break,
            _ => {
                assert!(Instant::now() < deadline, "B does not recover after cut {cut}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (last_stale, refused)
}

fn print_row(name: &str, figures: &Figures) {
    println!(
        "   {name:<46} {:>10.0} {:>9.3} {:>9.3}",
        figures.per_second,
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3
    );
}

/// A server at default settings (`--rate-limit 0` aside), on SQLite or on
/// `database`.
fn server(database: Option<Database>) -> Pullpassd {
    Pullpassd::start_with(Options { args: vec!["--rate-limit".into(), "0".into()], database, ..Default::default() })
        .expect("pullpassd starts")
}

fn credential(secret: &str) -> Credential {
    Credential {
        provider: Provider::Generic as i32,
        registry_server: "registry.example.com:5000/team".into(),
        username: "ci".into(),
        secret: secret.into(),
        description: "benchmark row".into(),
        ..Default::default()
    }
}

async fn creates(server: &Pullpassd, clients: usize, writes: usize) -> Figures {
    let workspace = format!("bench{clients}");
    create_workspace(&server.client().await, &workspace).await;
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(server.client().await);
    }
    measure(clients, writes, |c, i| {
        let (client, workspace) = (connections[c].clone(), workspace.clone());
        async move {
            client
                .credentials()
                .create_credential(CreateCredentialRequest {
                    parent: format!("workspaces/{workspace}"),
                    credential_id: format!("k{c:02}-{i:06}"),
                    credential: Some(credential("bench-secret-value-0123456789")),
                })
                .await
                .expect("create");
        }
    })
    .await
}

/// A credential, and the lease cached on both replicas; the DATA bytes of
/// one cached answer.
async fn warm(replicas: &Replicas, image: &str) -> usize {
    let a = replicas.a.client().await;
    replicas.add(&a, "reg").await;
    let mut expected = 0;
    for server in [&replicas.a, &replicas.b] {
        let client = server.client().await;
        for _ in 0..2 {
            let auth = issue_registry_auth(&client, image).await.expect("lease");
            assert_eq!(auth.status.as_ref().map(|s| s.code), Some(0), "{auth:?}");
        }
        let response = client
            .registry_auth_service()
            .issue_registry_auth(IssueRegistryAuthRequest {
                workspace: "workspaces/acme".into(),
                images: vec![image.to_owned()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.auths[0].cached);
        expected = 5 + prost::Message::encoded_len(&response);
    }
    expected
}

struct Propagation {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn propagation(replicas: &Replicas, changes: usize) -> Propagation {
    let root = replicas.a.client().await;
    let image = replicas.image("team/app:1.0");
    let mut delays = Vec::with_capacity(changes);
    for _ in 0..changes {
        let token = root.create_access_token("acme", Role::Launcher, &[], None, "bench").await.unwrap();
        let on_b = replicas.b.client_with(Some(&token.token)).await;
        issue_registry_auth(&on_b, &image).await.expect("the token works on B");
        let revoked = Instant::now();
        root.revoke_access_token(&token.name).await.unwrap();
        loop {
            if issue_registry_auth(&on_b, &image).await.is_err_and(|s| s.code() == tonic::Code::Unauthenticated) {
                break;
            }
            assert!(revoked.elapsed() < Duration::from_secs(10), "B never saw the revocation");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(revoked.elapsed());
    }
    let f = figures(delays.clone(), Duration::from_secs(1));
    Propagation { p50: f.p50, p99: f.p99, max: delays.into_iter().max().unwrap_or_default() }
}

/// Fills an SQLite installation with `count` credentials (16 clients),
/// stops it, and times `pullpassd store copy` into a fresh database.
async fn store_copy(cluster: &Cluster, count: usize) -> (u64, Duration) {
    let mut source = server(None);
    let setup = source.client().await;
    create_workspace(&setup, "acme").await;
    let mut connections = Vec::new();
    for _ in 0..16 {
        connections.push(source.client().await);
    }
    let filled = Instant::now();
    measure(16, count, |c, i| {
        let client = connections[c].clone();
        async move {
            client
                .create_credential("acme", &format!("c{c:02}-{i:07}"), credential("copied-secret"))
                .await
                .expect("create");
        }
    })
    .await;
    eprintln!("   (filled the SQLite installation in {:.1} s)", filled.elapsed().as_secs_f64());
    source.stop();
    let database = Database::in_cluster(cluster);
    let from = format!("sqlite:{}", source.data_dir.join("pullpass.db").display());
    let password_file = database.password_file.display().to_string();
    let started = Instant::now();
    let output = pullpassd_command_on(
        &source.data_dir,
        None,
        &["store", "copy", "--from", &from, "--to", &database.url, "--database-password-file", &password_file],
    );
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "store copy failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let rows = stdout
        .lines()
        .find_map(|l| l.strip_prefix("done: ").and_then(|r| r.split_once(" row(s)")).and_then(|(n, _)| n.parse().ok()))
        .expect("the row count");
    assert_eq!(database.sql("SELECT count(*) FROM credentials").trim(), (16 * (count / 16)).to_string());
    (rows, elapsed)
}
