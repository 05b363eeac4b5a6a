//! Foundation figures: `CreateCredential` commits/s and latency with 1 and 16
//! concurrent clients against the real `pullpassd` binary, next to a raw
//! rusqlite loop (WAL, synchronous=FULL, one row per transaction) on the same
//! disk in the same run; and start-up time to SERVING.
//!
//! Run: `scripts/bench.sh foundation` (builds release binaries first), or
//! `cargo build --release --bins && cargo bench -p pullpass-tests --bench foundation`.
//! Environment: `BENCH_WRITES` (per configuration, default 3000).

use std::time::{Duration, Instant};

use pullpass::v1::{CreateCredentialRequest, Credential, Provider};
use pullpass_tests::bench::{Figures, env_count, figures, measure};
use pullpass_tests::{Pullpassd, create_workspace};

fn main() {
    let writes = env_count("BENCH_WRITES", 3000);
    // The load generator runs on one thread, as a launcher process would,
    // leaving the other core to pullpassd.
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let in_process = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("pullpass foundation bench ({writes} writes per configuration, {} CPUs)", num_cpus());
    println!();

    let raw = raw_sqlite_loop(writes);
    let store_one = in_process.block_on(store_creates(1, writes));
    let store_sixteen = in_process.block_on(store_creates(16, writes));
    let server = Pullpassd::start_with(pullpass_tests::Options {
        env: vec![("PULLPASS_LOG".into(), "warn".into())],
        args: vec!["--rate-limit".into(), "0".into()],
        ..Default::default()
    })
    .expect("pullpassd starts");
    let rpc_one = client.block_on(rpc_creates(&server, 1, writes));
    let rpc_sixteen = client.block_on(rpc_creates(&server, 16, writes));
    let health_one = client.block_on(health_checks(&server, 1, writes));
    let health_sixteen = client.block_on(health_checks(&server, 16, writes));
    drop(server);

    println!("{:<58} {:>10} {:>9} {:>9} {:>7}", "configuration", "commits/s", "p50 ms", "p99 ms", "vs raw");
    for (name, figures) in [
        ("raw rusqlite loop (WAL, synchronous=FULL, 1 row/tx)", &raw),
        ("CreateCredential over gRPC, 1 client", &rpc_one),
        ("CreateCredential over gRPC, 16 concurrent clients", &rpc_sixteen),
        ("  same call in-process (no gRPC), 1 caller", &store_one),
        ("  same call in-process (no gRPC), 16 concurrent callers", &store_sixteen),
    ] {
        print_row(name, figures, Some(raw.per_second));
    }
    println!();
    println!("gRPC ceiling on this machine (health Check, no storage), for reference:");
    print_row("  health Check, 1 client", &health_one, None);
    print_row("  health Check, 16 concurrent clients", &health_sixteen, None);
    println!();
    let (first, later) = startup_times(7);
    println!("start-up to SERVING (process spawn -> health check SERVING), median of 7:");
    println!("  first start (key file, migrations, root token): {:>7.1} ms", first.as_secs_f64() * 1e3);
    println!("  restart of an existing data directory:          {:>7.1} ms", later.as_secs_f64() * 1e3);
}

fn print_row(name: &str, figures: &Figures, raw: Option<f64>) {
    let ratio = raw.map(|raw| format!("{:.2}x", figures.per_second / raw)).unwrap_or_default();
    println!(
        "{name:<58} {:>10.0} {:>9.3} {:>9.3} {ratio:>7}",
        figures.per_second,
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3,
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// The baseline: one row per transaction, nothing else.
fn raw_sqlite_loop(writes: usize) -> Figures {
    let dir = bench_dir();
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE rows (workspace TEXT, id TEXT, payload BLOB, description TEXT, PRIMARY KEY (workspace, id))",
    )
    .unwrap();
    let payload = vec![7u8; 160];
    let mut latencies = Vec::with_capacity(writes);
    let started = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        conn.execute("BEGIN IMMEDIATE", []).unwrap();
        conn.execute(
            "INSERT INTO rows VALUES ('acme', ?1, ?2, 'benchmark row')",
            rusqlite::params![format!("c{i:06}"), payload],
        )
        .unwrap();
        conn.execute("COMMIT", []).unwrap();
        latencies.push(t.elapsed());
    }
    figures(latencies, started.elapsed())
}

/// A scratch directory on the same disk as the servers' data.
fn bench_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pullpass-bench-").tempdir().unwrap()
}

/// `CreateCredential` through gRPC: `clients` connections, each calling in
/// sequence.
async fn rpc_creates(server: &Pullpassd, clients: usize, writes: usize) -> Figures {
    let workspace = format!("rpc{clients}");
    let setup = server.client().await;
    create_workspace(&setup, &workspace).await;
    for i in 0..50 {
        create(&setup, &workspace, &format!("warm{i}")).await;
    }
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(server.client().await);
    }
    measure(clients, writes, |c, i| {
        let client = connections[c].clone();
        let workspace = workspace.clone();
        async move { create(&client, &workspace, &format!("k{c:02}-{i:06}")).await }
    })
    .await
}

/// Health checks through gRPC: the transport's own ceiling.
async fn health_checks(server: &Pullpassd, clients: usize, calls: usize) -> Figures {
    let mut connections = Vec::new();
    for _ in 0..clients {
        let channel = tonic::transport::Endpoint::from_shared(server.endpoint()).unwrap().connect().await.unwrap();
        connections.push(tonic_health::pb::health_client::HealthClient::new(channel));
    }
    measure(clients, calls, |c, _| {
        let mut health = connections[c].clone();
        async move {
            health.check(tonic_health::pb::HealthCheckRequest::default()).await.expect("health");
        }
    })
    .await
}

/// The same domain call the handler makes, in-process: storage, sealing and
/// validation without the transport.
async fn store_creates(callers: usize, writes: usize) -> Figures {
    use pullpass_server::credentials::{CredentialInput, Credentials};
    use pullpass_server::domain::{CredentialId, WorkspaceId};
    use pullpass_server::secret::SecretBytes;
    let dir = bench_dir();
    let location = pullpass_server::store::Location::Sqlite(dir.path().join("pullpass.db"));
    let store = pullpass_server::store::open(&location, Default::default()).await.unwrap();
    let keys = pullpass_server::seal::Keyring::parse(&format!("bench:{}", "A".repeat(43)), "bench").unwrap();
    let sealer = std::sync::Arc::new(pullpass_server::seal::Sealer::new(keys));
    let pages = std::sync::Arc::new(pullpass_server::paging::PageTokens::new(sealer.derive_mac_key("pages")));
    let changes = pullpass_server::changes::ChangeFeed::default();
    let actor = pullpass_server::audit::Actor::command("bench");
    pullpass_server::workspaces::Workspaces::new(store.clone(), pages.clone(), changes.clone())
        .create(&actor, "acme", 1, String::new())
        .await
        .unwrap();
    let credentials = Credentials::new(store.clone(), sealer, pages, changes);
    let figures = measure(callers, writes, |c, i| {
        let credentials = credentials.clone();
        let actor = actor.clone();
        async move {
            let input = CredentialInput {
                provider: Provider::Generic as i32,
                registry_server: "registry.example.com:5000/team".into(),
                username: "ci".into(),
                secret: Some(SecretBytes::from_string("bench-secret-value-0123456789".into())),
                description: "benchmark row".into(),
                ..Default::default()
            };
            let id = CredentialId::parse(&format!("k{c:02}-{i:06}")).unwrap();
            credentials.create(&actor, WorkspaceId::parse("acme").unwrap(), id, input).await.expect("create");
        }
    })
    .await;
    store.close().await;
    figures
}

async fn create(client: &pullpass_client::Client, workspace: &str, id: &str) {
    client
        .credentials()
        .create_credential(CreateCredentialRequest {
            parent: format!("workspaces/{workspace}"),
            credential_id: id.into(),
            credential: Some(Credential {
                provider: Provider::Generic as i32,
                registry_server: "registry.example.com:5000/team".into(),
                username: "ci".into(),
                secret: "bench-secret-value-0123456789".into(),
                description: "benchmark row".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create");
}

/// Median start-up times: first start, then restarts of the same directory.
fn startup_times(runs: usize) -> (Duration, Duration) {
    let mut first = Vec::new();
    let mut later = Vec::new();
    for _ in 0..runs {
        let home = bench_dir();
        first.push(time_to_serving(home.path()));
        later.push(time_to_serving(home.path()));
    }
    first.sort();
    later.sort();
    (first[runs / 2], later[runs / 2])
}

fn time_to_serving(home: &std::path::Path) -> Duration {
    let started = Instant::now();
    let server = Pullpassd::start_with(pullpass_tests::Options { home: Some(home.to_owned()), ..Default::default() })
        .expect("pullpassd starts");
    server.block_until_serving();
    let elapsed = started.elapsed();
    drop(server);
    elapsed
}
