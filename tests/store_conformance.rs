//! The store conformance suite: every case is written once, against the
//! domain-level store interface (`pullpass_server::store::Backend`), and run
//! on both implementations, embedded SQLite and a real PostgreSQL 15.
//! Differences between the backends are bugs.

use std::sync::Arc;
use std::time::Duration;

use pullpass::registry::RegistryServer;
use pullpass_server::domain::audit::AuditEvent;
use pullpass_server::domain::credential::{AwsRole, ProviderSettings, QuayRobotFederation, StoredCredential};
use pullpass_server::domain::{
    AccessTokenId, AccessTokenRecord, Credential, CredentialName, CredentialUid, IdentityBinding, IdentityBindingName,
    IdentityProvider, IdentityProviderId, KeySource, ProjectName, Provider, Role, SealedSecret, Timestamp, Workspace,
    WorkspaceId, WorkspaceKind,
};
use pullpass_server::error::Error;
use pullpass_server::store::postgres::PgConfig;
use pullpass_server::store::{
    self, AuditFault, AuditFilter, CredentialFilter, LeaseSlot, Location, ProviderDeletion, Pruned, Replaced, Rewrap,
    RootRevocation, SharedLease, Store, WorkspaceDeletion,
};
use pullpass_tests::postgres::Database;

/// One backend under test: where its database is, kept alive.
struct Subject {
    location: Location,
    _dir: tempfile::TempDir,
    _database: Option<Database>,
}

impl Subject {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { location: Location::Sqlite(dir.path().join("conformance.db")), _dir: dir, _database: None }
    }

    fn postgres() -> Self {
        let database = Database::fresh();
        let config = PgConfig::parse(&database.url, Some(&database.password_file)).unwrap();
        Self {
            location: Location::Postgres(Box::new(config)),
            _dir: tempfile::tempdir().unwrap(),
            _database: Some(database),
        }
    }

    async fn open(&self) -> Store {
        self.open_with(AuditFault::default()).await
    }

    async fn open_with(&self, fault: AuditFault) -> Store {
        store::open(&self.location, fault).await.expect("open the store")
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Subject::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Subject::postgres()).await;
                }
            )*
        }
    };
}

conformance!(
    workspaces_are_created_once_listed_in_id_order_and_deleted_only_when_empty_unless_forced,
    credentials_insert_atomically_with_their_events_and_a_taken_name_fails_or_is_skipped,
    credentials_list_by_id_with_filters_and_pages,
    a_replacement_applies_only_to_the_credential_as_it_was_read,
    rewrapping_stores_only_rows_whose_secret_did_not_change_and_pages_walk_every_credential,
    tokens_are_found_by_hash_and_id_and_revocation_keeps_the_first_time,
    root_tokens_are_listed_and_revoked_but_the_last_usable_one_only_when_asked,
    of_two_replicas_revoking_the_last_two_root_tokens_at_once_one_is_refused,
    every_mutation_extends_one_verifiable_chain_even_when_concurrent,
    of_concurrent_creates_of_one_name_one_wins_and_the_losers_leave_nothing,
    a_mutation_whose_audit_event_fails_changes_nothing,
    audit_events_filter_and_page_and_pruning_keeps_the_chain_verifiable,
    pruning_never_deletes_a_newer_event_when_event_times_are_out_of_sequence,
    key_facts_are_recorded_and_read_back,
    key_usage_follows_inserts_rewraps_replacements_deletes_and_cascades,
    what_was_written_is_there_after_reopening,
    a_second_handle_on_the_same_database_sees_and_extends_the_same_data,
    shared_leases_elect_one_claimant_and_serve_the_others,
    console_sessions_are_found_by_hash_login_links_are_taken_once_and_go_with_their_token,
    a_credentials_last_use_moves_forward_only_and_changes_nothing_else,
    identity_providers_are_unique_by_id_and_issuer_replaced_as_read_and_deleted_with_their_bindings_only_when_forced,
    identity_bindings_need_their_workspace_and_provider_list_in_order_and_go_with_their_workspace,
    provider_settings_are_stored_with_their_credential,
    the_signing_key_set_is_replaced_only_as_it_was_read,
    credential_health_is_recorded_forward_only_counted_and_leases_are_counted_per_hour,
);

async fn credential_health_is_recorded_forward_only_counted_and_leases_are_counted_per_hour(subject: Subject) {
    use pullpass_server::domain::credential::{CredentialFailure, FailureReason};
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let t = |seconds: i64| Timestamp::from_micros(1_800_000_000_000_000 + seconds * 1_000_000);
    let mut soon = stored("acme", "soon", "registry.example.com", 1);
    soon.credential.expire_time = Some(t(3 * 86_400));
    let mut later = stored("acme", "later", "registry.example.com", 2);
    later.credential.expire_time = Some(t(20 * 86_400));
    let failing = stored("acme", "failing", "registry.example.com", 3);
    let rows: Vec<_> = [&soon, &later, &failing].iter().map(|s| ((*s).clone(), create_event(s))).collect();
    store.insert_credentials(&ws("acme"), &rows, false).await.unwrap();
    assert_eq!(
        store.credential(&soon.credential.name).await.unwrap().unwrap().credential.expire_time,
        soon.credential.expire_time
    );

    // A refusal: recorded with its reason; it starts the failing streak.
    let head = store.audit_head().await.unwrap();
    let failure = |at: i64, reason| CredentialFailure { time: t(at), reason, since: t(at) };
    let record = |at, reason| vec![(failing.credential.name.clone(), failing.credential.uid, failure(at, reason))];
    store.record_credential_failures(&record(10, FailureReason::Rejected)).await.unwrap();
    // A later one keeps the streak's start; an older one is ignored; another uid is left alone.
    store.record_credential_failures(&record(20, FailureReason::RateLimited)).await.unwrap();
    store.record_credential_failures(&record(5, FailureReason::Timeout)).await.unwrap();
    let other_uid =
        vec![(failing.credential.name.clone(), CredentialUid([9; 16]), failure(99, FailureReason::NoAccess))];
    store.record_credential_failures(&other_uid).await.unwrap();
    let read = store.credential(&failing.credential.name).await.unwrap().unwrap().credential;
    assert_eq!(
        read.last_failure,
        Some(CredentialFailure { time: t(20), reason: FailureReason::RateLimited, since: t(10) })
    );
    assert_eq!(read.update_time, failing.credential.update_time, "a failure is not a change");
    assert_eq!(store.audit_head().await.unwrap(), head, "and leaves no audit event");

    let deadlines = [t(7 * 86_400), t(30 * 86_400)];
    let health = store.credential_health(&deadlines).await.unwrap();
    assert_eq!((health.expiring.clone(), health.failing), (vec![1, 2], 1));

    // A use after the refusal heals it; the next refusal starts a new streak.
    store.touch_credentials(&[(failing.credential.name.clone(), failing.credential.uid, t(30))]).await.unwrap();
    assert_eq!(store.credential_health(&deadlines).await.unwrap().failing, 0);
    store.record_credential_failures(&record(40, FailureReason::Unavailable)).await.unwrap();
    let read = store.credential(&failing.credential.name).await.unwrap().unwrap().credential;
    assert_eq!(read.last_failure.map(|f| (f.since, f.reason)), Some((t(40), FailureReason::Unavailable)));
    assert_eq!(store.credential_health(&deadlines).await.unwrap().failing, 1);

    // Leases per hour: successful IssueRegistryAuth and GatewayPull events,
    // aggregated ones counted per call, of this workspace only.
    let hour = 3_600i64;
    let base = (1_800_000_000i64 / hour + 1) * hour;
    let at = |seconds: i64| Timestamp::from_micros((base + seconds) * 1_000_000);
    let mut events = Vec::new();
    for (seconds, action, status, count, workspace) in [
        (10, "IssueRegistryAuth", 0, 3, "acme"),
        (20, "GatewayPull", 0, 1, "acme"),
        (30, "IssueRegistryAuth", 7, 1, "acme"),
        (40, "CreateCredential", 0, 1, "acme"),
        (50, "IssueRegistryAuth", 0, 5, "other"),
        (hour + 5, "IssueRegistryAuth", 0, 2, "acme"),
    ] {
        let mut e = event(action, workspace, "workspaces/acme/credentials/soon");
        e.event_time = at(seconds);
        e.status_code = status;
        e.count = count;
        events.push(e);
    }
    store.append_audit(&events).await.unwrap();
    let per_hour = store.leases_per_hour(&ws("acme"), at(0)).await.unwrap();
    assert_eq!(per_hour, vec![(at(0), 4), (at(hour), 2)]);
    assert_eq!(store.leases_per_hour(&ws("acme"), at(hour)).await.unwrap(), vec![(at(hour), 2)]);
}

async fn provider_settings_are_stored_with_their_credential(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let mut keyless = stored("acme", "ecr", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", 7);
    keyless.credential.provider = Provider::Ecr;
    keyless.credential.secret_version = 0;
    keyless.credential.username = String::new();
    keyless.credential.settings = ProviderSettings::AwsRole(AwsRole {
        role_arn: "arn:aws:iam::123456789012:role/pull".into(),
        external_id: "x-1".into(),
        web_identity: true,
    });
    store.insert_credentials(&ws("acme"), &[(keyless.clone(), create_event(&keyless))], false).await.unwrap();
    assert_eq!(store.credential(&keyless.credential.name).await.unwrap(), Some(keyless.clone()));
    let listed = store.workspace_credentials(&ws("acme")).await.unwrap().unwrap();
    assert_eq!(listed, vec![keyless.clone()]);
    assert!(!listed[0].credential.secret_set());
}

async fn the_signing_key_set_is_replaced_only_as_it_was_read(subject: Subject) {
    let store = subject.open().await;
    assert_eq!(store.signing_keys().await.unwrap(), None);
    let created = [event("CreateSigningKey", "", "signingKeys/a")];
    assert!(store.replace_signing_keys(None, "[1]", &created).await.unwrap());
    // A second first key (another replica starting at once) loses.
    assert!(!store.replace_signing_keys(None, "[2]", &created).await.unwrap());
    assert_eq!(store.signing_keys().await.unwrap().as_deref(), Some("[1]"));
    let rotated = [event("RotateSigningKey", "", "signingKeys/b")];
    assert!(!store.replace_signing_keys(Some("[0]"), "[3]", &rotated).await.unwrap(), "a stale read loses");
    assert!(store.replace_signing_keys(Some("[1]"), "[1,3]", &rotated).await.unwrap());
    assert_eq!(store.signing_keys().await.unwrap().as_deref(), Some("[1,3]"));
    let events = all_events(&store).await;
    assert_eq!(events.iter().filter(|e| e.contains("SigningKey")).count(), 2, "{events:?}");
    chain_is_intact(&store).await;
}

async fn console_sessions_are_found_by_hash_login_links_are_taken_once_and_go_with_their_token(subject: Subject) {
    use pullpass_server::domain::session::{ConsoleSession, SessionKind};
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    store.insert_token(&token("t1", Some("acme"), 7), &[event("CreateAccessToken", "acme", "t1")]).await.unwrap();
    let now = Timestamp::now();
    let session = |hash: u8, kind, expire: Timestamp| ConsoleSession {
        id_hash: [hash; 32],
        kind,
        token_id: AccessTokenId::parse("t1").unwrap(),
        create_time: now,
        expire_time: expire,
        last_seen: now,
    };
    let later = now.plus(Duration::from_secs(300));
    store.insert_console_session(&session(1, SessionKind::Session, later)).await.unwrap();
    store.insert_console_session(&session(2, SessionKind::LoginLink, later)).await.unwrap();
    store
        .insert_console_session(&session(3, SessionKind::LoginLink, now.saturating_minus(Duration::from_secs(1))))
        .await
        .unwrap();
    assert_eq!(store.console_session(&[1; 32]).await.unwrap(), Some(session(1, SessionKind::Session, later)));
    assert_eq!(store.console_session(&[2; 32]).await.unwrap(), None, "a login link is no session");
    assert_eq!(store.console_login(&[1; 32]).await.unwrap(), None, "a session is no login link");
    assert_eq!(store.console_login(&[2; 32]).await.unwrap(), Some(session(2, SessionKind::LoginLink, later)));
    assert_eq!(
        store.console_login(&[2; 32]).await.unwrap(),
        Some(session(2, SessionKind::LoginLink, later)),
        "read, not taken"
    );
    assert_eq!(store.redeem_console_login(&[1; 32], now).await.unwrap(), None, "a session is no login link");
    assert_eq!(store.redeem_console_login(&[3; 32], now).await.unwrap(), None, "an expired link");
    let taken = store.redeem_console_login(&[2; 32], now).await.unwrap();
    assert_eq!(taken.map(|s| s.token_id.to_string()), Some("t1".to_owned()));
    assert_eq!(store.redeem_console_login(&[2; 32], now).await.unwrap(), None, "taken once");
    let seen = now.plus(Duration::from_secs(120));
    store.touch_console_session(&[1; 32], seen).await.unwrap();
    store.touch_console_session(&[1; 32], now).await.unwrap();
    assert_eq!(store.console_session(&[1; 32]).await.unwrap().unwrap().last_seen, seen, "never moves back");
    store.delete_console_session(&[1; 32]).await.unwrap();
    assert_eq!(store.console_session(&[1; 32]).await.unwrap(), None);
    // Sessions go with their token's workspace.
    store.insert_console_session(&session(4, SessionKind::Session, later)).await.unwrap();
    store.delete_workspace(&ws("acme"), true, &[event("DeleteWorkspace", "acme", "workspaces/acme")]).await.unwrap();
    assert_eq!(store.console_session(&[4; 32]).await.unwrap(), None);
}

async fn a_credentials_last_use_moves_forward_only_and_changes_nothing_else(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let s = stored("acme", "reg", "registry.example.com", 9);
    store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let at = Timestamp::from_micros(1_800_000_000_000_000);
    let name = s.credential.name.clone();
    store.touch_credentials(&[(name.clone(), s.credential.uid, at)]).await.unwrap();
    store.touch_credentials(&[(name.clone(), s.credential.uid, Timestamp::from_micros(1))]).await.unwrap();
    // Another uid (a credential deleted and made again) is left alone.
    store.touch_credentials(&[(name.clone(), CredentialUid([1; 16]), at.plus(Duration::from_secs(9)))]).await.unwrap();
    let read = store.credential(&name).await.unwrap().unwrap();
    assert_eq!(read.credential.last_used_time, Some(at));
    assert_eq!(read.credential.update_time, s.credential.update_time, "a use is not a change");
    assert_eq!(store.audit_head().await.unwrap(), head, "and leaves no audit event");
    let listed = store.credentials(&ws("acme"), &Default::default(), None, 10).await.unwrap().unwrap();
    assert_eq!(listed[0].last_used_time, Some(at));
}

// --- builders ---------------------------------------------------------------

fn ws(id: &str) -> WorkspaceId {
    WorkspaceId::parse(id).unwrap()
}

fn workspace(id: &str) -> Workspace {
    Workspace {
        id: ws(id),
        kind: WorkspaceKind::Organization,
        display_name: format!("The {id} team"),
        create_time: Timestamp::from_micros(1_700_000_000_000_000),
    }
}

fn event(action: &str, workspace: &str, resource: &str) -> AuditEvent {
    AuditEvent {
        event_time: Timestamp::now(),
        workspace: workspace.into(),
        principal: "rootTokens/conformance".into(),
        action: action.into(),
        resource: resource.into(),
        status_code: 0,
        client_address: "127.0.0.1:1".into(),
        request_id: "req-1".into(),
        image: String::new(),
        granted_scope: String::new(),
        count: 1,
    }
}

fn name(workspace: &str, id: &str) -> CredentialName {
    CredentialName::parse(&format!("workspaces/{workspace}/credentials/{id}")).unwrap()
}

fn stored(workspace: &str, id: &str, registry: &str, uid: u8) -> StoredCredential {
    let time = Timestamp::from_micros(1_700_000_000_000_000 + i64::from(uid));
    StoredCredential {
        credential: Credential {
            name: name(workspace, id),
            uid: CredentialUid([uid; 16]),
            provider: Provider::Generic,
            registry: RegistryServer::parse(registry).unwrap().server,
            username: "robot".into(),
            secret_version: 1,
            settings: ProviderSettings::None,
            allowed_projects: Vec::new(),
            allow_passthrough: false,
            token_realm_allowlist: Vec::new(),
            ca_bundle_pem: String::new(),
            description: format!("credential {id}"),
            create_time: time,
            update_time: time,
            last_used_time: None,
            expire_time: None,
            last_failure: None,
        },
        sealed: SealedSecret { kek_id: "k1".into(), wrapped_dek: vec![1, uid, 2], ciphertext: vec![3, uid, 4, 0, 255] },
    }
}

fn create_event(s: &StoredCredential) -> AuditEvent {
    event("CreateCredential", s.credential.name.workspace.as_str(), &s.credential.name.to_string())
}

fn token(id: &str, workspace: Option<&str>, hash: u8) -> AccessTokenRecord {
    AccessTokenRecord {
        id: AccessTokenId::parse(id).unwrap(),
        workspace: workspace.map(ws),
        role: if workspace.is_some() { Role::Launcher } else { Role::Root },
        projects: Vec::new(),
        token_hash: [hash; 32],
        description: format!("token {id}"),
        create_time: Timestamp::from_micros(1_700_000_000_000_000),
        expire_time: None,
        revoke_time: None,
        last_used_time: None,
    }
}

async fn chain_is_intact(store: &Store) -> u64 {
    let verification = pullpass_server::audit::verify(store).await.unwrap();
    assert!(verification.broken.is_none(), "{:?}", verification.broken);
    verification.checked
}

async fn all_events(store: &Store) -> Vec<String> {
    store
        .audit_events(&AuditFilter::default(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.event.action, r.event.resource))
        .collect()
}

async fn with_workspace(store: &Store, id: &str) {
    store.create_workspace(&workspace(id), &[event("CreateWorkspace", id, &format!("workspaces/{id}"))]).await.unwrap();
}

// --- cases ------------------------------------------------------------------

async fn workspaces_are_created_once_listed_in_id_order_and_deleted_only_when_empty_unless_forced(subject: Subject) {
    let store = subject.open().await;
    for id in ["b-team", "a", "a-b", "ab", "zeta"] {
        with_workspace(&store, id).await;
    }
    let again = store.create_workspace(&workspace("a"), &[event("CreateWorkspace", "a", "workspaces/a")]).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");
    assert_eq!(store.workspace(&ws("a-b")).await.unwrap(), Some(workspace("a-b")));
    assert_eq!(store.workspace(&ws("nope")).await.unwrap(), None);
    let ids = |list: Vec<Workspace>| list.into_iter().map(|w| w.id.as_str().to_owned()).collect::<Vec<_>>();
    // Byte order, the same on both backends.
    assert_eq!(ids(store.workspaces(None, 10).await.unwrap()), ["a", "a-b", "ab", "b-team", "zeta"]);
    assert_eq!(ids(store.workspaces(Some("a-b"), 2).await.unwrap()), ["ab", "b-team"]);

    let cred = stored("ab", "c1", "registry.example/team", 1);
    store.insert_credentials(&ws("ab"), &[(cred.clone(), create_event(&cred))], false).await.unwrap();
    store.insert_token(&token("t1", Some("ab"), 7), &[event("CreateAccessToken", "ab", "x")]).await.unwrap();
    let delete = event("DeleteWorkspace", "ab", "workspaces/ab");
    assert_eq!(
        store.delete_workspace(&ws("ab"), false, std::slice::from_ref(&delete)).await.unwrap(),
        WorkspaceDeletion::NotEmpty { credentials: 1, tokens: 1 }
    );
    assert_eq!(
        store.delete_workspace(&ws("nope"), false, std::slice::from_ref(&delete)).await.unwrap(),
        WorkspaceDeletion::Missing
    );
    assert_eq!(
        store.delete_workspace(&ws("ab"), true, std::slice::from_ref(&delete)).await.unwrap(),
        WorkspaceDeletion::Deleted
    );
    assert_eq!(store.workspace(&ws("ab")).await.unwrap(), None);
    assert_eq!(store.credential(&cred.credential.name).await.unwrap(), None);
    assert!(store.token_by_hash(&[7; 32]).await.unwrap().is_none());
    // Refused deletions left no event; the forced one did.
    let events = all_events(&store).await;
    assert_eq!(events.iter().filter(|e| e.starts_with("DeleteWorkspace")).count(), 1, "{events:?}");
    chain_is_intact(&store).await;
}

async fn credentials_insert_atomically_with_their_events_and_a_taken_name_fails_or_is_skipped(subject: Subject) {
    let store = subject.open().await;
    let missing = stored("ghost", "c", "registry.example", 1);
    let refused = store.insert_credentials(&ws("ghost"), &[(missing.clone(), create_event(&missing))], false).await;
    assert!(matches!(refused, Err(Error::NotFound { .. })), "{refused:?}");
    with_workspace(&store, "acme").await;
    let (a, b, c) = (
        stored("acme", "a", "registry.example", 1),
        stored("acme", "b", "registry.example", 2),
        stored("acme", "c", "registry.example", 3),
    );
    assert_eq!(store.insert_credentials(&ws("acme"), &[(a.clone(), create_event(&a))], false).await.unwrap(), [true]);
    assert_eq!(store.credential(&a.credential.name).await.unwrap(), Some(a.clone()));
    // All or nothing: `a` is taken, so `b` is not inserted either.
    let batch = [(b.clone(), create_event(&b)), (a.clone(), create_event(&a))];
    let taken = store.insert_credentials(&ws("acme"), &batch, false).await;
    assert!(matches!(taken, Err(Error::AlreadyExists { .. })), "{taken:?}");
    assert_eq!(store.credential(&b.credential.name).await.unwrap(), None);
    // Skipping: the taken one is reported, the others go in.
    let batch = [(b.clone(), create_event(&b)), (a.clone(), create_event(&a)), (c.clone(), create_event(&c))];
    assert_eq!(store.insert_credentials(&ws("acme"), &batch, true).await.unwrap(), [true, false, true]);
    let events = all_events(&store).await;
    assert_eq!(
        events,
        [
            "CreateWorkspace workspaces/acme",
            "CreateCredential workspaces/acme/credentials/a",
            "CreateCredential workspaces/acme/credentials/b",
            "CreateCredential workspaces/acme/credentials/c",
        ]
    );
    let every = store.workspace_credentials(&ws("acme")).await.unwrap().unwrap();
    assert_eq!(every, vec![a, b, c]);
    assert_eq!(store.workspace_credentials(&ws("ghost")).await.unwrap(), None);
    chain_is_intact(&store).await;
}

async fn credentials_list_by_id_with_filters_and_pages(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    with_workspace(&store, "other").await;
    let mut rows = Vec::new();
    for (i, (id, registry)) in [
        ("d", "ghcr.io/acme"),
        ("a", "registry.example"),
        ("c-1", "ghcr.io/acme"),
        ("c", "ghcr.io/other"),
        ("b", "registry.example/x"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = stored("acme", id, registry, i as u8 + 1);
        if id == "c" {
            s.credential.provider = Provider::Ghcr;
        }
        rows.push((s.clone(), create_event(&s)));
    }
    store.insert_credentials(&ws("acme"), &rows, false).await.unwrap();
    let elsewhere = stored("other", "a", "registry.example", 9);
    store.insert_credentials(&ws("other"), &[(elsewhere.clone(), create_event(&elsewhere))], false).await.unwrap();
    let ids = |list: Option<Vec<Credential>>| {
        list.unwrap().into_iter().map(|c| c.name.credential.as_str().to_owned()).collect::<Vec<_>>()
    };
    let all = CredentialFilter::default();
    assert_eq!(ids(store.credentials(&ws("acme"), &all, None, 100).await.unwrap()), ["a", "b", "c", "c-1", "d"]);
    assert_eq!(ids(store.credentials(&ws("acme"), &all, Some("b"), 2).await.unwrap()), ["c", "c-1"]);
    let on = |registry: &str| CredentialFilter {
        registry: Some(RegistryServer::parse(registry).unwrap().server),
        provider: None,
    };
    assert_eq!(ids(store.credentials(&ws("acme"), &on("ghcr.io/acme"), None, 100).await.unwrap()), ["c-1", "d"]);
    let ghcr = CredentialFilter { registry: None, provider: Some(Provider::Ghcr) };
    assert_eq!(ids(store.credentials(&ws("acme"), &ghcr, None, 100).await.unwrap()), ["c"]);
    assert_eq!(store.credentials(&ws("ghost"), &all, None, 100).await.unwrap(), None);
}

async fn a_replacement_applies_only_to_the_credential_as_it_was_read(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let original = stored("acme", "reg", "registry.example", 1);
    store.insert_credentials(&ws("acme"), &[(original.clone(), create_event(&original))], false).await.unwrap();
    let mut rotated = original.clone();
    rotated.credential.secret_version = 2;
    rotated.credential.update_time = original.credential.update_time.plus(Duration::from_secs(1));
    rotated.credential.username = "new-robot".into();
    rotated.credential.settings = ProviderSettings::QuayRobot(QuayRobotFederation { robot: "acme+ci".into() });
    rotated.sealed.ciphertext = vec![9, 9, 9];
    let update = [event("UpdateCredential", "acme", "workspaces/acme/credentials/reg")];
    assert_eq!(store.replace_credential(&original.credential, &rotated, &update).await.unwrap(), Replaced::Done);
    assert_eq!(store.credential(&original.credential.name).await.unwrap(), Some(rotated.clone()));
    // A writer that read before the rotation loses, and changes nothing.
    let mut late = original.clone();
    late.credential.description = "late".into();
    assert_eq!(store.replace_credential(&original.credential, &late, &update).await.unwrap(), Replaced::Stale);
    assert_eq!(store.credential(&original.credential.name).await.unwrap(), Some(rotated.clone()));
    // Deleted, then re-created under the same name (a new uid): not the one read.
    let delete = [event("DeleteCredential", "acme", "workspaces/acme/credentials/reg")];
    assert!(store.delete_credential(&original.credential.name, &delete).await.unwrap());
    assert!(!store.delete_credential(&original.credential.name, &delete).await.unwrap());
    assert_eq!(store.replace_credential(&rotated.credential, &late, &update).await.unwrap(), Replaced::Missing);
    let reborn = stored("acme", "reg", "registry.example", 2);
    store.insert_credentials(&ws("acme"), &[(reborn.clone(), create_event(&reborn))], false).await.unwrap();
    assert_eq!(store.replace_credential(&rotated.credential, &late, &update).await.unwrap(), Replaced::Missing);
    let events = all_events(&store).await;
    assert_eq!(events.iter().filter(|e| e.starts_with("UpdateCredential")).count(), 1, "{events:?}");
    assert_eq!(events.iter().filter(|e| e.starts_with("DeleteCredential")).count(), 1, "{events:?}");
    chain_is_intact(&store).await;
}

async fn rewrapping_stores_only_rows_whose_secret_did_not_change_and_pages_walk_every_credential(subject: Subject) {
    let store = subject.open().await;
    for w in ["a", "b"] {
        with_workspace(&store, w).await;
        let rows: Vec<_> = (0..5u8)
            .map(|i| {
                let s = stored(w, &format!("c{i}"), "registry.example", i + if w == "a" { 1 } else { 11 });
                (s.clone(), create_event(&s))
            })
            .collect();
        store.insert_credentials(&ws(w), &rows, false).await.unwrap();
    }
    // A walk in pages of 3 sees all 10, in (workspace, id) order.
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store.credentials_page(None, &cursor, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((
            last.credential.name.workspace.as_str().to_owned(),
            last.credential.name.credential.as_str().to_owned(),
        ));
        seen.extend(page.iter().map(|s| s.credential.name.to_string()));
    }
    assert_eq!(seen.len(), 10);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(store.count_not_under_key("k2").await.unwrap(), 10);

    let page = store.credentials_page(Some("k2"), &None, 4).await.unwrap();
    let mut rewraps: Vec<Rewrap> = page
        .iter()
        .map(|s| Rewrap {
            credential: s.credential.clone(),
            sealed: SealedSecret { kek_id: "k2".into(), wrapped_dek: vec![7], ciphertext: s.sealed.ciphertext.clone() },
        })
        .collect();
    // One of them is rotated meanwhile: its rewrap must not land.
    let mut rotated = page[1].clone();
    rotated.credential.secret_version = 2;
    rotated.credential.update_time = rotated.credential.update_time.plus(Duration::from_secs(1));
    store
        .replace_credential(
            &page[1].credential,
            &rotated,
            &[event("UpdateCredential", "a", &rotated.credential.name.to_string())],
        )
        .await
        .unwrap();
    rewraps[1].credential = page[1].credential.clone();
    assert_eq!(store.rewrap(&rewraps).await.unwrap(), 3);
    assert_eq!(store.count_not_under_key("k2").await.unwrap(), 7);
    let remaining = store.credentials_page(Some("k2"), &None, 100).await.unwrap();
    assert_eq!(remaining.len(), 7);
    assert!(remaining.iter().any(|s| s.credential.name == rotated.credential.name));
    let moved = store.credential(&page[0].credential.name).await.unwrap().unwrap();
    assert_eq!((moved.sealed.kek_id.as_str(), moved.sealed.wrapped_dek.as_slice()), ("k2", [7].as_slice()));
    assert_eq!(moved.sealed.ciphertext, page[0].sealed.ciphertext);
}

async fn tokens_are_found_by_hash_and_id_and_revocation_keeps_the_first_time(subject: Subject) {
    let store = subject.open().await;
    assert!(!store.any_root_token().await.unwrap());
    store.insert_token(&token("root1", None, 1), &[event("CreateRootToken", "", "rootTokens/root1")]).await.unwrap();
    assert!(store.any_root_token().await.unwrap());
    let missing = store.insert_token(&token("t0", Some("ghost"), 2), &[event("CreateAccessToken", "ghost", "x")]).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
    with_workspace(&store, "acme").await;
    for (i, id) in ["tb", "ta", "tc"].into_iter().enumerate() {
        store
            .insert_token(&token(id, Some("acme"), 10 + i as u8), &[event("CreateAccessToken", "acme", id)])
            .await
            .unwrap();
    }
    let ta = store.token_by_hash(&[11; 32]).await.unwrap().unwrap();
    assert_eq!(ta, token("ta", Some("acme"), 11));
    assert_eq!(store.token_by_id(&ta.id).await.unwrap(), Some(ta.clone()));
    assert_eq!(store.token(&ws("acme"), &ta.id).await.unwrap(), Some(ta.clone()));
    assert_eq!(store.token_by_hash(&[99; 32]).await.unwrap(), None);
    let listed: Vec<String> = store
        .tokens(&ws("acme"), None, 10)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|t| t.id.as_str().to_owned())
        .collect();
    assert_eq!(listed, ["ta", "tb", "tc"]);
    assert_eq!(store.tokens(&ws("acme"), Some("ta"), 1).await.unwrap().unwrap().len(), 1);
    assert_eq!(store.tokens(&ws("ghost"), None, 10).await.unwrap(), None);

    let first = Timestamp::from_micros(1_800_000_000_000_000);
    let revoke = [event("RevokeAccessToken", "acme", "workspaces/acme/accessTokens/ta")];
    let revoked = store.revoke_token(&ws("acme"), &ta.id, first, &revoke).await.unwrap().unwrap();
    assert_eq!(revoked.revoke_time, Some(first));
    let again = store.revoke_token(&ws("acme"), &ta.id, first.plus(Duration::from_secs(5)), &revoke).await.unwrap();
    assert_eq!(again.unwrap().revoke_time, Some(first));
    assert_eq!(
        store.revoke_token(&ws("acme"), &AccessTokenId::parse("zz").unwrap(), first, &revoke).await.unwrap(),
        None
    );
    let used = Timestamp::from_micros(1_800_000_060_000_000);
    store.touch_tokens(&[(ta.id.clone(), used)]).await.unwrap();
    assert_eq!(store.token_by_id(&ta.id).await.unwrap().unwrap().last_used_time, Some(used));
    chain_is_intact(&store).await;
}

async fn root_tokens_are_listed_and_revoked_but_the_last_usable_one_only_when_asked(subject: Subject) {
    let store = subject.open().await;
    let now = Timestamp::now();
    let expired =
        AccessTokenRecord { expire_time: Some(now.saturating_minus(Duration::from_secs(1))), ..token("r3", None, 3) };
    for record in [token("r2", None, 2), token("r1", None, 1), expired] {
        let event = event("CreateRootToken", "", &format!("rootTokens/{}", record.id));
        store.insert_token(&record, &[event]).await.unwrap();
    }
    with_workspace(&store, "acme").await;
    store.insert_token(&token("w1", Some("acme"), 9), &[event("CreateAccessToken", "acme", "w1")]).await.unwrap();
    let ids = |records: Vec<AccessTokenRecord>| records.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.root_tokens().await.unwrap()), ["r1", "r2", "r3"], "root tokens only, by id");
    let id = |s: &str| AccessTokenId::parse(s).unwrap();
    let revoke = |s: &str| [event("RevokeAccessToken", "", &format!("rootTokens/{s}"))];
    let at = now.plus(Duration::from_secs(1));
    assert_eq!(store.revoke_root_token(&id("w1"), at, true, &revoke("w1")).await.unwrap(), RootRevocation::Missing);
    assert_eq!(store.revoke_root_token(&id("zz"), at, false, &revoke("zz")).await.unwrap(), RootRevocation::Missing);
    let RootRevocation::Revoked(r1) = store.revoke_root_token(&id("r1"), at, true, &revoke("r1")).await.unwrap() else {
        panic!("r2 is left")
    };
    assert_eq!(r1.revoke_time, Some(at));
    assert_eq!(store.token_by_id(&id("r1")).await.unwrap(), Some(r1.clone()));
    let again = store.revoke_root_token(&id("r1"), at.plus(Duration::from_secs(9)), true, &revoke("r1")).await.unwrap();
    assert_eq!(again, RootRevocation::AlreadyRevoked(r1));
    // r2 is the last usable one: r3 expired, r1 is revoked.
    let events_before = all_events(&store).await.len();
    assert_eq!(store.revoke_root_token(&id("r2"), at, true, &revoke("r2")).await.unwrap(), RootRevocation::LastUsable);
    assert_eq!(store.token_by_id(&id("r2")).await.unwrap().unwrap().revoke_time, None);
    assert_eq!(all_events(&store).await.len(), events_before, "a refusal appends nothing");
    assert!(matches!(
        store.revoke_root_token(&id("r2"), at, false, &revoke("r2")).await.unwrap(),
        RootRevocation::Revoked(_)
    ));
    let revocations: Vec<String> =
        all_events(&store).await.into_iter().filter(|e| e.starts_with("RevokeAccessToken")).collect();
    assert_eq!(revocations, ["RevokeAccessToken rootTokens/r1", "RevokeAccessToken rootTokens/r2"]);
    assert!(store.token_by_id(&id("w1")).await.unwrap().unwrap().revoke_time.is_none(), "workspace tokens untouched");
    chain_is_intact(&store).await;
}

async fn of_two_replicas_revoking_the_last_two_root_tokens_at_once_one_is_refused(subject: Subject) {
    let (one, two) = (subject.open().await, subject.open().await);
    for record in [token("r1", None, 1), token("r2", None, 2)] {
        let event = event("CreateRootToken", "", &format!("rootTokens/{}", record.id));
        one.insert_token(&record, &[event]).await.unwrap();
    }
    let at = Timestamp::now();
    let revoke = |store: Store, id: &'static str| async move {
        let event = event("RevokeAccessToken", "", &format!("rootTokens/{id}"));
        store.revoke_root_token(&AccessTokenId::parse(id).unwrap(), at, true, &[event]).await.unwrap()
    };
    let (a, b) = tokio::join!(revoke(one.clone(), "r1"), revoke(two.clone(), "r2"));
    let refused = [&a, &b].iter().filter(|o| ***o == RootRevocation::LastUsable).count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
    let usable = one.root_tokens().await.unwrap().iter().filter(|r| r.revoke_time.is_none()).count();
    assert_eq!(usable, 1);
}

async fn every_mutation_extends_one_verifiable_chain_even_when_concurrent(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = stored("acme", &format!("c{i}"), "registry.example", i + 1);
            store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await.unwrap();
            let lease = event("IssueRegistryAuth", "acme", &s.credential.name.to_string());
            store.append_audit(&[lease.clone(), lease]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(chain_is_intact(&store).await, 1 + 40 * 3);
    let (seq, _) = store.audit_head().await.unwrap().unwrap();
    assert_eq!(seq, 121);
}

async fn of_concurrent_creates_of_one_name_one_wins_and_the_losers_leave_nothing(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let attempts = (0..12u8).map(|i| {
        let store = store.clone();
        async move {
            // Each also creates a name of its own, in the same batch on
            // backends that group writes.
            let own = stored("acme", &format!("own{i}"), "registry.example", 100 + i);
            let own = [(own.clone(), create_event(&own))];
            let same = stored("acme", "contested", "registry.example", i + 1);
            let same = [(same.clone(), create_event(&same))];
            let workspace = ws("acme");
            let (own, same) = tokio::join!(
                store.insert_credentials(&workspace, &own, false),
                store.insert_credentials(&workspace, &same, false)
            );
            own.unwrap();
            same
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().filter_map(|o| o.as_ref().err()).all(|e| matches!(e, Error::AlreadyExists { .. })));
    let events = all_events(&store).await;
    assert_eq!(events.iter().filter(|e| e.ends_with("/contested")).count(), 1, "{events:?}");
    assert_eq!(events.len(), 1 + 12 + 1);
    assert_eq!(store.workspace_credentials(&ws("acme")).await.unwrap().unwrap().len(), 13);
    chain_is_intact(&store).await;
}

async fn a_mutation_whose_audit_event_fails_changes_nothing(subject: Subject) {
    let healthy = subject.open().await;
    with_workspace(&healthy, "acme").await;
    let before = all_events(&healthy).await;
    healthy.close().await;
    let store = subject.open_with(AuditFault::new(Some("CreateCredential".into()))).await;
    let s = stored("acme", "c", "registry.example", 1);
    let failed = store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await;
    assert!(matches!(failed, Err(Error::Unavailable { reason: "AUDIT_UNAVAILABLE", .. })), "{failed:?}");
    assert_eq!(store.credential(&s.credential.name).await.unwrap(), None);
    assert_eq!(all_events(&store).await, before);
    // Other actions still go through.
    store.insert_token(&token("t", Some("acme"), 3), &[event("CreateAccessToken", "acme", "t")]).await.unwrap();
    chain_is_intact(&store).await;
}

async fn audit_events_filter_and_page_and_pruning_keeps_the_chain_verifiable(subject: Subject) {
    let store = subject.open().await;
    let old = Timestamp::now().saturating_minus(Duration::from_secs(3600));
    let mut events = Vec::new();
    for i in 0..6 {
        let mut e = event(
            if i % 2 == 0 { "IssueRegistryAuth" } else { "TestCredential" },
            if i < 3 { "a" } else { "b" },
            &format!("r{i}"),
        );
        if i < 2 {
            e.event_time = old;
        }
        events.push(e);
    }
    store.append_audit(&events).await.unwrap();
    let only = |filter: AuditFilter| {
        let store = store.clone();
        async move {
            store.audit_events(&filter, 0, 100).await.unwrap().into_iter().map(|r| r.event.resource).collect::<Vec<_>>()
        }
    };
    assert_eq!(only(AuditFilter { workspace: Some("a".into()), ..Default::default() }).await, ["r0", "r1", "r2"]);
    assert_eq!(
        only(AuditFilter { action: Some("TestCredential".into()), ..Default::default() }).await,
        ["r1", "r3", "r5"]
    );
    assert_eq!(only(AuditFilter { resource: Some("r4".into()), ..Default::default() }).await, ["r4"]);
    assert_eq!(
        only(AuditFilter { before: Some(old.plus(Duration::from_secs(1))), ..Default::default() }).await,
        ["r0", "r1"]
    );
    assert_eq!(
        only(AuditFilter { since: Some(old.plus(Duration::from_secs(1))), ..Default::default() }).await.len(),
        4
    );
    let page = store.audit_events(&AuditFilter::default(), 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(page[1].prev_hash, page[0].hash);

    assert_eq!(store.audit_checkpoint().await.unwrap(), None);
    assert_eq!(store.prune_audit(old.plus(Duration::from_secs(1))).await.unwrap(), pruned(2, 0));
    let checkpoint = store.audit_checkpoint().await.unwrap().unwrap();
    assert_eq!(checkpoint.0, 2);
    assert_eq!(store.prune_audit(old.plus(Duration::from_secs(1))).await.unwrap(), pruned(0, 0));
    assert_eq!(chain_is_intact(&store).await, 4);
    store.append_audit(&[event("IssueRegistryAuth", "a", "r6")]).await.unwrap();
    assert_eq!(chain_is_intact(&store).await, 5);
    assert_eq!(store.audit_head().await.unwrap().unwrap().0, 7);
    // An aggregated lease event keeps its count and request ids, in the chain.
    let folded = AuditEvent { request_id: "q1 q2 q3".into(), count: 3, ..event("IssueRegistryAuth", "a", "r7") };
    store.append_audit(std::slice::from_ref(&folded)).await.unwrap();
    assert_eq!(chain_is_intact(&store).await, 6);
    let read = store.audit_events(&AuditFilter::default(), 7, 1).await.unwrap();
    assert_eq!((read[0].event.count, read[0].event.request_id.as_str()), (3, "q1 q2 q3"));
}

fn pruned(deleted: u64, kept_older: u64) -> Pruned {
    Pruned { deleted, kept_older }
}

async fn pruning_never_deletes_a_newer_event_when_event_times_are_out_of_sequence(subject: Subject) {
    let store = subject.open().await;
    let now = Timestamp::now();
    let old = now.saturating_minus(Duration::from_secs(3600));
    let cutoff = now.saturating_minus(Duration::from_secs(1800));
    // seq:   1    2    3    4    5    6
    // time:  old  old  new  old  old  new   (a group commit, a replica's clock)
    let times = [old, old, now, old, old, now];
    let events: Vec<AuditEvent> = times
        .iter()
        .enumerate()
        .map(|(i, time)| AuditEvent { event_time: *time, ..event("IssueRegistryAuth", "a", &format!("r{}", i + 1)) })
        .collect();
    store.append_audit(&events).await.unwrap();
    // Only the run before the first newer event goes; 4 and 5 stay, counted.
    assert_eq!(store.prune_audit(cutoff).await.unwrap(), pruned(2, 2));
    let left = all_events(&store).await;
    assert_eq!(left, ["IssueRegistryAuth r3", "IssueRegistryAuth r4", "IssueRegistryAuth r5", "IssueRegistryAuth r6"]);
    assert_eq!(store.audit_checkpoint().await.unwrap().unwrap().0, 2);
    assert_eq!(chain_is_intact(&store).await, 4);
    // Nothing more can go while event 3 is newer than the cutoff.
    assert_eq!(store.prune_audit(cutoff).await.unwrap(), pruned(0, 2));
    assert_eq!(chain_is_intact(&store).await, 4);
    // Once event 3 is older than the cutoff too, the rest go.
    assert_eq!(store.prune_audit(now.plus(Duration::from_micros(1))).await.unwrap().deleted, 4);
    assert_eq!(all_events(&store).await, Vec::<String>::new());
    assert_eq!(chain_is_intact(&store).await, 0);
    store.append_audit(&[event("IssueRegistryAuth", "a", "r7")]).await.unwrap();
    assert_eq!(chain_is_intact(&store).await, 1);
    assert_eq!(store.audit_head().await.unwrap().unwrap().0, 7);
}

async fn key_facts_are_recorded_and_read_back(subject: Subject) {
    let inspected = store::inspect(&subject.location).await.unwrap();
    assert!(inspected.is_none_or(|facts| facts.schema_version == 0 && facts.key_checks.is_empty()));
    let store = subject.open().await;
    store.record_keys(&[("k1".into(), vec![1, 2, 3])], "k1").await.unwrap();
    store.record_keys(&[("k1".into(), vec![9, 9, 9]), ("k2".into(), vec![4, 5])], "k2").await.unwrap();
    with_workspace(&store, "acme").await;
    let s = stored("acme", "c", "registry.example", 1);
    store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await.unwrap();
    let facts = store.facts().await.unwrap();
    // The first value recorded for an id stays.
    assert_eq!(facts.key_checks, vec![("k1".to_owned(), vec![1, 2, 3]), ("k2".to_owned(), vec![4, 5])]);
    assert_eq!(facts.active_key_id.as_deref(), Some("k2"));
    assert_eq!(facts.key_ids_in_use, ["k1"]);
    assert_eq!(facts.key_usage, [("k1".to_owned(), 1)]);
    assert!(facts.schema_version > 0);
    store.close().await;
    let read_only = store::inspect(&subject.location).await.unwrap().unwrap();
    assert_eq!(read_only.key_checks, facts.key_checks);
    assert_eq!(read_only.schema_version, facts.schema_version);
}

/// The data keys per master key, counted the slow way: a walk over every
/// credential.
async fn counted_by_walking(store: &Store) -> Vec<(String, u64)> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let mut cursor = None;
    loop {
        let page = store.credentials_page(None, &cursor, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((
            last.credential.name.workspace.as_str().to_owned(),
            last.credential.name.credential.as_str().to_owned(),
        ));
        for s in &page {
            *counts.entry(s.sealed.kek_id.clone()).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

async fn key_usage_follows_inserts_rewraps_replacements_deletes_and_cascades(subject: Subject) {
    let store = subject.open().await;
    let under = |w: &str, id: &str, uid: u8, kek: &str| {
        let mut s = stored(w, id, "registry.example", uid);
        s.sealed.kek_id = kek.into();
        (s.clone(), create_event(&s))
    };
    for w in ["a", "b"] {
        with_workspace(&store, w).await;
    }
    let base = |w: &str| if w == "a" { 0 } else { 100 };
    for w in ["a", "b"] {
        let rows: Vec<_> = (0..6u8).map(|i| under(w, &format!("c{i}"), base(w) + i + 1, "k1")).collect();
        store.insert_credentials(&ws(w), &rows, false).await.unwrap();
    }
    store.insert_credentials(&ws("a"), &[under("a", "n", 50, "k2")], false).await.unwrap();
    let usage = || async { store.facts().await.unwrap().key_usage };
    assert_eq!(usage().await, [("k1".to_owned(), 12), ("k2".to_owned(), 1)]);

    // Rewrapping moves three to k2; a replacement moves one to k3.
    let page = store.credentials_page(Some("k2"), &None, 3).await.unwrap();
    let rewraps: Vec<Rewrap> = page
        .iter()
        .map(|s| Rewrap {
            credential: s.credential.clone(),
            sealed: SealedSecret { kek_id: "k2".into(), ..s.sealed.clone() },
        })
        .collect();
    assert_eq!(store.rewrap(&rewraps).await.unwrap(), 3);
    let read = store.credential(&name("b", "c0")).await.unwrap().unwrap();
    let mut replaced = read.clone();
    replaced.sealed.kek_id = "k3".into();
    replaced.credential.secret_version = 2;
    replaced.credential.update_time = replaced.credential.update_time.plus(Duration::from_secs(1));
    let replacement = store.replace_credential(&read.credential, &replaced, &[]).await.unwrap();
    assert!(matches!(replacement, Replaced::Done), "{replacement:?}");
    // A replacement under the same key changes no count.
    let read = store.credential(&name("b", "c1")).await.unwrap().unwrap();
    let mut same_key = read.clone();
    same_key.credential.description = "edited".into();
    same_key.credential.update_time = same_key.credential.update_time.plus(Duration::from_secs(1));
    store.replace_credential(&read.credential, &same_key, &[]).await.unwrap();
    assert_eq!(usage().await, [("k1".to_owned(), 8), ("k2".to_owned(), 4), ("k3".to_owned(), 1)]);
    assert_eq!(usage().await, counted_by_walking(&store).await);
    assert_eq!(store.count_not_under_key("k2").await.unwrap(), 9);

    // Deleting the last credential under a key removes the key from use.
    assert!(store.delete_credential(&name("b", "c0"), &[]).await.unwrap());
    assert_eq!(store.facts().await.unwrap().key_ids_in_use, ["k1", "k2"]);
    // A forced workspace deletion cascades to its credentials, and counts.
    store.delete_workspace(&ws("a"), true, &[]).await.unwrap();
    assert_eq!(usage().await, counted_by_walking(&store).await);
    assert_eq!(usage().await, [("k1".to_owned(), 5)]);
    store.close().await;
    let read_only = store::inspect(&subject.location).await.unwrap().unwrap();
    assert_eq!(read_only.key_usage, [("k1".to_owned(), 5)]);
    assert_eq!(read_only.key_ids_in_use, ["k1"]);
}

async fn what_was_written_is_there_after_reopening(subject: Subject) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let s = stored("acme", "c", "registry.example", 1);
    store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await.unwrap();
    let head = store.audit_head().await.unwrap();
    store.close().await;
    let closed = store.workspace(&ws("acme")).await;
    assert!(matches!(closed, Err(Error::Unavailable { .. })), "a closed store refuses: {closed:?}");
    let reopened = subject.open().await;
    assert_eq!(reopened.credential(&s.credential.name).await.unwrap(), Some(s));
    assert_eq!(reopened.audit_head().await.unwrap(), head);
    chain_is_intact(&reopened).await;
}

async fn a_second_handle_on_the_same_database_sees_and_extends_the_same_data(subject: Subject) {
    let (a, b) = (subject.open().await, subject.open().await);
    with_workspace(&a, "acme").await;
    let mut tasks = Vec::new();
    for i in 0..30u8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let s = stored("acme", &format!("c{i}"), "registry.example", i + 1);
            store.insert_credentials(&ws("acme"), &[(s.clone(), create_event(&s))], false).await.unwrap();
            store.append_audit(&[event("IssueRegistryAuth", "acme", &s.credential.name.to_string())]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(b.workspace_credentials(&ws("acme")).await.unwrap().unwrap().len(), 30);
    assert_eq!(chain_is_intact(&a).await, 61);
    assert_eq!(chain_is_intact(&b).await, 61);
}

async fn shared_leases_elect_one_claimant_and_serve_the_others(subject: Subject) {
    let store = subject.open().await;
    let Some(shared) = store.shared() else {
        // One process per database: nothing to share, by design.
        assert!(matches!(subject.location, Location::Sqlite(_)));
        return;
    };
    let other = subject.open().await;
    let other = other.shared().unwrap();
    let ttl = Duration::from_millis(600);
    let life = Duration::from_secs(30);
    assert!(matches!(shared.lease_or_claim("k", life, "replica-a", ttl).await.unwrap(), LeaseSlot::Claimed));
    assert!(matches!(other.lease_or_claim("k", life, "replica-b", ttl).await.unwrap(), LeaseSlot::ClaimedElsewhere));
    let lease = SharedLease { sealed: vec![1, 2, 3], expire_time: Timestamp::now().plus(Duration::from_secs(300)) };
    shared.store_lease("k", &lease, "replica-a").await.unwrap();
    match other.lease_or_claim("k", life, "replica-b", ttl).await.unwrap() {
        LeaseSlot::Stored(found) => {
            assert_eq!((found.sealed, found.expire_time), (lease.sealed.clone(), lease.expire_time))
        }
        slot => panic!("expected the stored lease, got {slot:?}"),
    }
    // Too little life left counts as none: the next caller claims.
    assert!(matches!(
        other.lease_or_claim("k", Duration::from_secs(600), "replica-b", ttl).await.unwrap(),
        LeaseSlot::Claimed
    ));
    // A claimant that never finishes loses its claim after the TTL.
    assert!(matches!(shared.lease_or_claim("dead", life, "replica-a", ttl).await.unwrap(), LeaseSlot::Claimed));
    assert!(matches!(other.lease_or_claim("dead", life, "replica-b", ttl).await.unwrap(), LeaseSlot::ClaimedElsewhere));
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert!(matches!(other.lease_or_claim("dead", life, "replica-b", ttl).await.unwrap(), LeaseSlot::Claimed));
    // A released claim is free at once.
    other.release_claim("dead", "replica-b").await.unwrap();
    assert!(matches!(shared.lease_or_claim("dead", life, "replica-a", ttl).await.unwrap(), LeaseSlot::Claimed));
    // Rate-limit blocks: the latest deadline wins, and a past one is none.
    let soon = Timestamp::now().plus(Duration::from_secs(60));
    shared.block("reg", soon).await.unwrap();
    shared.block("reg", Timestamp::now().plus(Duration::from_secs(5))).await.unwrap();
    assert_eq!(other.blocked_until("reg").await.unwrap(), Some(soon));
    shared.block("past", Timestamp::now().saturating_minus(Duration::from_secs(1))).await.unwrap();
    assert_eq!(other.blocked_until("past").await.unwrap(), None);
    // Racing claimants: exactly one wins.
    let handles: Vec<Store> = futures_util::future::join_all((0..8).map(|_| subject.open())).await;
    let handles = Arc::new(handles);
    let races = (0..8).map(|i| {
        let handles = Arc::clone(&handles);
        async move {
            handles[i].shared().unwrap().lease_or_claim("race", life, &format!("replica-{i}"), life).await.unwrap()
        }
    });
    let slots = futures_util::future::join_all(races).await;
    assert_eq!(slots.iter().filter(|s| matches!(s, LeaseSlot::Claimed)).count(), 1, "{slots:?}");
}

fn provider(id: &str, issuer: &str) -> IdentityProvider {
    let time = Timestamp::from_micros(1_700_000_000_000_000);
    IdentityProvider {
        id: IdentityProviderId::parse(id).unwrap(),
        issuer: issuer.into(),
        key_source: KeySource::JwksUri(format!("{issuer}/jwks")),
        ca_certificates: String::new(),
        audiences: vec!["pullpass".into(), "other".into()],
        allowed_algorithms: vec!["RS256".into(), "ES256".into()],
        max_token_lifetime: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(30),
        description: format!("provider {id}"),
        create_time: time,
        update_time: time,
    }
}

fn binding(workspace: &str, id: &str, provider: &str) -> IdentityBinding {
    let time = Timestamp::from_micros(1_700_000_000_000_000);
    IdentityBinding {
        name: IdentityBindingName::parse(&format!("workspaces/{workspace}/identityBindings/{id}")).unwrap(),
        provider: IdentityProviderId::parse(provider).unwrap(),
        bound_claims: vec![
            ("/kubernetes.io/namespace".into(), "ci".into()),
            ("sub".into(), "system:serviceaccount:ci:*".into()),
        ],
        role: Role::Launcher,
        allowed_projects: vec![ProjectName::parse("rnaseq").unwrap()],
        description: format!("binding {id}"),
        create_time: time,
        update_time: time,
    }
}

async fn identity_providers_are_unique_by_id_and_issuer_replaced_as_read_and_deleted_with_their_bindings_only_when_forced(
    subject: Subject,
) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    let k8s = provider("k8s", "https://k8s.example");
    store
        .insert_identity_provider(&k8s, &[event("CreateIdentityProvider", "", "identityProviders/k8s")])
        .await
        .unwrap();
    let github = IdentityProvider { key_source: KeySource::Discovery, ..provider("github", "https://gh.example") };
    store
        .insert_identity_provider(&github, &[event("CreateIdentityProvider", "", "identityProviders/github")])
        .await
        .unwrap();
    let same_id = provider("k8s", "https://elsewhere.example");
    assert!(matches!(store.insert_identity_provider(&same_id, &[]).await, Err(Error::AlreadyExists { .. })));
    let same_issuer = provider("k8s-two", "https://k8s.example");
    assert!(matches!(store.insert_identity_provider(&same_issuer, &[]).await, Err(Error::AlreadyExists { .. })));
    let listed = store.identity_providers().await.unwrap();
    assert_eq!(listed, vec![github.clone(), k8s.clone()], "ordered by id, every field back as written");

    // Replaced only as it was read; another provider's issuer is refused.
    let later = Timestamp::from_micros(k8s.update_time.as_micros() + 5);
    let changed = IdentityProvider {
        key_source: KeySource::Jwks("{\"keys\": []}".into()),
        audiences: vec!["pullpass".into()],
        update_time: later,
        ..k8s.clone()
    };
    let update = [event("UpdateIdentityProvider", "", "identityProviders/k8s")];
    assert_eq!(store.replace_identity_provider(k8s.update_time, &changed, &update).await.unwrap(), Replaced::Done);
    assert_eq!(store.replace_identity_provider(k8s.update_time, &changed, &update).await.unwrap(), Replaced::Stale);
    let taken = IdentityProvider { issuer: "https://gh.example".into(), ..changed.clone() };
    assert!(matches!(store.replace_identity_provider(later, &taken, &update).await, Err(Error::AlreadyExists { .. })));
    let ghost = provider("ghost", "https://ghost.example");
    assert_eq!(store.replace_identity_provider(later, &ghost, &update).await.unwrap(), Replaced::Missing);
    assert_eq!(store.identity_providers().await.unwrap()[1], changed);

    // Deleted only when no binding names it, or forced (with them).
    store
        .insert_identity_binding(&binding("acme", "ci", "k8s"), &[event("CreateIdentityBinding", "acme", "b")])
        .await
        .unwrap();
    let delete = [event("DeleteIdentityProvider", "", "identityProviders/k8s")];
    let k8s_id = IdentityProviderId::parse("k8s").unwrap();
    assert_eq!(
        store.delete_identity_provider(&k8s_id, false, &delete).await.unwrap(),
        ProviderDeletion::InUse { bindings: 1 }
    );
    assert_eq!(
        store.delete_identity_provider(&k8s_id, true, &delete).await.unwrap(),
        ProviderDeletion::Deleted { bindings: 1 }
    );
    assert_eq!(store.delete_identity_provider(&k8s_id, true, &delete).await.unwrap(), ProviderDeletion::Missing);
    assert!(store.identity_bindings(None).await.unwrap().is_empty());
    assert_eq!(store.identity_providers().await.unwrap(), vec![github]);
    let events = all_events(&store).await;
    for expected in [
        "CreateIdentityProvider identityProviders/k8s",
        "UpdateIdentityProvider identityProviders/k8s",
        "DeleteIdentityProvider identityProviders/k8s",
    ] {
        assert!(events.iter().any(|e| e == expected), "{expected} in {events:?}");
    }
    chain_is_intact(&store).await;
}

async fn identity_bindings_need_their_workspace_and_provider_list_in_order_and_go_with_their_workspace(
    subject: Subject,
) {
    let store = subject.open().await;
    with_workspace(&store, "acme").await;
    with_workspace(&store, "beta").await;
    store.insert_identity_provider(&provider("k8s", "https://k8s.example"), &[]).await.unwrap();
    let create = |b: &IdentityBinding| [event("CreateIdentityBinding", b.name.workspace.as_str(), &b.name.to_string())];
    for (workspace, id) in [("acme", "z-last"), ("acme", "a-first"), ("beta", "ci")] {
        let b = binding(workspace, id, "k8s");
        store.insert_identity_binding(&b, &create(&b)).await.unwrap();
    }
    let again = binding("acme", "a-first", "k8s");
    assert!(matches!(store.insert_identity_binding(&again, &[]).await, Err(Error::AlreadyExists { .. })));
    let nowhere = binding("nowhere", "ci", "k8s");
    assert!(matches!(store.insert_identity_binding(&nowhere, &[]).await, Err(Error::NotFound { .. })));
    let no_provider = binding("acme", "orphan", "missing");
    assert!(matches!(store.insert_identity_binding(&no_provider, &[]).await, Err(Error::NotFound { .. })));

    let acme: Vec<String> =
        store.identity_bindings(Some(&ws("acme"))).await.unwrap().iter().map(|b| b.name.to_string()).collect();
    assert_eq!(acme, ["workspaces/acme/identityBindings/a-first", "workspaces/acme/identityBindings/z-last"]);
    let all = store.identity_bindings(None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], binding("acme", "a-first", "k8s"), "every field back as written");

    let first = binding("acme", "a-first", "k8s");
    let changed = IdentityBinding {
        role: Role::Viewer,
        allowed_projects: Vec::new(),
        update_time: Timestamp::from_micros(first.update_time.as_micros() + 1),
        ..first.clone()
    };
    let update = [event("UpdateIdentityBinding", "acme", &first.name.to_string())];
    assert_eq!(store.replace_identity_binding(first.update_time, &changed, &update).await.unwrap(), Replaced::Done);
    assert_eq!(store.replace_identity_binding(first.update_time, &changed, &update).await.unwrap(), Replaced::Stale);
    assert_eq!(store.identity_bindings(Some(&ws("acme"))).await.unwrap()[0], changed);

    let delete = [event("DeleteIdentityBinding", "acme", "x")];
    assert!(store.delete_identity_binding(&first.name, &delete).await.unwrap());
    assert!(!store.delete_identity_binding(&first.name, &delete).await.unwrap());
    // A workspace deleted (forced) takes its bindings with it.
    store.delete_workspace(&ws("beta"), true, &[event("DeleteWorkspace", "beta", "workspaces/beta")]).await.unwrap();
    let left: Vec<String> = store.identity_bindings(None).await.unwrap().iter().map(|b| b.name.to_string()).collect();
    assert_eq!(left, ["workspaces/acme/identityBindings/z-last"]);
    chain_is_intact(&store).await;
}
