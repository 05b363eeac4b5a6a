//! Upstreams that misbehave every way the network allows, through the fault
//! proxy of `support/faults.rs` in front of the token-realm fixture, all on
//! loopback: refused and reset connections, blackholes, a slowloris, a
//! 64 MiB answer, garbage, bad certificates, 429s, a realm whose clock is an
//! hour off, and a thousand calls for a registry that is down.

use std::time::{Duration, Instant, SystemTime};

use pullpass::v1::{Credential, IssueRegistryAuthRequest, Provider, RegistryAuth};
use pullpass_server::domain::Timestamp;
use pullpass_tests::faults::{Fault, FaultProxy, ServerTls, refusing_address};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::process::peak_rss_kib;
use pullpass_tests::registry::private_ca;
use pullpass_tests::registry::world::{code_and_reason, ok};
use pullpass_tests::{Options, Pullpassd, create_workspace};
use tonic::Code;

const USER: &str = "ci";
const PASSWORD: &str = "hostile-CANARY-5be1";

/// A realm, the proxy in front of it, and a pullpassd with one credential
/// for the proxy's address.
struct Rig {
    realm: TokenRealm,
    proxy: FaultProxy,
    server: Pullpassd,
    client: pullpass_client::Client,
}

impl Rig {
    async fn start() -> Self {
        let realm = TokenRealm::start(300, USER, PASSWORD);
        let proxy = FaultProxy::start(&realm.address);
        let (server, client) = server_with_credential(&proxy.address, true, "").await;
        Self { realm, proxy, server, client }
    }

    async fn issue(&self, repository: &str, timeout: Duration) -> (RegistryAuth, Duration) {
        issue(&self.client, &format!("{}/{repository}:1", self.proxy.address), timeout).await
    }
}

async fn server_with_credential(
    registry: &str,
    plain_http: bool,
    ca_bundle_pem: &str,
) -> (Pullpassd, pullpass_client::Client) {
    let mut args = vec!["--rate-limit".to_owned(), "0".to_owned()];
    if plain_http {
        args.extend(["--insecure-registry".to_owned(), registry.to_owned()]);
    }
    let server = Pullpassd::start_with(Options { args, ..Default::default() }).expect("pullpassd starts");
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let credential = Credential {
        provider: Provider::Generic as i32,
        registry_server: registry.to_owned(),
        username: USER.into(),
        secret: PASSWORD.into(),
        ca_bundle_pem: ca_bundle_pem.to_owned(),
        ..Default::default()
    };
    client.create_credential("acme", "upstream", credential).await.expect("create credential");
    (server, client)
}

/// One image's answer, and how long the call took.
async fn issue(client: &pullpass_client::Client, image: &str, timeout: Duration) -> (RegistryAuth, Duration) {
    let mut request = tonic::Request::new(IssueRegistryAuthRequest {
        workspace: "workspaces/acme".into(),
        images: vec![image.to_owned()],
        ..Default::default()
    });
    request.set_timeout(timeout);
    let started = Instant::now();
    let mut auths = client
        .registry_auth_service()
        .issue_registry_auth(request)
        .await
        .expect("an answer before the deadline")
        .into_inner()
        .auths;
    (auths.remove(0), started.elapsed())
}

fn message(auth: &RegistryAuth) -> String {
    auth.status.as_ref().map(|s| s.message.clone()).unwrap_or_default()
}

fn assert_unavailable(auth: &RegistryAuth, mentions: &str) {
    let (code, reason) = code_and_reason(auth);
    assert_eq!((code, reason.as_str()), (Code::Unavailable, "UPSTREAM_UNAVAILABLE"), "{}", message(auth));
    assert!(message(auth).to_lowercase().contains(mentions), "{:?} should mention {mentions:?}", message(auth));
    assert!(auth.token.is_empty() && auth.password.is_empty());
    assert!(!message(auth).contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_reset_connections_are_retried_a_bounded_number_of_times_then_unavailable() {
    // Refused: nothing listens.
    let refused = refusing_address();
    let (_server, client) = server_with_credential(&refused, true, "").await;
    let (auth, took) = issue(&client, &format!("{refused}/team/app:1"), Duration::from_secs(10)).await;
    assert_unavailable(&auth, "refused");
    // Three attempts, two jittered pauses of 50-150 ms and 100-300 ms.
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "{took:?}");

    let rig = Rig::start().await;
    for (prefix, fault, repository) in
        [("/v2/", Fault::ResetMidHeaders, "mid-headers"), ("/token", Fault::ResetMidBody, "mid-body")]
    {
        rig.proxy.set(prefix, fault.clone());
        let before = rig.proxy.faulted();
        let (auth, took) = rig.issue(repository, Duration::from_secs(10)).await;
        assert_unavailable(&auth, "");
        assert_eq!(rig.proxy.faulted() - before, 3, "{fault:?}: one attempt and two retries");
        assert!(took < Duration::from_secs(3), "{fault:?}: {took:?}");
    }

    // Once the upstream heals, the same credential works at once.
    rig.proxy.set("/", Fault::Pass);
    ok(&rig.issue("healed", Duration::from_secs(10)).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholes_and_a_slowloris_answer_within_the_callers_deadline_give_or_take_ten_percent() {
    let rig = Rig::start().await;
    for (prefix, fault, deadline) in [
        ("/v2/", Fault::Blackhole, Duration::from_secs(2)),
        ("/token", Fault::Blackhole, Duration::from_secs(3)),
        ("/token", Fault::Slowloris, Duration::from_secs(3)),
    ] {
        rig.proxy.set(prefix, fault.clone());
        let (auth, took) = rig.issue(&format!("hole{}", deadline.as_secs()), deadline).await;
        assert_unavailable(&auth, "deadline");
        assert!(took <= deadline.mul_f64(1.1) && took >= deadline.mul_f64(0.8), "{fault:?} on {prefix}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_token_answer_is_cut_at_the_body_limit_without_memory_growth() {
    let rig = Rig::start().await;
    ok(&rig.issue("warm", Duration::from_secs(10)).await.0);
    let before = peak_rss_kib(rig.server.pid());
    rig.proxy.set("/token", Fault::Huge(64 * 1024 * 1024));
    for round in 0..3 {
        let (auth, took) = rig.issue(&format!("huge{round}"), Duration::from_secs(10)).await;
        assert_unavailable(&auth, "larger than 1048576 bytes");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let growth_mib = (peak_rss_kib(rig.server.pid()).saturating_sub(before)) / 1024;
    assert!(growth_mib < 16, "peak RSS grew by {growth_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_and_truncated_token_answers_are_precise_errors_and_never_cached() {
    let rig = Rig::start().await;
    for body in ["<html>busy</html>", "{\"token\":\"abc", ""] {
        rig.proxy.set("/token", Fault::Respond { status: 200, headers: vec![], body: body.into() });
        for _ in 0..2 {
            let before = rig.proxy.faulted();
            let (auth, _) = rig.issue("garbage", Duration::from_secs(10)).await;
            assert_unavailable(&auth, "not the expected json");
            assert_eq!(rig.proxy.faulted() - before, 1, "{body:?}: asked again, not cached, and not retried");
        }
    }
    rig.proxy.set("/", Fault::Pass);
    let before = rig.realm.token_requests();
    ok(&rig.issue("garbage", Duration::from_secs(10)).await.0);
    assert_eq!(rig.realm.token_requests() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_the_wrong_name_or_an_expired_one_is_refused_naming_the_cause() {
    let (dir, ca, _, _) = private_ca();
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let realm = TokenRealm::start(300, USER, PASSWORD);
    for (stem, cause) in [("wrong-name", "not valid for name"), ("expired", "expired")] {
        let tls = ServerTls {
            certificate: dir.path().join(format!("{stem}.pem")),
            key: dir.path().join(format!("{stem}.key")),
        };
        let proxy = FaultProxy::start_with(&realm.address, Some(tls));
        let (_server, client) = server_with_credential(&proxy.address, false, &ca_pem).await;
        let (auth, _) = issue(&client, &format!("{}/team/app:1", proxy.address), Duration::from_secs(10)).await;
        assert_unavailable(&auth, cause);
        assert!(message(&auth).contains("certificate"), "{}", message(&auth));
        assert_eq!(proxy.connections(), 1, "{stem}: a bad certificate is not retried");
        assert_eq!(proxy.requests(), 0, "{stem}: nothing was sent");
    }
}

/// An IMF-fixdate `seconds` from now.
fn http_date_in(seconds: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(seconds))
}

fn retry_delay(auth: &RegistryAuth) -> Duration {
    use tonic_types::StatusExt;
    let status = auth.status.clone().expect("status");
    let tonic_status = tonic::Status::with_details(
        Code::from(status.code),
        status.message.clone(),
        prost::Message::encode_to_vec(&status).into(),
    );
    tonic_status.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("RetryInfo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_with_retry_after_in_seconds_as_a_date_or_absent() {
    let rig = Rig::start().await;
    for (repository, retry_after, expected) in [
        ("seconds", Some("30".to_owned()), 25..=30),
        ("date", Some(http_date_in(45)), 40..=45),
        ("absent", None, 55..=60),
    ] {
        // Each form on a fresh credential: the hold is per credential.
        rig.client.delete_credential("acme", "upstream").await.expect("delete");
        let credential = Credential {
            provider: Provider::Generic as i32,
            registry_server: rig.proxy.address.clone(),
            username: USER.into(),
            secret: PASSWORD.into(),
            ..Default::default()
        };
        rig.client.create_credential("acme", "upstream", credential).await.expect("create");
        let headers = retry_after.iter().map(|value| ("Retry-After".to_owned(), value.clone())).collect();
        rig.proxy.set("/token", Fault::Respond { status: 429, headers, body: "{}".into() });
        let before = rig.proxy.faulted();
        let (auth, _) = rig.issue(repository, Duration::from_secs(10)).await;
        assert_eq!(code_and_reason(&auth).0, Code::ResourceExhausted, "{}", message(&auth));
        let delay = retry_delay(&auth).as_secs();
        assert!(expected.contains(&delay), "{repository}: retry in {delay} s");
        let (again, _) = rig.issue(repository, Duration::from_secs(10)).await;
        assert_eq!(code_and_reason(&again).0, Code::ResourceExhausted);
        assert_eq!(rig.proxy.faulted() - before, 1, "{repository}: not asked again before Retry-After");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_clock_an_hour_off_either_way_never_stretches_the_lifetime() {
    let rig = Rig::start().await;
    for (repository, offset) in [("ahead", 3600), ("behind", -3600)] {
        let (seconds, _) = Timestamp::now().seconds_and_nanos();
        let issued_at = Timestamp::from_seconds_and_nanos(seconds + offset, 0).to_rfc3339();
        let body = format!("{{\"token\":\"skewed-{repository}\",\"expires_in\":300,\"issued_at\":\"{issued_at}\"}}");
        rig.proxy.set("/token", Fault::Respond { status: 200, headers: vec![], body });
        let asked_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (auth, _) = rig.issue(repository, Duration::from_secs(10)).await;
        let expires = ok(&auth).expire_time.as_ref().expect("expire_time").seconds;
        assert!(expires <= asked_at + 301, "{repository}: expires {} s after the call", expires - asked_at);
        assert!(expires >= asked_at + 290, "{repository}: expires {} s after the call", expires - asked_at);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_for_a_registry_that_is_down_cost_at_most_the_retry_budget_upstream() {
    const CALLS: usize = 1000;
    const CONCURRENCY: usize = 20;
    let rig = Rig::start().await;
    rig.proxy.set("/", Fault::ResetMidHeaders);
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, next, registry) = (rig.client.clone(), next.clone(), rig.proxy.address.clone());
        workers.push(tokio::spawn(async move {
            let mut unavailable = 0;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= CALLS {
                    return unavailable;
                }
                // A different repository each time: no singleflight, no cache.
                let (auth, _) = issue(&client, &format!("{registry}/team/app{n}:1"), Duration::from_secs(10)).await;
                if code_and_reason(&auth).0 == Code::Unavailable {
                    unavailable += 1;
                }
            }
        }));
    }
    let mut unavailable = 0;
    for worker in workers {
        unavailable += worker.await.unwrap();
    }
    let took = started.elapsed();
    let attempts = rig.proxy.requests();
    println!(
        "{CALLS} calls ({CONCURRENCY} at a time) for a registry that is down: {attempts} upstream attempts in {took:?}"
    );
    assert_eq!(unavailable, CALLS);
    // The calls in flight when the endpoint failed, the retry bucket (10),
    // and a probe per cooldown (1 s, 2 s, 4 s…); not 3000, nor 1000.
    let probes = took.as_secs() + 1;
    let bound = CONCURRENCY as u64 + 10 + probes;
    assert!(attempts <= bound, "{attempts} attempts, more than {bound}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let (auth, _) = rig.issue("one-more", Duration::from_secs(10)).await;
    assert_unavailable(&auth, "not contacted");
}
