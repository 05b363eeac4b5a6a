//! Start-up at scale: restart to SERVING, and resident memory once serving,
//! of a `pullpassd` whose SQLite database holds many credentials (default
//! 1,000,000 in 100,000 workspaces, about half a GiB).
//!
//! The database is made once and kept under `target/bench-startup/` (it
//! takes a few minutes): `pullpassd --dev` creates the data directory, its
//! master key and root token; then the workspaces and credentials are
//! written through the store's own interface (`store::Backend`), each
//! secret sealed with the server's real key and each write with its audit
//! event, many writes in flight so the writer's group commit batches them.
//! `pullpassd keys verify` could open every one of them.
//!
//! Run: `scripts/bench.sh startup`. Environment: `BENCH_CREDENTIALS`
//! (default 1000000), `BENCH_PER_WORKSPACE` (default 10), `BENCH_RUNS`
//! (restarts timed, default 7). Targets: restart to SERVING <= 300 ms, RSS
//! <= 128 MiB.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pullpass::registry::RegistryServer;
use pullpass_server::domain::audit::AuditEvent;
use pullpass_server::domain::credential::StoredCredential;
use pullpass_server::domain::{
    Credential, CredentialName, CredentialUid, Provider, Timestamp, Workspace, WorkspaceId, WorkspaceKind,
};
use pullpass_server::seal::{Keyring, Sealer, SecretContext};
use pullpass_server::secret::SecretBytes;
use pullpass_server::store::{self, AuditFault, Location, Store};
use pullpass_tests::bench::env_count;
use pullpass_tests::{Options, Pullpassd};

/// Writes in flight while the database is made.
const IN_FLIGHT: usize = 256;

fn main() {
    let credentials = env_count("BENCH_CREDENTIALS", 1_000_000);
    let per_workspace = env_count("BENCH_PER_WORKSPACE", 10).max(1);
    let runs = env_count("BENCH_RUNS", 7).max(1);
    let workspaces = credentials.div_ceil(per_workspace);
    let home = prepared_home(credentials, per_workspace);
    let database = home.join("data").join(pullpass_server::config::DATABASE_FILE);
    let size = std::fs::metadata(&database).map(|m| m.len()).unwrap_or(0);
    println!(
        "pullpass start-up bench: {credentials} credentials in {workspaces} workspaces ({:.0} MiB database, {})",
        size as f64 / (1024.0 * 1024.0),
        database.display()
    );
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let (elapsed, resident) = restart_to_serving(&home);
        times.push(elapsed);
        rss.push(resident);
    }
    times.sort();
    rss.sort();
    let median = times[runs / 2];
    let resident = rss[runs / 2];
    println!("   restart to SERVING (spawn -> health SERVING), median of {runs}: {:.1} ms", median.as_secs_f64() * 1e3);
    println!(
        "      min {:.1} ms, max {:.1} ms; target <= 300 ms: {}",
        times[0].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
        if median <= Duration::from_millis(300) { "met" } else { "NOT met" }
    );
    println!(
        "   RSS once SERVING, median: {:.1} MiB; target <= 128 MiB: {}",
        resident as f64 / 1024.0,
        if resident <= 128 * 1024 { "met" } else { "NOT met" }
    );
}

/// A home directory whose database holds `credentials` credentials, made
/// once and reused.
fn prepared_home(credentials: usize, per_workspace: usize) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let home = target.join("bench-startup").join(format!("{credentials}x{per_workspace}"));
    let done = home.join("complete");
    if done.exists() {
        return home;
    }
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("create the bench home");
    // The server makes its data directory, key and root token, then stops.
    let mut server =
        Pullpassd::start_with(Options { home: Some(home.clone()), ..Default::default() }).expect("pullpassd starts");
    assert!(server.stop(), "pullpassd stops");
    let data = home.join("data");
    let keyring = Keyring::load_file(&data.join(pullpass_server::config::DEV_KEY_FILE)).expect("the dev key");
    let sealer = Sealer::new(keyring);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let location = Location::Sqlite(data.join(pullpass_server::config::DATABASE_FILE));
        let store = store::open(&location, AuditFault::default()).await.expect("open the store");
        fill(&store, &sealer, credentials, per_workspace, started).await;
        store.close().await;
    });
    std::fs::write(&done, b"").unwrap();
    println!("   (made the database in {:.0} s; kept for later runs)", started.elapsed().as_secs_f64());
    home
}

/// Workspaces `w00000000…`, each with up to `per_workspace` credentials.
async fn fill(store: &Store, sealer: &Sealer, credentials: usize, per_workspace: usize, started: Instant) {
    use futures_util::StreamExt;
    let workspaces = credentials.div_ceil(per_workspace);
    let mut done = 0usize;
    let mut writes = futures_util::stream::iter(0..workspaces)
        .map(|w| {
            let count = per_workspace.min(credentials - w * per_workspace);
            async move { write_workspace(store, sealer, w, count).await }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(written) = writes.next().await {
        done += written;
        if done % 100_000 < written {
            eprintln!("   made {done}/{credentials} credentials ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
}

async fn write_workspace(store: &Store, sealer: &Sealer, index: usize, count: usize) -> usize {
    let id = WorkspaceId::parse(&format!("w{index:08}")).unwrap();
    let now = Timestamp::now();
    let workspace = Workspace {
        id: id.clone(),
        kind: WorkspaceKind::Organization,
        display_name: format!("Team {index}"),
        create_time: now,
    };
    store.create_workspace(&workspace, &[event("CreateWorkspace", &id, &format!("workspaces/{id}"))]).await.unwrap();
    let rows: Vec<(StoredCredential, AuditEvent)> = (0..count)
        .map(|c| {
            let name = CredentialName::parse(&format!("workspaces/{id}/credentials/registry-{c}")).unwrap();
            let mut uid = [0u8; 16];
            uid[..8].copy_from_slice(&(index as u64).to_be_bytes());
            uid[8..].copy_from_slice(&(c as u64).to_be_bytes());
            let uid = CredentialUid(uid);
            let secret = SecretBytes::new(format!("bench-secret-{index}-{c}").into_bytes());
            let sealed = sealer.seal(SecretContext { name: &name, uid: &uid, version: 1 }, &secret).unwrap();
            let credential = Credential {
                name: name.clone(),
                uid,
                provider: Provider::Generic,
                registry: RegistryServer::parse(&format!("registry{c}.example")).unwrap().server,
                username: "robot".into(),
                secret_version: 1,
                settings: Default::default(),
                allowed_projects: Vec::new(),
                allow_passthrough: false,
                token_realm_allowlist: Vec::new(),
                ca_bundle_pem: String::new(),
                description: String::new(),
                create_time: now,
                update_time: now,
                last_used_time: None,
                expire_time: None,
                last_failure: None,
            };
            (StoredCredential { credential, sealed }, event("CreateCredential", &id, &name.to_string()))
        })
        .collect();
    store.insert_credentials(&id, &rows, false).await.unwrap();
    count
}

fn event(action: &str, workspace: &WorkspaceId, resource: &str) -> AuditEvent {
    AuditEvent {
        event_time: Timestamp::now(),
        workspace: workspace.to_string(),
        principal: "pullpassd bench".into(),
        action: action.into(),
        resource: resource.into(),
        client_address: "local".into(),
        ..Default::default()
    }
}

/// Starts `pullpassd` on `home` and times it to SERVING; returns the time
/// and its resident memory (KiB) once serving.
fn restart_to_serving(home: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let server =
        Pullpassd::start_with(Options { home: Some(home.to_owned()), ..Default::default() }).expect("pullpassd starts");
    server.block_until_serving();
    let elapsed = started.elapsed();
    let rss = pullpass_tests::process::rss_kib(server.pid());
    drop(server);
    (elapsed, rss)
}
