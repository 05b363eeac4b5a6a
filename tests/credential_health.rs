//! Credential health end to end, against the real registry and its token
//! issuer: a credential's `expire_time` (set, read back, changed and
//! cleared through the update mask, bad dates refused on the field); its
//! last upstream refusal with a typed reason and `failing_since`, written
//! off the lease path; the health gauges and the refusal counter on
//! `/metrics`; and the secret never appearing in what health records.

use std::time::Duration;

use pullpass::v1::credential_failure::Reason;
use pullpass::v1::{CreateCredentialRequest, Credential};
use pullpass_tests::registry::world::{ALICE_PASSWORD, World, code_and_reason, ok};
use pullpass_tests::{eventually, gateway::http_client, violation_fields};

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

async fn start() -> World {
    World::start_with(&["--health-refresh-seconds".to_owned(), "1".to_owned()]).await
}

/// The value of the sample `series` (name and labels exactly as exposed).
async fn metric(world: &World, series: &str) -> Option<f64> {
    let text = http_client()
        .get(format!("http://{}/metrics", world.server.metrics))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap();
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_time_is_stored_changed_and_cleared_and_a_bad_date_is_refused_on_the_field() {
    let world = start().await;
    let in_three_days = now() + 3 * DAY;
    let credential =
        Credential { expire_time: Some(at(in_three_days)), ..world.credential("", "alice", ALICE_PASSWORD) };
    world.add("pat", credential).await;
    let stored = world.client.get_credential("acme", "pat").await.unwrap();
    assert_eq!(stored.expire_time, Some(at(in_three_days)));
    assert_eq!(stored.last_failure, None);

    // The gauges count it within 7 and 30 days, and nothing fails.
    let expiring = |window: &'static str| {
        let world = &world;
        move || async move {
            let series = format!("pullpass_credentials_expiring{{within=\"{window}\"}}");
            metric(world, &series).await.filter(|v| *v == 1.0)
        }
    };
    eventually("the 7-day gauge to count the credential", Duration::from_secs(20), expiring("7d")).await;
    eventually("the 30-day gauge to count the credential", Duration::from_secs(20), expiring("30d")).await;
    assert_eq!(metric(&world, "pullpass_credentials_failing").await, Some(0.0));

    // A caller asking for a repository the credential does not reach is
    // counted, but does not make the credential failing.
    let auth = world.issue(&[&world.registry.image("other/tool:1.0")], &[]).await;
    assert_eq!(code_and_reason(&auth[0]).1, "UPSTREAM_REJECTED_CREDENTIAL", "NoAccess maps to this reason");
    eventually("the no_access refusal to be counted", Duration::from_secs(10), || async {
        metric(&world, "pullpass_upstream_refusals_total{reason=\"no_access\"}").await.filter(|v| *v == 1.0)
    })
    .await;
    assert_eq!(world.client.get_credential("acme", "pat").await.unwrap().last_failure, None);

    // Moved past a week: only the 30-day window holds it.
    let in_twenty_days = now() + 20 * DAY;
    let later = Credential { expire_time: Some(at(in_twenty_days)), ..stored.clone() };
    let updated = world.client.update_credential(later, &["expire_time"]).await.unwrap();
    assert_eq!(updated.expire_time, Some(at(in_twenty_days)));
    assert_eq!(updated.secret_version, stored.secret_version, "the secret is untouched");
    eventually("the 7-day gauge to drop it", Duration::from_secs(20), || async {
        metric(&world, "pullpass_credentials_expiring{within=\"7d\"}").await.filter(|v| *v == 0.0)
    })
    .await;

    // Naming the path without a value clears it.
    let cleared = Credential { expire_time: None, ..updated };
    let cleared = world.client.update_credential(cleared, &["expire_time"]).await.unwrap();
    assert_eq!(cleared.expire_time, None);

    // A date outside 2000..9999 (a typo) is refused on the field, and nothing is stored.
    for seconds in [0, 400_000_000_000] {
        let bad = Credential { expire_time: Some(at(seconds)), ..world.credential("", "alice", ALICE_PASSWORD) };
        let status = world
            .client
            .credentials()
            .create_credential(CreateCredentialRequest {
                parent: "workspaces/acme".into(),
                credential_id: "typo".into(),
                credential: Some(bad),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(violation_fields(&status), ["credential.expire_time"]);
    }
    assert!(world.client.get_credential("acme", "typo").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_records_why_and_since_when_and_a_working_secret_heals_it() {
    let world = start().await;
    let wrong = "health-CANARY-wrong-password";
    world.add("alice", world.credential("", "alice", wrong)).await;
    let image = world.registry.image("team/app:1.0");

    // The realm refuses the wrong password: the lease fails, and the
    // credential's health records a REJECTED refusal.
    let auth = world.issue(&[&image], &[]).await;
    assert_eq!(code_and_reason(&auth[0]).1, "UPSTREAM_REJECTED_CREDENTIAL");
    let failure = eventually("the refusal to be recorded", Duration::from_secs(10), || async {
        world.client.get_credential("acme", "alice").await.ok()?.last_failure
    })
    .await;
    assert_eq!(failure.reason(), Reason::Rejected);
    let time = failure.time.expect("time");
    assert!((time.seconds - now()).abs() < 60, "{time:?}");
    assert_eq!(failure.failing_since, Some(time), "the first refusal starts the streak");
    eventually("the failing gauge to count it", Duration::from_secs(20), || async {
        metric(&world, "pullpass_credentials_failing").await.filter(|v| *v == 1.0)
    })
    .await;
    let rejected = metric(&world, "pullpass_upstream_refusals_total{reason=\"rejected\"}").await.unwrap();
    assert!(rejected >= 1.0, "{rejected}");
    // Every reason exists from the start, so alerts and dashboards see zeros.
    for reason in ["no_access", "rate_limited", "unavailable", "timeout", "realm_refused", "misconfigured"] {
        let series = format!("pullpass_upstream_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&world, &series).await, Some(0.0), "{reason}");
    }

    // A refusal within the minute is counted but not written again.
    let auth = world.issue(&[&image], &[]).await;
    assert_eq!(code_and_reason(&auth[0]).1, "UPSTREAM_REJECTED_CREDENTIAL");
    let again = eventually("the second refusal to be counted", Duration::from_secs(10), || async {
        metric(&world, "pullpass_upstream_refusals_total{reason=\"rejected\"}").await.filter(|v| *v > rejected)
    })
    .await;
    assert_eq!(again, rejected + 1.0);
    let same = world.client.get_credential("acme", "alice").await.unwrap().last_failure.unwrap();
    assert_eq!(same.time, failure.time);

    // The right password: the lease is issued, the credential was used
    // after its refusal, so it is no longer failing; the record of the
    // last refusal stays.
    let current = world.client.get_credential("acme", "alice").await.unwrap();
    let fixed = Credential { secret: ALICE_PASSWORD.into(), ..current };
    world.client.update_credential(fixed, &["secret"]).await.unwrap();
    ok(&world.issue(&[&image], &[]).await[0]);
    let healed = eventually("the use to be recorded", Duration::from_secs(10), || async {
        let c = world.client.get_credential("acme", "alice").await.ok()?;
        let used = c.last_used_time?;
        (used.seconds >= time.seconds).then_some(c)
    })
    .await;
    assert_eq!(healed.last_failure.map(|f| f.reason()), Some(Reason::Rejected));
    eventually("the failing gauge to drop it", Duration::from_secs(20), || async {
        metric(&world, "pullpass_credentials_failing").await.filter(|v| *v == 0.0)
    })
    .await;

    // What health records never holds the secret.
    let log = world.server.logs();
    assert!(!log.contains(wrong), "the wrong password is in the log");
    let leaks = pullpass_tests::files_containing(&world.server.data_dir, wrong.as_bytes());
    assert!(leaks.is_empty(), "the secret in clear in {leaks:?}");
}

/// GitLab's token endpoint as its docs describe it, for one token: `GET
/// /api/v4/personal_access_tokens/self` answers the token's own record.
/// Records each request's path and `PRIVATE-TOKEN` header. (GitHub's
/// header is tested in the server's `upstream::expiry`: a GHCR credential
/// always serves ghcr.io, which these tests cannot reach.)
struct GitLabApi {
    address: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl GitLabApi {
    fn start(token: &'static str) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                let mut presented = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let (name, value) = line.split_once(':').unwrap_or_default();
                    if name.eq_ignore_ascii_case("private-token") {
                        presented = value.trim().to_owned();
                    }
                }
                log.lock().unwrap().push((path.clone(), presented.clone()));
                let (status, body) = if path == "/api/v4/personal_access_tokens/self" && presented == token {
                    ("200 OK", r#"{"id":7,"name":"ci","revoked":false,"active":true,"expires_at":"2027-02-28"}"#)
                } else {
                    ("401 Unauthorized", r#"{"message":"401 Unauthorized"}"#)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Self { address, seen }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_gitlab_token_learns_its_expiry_from_gitlab_and_no_other_secret_is_sent() {
    let api = GitLabApi::start(ALICE_PASSWORD);
    let world = World::start_with(&[
        "--gitlab-api-url".to_owned(),
        format!("http://{}", api.address),
        "--insecure-registry".to_owned(),
        api.address.clone(),
    ])
    .await;
    let as_provider = |provider: pullpass::v1::Provider, secret: &str| Credential {
        provider: provider as i32,
        ..world.credential("", "alice", secret)
    };
    world.add("gitlab", as_provider(pullpass::v1::Provider::Gitlab, ALICE_PASSWORD)).await;
    world.add("generic", as_provider(pullpass::v1::Provider::Generic, ALICE_PASSWORD)).await;
    world.add("wrong", as_provider(pullpass::v1::Provider::Gitlab, "health-CANARY-not-alice")).await;

    let report = world.client.test_credential("acme", "gitlab", "team/app", false).await.unwrap();
    assert!(report.success, "{report:?}");
    let expiry = prost_types::Timestamp { seconds: 1_803_772_800, nanos: 0 }; // 2027-02-28T00:00:00Z
    assert_eq!(report.secret_expire_time, Some(expiry));
    let stored = world.client.get_credential("acme", "gitlab").await.unwrap();
    assert_eq!(stored.expire_time, Some(expiry));

    // A registry nobody reports for, and a test the registry refuses: GitLab
    // is not asked, and nothing is stored.
    let report = world.client.test_credential("acme", "generic", "team/app", false).await.unwrap();
    assert!(report.success && report.secret_expire_time.is_none());
    let report = world.client.test_credential("acme", "wrong", "team/app", false).await.unwrap();
    assert!(!report.success && report.secret_expire_time.is_none());
    assert_eq!(world.client.get_credential("acme", "wrong").await.unwrap().expire_time, None);
    assert_eq!(
        api.seen(),
        [("/api/v4/personal_access_tokens/self".to_owned(), ALICE_PASSWORD.to_owned())],
        "the token went to GitLab once, and no other secret went there"
    );

    // Tested again with the same answer: no change is written.
    world.client.test_credential("acme", "gitlab", "team/app", false).await.unwrap();
    assert_eq!(world.client.get_credential("acme", "gitlab").await.unwrap().update_time, stored.update_time);

    // Neither token is in the log or in clear in the database and its WAL.
    for secret in [ALICE_PASSWORD, "health-CANARY-not-alice"] {
        assert!(!world.server.logs().contains(secret), "{secret} in the log");
        let leaks = pullpass_tests::files_containing(&world.server.data_dir, secret.as_bytes());
        assert!(leaks.is_empty(), "{secret} in clear in {leaks:?}");
    }
}
