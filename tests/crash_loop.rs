//! The crash loop: concurrent creates, secret rotations, token minting and
//! leases against one `pullpassd`, killed with SIGKILL at a random moment of
//! each round, then checked and restarted. After every kill:
//!
//! * `pullpassd audit verify` passes (the chain is whole);
//! * `pullpassd keys verify` opens every stored secret;
//!
//! and after the restart:
//! * every acknowledged credential is there, at least at its acknowledged
//!   secret version (a rotation in flight at the kill may have landed too,
//!   but nothing beyond what was sent);
//! * every acknowledged access token is there, and the last one works;
//! * every lease acknowledged more than [`LEASE_WINDOW`] before the kill
//!   has its audit event (lease events are group-committed; see docs/security.md).
//!
//! The suite runs [`DEFAULT_ROUNDS`] rounds; `scripts/crash-loop.sh ROUNDS`
//! runs more and prints the figures. `PULLPASS_CRASH_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pullpass::v1::{
    AccessToken, CreateAccessTokenRequest, CreateCredentialRequest, Credential, GetCredentialRequest,
    IssueRegistryAuthRequest, Provider, Role, UpdateCredentialRequest,
};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::{Options, Pullpassd, create_workspace};

/// Rounds the suite runs.
const DEFAULT_ROUNDS: usize = 10;
/// How long before a kill an acknowledged lease's audit event must be
/// committed. Lease events wait 20 ms to gather, then queue behind the
/// writes ahead of them in the writer's group commit: on an idle machine
/// they are committed within milliseconds; with the whole suite running
/// beside the loop, a lag of half a second was seen. The loop checks 2 s
/// and prints the oldest lease it found missing.
const LEASE_WINDOW: Duration = Duration::from_secs(2);
/// The workspace the lease loops lease from: its own, so that resolving an
/// image does not read the thousands of credentials the create loops add
/// to `acme` (a change to a workspace makes its next lease reload its
/// credentials).
const LEASES: &str = "leases";
const USERNAME: &str = "ci";
const PASSWORD: &str = "crash-loop-pw";

/// What the server acknowledged, and what was sent.
#[derive(Default)]
struct Acked {
    /// Credential id -> acknowledged secret version.
    credentials: BTreeMap<String, i64>,
    /// Credential id -> highest version a sent rotation could reach.
    attempted: BTreeMap<String, i64>,
    /// Access token names.
    tokens: Vec<String>,
    /// The last minted token string.
    last_token: Option<String>,
    /// Request id -> when the lease was acknowledged.
    leases: Vec<(String, Instant)>,
}

/// xorshift64*: enough randomness for kill moments and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_keys_audit_and_lease_events_survive_random_kill_9s() {
    let rounds = std::env::var("PULLPASS_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let seed = std::env::var("PULLPASS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("crash loop: {rounds} rounds, PULLPASS_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let realm = TokenRealm::start(3600, USERNAME, PASSWORD);
    let options = || options_for(&realm);
    let mut server = server_with_lease_credential(&realm).await;
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut totals = Totals::default();
    for round in 0..rounds {
        // This round's lease events are read back from the whole second
        // before it started, so the listing does not grow with the rounds
        // before it.
        let round_started = SystemTime::now() - Duration::from_secs(1);
        let stop = Arc::new(AtomicBool::new(false));
        let client = pullpass_client::Client::builder(server.endpoint())
            .token(server.root_token.clone())
            .retries(0)
            .connect()
            .await
            .expect("connect");
        let mut tasks = Vec::new();
        for worker in 0..3 {
            tasks.push(tokio::spawn(create_loop(
                client.clone(),
                acked.clone(),
                stop.clone(),
                round,
                worker,
                realm.address.clone(),
            )));
        }
        for worker in 0..2 {
            tasks.push(tokio::spawn(rotate_loop(
                client.clone(),
                acked.clone(),
                stop.clone(),
                seed ^ (round * 7 + worker) as u64,
            )));
        }
        tasks.push(tokio::spawn(mint_loop(client.clone(), acked.clone(), stop.clone())));
        for worker in 0..3 {
            tasks.push(tokio::spawn(lease_loop(
                client.clone(),
                acked.clone(),
                stop.clone(),
                realm.address.clone(),
                round,
                worker,
            )));
        }
        // Longer than the lease window, so every round checks some leases.
        let round_time = LEASE_WINDOW + Duration::from_millis(200 + rng.below(1800));
        tokio::time::sleep(round_time).await;
        server.kill();
        let killed_at = Instant::now();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("a workload task panicked");
        }

        let audit = server.command(&["audit", "verify"]);
        assert!(
            audit.status.success(),
            "round {round}: audit verify failed: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
        let keys = server.command(&["keys", "verify"]);
        assert!(keys.status.success(), "round {round}: keys verify failed: {}", String::from_utf8_lossy(&keys.stderr));

        server.restart_with(options());
        let checker = server.client().await;
        let round_totals = check(&checker, &acked, killed_at, round_started, round).await;
        totals.add(&round_totals);
        println!(
            "round {round:>3}: {} credentials and {} tokens acknowledged in all; {} leases this round ({} checked, {} within the window at the kill)",
            round_totals.credentials,
            round_totals.tokens,
            round_totals.leases,
            round_totals.old_leases,
            round_totals.recent_leases
        );
        acked.lock().unwrap().leases.clear();
    }
    println!(
        "crash loop passed: {rounds} kill -9s; every acknowledged write found at its version, audit and keys verified each time; \
         {} lease events acknowledged outside the window, none lost; {} within {} ms of a kill, {} of those lost \
         (the oldest acknowledged {} ms before its kill)",
        totals.old_leases,
        totals.recent_leases,
        LEASE_WINDOW.as_millis(),
        totals.recent_lost,
        totals.oldest_lost.as_millis()
    );
    server.stop();
}

#[derive(Default)]
struct Totals {
    credentials: usize,
    tokens: usize,
    leases: usize,
    old_leases: usize,
    recent_leases: usize,
    recent_lost: usize,
    /// The oldest acknowledged lease found without its event.
    oldest_lost: Duration,
}

impl Totals {
    fn add(&mut self, round: &Totals) {
        self.credentials = round.credentials;
        self.tokens = round.tokens;
        self.leases += round.leases;
        self.old_leases += round.old_leases;
        self.recent_leases += round.recent_leases;
        self.recent_lost += round.recent_lost;
        self.oldest_lost = self.oldest_lost.max(round.oldest_lost);
    }
}

/// Checks what the restarted server holds against what was acknowledged.
async fn check(
    client: &pullpass_client::Client,
    acked: &Mutex<Acked>,
    killed_at: Instant,
    round_started: SystemTime,
    round: usize,
) -> Totals {
    let (credentials, attempted, tokens, last_token, leases) = {
        let a = acked.lock().unwrap();
        (a.credentials.clone(), a.attempted.clone(), a.tokens.clone(), a.last_token.clone(), a.leases.clone())
    };
    // One listing per round, not a Get per credential: the database grows
    // by about a thousand credentials a round, and a Get each made the
    // checks (and so the rounds) grow with it.
    let stored: BTreeMap<String, i64> = client
        .list_credentials("acme", "")
        .await
        .unwrap_or_else(|e| panic!("round {round}: listing credentials failed: {e}"))
        .into_iter()
        .map(|c| (c.name, c.secret_version))
        .collect();
    for (id, version) in &credentials {
        let name = format!("workspaces/acme/credentials/{id}");
        let found = *stored.get(&name).unwrap_or_else(|| panic!("round {round}: acknowledged {name} is missing"));
        let ceiling = attempted.get(id).copied().unwrap_or(*version).max(*version);
        assert!(
            found >= *version && found <= ceiling,
            "round {round}: {name} is at version {found}, acknowledged {version}, at most {ceiling} sent"
        );
    }
    let stored_tokens: BTreeSet<String> = client
        .list_access_tokens("acme")
        .await
        .unwrap_or_else(|e| panic!("round {round}: listing access tokens failed: {e}"))
        .into_iter()
        .map(|t| t.name)
        .collect();
    for name in &tokens {
        assert!(stored_tokens.contains(name), "round {round}: acknowledged token {name} is missing");
    }
    if let Some(token) = last_token {
        let launcher = pullpass_client::Client::builder(client.endpoints()[0].clone())
            .token(token)
            .retries(0)
            .connect()
            .await
            .unwrap();
        let answer = launcher
            .registry_auth_service()
            .issue_registry_auth(IssueRegistryAuthRequest { workspace: "workspaces/acme".into(), ..Default::default() })
            .await;
        assert!(
            !matches!(answer, Err(ref s) if s.code() == tonic::Code::Unauthenticated),
            "round {round}: the last acknowledged token no longer authenticates: {answer:?}"
        );
    }
    let recorded: BTreeSet<String> = client
        .list_audit_events(
            LEASES,
            &format!(r#"action = IssueRegistryAuth AND event_time >= "{}""#, since(round_started)),
            usize::MAX,
        )
        .await
        .expect("list lease events")
        .into_iter()
        .flat_map(|e| e.request_ids)
        .collect();
    let mut totals =
        Totals { credentials: credentials.len(), tokens: tokens.len(), leases: leases.len(), ..Default::default() };
    for (request_id, at) in &leases {
        let age = killed_at.saturating_duration_since(*at);
        let found = recorded.contains(request_id);
        if age > LEASE_WINDOW {
            totals.old_leases += 1;
            assert!(
                found,
                "round {round}: a lease acknowledged {} ms before the kill has no audit event",
                age.as_millis()
            );
        } else {
            totals.recent_leases += 1;
            totals.recent_lost += usize::from(!found);
            if !found {
                totals.oldest_lost = totals.oldest_lost.max(age);
            }
        }
    }
    totals
}

/// `at`, in whole seconds, as an RFC 3339 time for a filter.
fn since(at: SystemTime) -> prost_types::Timestamp {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs();
    prost_types::Timestamp { seconds: seconds as i64, nanos: 0 }
}

/// The servers' options: no per-token rate limit (the loops outrun it),
/// and the realm reachable over plain http.
fn options_for(realm: &TokenRealm) -> Options {
    Options {
        args: vec!["--rate-limit".into(), "0".into(), "--insecure-registry".into(), realm.address.clone()],
        ..Default::default()
    }
}

/// A server with workspace `acme`, and workspace [`LEASES`] with its
/// credential `lease` for `realm`.
async fn server_with_lease_credential(realm: &TokenRealm) -> Pullpassd {
    let server = Pullpassd::start_with(options_for(realm)).expect("pullpassd starts");
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_workspace(&client, LEASES).await;
    client.create_credential(LEASES, "lease", credential_for(&realm.address, PASSWORD)).await.expect("create");
    server
}

fn credential_for(registry: &str, secret: &str) -> Credential {
    Credential {
        provider: Provider::Generic as i32,
        registry_server: registry.into(),
        username: USERNAME.into(),
        secret: secret.into(),
        ..Default::default()
    }
}

async fn create_loop(
    client: pullpass_client::Client,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    round: usize,
    worker: usize,
    registry: String,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let id = format!("r{round}-w{worker}-{n}");
        n += 1;
        let request = CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: id.clone(),
            credential: Some(credential_for(&format!("{registry}/r{round}w{worker}n{n}"), PASSWORD)),
        };
        if let Ok(created) = client.credentials().create_credential(request).await {
            let version = created.into_inner().secret_version;
            acked.lock().unwrap().credentials.insert(id, version);
        }
    }
}

async fn rotate_loop(client: pullpass_client::Client, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::SeqCst) {
        let target = {
            let a = acked.lock().unwrap();
            if a.credentials.is_empty() {
                None
            } else {
                let index = rng.below(a.credentials.len() as u64) as usize;
                a.credentials.iter().nth(index).map(|(id, v)| (id.clone(), *v))
            }
        };
        let Some((id, _)) = target else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        {
            // A rotation may land even if its answer is lost: it can raise
            // the version by one beyond the highest acknowledged or sent.
            let mut a = acked.lock().unwrap();
            let base = a.attempted.get(&id).copied().unwrap_or(0).max(a.credentials.get(&id).copied().unwrap_or(1));
            a.attempted.insert(id.clone(), base + 1);
        }
        let request = UpdateCredentialRequest {
            credential: Some(Credential {
                name: format!("workspaces/acme/credentials/{id}"),
                secret: PASSWORD.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["secret".into()] }),
        };
        if let Ok(updated) = client.credentials().update_credential(request).await {
            let version = updated.into_inner().secret_version;
            let mut a = acked.lock().unwrap();
            let entry = a.credentials.entry(id).or_insert(version);
            *entry = (*entry).max(version);
        }
    }
}

async fn mint_loop(client: pullpass_client::Client, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let request = CreateAccessTokenRequest {
            parent: "workspaces/acme".into(),
            access_token: Some(AccessToken { role: Role::Launcher as i32, ..Default::default() }),
        };
        if let Ok(token) = client.access().create_access_token(request).await {
            let token = token.into_inner();
            let mut a = acked.lock().unwrap();
            a.tokens.push(token.name);
            a.last_token = Some(token.token);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn lease_loop(
    client: pullpass_client::Client,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    registry: String,
    round: usize,
    worker: usize,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let request_id = format!("crash-r{round}-w{worker}-{n}");
        // A few repositories (the `lease` credential serves them): mostly
        // cached leases, some token requests.
        let image = format!("{registry}/lease/app{}:1", n % 8);
        let mut request = tonic::Request::new(IssueRegistryAuthRequest {
            workspace: format!("workspaces/{LEASES}"),
            images: vec![image],
            ..Default::default()
        });
        request.metadata_mut().insert("x-request-id", request_id.parse().unwrap());
        match client.registry_auth_service().issue_registry_auth(request).await {
            Ok(response) if response.get_ref().auths.iter().all(|a| a.status.as_ref().is_none_or(|s| s.code == 0)) => {
                acked.lock().unwrap().leases.push((request_id, Instant::now()));
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Calls made and calls failed by the load beside a key rotation.
#[derive(Default)]
struct Load {
    calls: u64,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_killed_under_load_and_rerun_fails_no_call_and_leaves_every_secret_readable() {
    let realm = TokenRealm::start(3600, USERNAME, PASSWORD);
    let options = || options_for(&realm);
    let mut server = server_with_lease_credential(&realm).await;
    let client = server.client().await;
    for i in 0..300 {
        let registry = format!("{}/old{i}", realm.address);
        client
            .create_credential("acme", &format!("old{i}"), credential_for(&registry, PASSWORD))
            .await
            .expect("create");
    }
    // A second key, active after the restart; 301 data keys to move.
    let added = server.command(&["keys", "add"]);
    assert!(added.status.success(), "{added:?}");
    server.restart_with(options());

    let client = pullpass_client::Client::builder(server.endpoint())
        .token(server.root_token.clone())
        .retries(0)
        .connect()
        .await
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let mut tasks = Vec::new();
    for worker in 0..3u64 {
        // Each lease asks for a new repository: a token request, which
        // opens the credential's secret while its data key is rewrapped.
        let (client, stop, load, registry) = (client.clone(), stop.clone(), load.clone(), realm.address.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let image = format!("{registry}/old{}/w{worker}-{n}:1", n % 300);
                let request = IssueRegistryAuthRequest {
                    workspace: "workspaces/acme".into(),
                    images: vec![image],
                    ..Default::default()
                };
                let outcome = match client.registry_auth_service().issue_registry_auth(request).await {
                    Ok(r) => match r.into_inner().auths.into_iter().find_map(|a| a.status.filter(|s| s.code != 0)) {
                        Some(status) => Err(format!("lease: {}", status.message)),
                        None => Ok(()),
                    },
                    Err(e) => Err(format!("lease RPC: {e}")),
                };
                record(&load, outcome);
            }
        }));
    }
    {
        let (client, stop, load, registry) = (client.clone(), stop.clone(), load.clone(), realm.address.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let request = CreateCredentialRequest {
                    parent: "workspaces/acme".into(),
                    credential_id: format!("new{n}"),
                    credential: Some(credential_for(&format!("{registry}/new{n}"), PASSWORD)),
                };
                let outcome = client.credentials().create_credential(request).await.map(|_| ());
                record(&load, outcome.map_err(|e| format!("create: {e}")));
                let get = GetCredentialRequest { name: format!("workspaces/acme/credentials/old{}", n % 300) };
                let outcome = client.credentials().get_credential(get).await.map(|_| ());
                record(&load, outcome.map_err(|e| format!("get: {e}")));
            }
        }));
    }

    // `keys rotate` in small batches, killed with SIGKILL midway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rotation = std::process::Command::new(pullpass_tests::binary("pullpassd"))
        .arg("--dev")
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["keys", "rotate", "--batch-size", "10"])
        .env_remove("PULLPASS_MASTER_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start keys rotate");
    // Killed once it reports its first batch, so it dies midway.
    let stdout = rotation.stdout.take().expect("piped stdout");
    let first_batch = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("rotated "))
    })
    .await
    .unwrap();
    let _ = rotation.kill();
    let _ = rotation.wait();
    println!("killed the rotation after: {first_batch:?}");
    let midway = server.command(&["keys", "verify"]);
    assert!(midway.status.success(), "every secret opens after the killed rotation: {midway:?}");

    // Rerun to the end, still under load.
    let rerun = server.command(&["keys", "rotate", "--batch-size", "10"]);
    assert!(rerun.status.success(), "the rerun completes: {rerun:?}");
    let rerun_text = String::from_utf8_lossy(&rerun.stdout).to_string();
    println!("the rerun: {:?}", rerun_text.lines().next().unwrap_or(""));
    assert!(!rerun_text.contains("rotating 0 data key(s)"), "the kill came too late to test a resume: {rerun_text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a load task panicked");
    }
    let load = load.lock().unwrap();
    println!("rotation under load: {} calls, {} failed", load.calls, load.failures.len());
    assert!(load.calls > 100, "the load ran: {} calls", load.calls);
    assert!(
        load.failures.is_empty(),
        "calls failed during the rotation: {:?}",
        &load.failures[..load.failures.len().min(5)]
    );
    let verify = server.command(&["keys", "verify"]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && out.contains(", 0 do not"), "{verify:?}");
    // Every data key is under the new key: the old one wraps none.
    let list = server.command(&["keys", "list"]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success(), "{list:?}");
    let counts: Vec<&str> = text.lines().skip(1).filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(counts.len(), 2, "{text}");
    assert!(counts.contains(&"0"), "the old key still wraps data keys: {text}");
}

fn record(load: &Mutex<Load>, outcome: Result<(), String>) {
    let mut load = load.lock().unwrap();
    load.calls += 1;
    if let Err(failure) = outcome {
        load.failures.push(failure);
    }
}
