//! Soak: mixed traffic against one `pullpassd` at default settings (info
//! logs to a file, audit on, metrics on) for a fixed time, printing every
//! interval the server's resident memory, its open file descriptors, and
//! the p50/p99 latency of each kind of call. RSS and descriptors must stay
//! flat: the last interval may not hold more than the first one after
//! warm-up plus a margin.
//!
//! The traffic, paced at fixed rates: leases (cached, and a new repository
//! now and then), credential writes (create, rotate, delete), lists of
//! credentials and of audit events, and calls with tokens that were
//! revoked or have expired (which must be refused).
//!
//! In the suite it runs for `PULLPASS_SOAK_SECONDS` (default 30), reporting
//! every 10 s. `scripts/soak.sh MINUTES` runs it against release binaries,
//! reporting every minute.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pullpass::v1::{Credential, IssueRegistryAuthRequest, ListCredentialsRequest, Provider, Role};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::process::{open_fds, rss_kib};
use pullpass_tests::{Options, Pullpassd, create_workspace};
use tonic::Code;

const USER: &str = "soak";
const PASSWORD: &str = "soak-CANARY-0c93";

/// Latencies by kind of call, for the current interval.
#[derive(Default)]
struct Interval {
    samples: std::collections::BTreeMap<&'static str, Vec<Duration>>,
}

struct Shared {
    interval: Mutex<Interval>,
    unexpected: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, kind: &'static str, took: Duration) {
        self.interval.lock().unwrap().samples.entry(kind).or_default().push(took);
    }

    fn unexpected(&self, what: &str) {
        if self.unexpected.fetch_add(1, Ordering::SeqCst) < 10 {
            eprintln!("soak: unexpected: {what}");
        }
    }
}

fn env_seconds(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1e3
}

/// Runs `work` every `period` until told to stop.
fn paced<F, Fut>(shared: &Arc<Shared>, period: Duration, mut work: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0;
        while !shared.stop.load(Ordering::SeqCst) {
            ticks.tick().await;
            work(n).await;
            n += 1;
        }
    })
}

/// Now plus `seconds`, to the nanosecond: cut to whole seconds it could land
/// a few milliseconds ahead and be in the past by the time the server checks.
fn in_seconds(seconds: u64) -> prost_types::Timestamp {
    let at = (SystemTime::now() + Duration::from_secs(seconds)).duration_since(SystemTime::UNIX_EPOCH).unwrap();
    prost_types::Timestamp { seconds: at.as_secs() as i64, nanos: at.subsec_nanos() as i32 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_keeps_memory_descriptors_and_latency_flat() {
    let total = Duration::from_secs(env_seconds("PULLPASS_SOAK_SECONDS", 30));
    let every = Duration::from_secs(env_seconds("PULLPASS_SOAK_REPORT_SECONDS", 10).max(1));
    let realm = TokenRealm::start(120, USER, PASSWORD);
    let server = Pullpassd::start_with(Options {
        args: vec!["--insecure-registry".into(), realm.address.clone()],
        ..Default::default()
    })
    .expect("pullpassd starts");
    let pid = server.pid();
    let root = server.client().await;
    create_workspace(&root, "soak").await;
    let lease_credential = Credential {
        provider: Provider::Generic as i32,
        registry_server: realm.address.clone(),
        username: USER.into(),
        secret: PASSWORD.into(),
        ..Default::default()
    };
    root.create_credential("soak", "registry", lease_credential.clone()).await.expect("create");
    let launcher = root.create_access_token("soak", Role::Launcher, &[], None, "soak launcher").await.unwrap();
    let launcher = server.client_with(Some(&launcher.token)).await;
    let shared =
        Arc::new(Shared { interval: Mutex::default(), unexpected: AtomicU64::new(0), stop: AtomicBool::new(false) });
    let mut tasks = Vec::new();

    // Leases: 4 x 50/s over 200 repositories (cached once warm); every
    // 100th call a repository never seen (a token request upstream).
    for worker in 0..4u64 {
        let (client, shared2, registry) = (launcher.clone(), shared.clone(), realm.address.clone());
        tasks.push(paced(&shared, Duration::from_millis(20), move |n| {
            let (client, shared, registry) = (client.clone(), shared2.clone(), registry.clone());
            async move {
                let repository =
                    if n % 100 == 99 { format!("new/w{worker}-{n}") } else { format!("team/app{}", n % 200) };
                let request = IssueRegistryAuthRequest {
                    workspace: "workspaces/soak".into(),
                    images: vec![format!("{registry}/{repository}:1")],
                    ..Default::default()
                };
                let started = Instant::now();
                match client.registry_auth_service().issue_registry_auth(request).await {
                    Ok(reply) if reply.get_ref().auths[0].status.as_ref().is_some_and(|s| s.code == 0) => {
                        shared.record("lease", started.elapsed())
                    }
                    other => shared.unexpected(&format!("lease: {other:?}")),
                }
            }
        }));
    }

    // Writes: 20/s over 50 credentials: create, rotate, rotate, delete.
    {
        let (client, shared2, registry) = (root.clone(), shared.clone(), realm.address.clone());
        tasks.push(paced(&shared, Duration::from_millis(50), move |n| {
            let (client, shared, registry) = (client.clone(), shared2.clone(), registry.clone());
            async move {
                let id = format!("churn-{}", n % 50);
                let started = Instant::now();
                let result = match (n / 50) % 4 {
                    0 => {
                        let credential = Credential {
                            provider: Provider::Generic as i32,
                            registry_server: format!("{registry}/churn{}", n % 50),
                            username: USER.into(),
                            secret: format!("churn-secret-{n}"),
                            ..Default::default()
                        };
                        client.create_credential("soak", &id, credential).await.map(drop)
                    }
                    1 | 2 => {
                        let credential = Credential {
                            name: format!("workspaces/soak/credentials/{id}"),
                            secret: format!("churn-secret-{n}"),
                            ..Default::default()
                        };
                        client.update_credential(credential, &["secret"]).await.map(drop)
                    }
                    _ => client.delete_credential("soak", &id).await,
                };
                match result {
                    Ok(()) => shared.record("write", started.elapsed()),
                    Err(e) => shared.unexpected(&format!("write {id}: {e}")),
                }
            }
        }));
    }

    // Lists: 5/s of credentials (one page of 100) and of audit events.
    {
        let (client, shared2) = (root.clone(), shared.clone());
        tasks.push(paced(&shared, Duration::from_millis(200), move |n| {
            let (client, shared) = (client.clone(), shared2.clone());
            async move {
                let started = Instant::now();
                let ok = if n % 2 == 0 {
                    let request = ListCredentialsRequest {
                        parent: "workspaces/soak".into(),
                        page_size: 100,
                        ..Default::default()
                    };
                    client.credentials().list_credentials(request).await.map(drop).map_err(|e| e.to_string())
                } else {
                    client.list_audit_events("soak", "", 100).await.map(drop).map_err(|e| e.to_string())
                };
                match ok {
                    Ok(()) => shared.record("list", started.elapsed()),
                    Err(e) => shared.unexpected(&format!("list: {e}")),
                }
            }
        }));
    }

    // Refused tokens: a revoked token, then one that expired (after 2 s),
    // each used once it no longer works (UNAUTHENTICATED every time): about
    // one a second, as the expired ones wait out their life.
    {
        let (client, shared2, endpoint) = (root.clone(), shared.clone(), server.endpoint());
        tasks.push(paced(&shared, Duration::from_millis(500), move |n| {
            let (client, shared, endpoint) = (client.clone(), shared2.clone(), endpoint.clone());
            async move {
                let expiry = (n % 2 == 1).then(|| in_seconds(2));
                let minted = match client.create_access_token("soak", Role::Viewer, &[], expiry, "soak").await {
                    Ok(minted) => minted,
                    Err(e) => return shared.unexpected(&format!("mint: {e}")),
                };
                if n % 2 == 0 {
                    if let Err(e) = client.revoke_access_token(&minted.name).await {
                        return shared.unexpected(&format!("revoke: {e}"));
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                }
                let Ok(refused) =
                    pullpass_client::Client::builder(endpoint).token(minted.token).retries(0).connect().await
                else {
                    return shared.unexpected("connect");
                };
                let started = Instant::now();
                let request =
                    ListCredentialsRequest { parent: "workspaces/soak".into(), page_size: 1, ..Default::default() };
                match refused.credentials().list_credentials(request).await {
                    Err(status) if status.code() == Code::Unauthenticated => {
                        shared.record("refused", started.elapsed())
                    }
                    other => shared.unexpected(&format!("a dead token was not refused: {other:?}")),
                }
            }
        }));
    }

    println!(
        "soak: {} s of mixed traffic against pullpassd (pid {pid}, default settings), reporting every {} s",
        total.as_secs(),
        every.as_secs()
    );
    println!(
        "{:>6} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "t(s)", "rss(MiB)", "fds", "leases", "l.p50", "l.p99", "writes", "w.p99", "lists", "li.p99", "refused"
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(every.min(total.saturating_sub(started.elapsed()))).await;
        let interval = std::mem::take(&mut *shared.interval.lock().unwrap());
        let mut stats = std::collections::BTreeMap::new();
        for (kind, mut samples) in interval.samples {
            samples.sort();
            stats.insert(kind, (samples.len(), percentile(&samples, 0.5), percentile(&samples, 0.99)));
        }
        let get = |kind: &str| stats.get(kind).copied().unwrap_or((0, 0.0, 0.0));
        let (rss, fds) = (rss_kib(pid) as f64 / 1024.0, open_fds(pid));
        let (leases, writes, lists, refused) = (get("lease"), get("write"), get("list"), get("refused"));
        println!(
            "{:>6} {:>8.1} {:>6} {:>7} {:>7.2} {:>7.2} {:>7} {:>7.2} {:>7} {:>7.2} {:>7}",
            started.elapsed().as_secs(),
            rss,
            fds,
            leases.0,
            leases.1,
            leases.2,
            writes.0,
            writes.2,
            lists.0,
            lists.2,
            refused.0
        );
        rows.push((rss, fds, leases.0));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let unexpected = shared.unexpected.load(Ordering::SeqCst);
    assert_eq!(unexpected, 0, "calls that failed or were let through");
    assert!(rows.iter().all(|(_, _, leases)| *leases > 0), "every interval served leases");
    // Flat: the last interval against the first after warm-up.
    let (first, last) = (rows[rows.len().min(2) - 1], rows[rows.len() - 1]);
    println!(
        "soak: rss {:.1} -> {:.1} MiB, fds {} -> {}, {} unexpected results",
        first.0, last.0, first.1, last.1, unexpected
    );
    assert!(last.1 <= first.1 + 16, "open descriptors grew from {} to {}", first.1, last.1);
    assert!(last.0 <= first.0 * 1.5 + 16.0, "RSS grew from {:.1} to {:.1} MiB", first.0, last.0);
    let log = server.current_logs();
    assert!(!log.contains(PASSWORD), "the canary secret reached the log");
}
