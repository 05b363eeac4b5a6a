//! Prometheus metrics: what the service counts, under which names.
//!
//! One process-wide registry ([`prometheus-client`](prometheus_client)),
//! because counters are facts about the process, not about one module:
//! the gRPC layer, the broker, upstream, audit, the store and the gateway
//! each call a `record_*` function here and need no handle passed down.
//! Nothing is recorded until [`enable`] is called (`--metrics-listen` set),
//! so a server without metrics pays one relaxed atomic load per site.
//!
//! Labels are bounded by construction: each is a `&'static str` from a
//! fixed set (a gRPC method known to the descriptors, a code, a kind, an
//! outcome). A workspace, credential, image or token never becomes a label.
//! The exposition (OpenMetrics or text 0.0.4) is [`exposition`]; its HTTP
//! listener is [`listener`].

pub mod exposition;
pub mod grpc;
pub mod listener;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use grpc::GrpcMethod;

/// Buckets of latency histograms (seconds): Prometheus' defaults, the ones
/// go-grpc-prometheus uses, so existing dashboards' quantiles line up.
const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Buckets of store write latencies (seconds): a commit takes 0.1–30 ms.
const WRITE_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

static ENABLED: AtomicBool = AtomicBool::new(false);
static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Starts recording (called once, when the metrics listener is configured).
pub fn enable() {
    LazyLock::force(&METRICS);
    ENABLED.store(true, Ordering::Relaxed);
}

/// The metrics, when recording is on.
fn on() -> Option<&'static Metrics> {
    ENABLED.load(Ordering::Relaxed).then(|| &*METRICS)
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn write_histogram() -> Histogram {
    Histogram::new(WRITE_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    form: &'static str,
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithinLabel {
    within: &'static str,
}

/// The windows of `pullpass_credentials_expiring`, as labels and durations.
pub const EXPIRY_WINDOWS: [(&str, Duration); 2] =
    [("7d", Duration::from_secs(7 * 86_400)), ("30d", Duration::from_secs(30 * 86_400))];

/// When the oldest lease audit event not yet committed was queued
/// (microseconds since 1970; 0: none pending).
static AUDIT_PENDING_SINCE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// An identity provider (its id: operators create them, a handful) and
/// how one verification went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    method: &'static str,
    kind: &'static str,
    code: &'static str,
}

/// Every metric family, registered once.
struct Metrics {
    registry: Registry,
    grpc_started: Family<GrpcLabels, Counter>,
    grpc_handled: Family<HandledLabels, Counter>,
    grpc_handling: Histograms<GrpcLabels>,
    leases: Family<LeaseLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_latency: Histograms<KindLabel>,
    upstream_rate_limited: Family<KindLabel, Counter>,
    upstream_held_back: Counter,
    issuer_tokens_minted: Counter,
    change_feed_staleness: Gauge<f64, std::sync::atomic::AtomicU64>,
    stale_refusals: Counter,
    upstream_shed: Family<KindLabel, Counter>,
    lease_cache_entries: Gauge,
    audit_queued: Counter,
    audit_written: Counter,
    audit_dropped: Counter,
    store_writes: Histograms<BackendLabel>,
    auth_failures: Family<ReasonLabel, Counter>,
    identity_verifications: Family<IdentityLabels, Counter>,
    gateway_requests: Family<GatewayLabels, Counter>,
    gateway_bytes: Family<KindLabel, Counter>,
    gateway_digest_mismatches: Family<KindLabel, Counter>,
    credentials_expiring: Family<WithinLabel, Gauge>,
    credentials_failing: Gauge,
    upstream_refusals: Family<ReasonLabel, Counter>,
    audit_flush_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            grpc_handling: Family::new_with_constructor(latency_histogram),
            leases: Family::default(),
            upstream_requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            upstream_rate_limited: Family::default(),
            upstream_held_back: Counter::default(),
            issuer_tokens_minted: Counter::default(),
            change_feed_staleness: Gauge::default(),
            stale_refusals: Counter::default(),
            upstream_shed: Family::default(),
            lease_cache_entries: Gauge::default(),
            audit_queued: Counter::default(),
            audit_written: Counter::default(),
            audit_dropped: Counter::default(),
            store_writes: Family::new_with_constructor(write_histogram),
            auth_failures: Family::default(),
            identity_verifications: Family::default(),
            gateway_requests: Family::default(),
            gateway_bytes: Family::default(),
            gateway_digest_mismatches: Family::default(),
            credentials_expiring: Family::default(),
            credentials_failing: Gauge::default(),
            upstream_refusals: Family::default(),
            audit_flush_lag: Gauge::default(),
            registry: Registry::default(),
        };
        // Series that exist before anything happens, so dashboards and
        // alerts see zeros rather than nothing.
        for (within, _) in EXPIRY_WINDOWS {
            drop(metrics.credentials_expiring.get_or_create(&WithinLabel { within }));
        }
        for reason in crate::domain::credential::FailureReason::ALL {
            drop(metrics.upstream_refusals.get_or_create(&ReasonLabel { reason: reason.name() }));
        }
        let m = &metrics;
        registry.register("grpc_server_started", "RPCs started on the server.", m.grpc_started.clone());
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            m.grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of gRPC that had been application-level handled by the server.",
            m.grpc_handling.clone(),
        );
        registry.register(
            "pullpass_leases_issued",
            "Registry auth leases issued (per image), by form (bearer, basic) and cache outcome (hit, shared: another replica's, miss: this call's exchange, joined: another call's exchange in flight).",
            m.leases.clone(),
        );
        registry.register(
            "pullpass_upstream_requests",
            "HTTP requests to registries and token services, by kind (challenge, token, google, ecr, registry, identity_keys) and outcome (2xx, 3xx, 4xx, 429, 5xx, timeout, error); retries count one each.",
            m.upstream_requests.clone(),
        );
        registry.register(
            "pullpass_upstream_request_duration_seconds",
            "Latency of HTTP requests to registries and token services, to the response headers.",
            m.upstream_latency.clone(),
        );
        registry.register(
            "pullpass_upstream_rate_limited",
            "Token exchanges a registry or token service refused with a rate limit (429, or ECR throttling).",
            m.upstream_rate_limited.clone(),
        );
        registry.register(
            "pullpass_upstream_held_back",
            "Token exchanges not attempted because a Retry-After from the registry (seen here or by another replica) had not passed.",
            m.upstream_held_back.clone(),
        );
        registry.register(
            "pullpass_issuer_tokens_minted",
            "Federation JWTs pullpass signed as an OIDC issuer, for a cloud's token exchange (never given to callers).",
            m.issuer_tokens_minted.clone(),
        );
        registry.register(
            "pullpass_change_feed_staleness_seconds",
            "On a replica sharing PostgreSQL: how long ago it last confirmed it had seen every change the other replicas committed (about 1 s when healthy; past --max-staleness, calls confirm from the database themselves or fail UNAVAILABLE).",
            m.change_feed_staleness.clone(),
        );
        registry.register(
            "pullpass_stale_refusals",
            "Calls refused UNAVAILABLE because this replica could not confirm the other replicas' changes within --max-staleness.",
            m.stale_refusals.clone(),
        );
        registry.register(
            "pullpass_upstream_shed",
            "Requests and retries to registries and token services not sent, by kind: the endpoint's circuit breaker was open or its retry budget spent.",
            m.upstream_shed.clone(),
        );
        registry.register(
            "pullpass_lease_cache_entries",
            "Leases held in this process's cache.",
            m.lease_cache_entries.clone(),
        );
        registry.register(
            "pullpass_audit_events_queued",
            "Lease audit events queued for group commit.",
            m.audit_queued.clone(),
        );
        registry.register(
            "pullpass_audit_events_written",
            "Audit events committed to the store (an aggregated lease event counts each call it stands for).",
            m.audit_written.clone(),
        );
        registry.register(
            "pullpass_audit_events_dropped",
            "Lease audit events dropped (queue full, or the store refused the batch).",
            m.audit_dropped.clone(),
        );
        registry.register(
            "pullpass_store_write_duration_seconds",
            "Time from a mutation reaching the store's writer to its commit, by backend.",
            m.store_writes.clone(),
        );
        registry.register(
            "pullpass_authentication_failures",
            "Access tokens or gateway passwords refused, by reason (missing, malformed, unknown, revoked, expired).",
            m.auth_failures.clone(),
        );
        registry.register(
            "pullpass_identity_verifications",
            "Workload-identity JWTs verified or refused, by identity provider (empty: an issuer not trusted) and result (verified, or the check that failed: issuer_unknown, signature, audience, expired, …).",
            m.identity_verifications.clone(),
        );
        registry.register(
            "pullpass_gateway_requests",
            "Pull gateway requests, by method, kind (base, manifest, blob, tags, other) and status class.",
            m.gateway_requests.clone(),
        );
        registry.register(
            "pullpass_gateway_response_bytes",
            "Body bytes the pull gateway sent, by kind.",
            m.gateway_bytes.clone(),
        );
        registry.register(
            "pullpass_gateway_digest_mismatches",
            "Manifests and blobs a registry sent whose digest did not match (never served whole, never cached).",
            m.gateway_digest_mismatches.clone(),
        );
        registry.register(
            "pullpass_credentials_expiring",
            "Credentials (every workspace's) whose upstream secret expires within the window (7d, 30d), expired ones included; refreshed every 30 s from the store.",
            m.credentials_expiring.clone(),
        );
        registry.register(
            "pullpass_credentials_failing",
            "Credentials (every workspace's) whose last upstream refusal is newer than their last successful use; refreshed every 30 s from the store.",
            m.credentials_failing.clone(),
        );
        registry.register(
            "pullpass_upstream_refusals",
            "Upstream exchanges that failed, by typed reason (rejected, no_access, rate_limited, unavailable, timeout, realm_refused, misconfigured).",
            m.upstream_refusals.clone(),
        );
        registry.register(
            "pullpass_audit_flush_lag_seconds",
            "Age of the oldest lease audit event queued and not yet committed (0 when none is waiting; commits come every 20 ms when healthy).",
            m.audit_flush_lag.clone(),
        );
        Self { registry, ..metrics }
    }
}

/// The exposition of every metric in OpenMetrics text (ends with `# EOF`).
pub fn openmetrics_text() -> String {
    let pending = AUDIT_PENDING_SINCE.load(Ordering::Relaxed);
    let lag =
        if pending == 0 { 0.0 } else { (crate::domain::Timestamp::now().as_micros() - pending).max(0) as f64 / 1e6 };
    METRICS.audit_flush_lag.set(lag);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &METRICS.registry);
    text
}

/// A method's series, looked up once: the per-call cost is then two
/// atomic increments and a histogram observation, with no label hashing.
struct MethodSeries {
    started: Counter,
    handling: Histogram,
    /// `handled` by code, created on a code's first use (so the exposition
    /// lists only codes that happened).
    handled: [std::sync::OnceLock<Counter>; 17],
}

static SERIES: LazyLock<Vec<std::sync::OnceLock<MethodSeries>>> =
    LazyLock::new(|| (0..GrpcMethod::count()).map(|_| std::sync::OnceLock::new()).collect());

fn series(m: &Metrics, method: &GrpcMethod) -> Option<&'static MethodSeries> {
    let slot = SERIES.get(method.index)?;
    Some(slot.get_or_init(|| MethodSeries {
        started: m.grpc_started.get_or_create(&method.labels()).clone(),
        handling: m.grpc_handling.get_or_create(&method.labels()).clone(),
        handled: Default::default(),
    }))
}

/// A gRPC call started.
pub fn grpc_started(method: &GrpcMethod) {
    if let Some(m) = on() {
        match series(m, method) {
            Some(series) => series.started.inc(),
            None => m.grpc_started.get_or_create(&method.labels()).inc(),
        };
    }
}

/// A gRPC call ended with `code` after `elapsed`.
pub fn grpc_handled(method: &GrpcMethod, code: tonic::Code, elapsed: Duration) {
    if let Some(m) = on() {
        let labels = method.labels();
        let handled = || {
            let labels = HandledLabels {
                grpc_type: labels.grpc_type,
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: grpc::code_name(code),
            };
            m.grpc_handled.get_or_create(&labels).clone()
        };
        match series(m, method) {
            Some(series) => {
                series.handling.observe(elapsed.as_secs_f64());
                let slot = &series.handled[(code as usize).min(16)];
                slot.get_or_init(handled).inc();
            }
            None => {
                m.grpc_handling.get_or_create(&labels).observe(elapsed.as_secs_f64());
                handled().inc();
            }
        }
    }
}

/// How a lease was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// In this process's cache.
    Hit,
    /// Stored by another replica (PostgreSQL), no upstream call.
    Shared,
    /// This call ran the upstream exchange.
    Miss,
    /// This call waited for another call's exchange.
    Joined,
}

impl CacheOutcome {
    /// Came without waiting for an upstream exchange.
    pub fn cached(self) -> bool {
        matches!(self, CacheOutcome::Hit | CacheOutcome::Shared)
    }

    fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Shared => "shared",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Joined => "joined",
        }
    }
}

static LEASE_SERIES: [std::sync::OnceLock<Counter>; 8] = [const { std::sync::OnceLock::new() }; 8];

/// A lease was issued to a caller.
pub fn lease_issued(bearer: bool, outcome: CacheOutcome) {
    if let Some(m) = on() {
        let form = if bearer { "bearer" } else { "basic" };
        let slot = &LEASE_SERIES[usize::from(bearer) * 4 + outcome as usize];
        slot.get_or_init(|| m.leases.get_or_create(&LeaseLabels { form, cache: outcome.label() }).clone()).inc();
    }
}

/// What an upstream HTTP request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// `GET /v2/` for the `WWW-Authenticate` challenge.
    Challenge,
    /// A registry token service (or a Basic check of `/v2/`).
    Token,
    /// Google's OAuth token endpoint.
    Google,
    /// ECR's `GetAuthorizationToken`.
    Ecr,
    /// Manifests, blobs and tags, for the pull gateway.
    Registry,
    /// An identity provider's discovery document or key set.
    IdentityKeys,
    /// AWS STS (`AssumeRole`, `AssumeRoleWithWebIdentity`).
    Sts,
    /// pullpass's own AWS identity: container or instance metadata.
    AwsMetadata,
    /// Entra ID's token endpoint (for ACR).
    Entra,
    /// Google STS and IAM Credentials (federation).
    GoogleFederation,
    /// Quay's robot federation endpoint.
    QuayFederation,
    /// GitHub's or GitLab's API, asked when a tested token expires.
    TokenExpiry,
}

impl UpstreamKind {
    /// The name of its trace span.
    pub fn span_name(self) -> &'static str {
        match self {
            UpstreamKind::Challenge => "upstream.challenge",
            UpstreamKind::Token => "upstream.token",
            UpstreamKind::Google => "upstream.google",
            UpstreamKind::Ecr => "upstream.ecr",
            UpstreamKind::Registry => "upstream.registry",
            UpstreamKind::IdentityKeys => "upstream.identity_keys",
            UpstreamKind::Sts => "upstream.sts",
            UpstreamKind::AwsMetadata => "upstream.aws_metadata",
            UpstreamKind::Entra => "upstream.entra",
            UpstreamKind::GoogleFederation => "upstream.google_federation",
            UpstreamKind::QuayFederation => "upstream.quay_federation",
            UpstreamKind::TokenExpiry => "upstream.token_expiry",
        }
    }

    fn label(self) -> &'static str {
        match self {
            UpstreamKind::Challenge => "challenge",
            UpstreamKind::Token => "token",
            UpstreamKind::Google => "google",
            UpstreamKind::Ecr => "ecr",
            UpstreamKind::Registry => "registry",
            UpstreamKind::IdentityKeys => "identity_keys",
            UpstreamKind::Sts => "sts",
            UpstreamKind::AwsMetadata => "aws_metadata",
            UpstreamKind::Entra => "entra",
            UpstreamKind::GoogleFederation => "google_federation",
            UpstreamKind::QuayFederation => "quay_federation",
            UpstreamKind::TokenExpiry => "token_expiry",
        }
    }
}

/// How an upstream HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// An answer with this status.
    Status(u16),
    /// No answer within the deadline.
    Timeout,
    /// Connection, TLS or protocol failure.
    Error,
}

/// An upstream HTTP request ended (each attempt counts).
pub fn upstream_request(kind: UpstreamKind, outcome: UpstreamOutcome, elapsed: Duration) {
    if let Some(m) = on() {
        let outcome = match outcome {
            UpstreamOutcome::Status(429) => "429",
            UpstreamOutcome::Status(200..=299) => "2xx",
            UpstreamOutcome::Status(300..=399) => "3xx",
            UpstreamOutcome::Status(400..=499) => "4xx",
            UpstreamOutcome::Status(_) => "5xx",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
        };
        m.upstream_requests.get_or_create(&UpstreamLabels { kind: kind.label(), outcome }).inc();
        m.upstream_latency.get_or_create(&KindLabel { kind: kind.label() }).observe(elapsed.as_secs_f64());
    }
}

/// An exchange was refused by a rate limit upstream.
pub fn upstream_rate_limited(kind: UpstreamKind) {
    if let Some(m) = on() {
        m.upstream_rate_limited.get_or_create(&KindLabel { kind: kind.label() }).inc();
    }
}

/// How long ago this replica last confirmed the change feed.
pub fn change_feed_staleness(age: Duration) {
    if let Some(m) = on() {
        m.change_feed_staleness.set(age.as_secs_f64());
    }
}

/// A call was refused because the change feed could not be confirmed.
pub fn stale_refusal() {
    if let Some(m) = on() {
        m.stale_refusals.inc();
    }
}

/// pullpass signed a federation JWT.
pub fn issuer_token_minted() {
    if let Some(m) = on() {
        m.issuer_tokens_minted.inc();
    }
}

/// An exchange was not attempted: a `Retry-After` had not passed.
pub fn upstream_held_back() {
    if let Some(m) = on() {
        m.upstream_held_back.inc();
    }
}

/// A request or retry was not sent: its endpoint's breaker was open or its
/// retry budget spent.
pub fn upstream_shed(kind: UpstreamKind) {
    if let Some(m) = on() {
        m.upstream_shed.get_or_create(&KindLabel { kind: kind.label() }).inc();
    }
}

/// The lease cache now holds `entries` leases.
pub fn lease_cache_entries(entries: usize) {
    if let Some(m) = on() {
        m.lease_cache_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// Lease audit events: one queued.
pub fn audit_queued() {
    if let Some(m) = on() {
        m.audit_queued.inc();
    }
}

/// The lease audit flusher took a batch whose oldest event was queued at
/// `oldest` (the oldest of all waiting: the queue is first in, first out),
/// or committed it (None), for `pullpass_audit_flush_lag_seconds`. A commit
/// that hangs keeps the gauge growing.
pub fn audit_pending(oldest: Option<crate::domain::Timestamp>) {
    if on().is_some() {
        AUDIT_PENDING_SINCE.store(oldest.map_or(0, |t| t.as_micros().max(1)), Ordering::Relaxed);
    }
}

/// Credential health from the store: how many expire within each of
/// [`EXPIRY_WINDOWS`] (in that order), and how many are failing.
pub fn credential_health(expiring: &[u64], failing: u64) {
    if let Some(m) = on() {
        for ((within, _), n) in EXPIRY_WINDOWS.iter().zip(expiring) {
            m.credentials_expiring.get_or_create(&WithinLabel { within }).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        m.credentials_failing.set(i64::try_from(failing).unwrap_or(i64::MAX));
    }
}

/// An upstream exchange failed for `reason`.
pub fn upstream_refusal(reason: crate::domain::credential::FailureReason) {
    if let Some(m) = on() {
        m.upstream_refusals.get_or_create(&ReasonLabel { reason: reason.name() }).inc();
    }
}

/// Audit events: `n` committed.
pub fn audit_written(n: usize) {
    if let Some(m) = on() {
        m.audit_written.inc_by(n as u64);
    }
}

/// Lease audit events: `n` dropped.
pub fn audit_dropped(n: usize) {
    if let Some(m) = on() {
        m.audit_dropped.inc_by(n as u64);
    }
}

/// A store mutation committed after `elapsed` on `backend` (`sqlite`,
/// `postgres`).
pub fn store_write(backend: &'static str, elapsed: Duration) {
    if let Some(m) = on() {
        m.store_writes.get_or_create(&BackendLabel { backend }).observe(elapsed.as_secs_f64());
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization` header (or no gateway credentials).
    Missing,
    /// Not a pullpass token.
    Malformed,
    /// Well-formed, but no such token.
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// A workload-identity JWT was verified (`result` = `verified`) or refused
/// (the failed check's label), for `provider` ("" when its issuer is not
/// one pullpass trusts). Verified tokens are remembered, so this counts
/// first presentations, not calls.
pub fn identity_verification(provider: &str, result: &'static str) {
    if let Some(m) = on() {
        m.identity_verifications.get_or_create(&IdentityLabels { provider: provider.to_owned(), result }).inc();
    }
}

/// A presented token was refused.
pub fn authentication_failure(reason: AuthFailure) {
    if let Some(m) = on() {
        let reason = match reason {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Expired => "expired",
        };
        m.auth_failures.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// A gateway request ended with `status` after sending `bytes` of body.
/// `kind` is one of `base`, `manifest`, `blob`, `tags`, `other`.
pub fn gateway_request(method: &http::Method, kind: &'static str, status: u16, bytes: u64) {
    if let Some(m) = on() {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::HEAD => "HEAD",
            _ => "other",
        };
        let code = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        m.gateway_requests.get_or_create(&GatewayLabels { method, kind, code }).inc();
        m.gateway_bytes.get_or_create(&KindLabel { kind }).inc_by(bytes);
    }
}

/// A registry sent a manifest or blob (`kind`) whose digest did not match.
pub fn gateway_digest_mismatch(kind: &'static str) {
    if let Some(m) = on() {
        m.gateway_digest_mismatches.get_or_create(&KindLabel { kind }).inc();
    }
}
