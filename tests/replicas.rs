//! Two replicas on one real PostgreSQL 15: every promise of the single-node
//! service holds across them (changes within a second, one token request
//! per burst, shared leases, one verifiable audit chain), and they survive
//! a replica killed, a claimant killed, PostgreSQL stopped, and a rolling
//! restart under load.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pullpass::v1::{Credential, Role};
use pullpass_client::Client;
use pullpass_tests::postgres::{Cluster, Database};
use pullpass_tests::registry::world::{ALICE_PASSWORD, code_and_reason, ok};
use pullpass_tests::replicas::{Replicas, within};
use pullpass_tests::{create_workspace, error_reason, issue_registry_auth};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// How soon another replica's change must take effect.
const PROPAGATION: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_created_on_a_leases_on_b_and_a_lease_fetched_on_a_is_served_on_b_without_the_registry() {
    let r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    let image = r.image("team/app:1.0");
    let seeded = r.token_requests();
    // B has looked at the workspace (and cached that it has no credential).
    let none = issue_registry_auth(&b, &image).await.unwrap();
    assert_eq!(code_and_reason(&none).0, Code::NotFound);
    r.add(&a, "reg").await;
    let on_b = within(PROPAGATION, || async {
        issue_registry_auth(&b, &image).await.is_ok_and(|auth| auth.status.as_ref().is_some_and(|s| s.code == 0))
    })
    .await;
    assert!(on_b.is_some(), "a credential created on A must lease on B within 1 s");
    assert_eq!(r.token_requests() - seeded, 1, "{:?}", r.issuer.peer.stats());

    let fresh = r.image("team/other:1.0");
    let on_a = issue_registry_auth(&a, &fresh).await.unwrap();
    ok(&on_a);
    assert!(!on_a.cached);
    assert_eq!(r.token_requests() - seeded, 2);
    let on_b = issue_registry_auth(&b, &fresh).await.unwrap();
    ok(&on_b);
    assert_eq!(on_b.token, on_a.token, "B serves A's lease");
    assert!(on_b.cached, "served without waiting for the registry");
    assert_eq!(r.token_requests() - seeded, 2, "no upstream request from B");
    // The shared lease is sealed: the token is nowhere at rest.
    let mut a_server = r.a;
    a_server.stop();
    assert!(a_server.stored_files_containing(on_a.token.as_bytes()).is_empty(), "a lease token at rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_on_a_is_used_on_b_within_a_second() {
    let r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    a.create_credential("acme", "reg", r.credential("wrong-CANARY-pw")).await.unwrap();
    let image = r.image("team/app:1.0");
    let refused = issue_registry_auth(&b, &image).await.unwrap();
    assert_eq!(code_and_reason(&refused).0, Code::PermissionDenied);
    let mut rotated = a.get_credential("acme", "reg").await.unwrap();
    rotated.secret = ALICE_PASSWORD.into();
    let started = Instant::now();
    a.update_credential(rotated, &["secret"]).await.unwrap();
    let taken = within(PROPAGATION, || async {
        issue_registry_auth(&b, &image).await.is_ok_and(|auth| auth.status.as_ref().is_some_and(|s| s.code == 0))
    })
    .await;
    assert!(
        taken.is_some(),
        "B still used the old secret {:?} after the rotation: {}",
        started.elapsed(),
        r.b.current_logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_a_is_refused_on_b_within_a_second_and_a_deleted_workspace_goes_too() {
    let r = Replicas::start().await;
    let root_a = r.a.client().await;
    r.add(&root_a, "reg").await;
    let launcher = root_a.create_access_token("acme", Role::Launcher, &[], None, "replicated").await.unwrap();
    let on_b = r.b.client_with(Some(&launcher.token)).await;
    let image = r.image("team/app:1.0");
    ok(&issue_registry_auth(&on_b, &image).await.expect("the launcher works on B"));
    root_a.revoke_access_token(&launcher.name).await.unwrap();
    let refused = within(PROPAGATION, || async {
        issue_registry_auth(&on_b, &image).await.is_err_and(|status| status.code() == Code::Unauthenticated)
    })
    .await;
    assert!(refused.is_some(), "B still accepted a token revoked on A");

    create_workspace(&root_a, "gone").await;
    root_a.create_credential("gone", "reg", r.credential(ALICE_PASSWORD)).await.unwrap();
    let root_b = r.b.client().await;
    let in_gone = |client: Client| {
        let image = image.clone();
        async move {
            client
                .registry_auth_service()
                .issue_registry_auth(pullpass::v1::IssueRegistryAuthRequest {
                    workspace: "workspaces/gone".into(),
                    images: vec![image],
                    ..Default::default()
                })
                .await
        }
    };
    let served = within(PROPAGATION, || async {
        in_gone(root_b.clone())
            .await
            .is_ok_and(|r| r.into_inner().auths[0].status.as_ref().is_some_and(|s| s.code == 0))
    })
    .await;
    assert!(served.is_some());
    root_a.delete_workspace("gone", true).await.unwrap();
    let gone =
        within(PROPAGATION, || async { in_gone(root_b.clone()).await.is_err_and(|s| s.code() == Code::NotFound) })
            .await;
    assert!(gone.is_some(), "B still served a workspace deleted on A");
}

/// Is `client`'s token refused (UNAUTHENTICATED) within the propagation
/// limit?
async fn refused_within_a_second(client: &Client) -> bool {
    within(PROPAGATION, || async {
        client.list_workspaces().await.is_err_and(|e| matches!(e, pullpass_client::Error::Unauthenticated(_)))
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_token_revoked_on_a_or_offline_is_refused_on_b_within_a_second() {
    let r = Replicas::start().await;
    let minted = r.a.command(&["tokens", "create-root", "--description", "second root"]);
    let printed = String::from_utf8_lossy(&minted.stdout).into_owned();
    let name = printed.split_whitespace().find(|w| w.starts_with("rootTokens/")).expect("its name").to_owned();
    let second = printed.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("the token").to_owned();
    let second_on_b = r.b.client_with(Some(&second)).await;
    second_on_b.list_workspaces().await.expect("B accepts (and caches) the new root token");
    let first_on_b = r.b.client().await;
    first_on_b.list_workspaces().await.expect("B accepts the first root token");

    // Over the API on A.
    r.a.client().await.revoke_access_token(&name).await.expect("ROOT revokes another root token");
    assert!(refused_within_a_second(&second_on_b).await, "B still accepted a root token revoked on A");

    // Offline, the last usable one: refused by both replicas.
    let listed = String::from_utf8_lossy(&r.a.command(&["tokens", "list-root"]).stdout).into_owned();
    let first = listed.lines().find(|l| l.contains("--dev")).and_then(|l| l.split_whitespace().next()).unwrap();
    let revoked = r.a.command(&["tokens", "revoke-root", first]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("no usable root token is left"));
    assert!(refused_within_a_second(&first_on_b).await, "B still accepted a root token revoked offline");
    assert!(refused_within_a_second(&r.a.client().await).await, "A still accepted a root token revoked offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_way_burst_split_across_both_replicas_makes_exactly_one_token_request() {
    let r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    r.add(&a, "reg").await;
    // Both replicas know the credential before the burst.
    let warm = r.image("team/warm:1.0");
    ok(&issue_registry_auth(&a, &warm).await.unwrap());
    ok(&issue_registry_auth(&b, &warm).await.unwrap());
    let before = r.token_requests();
    let image = r.image("team/app:1.0");
    let calls = (0..200).map(|i| {
        let client = if i % 2 == 0 { a.clone() } else { b.clone() };
        let image = image.clone();
        tokio::spawn(async move { issue_registry_auth(&client, &image).await })
    });
    let mut tokens = HashSet::new();
    for call in futures_util::future::join_all(calls).await {
        let auth = call.unwrap().expect("RPC");
        tokens.insert(ok(&auth).token.clone());
    }
    assert_eq!(tokens.len(), 1, "every caller on both replicas got the same token");
    assert_eq!(r.token_requests() - before, 1, "exactly one token request for the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_on_both_replicas_leave_one_verifiable_audit_chain() {
    let r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    let image = r.image("team/app:1.0");
    let work = |client: Client, side: &'static str| {
        let credential = r.credential(ALICE_PASSWORD);
        let image = image.clone();
        async move {
            for i in 0..15 {
                let id = format!("{side}{i}");
                client.create_credential("acme", &id, credential.clone()).await.unwrap();
                let _ = issue_registry_auth(&client, &image).await.unwrap();
                let mut changed = client.get_credential("acme", &id).await.unwrap();
                changed.description = format!("changed on {side}");
                client.update_credential(changed, &["description"]).await.unwrap();
                if i % 3 == 0 {
                    client.delete_credential("acme", &id).await.unwrap();
                }
            }
        }
    };
    tokio::join!(work(a.clone(), "a"), work(b.clone(), "b"));
    let output = r.b.command(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("audit chain intact"), "{text}");
    let listed = a.list_credentials("acme", "").await.unwrap();
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|c: &Credential| c.description.starts_with("changed on")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_replica_mid_burst_leaves_the_other_completing_every_call() {
    let mut r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    r.add(&a, "reg").await;
    ok(&issue_registry_auth(&b, &r.image("team/warm:1.0")).await.unwrap());
    // Slow token answers, so A dies holding claims for images B wants.
    r.issuer.peer.control(serde_json::json!({"token_delay": 0.3}));
    let images: Vec<String> = (0..10).map(|i| r.image(&format!("team/app{i}:1.0"))).collect();
    let on_b: Vec<_> = (0..200)
        .map(|i| {
            let (b, image) = (b.clone(), images[i % images.len()].clone());
            tokio::spawn(async move { issue_registry_auth(&b, &image).await })
        })
        .collect();
    let on_a: Vec<_> = (0..100)
        .map(|i| {
            let (a, image) = (a.clone(), images[i % images.len()].clone());
            tokio::spawn(async move { issue_registry_auth(&a, &image).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.a.kill();
    r.issuer.peer.control(serde_json::json!({}));
    for call in futures_util::future::join_all(on_b).await {
        let auth = call.unwrap().expect("every call on B completes");
        ok(&auth);
    }
    for call in on_a {
        let _ = call.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_claimant_dies_mid_fetch_another_replica_fetches_after_the_claim_expires() {
    let mut r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    r.add(&a, "reg").await;
    ok(&issue_registry_auth(&b, &r.image("team/warm:1.0")).await.unwrap());
    let before = r.token_requests();
    r.issuer.peer.control(serde_json::json!({"token_delay": 30}));
    let image = r.image("team/app:1.0");
    let stuck = {
        let (a, image) = (a.clone(), image.clone());
        tokio::spawn(async move { issue_registry_auth(&a, &image).await })
    };
    let arrived = within(Duration::from_secs(5), || async { r.token_requests() > before }).await;
    assert!(arrived.is_some(), "A's token request reached the issuer");
    let claimed_at = Instant::now();
    r.a.kill();
    let _ = stuck.await;
    r.issuer.peer.control(serde_json::json!({}));
    let auth = issue_registry_auth(&b, &image).await.unwrap();
    ok(&auth);
    let waited = claimed_at.elapsed();
    assert_eq!(r.token_requests() - before, 2, "B fetched once A's claim lapsed");
    assert!(waited >= Duration::from_secs(3), "B waited for the claim ({waited:?})");
    assert!(waited < Duration::from_secs(10), "B took over after the claim's TTL ({waited:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_stopped_writes_are_unavailable_cached_leases_still_serve_and_all_recovers() {
    let cluster = Cluster::start();
    let database = Database::in_cluster(&cluster);
    let mut r = Replicas::start_on(database, &[]).await;
    r.add(&r.a.client().await, "reg").await;
    // A replica drops a credential's cached leases when its change comes
    // back through the feed (the notification, then the poll a second
    // later). Restarted, A has read the trail's head before serving, so
    // nothing of the credential's creation is still to come.
    r.restart(false, &[]);
    let a = r.a.client().await;
    let image = r.image("team/app:1.0");
    let warm = issue_registry_auth(&a, &image).await.unwrap();
    ok(&warm);
    cluster.stop();
    let cached = match issue_registry_auth(&a, &image).await {
        Ok(cached) => cached,
        Err(e) => panic!("served from the cache: {e:?}\nA's log:\n{}", r.a.current_logs()),
    };
    assert_eq!(ok(&cached).token, warm.token, "a cached lease is served without the database");
    let refused = a
        .credentials()
        .create_credential(pullpass::v1::CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: "later".into(),
            credential: Some(r.credential(ALICE_PASSWORD)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(error_reason(&refused).as_deref(), Some("DATABASE_UNAVAILABLE"), "{refused:?}");
    let listed = a.list_credentials("acme", "").await.unwrap_err();
    assert!(listed.is_retryable(), "{listed:?}");
    cluster.resume();
    let recovered = within(Duration::from_secs(15), || async {
        a.create_credential("acme", "later", r.credential(ALICE_PASSWORD)).await.is_ok()
    })
    .await;
    assert!(recovered.is_some(), "writes work again once PostgreSQL is back");
    // And the other replica's changes reach A again (its listener is back).
    let b = r.b.client().await;
    b.delete_credential("acme", "reg").await.unwrap();
    b.delete_credential("acme", "later").await.unwrap();
    let evicted = within(Duration::from_secs(3), || async {
        issue_registry_auth(&a, &image).await.is_ok_and(|auth| auth.status.as_ref().is_some_and(|s| s.code != 0))
    })
    .await;
    assert!(evicted.is_some(), "A saw B's deletion after PostgreSQL came back");
    assert!(!r.a.current_logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call_of_a_client_that_knows_both_replicas() {
    let mut r = Replicas::start_on(Database::fresh(), &["--drain-delay", "1"]).await;
    let root = r.a.root_token.clone();
    let first = r.a.client().await;
    r.add(&first, "reg").await;
    let client = Client::builder(r.endpoints()).token(root).timeout(Duration::from_secs(20)).connect().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let image = r.image("team/app:1.0");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, image, credential) =
                (client.clone(), stop.clone(), image.clone(), r.credential(ALICE_PASSWORD));
            tokio::spawn(async move {
                let (mut calls, mut failures) = (0u64, Vec::new());
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let lease = client.registry_auth(&image).workspace("acme").no_cache().send().await;
                    if let Err(e) = lease {
                        failures.push(format!("lease: {e}"));
                    }
                    if w % 2 == 0
                        && let Err(e) = client.create_credential("acme", &format!("w{w}-{i}"), credential.clone()).await
                    {
                        failures.push(format!("write: {e}"));
                    }
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (calls, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.restart(false, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.restart(true, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut calls, mut failures) = (0, Vec::new());
    for worker in workers {
        let (c, f) = worker.await.unwrap();
        calls += c;
        failures.extend(f);
    }
    assert!(calls > 50, "the load ran throughout ({calls} rounds)");
    assert!(failures.is_empty(), "{} failed calls of {calls} rounds: {failures:?}", failures.len());
}

/// `server`'s grpc.health.v1 status of `service`.
async fn health(server: &pullpass_tests::Pullpassd, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint()).ok()?.connect().await.ok()?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
        .await
        .ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

/// What a cut-off replica answered one probe of a change made on A.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The old state was honoured.
    Stale,
    /// The call was refused for staleness: UNAVAILABLE, with a retry delay.
    Unavailable,
    /// The new state.
    Current,
    /// No answer before the call's deadline.
    Hung,
    /// UNAVAILABLE for another reason than staleness.
    Unreachable,
}

/// Issues `image` for `project` on `client`; how the answer stands to a
/// change that should make `is_current` hold of it.
async fn probe(
    client: &Client,
    image: &str,
    project: &str,
    is_current: impl Fn(&Result<pullpass::v1::RegistryAuth, tonic::Status>) -> bool,
) -> Answer {
    let answer = client
        .registry_auth_service()
        .issue_registry_auth(pullpass::v1::IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            project: project.into(),
            images: vec![image.to_owned()],
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().auths.remove(0));
    if std::env::var_os("PROBE_DEBUG").is_some() {
        println!("probe {image} {project}: {answer:?}");
    }
    match &answer {
        Err(status) if error_reason(status).as_deref() == Some("REPLICA_STALE") => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            let details = tonic_types::StatusExt::get_error_details(status);
            assert!(
                details.retry_info().is_some_and(|r| r.retry_delay.is_some()),
                "UNAVAILABLE with RetryInfo: {status:?}"
            );
            Answer::Unavailable
        }
        // The database itself out of reach (a broken pooled connection
        // while the path heals): neither stale nor current.
        Err(status) if status.code() == Code::Unavailable => Answer::Unreachable,
        Err(status) if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) => Answer::Hung,
        answer if is_current(answer) => Answer::Current,
        _ => Answer::Stale,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_honours_no_change_past_the_staleness_limit_and_catches_up_once_healed() {
    const LIMIT: Duration = Duration::from_secs(3);
    let (r, path) = Replicas::start_with_b_cuttable(Database::fresh(), &["--max-staleness", "3"]).await;
    let a = r.a.client().await;
    // `reg` (user ops) covers the registry, `team` (alice) its team/ namespace.
    let reg = Credential { username: "ops".into(), ..r.credential("ops-pw") };
    a.create_credential("acme", "reg", reg).await.unwrap();
    let mut team = r.credential(ALICE_PASSWORD);
    team.registry_server = format!("{}/team", r.registry.address);
    a.create_credential("acme", "team", team).await.unwrap();
    let launcher = a.create_access_token("acme", Role::Launcher, &[], None, "cut off").await.unwrap();
    let on_b = |token: &str| {
        Client::builder(r.b.endpoint())
            .token(token.to_owned())
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .retries(0)
            .connect()
    };
    let (b_launcher, b_root) = (on_b(&launcher.token).await.unwrap(), on_b(&r.a.root_token).await.unwrap());
    let (team_image, other_image) = (r.image("team/app:1.0"), r.image("other/app:1.0"));
    let served_by = |auth: &Result<pullpass::v1::RegistryAuth, tonic::Status>, credential: &str| {
        auth.as_ref()
            .is_ok_and(|a| a.status.as_ref().is_some_and(|s| s.code == 0) && a.credential.ends_with(credential))
    };
    // B has cached all three: the token, the credentials, their leases.
    let warm = within(PROPAGATION * 5, || async {
        probe(&b_launcher, &team_image, "rnaseq", |a| served_by(a, "/team")).await == Answer::Current
            && probe(&b_root, &other_image, "rnaseq", |a| served_by(a, "/reg")).await == Answer::Current
    })
    .await;
    assert!(warm.is_some(), "B serves before the cut");

    path.silence();
    let cut = Instant::now();
    // On A: revoke the launcher token, narrow `reg` to another project,
    // delete `team`.
    a.revoke_access_token(&launcher.name).await.unwrap();
    let mut narrowed = a.get_credential("acme", "reg").await.unwrap();
    narrowed.allowed_projects = vec!["other".into()];
    a.update_credential(narrowed, &["allowed_projects"]).await.unwrap();
    a.delete_credential("acme", "team").await.unwrap();
    let committed = Instant::now();

    // B, cut off, answers each of the three until it must stop: never
    // past the limit, and never slower than the call's deadline.
    let (mut last_stale, mut refusals, mut hung, mut slowest) = (None, 0, 0, Duration::ZERO);
    while committed.elapsed() < LIMIT + Duration::from_secs(3) {
        for (client, image, current) in [
            (&b_launcher, &team_image, "revocation"),
            (&b_root, &other_image, "narrowing"),
            (&b_root, &team_image, "deletion"),
        ] {
            let (asked, sent) = (Instant::now(), committed.elapsed());
            let answer = probe(client, image, "rnaseq", |answer| match current {
                "revocation" => answer.as_ref().is_err_and(|s| s.code() == Code::Unauthenticated),
                "narrowing" => {
                    answer.as_ref().is_ok_and(|a| a.status.as_ref().is_some_and(|s| s.code == Code::NotFound as i32))
                }
                _ => !served_by(answer, "/team"),
            })
            .await;
            slowest = slowest.max(asked.elapsed());
            match answer {
                // Counted from when the call was sent: the answer it got
                // was decided then (a cached one takes no time).
                Answer::Stale => last_stale = Some((sent, current)),
                Answer::Unavailable => refusals += 1,
                Answer::Hung => hung += 1,
                Answer::Current | Answer::Unreachable => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "cut for {:?}: last stale answer {last_stale:?} after the commit; {refusals} refusals; {hung} calls past their deadline; slowest call {slowest:?}",
        cut.elapsed()
    );
    if let Some((after, what)) = last_stale {
        assert!(
            after <= LIMIT,
            "B honoured the old state ({what}) {after:?} after the change, past the limit of {LIMIT:?}"
        );
    }
    assert!(refusals > 0, "past the limit, a cut-off replica refuses");
    // Load balancers stop sending it calls; liveness probes do not kill it.
    assert_eq!(health(&r.b, "").await, Some(ServingStatus::NotServing));
    assert_eq!(health(&r.b, "liveness").await, Some(ServingStatus::Serving));
    assert_eq!(hung, 0, "calls went unanswered until their deadline (slowest {slowest:?})");

    path.heal();
    let back = within(Duration::from_secs(15), || async {
        probe(&b_root, &other_image, "other", |a| served_by(a, "/reg")).await == Answer::Current
    })
    .await;
    assert!(back.is_some(), "B serves again once the path heals");
    let serving = within(Duration::from_secs(5), || async { health(&r.b, "").await == Some(ServingStatus::Serving) });
    assert!(serving.await.is_some(), "B reports SERVING again");
    // Every change made in the gap is reflected.
    assert_eq!(
        probe(&b_launcher, &team_image, "rnaseq", |a| a.as_ref().is_err_and(|s| s.code() == Code::Unauthenticated))
            .await,
        Answer::Current,
        "the revoked token"
    );
    assert_eq!(
        probe(&b_root, &other_image, "rnaseq", |a| a
            .as_ref()
            .is_ok_and(|a| a.status.as_ref().is_some_and(|s| s.code == Code::NotFound as i32)))
        .await,
        Answer::Current,
        "the narrowed credential"
    );
    assert_eq!(
        probe(&b_root, &team_image, "rnaseq", |a| !served_by(a, "/team")).await,
        Answer::Current,
        "the deleted one"
    );
}

/// A gateway password from `client` for the registry's `team/app:1.0`.
async fn gateway_password(client: &Client, r: &Replicas) -> String {
    let auths = client
        .registry_auth_service()
        .issue_registry_auth(pullpass::v1::IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec![r.image("team/app:1.0")],
            via_gateway: true,
            ..Default::default()
        })
        .await
        .expect("IssueRegistryAuth via the gateway")
        .into_inner()
        .auths;
    ok(&auths[0]).password.clone()
}

/// GETs `path` of `team/app` through a replica's gateway (containerd's
/// `?ns=` form names the registry); the status and body.
async fn through_gateway(gateway: &str, r: &Replicas, path: &str, password: &str) -> (u16, Vec<u8>) {
    let url = format!("http://{gateway}/v2/team/app/{path}?ns={}", r.registry.address);
    let response = pullpass_tests::gateway::http_client()
        .get(url)
        .header("authorization", pullpass_tests::gateway::basic("pullpass", password))
        .header("accept", pullpass_tests::gateway::OCI_MANIFEST)
        .send()
        .await
        .expect("a gateway answer");
    (response.status().as_u16(), response.bytes().await.expect("a body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_invalidates_its_tokens_costs_one_fresh_exchange_across_replicas_and_the_dead_token_is_not_used_again()
 {
    let mut r = Replicas::start().await;
    let (a, b) = (r.a.client().await, r.b.client().await);
    r.add(&a, "reg").await;
    let (password_a, password_b) = (gateway_password(&a, &r).await, gateway_password(&b, &r).await);
    let (status, manifest) = through_gateway(&r.a.gateway, &r, "manifests/1.0", &password_a).await;
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blob = format!("blobs/{}", manifest["config"]["digest"].as_str().expect("a config blob"));
    // Both replicas pull with the lease they share.
    assert_eq!(through_gateway(&r.a.gateway, &r, &blob, &password_a).await.0, 200);
    assert_eq!(through_gateway(&r.b.gateway, &r, &blob, &password_b).await.0, 200);

    // The registry's signing key changes: every token issued so far is dead.
    r.issuer.peer.control(serde_json::json!({"rotate_key": true}));
    r.registry.restart();
    let before = r.token_requests();
    assert_eq!(through_gateway(&r.a.gateway, &r, &blob, &password_a).await.0, 200, "A recovers");
    assert_eq!(r.token_requests() - before, 1, "with one fresh exchange");
    assert_eq!(through_gateway(&r.b.gateway, &r, &blob, &password_b).await.0, 200, "B recovers");
    let password_b = gateway_password(&b, &r).await;
    assert_eq!(r.token_requests() - before, 1, "B took A's fresh lease: no exchange of its own");

    // From now on neither replica presents the dead token.
    let mark = r.registry.mark().await;
    for (gateway, password) in [(&r.a.gateway, &password_a), (&r.b.gateway, &password_b)] {
        for _ in 0..3 {
            assert_eq!(through_gateway(gateway, &r, &blob, password).await.0, 200);
        }
    }
    let end = r.registry.mark().await;
    let refused: Vec<_> = r.registry.served()[mark..end - 1].iter().filter(|s| s.status == 401).cloned().collect();
    assert!(refused.is_empty(), "the registry refused a token again: {refused:?}");
    assert_eq!(r.token_requests() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_identity_binding_refuses_the_next_call_on_both_replicas_within_a_second() {
    let issuer = pullpass_tests::identity::IdentityIssuer::start_kubernetes();
    let r = Replicas::start().await;
    let a = r.a.client().await;
    r.add(&a, "reg").await;
    pullpass_tests::identity::create_provider(&a, "k8s", &issuer).await;
    pullpass_tests::identity::bind(&a, "ci", "k8s", &[("/kubernetes.io/namespace", "ci")], &[]).await.unwrap();
    let jwt = issuer.mint_kubernetes("ci", "builder", "pullpass");
    let image = r.image("team/app:1.0");
    let (on_a, on_b) = (r.a.client_with(Some(&jwt)).await, r.b.client_with(Some(&jwt)).await);
    for client in [&on_a, &on_b] {
        let served = within(PROPAGATION * 2, || async {
            issue_registry_auth(client, &image).await.is_ok_and(|auth| auth.status.is_some_and(|s| s.code == 0))
        })
        .await;
        assert!(served.is_some(), "the bound identity leases on both replicas");
    }
    a.access()
        .delete_identity_binding(pullpass::v1::DeleteIdentityBindingRequest {
            name: "workspaces/acme/identityBindings/ci".into(),
        })
        .await
        .unwrap();
    for client in [&on_a, &on_b] {
        let refused = within(PROPAGATION, || async {
            issue_registry_auth(client, &image).await.is_err_and(|s| s.code() == Code::PermissionDenied)
        })
        .await;
        assert!(refused.is_some(), "a deleted binding refuses the next call within a second on every replica");
    }
}
