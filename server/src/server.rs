//! Assembling and running the gRPC server: the pullpass services, health,
//! reflection (v1 and v1alpha), the RPC layer, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::access::gateway_password::{self, GatewayPasswords};
use crate::access::rate_limit::RateLimiter;
use crate::access::sessions::ConsoleSessions;
use crate::access::tokens::AccessTokens;
use crate::access::{self, Authenticator};
use crate::api::metrics_layer::MetricsLayer;
use crate::api::rpc_layer::RpcLayer;
use crate::api::trace_layer::TraceLayer;
use crate::api::{self, ApiState};
use crate::audit::{Actor, Auditor};
use crate::broker::Broker;
use crate::changes::ChangeFeed;
use crate::coalesce::Coalesced;
use crate::config::{GatewaySettings, Settings};
use crate::connections::{Connections, Held};
use crate::credentials::Credentials;
use crate::gateway::Gateway;
use crate::paging::PageTokens;
use crate::pulls::address::Addressing;
use crate::pulls::{PullSettings, Pulls};
use crate::startup::{self, Opened, StartupError};
use crate::tls::ReloadableTls;
use crate::upstream::Upstream;
use crate::workspaces::Workspaces;

/// gRPC service names, as reported by health checks.
pub const SERVICE_NAMES: [&str; 4] = [
    "pullpass.v1.CredentialService",
    "pullpass.v1.RegistryAuthService",
    "pullpass.v1.AccessService",
    "pullpass.v1.AuditService",
];

/// The health service name that answers SERVING for as long as the process
/// serves at all, whatever the database: for liveness probes. (The whole
/// server, `""`, turns NOT_SERVING on shutdown and, on a replica, past
/// `--max-staleness`: for readiness probes and load balancers. Restarting
/// a replica because PostgreSQL is away would only make things worse.)
pub const LIVENESS: &str = "liveness";

/// Runs `pullpassd` until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let started = Instant::now();
    let prepared = prepare(&settings).await?;
    if let Some((name, token)) = &prepared.new_root_token {
        println!("pullpassd: root token for {name} (shown once, store it now):");
        println!("PULLPASS_TOKEN={}", token.expose());
    }
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {}: {e}", settings.listen)))?;
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    let tls = match &settings.tls {
        Some(files) => Some(ReloadableTls::load(files).map_err(StartupError)?),
        None => {
            refuse_exposed_plaintext("gRPC", address, settings.insecure_plaintext)?;
            None
        }
    };
    let gateway = match &settings.gateway {
        Some(gateway) => Some(bind_gateway(gateway, settings.insecure_plaintext).await?),
        None => None,
    };
    let metrics = bind_metrics(&settings).await?;
    let console = bind_console(&settings).await?;
    let issuer = bind_issuer(&settings).await?;
    // The listeners are bound: connections made from now on wait in their backlogs.
    if let Some(gateway) = &gateway {
        println!("pullpassd: gateway on {} (runtimes pull from {})", gateway.address, gateway.public_host);
    }
    if let Some(metrics) = &metrics {
        let scheme = if metrics.tls.is_some() { "https" } else { "http" };
        println!("pullpassd: metrics on {scheme}://{}/metrics", metrics.address);
    }
    if let Some(console) = &console {
        println!("pullpassd: console on {}/console/", console.public_url);
    }
    if let Some(url) = issuer_url(&settings, gateway.as_ref()) {
        println!("pullpassd: OIDC issuer {url}");
    }
    if let Some(issuer) = &issuer {
        let scheme = if issuer.tls.is_some() { "https" } else { "http" };
        println!("pullpassd: issuer documents also on {scheme}://{}", issuer.address);
    }
    let stop = wait_for_signal();
    println!("pullpassd: serving on {address}");
    if settings.dev {
        print_next_steps(
            (address, tls.is_some()),
            gateway.as_ref().map(|g| (g.address, g.tls.is_some())),
            console.as_ref().map(|c| c.public_url.as_str()),
        );
    }
    let listeners = Listeners { grpc: listener, tls, gateway, metrics, console, issuer };
    serve(prepared.opened, listeners, started, &settings, stop).await
}

/// `--dev`'s last words: three things to try, each copy-pasteable as
/// printed (the root token is printed on first start; export it). Over TLS
/// (`--tls-cert`) they use TLS too, and need a certificate the tools trust.
fn print_next_steps(grpc: (SocketAddr, bool), gateway: Option<(SocketAddr, bool)>, console: Option<&str>) {
    const PRIVATE_CA: &str = "   # a private CA: add -cacert CA.pem";
    println!("pullpassd: try next, in another shell, with the root token above exported as PULLPASS_TOKEN:");
    let (address, tls) = grpc;
    let (plaintext, note) = if tls { ("", PRIVATE_CA) } else { ("-plaintext ", "") };
    println!(
        "  grpcurl {plaintext}-H \"authorization: Bearer $PULLPASS_TOKEN\" {address} pullpass.v1.AccessService/ListWorkspaces{note}"
    );
    if let Some(console) = console {
        println!("  {console}/console/   # open in a browser; sign in with the root token");
    }
    if let Some((address, tls)) = gateway {
        let (scheme, note) = if tls { ("https", " (a private CA: add --cacert CA.pem)") } else { ("http", "") };
        println!(
            "  curl -sS -u \"pullpass:$PULLPASS_TOKEN\" {scheme}://{address}/v2/   # the pull gateway answers {{}}{note}; pulls: docs/gateway.md"
        );
    }
}

/// Every listener, bound.
struct Listeners {
    grpc: TcpListener,
    tls: Option<ReloadableTls>,
    gateway: Option<GatewayListener>,
    metrics: Option<MetricsListener>,
    console: Option<ConsoleListener>,
    issuer: Option<MetricsListener>,
}

/// The console's default share of the connection budget: one in this many.
const CONSOLE_SHARE: usize = 8;

/// The console's listener, bound.
struct ConsoleListener {
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    /// Where people open it (`http://127.0.0.1:50053`), without a path.
    public_url: String,
}

/// Binds `--console-listen`, if set: over TLS with the server's certificate
/// when it has one.
async fn bind_console(settings: &Settings) -> Result<Option<ConsoleListener>, StartupError> {
    let Some(console) = &settings.console else { return Ok(None) };
    let listener = TcpListener::bind(console.listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {} for the console: {e}", console.listen)))?;
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    let tls = match &settings.tls {
        Some(files) => {
            let files = crate::config::TlsFiles { client_ca: None, ..files.clone() };
            Some(ReloadableTls::load_with_alpn(&files, crate::tls::HTTP_ALPN).map_err(StartupError)?)
        }
        None => {
            refuse_exposed_plaintext("console", address, settings.insecure_plaintext)?;
            None
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = match &console.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("{scheme}://{address}"),
    };
    Ok(Some(ConsoleListener { listener, tls, public_url }))
}

/// The metrics endpoint's listener, bound.
struct MetricsListener {
    listener: TcpListener,
    address: SocketAddr,
    tls: Option<ReloadableTls>,
}

/// Binds `--metrics-listen`, if set: over TLS with the server's certificate
/// when it has one.
async fn bind_metrics(settings: &Settings) -> Result<Option<MetricsListener>, StartupError> {
    bind_side(settings, settings.metrics_listen, "metrics").await
}

/// The issuer's URL: as configured, or in `--dev`, the gateway's bound
/// address.
fn issuer_url(settings: &Settings, gateway: Option<&GatewayListener>) -> Option<crate::issuer::IssuerUrl> {
    let issuer = settings.issuer.as_ref()?;
    match gateway {
        Some(gateway) if issuer.follows_gateway => {
            let scheme = if gateway.tls.is_some() { "https" } else { "http" };
            crate::issuer::IssuerUrl::parse(&format!("{scheme}://{}", gateway.address)).ok()
        }
        _ => Some(issuer.url.clone()),
    }
}

/// Binds `--issuer-listen`, if set, like the metrics listener.
async fn bind_issuer(settings: &Settings) -> Result<Option<MetricsListener>, StartupError> {
    bind_side(settings, settings.issuer.as_ref().and_then(|i| i.listen), "the issuer's documents").await
}

/// Binds a small HTTP listener beside gRPC (metrics, the issuer's
/// documents): over TLS with the server's certificate when it has one.
async fn bind_side(
    settings: &Settings,
    listen: Option<SocketAddr>,
    what: &str,
) -> Result<Option<MetricsListener>, StartupError> {
    let Some(listen) = listen else { return Ok(None) };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {listen} for {what}: {e}")))?;
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    let tls = match &settings.tls {
        Some(files) => {
            let files = crate::config::TlsFiles { client_ca: None, ..files.clone() };
            Some(ReloadableTls::load_with_alpn(&files, crate::tls::HTTP_ALPN).map_err(StartupError)?)
        }
        None => {
            refuse_exposed_plaintext(what, address, settings.insecure_plaintext)?;
            None
        }
    };
    Ok(Some(MetricsListener { listener, address, tls }))
}

/// The pull gateway's listener, bound.
struct GatewayListener {
    listener: TcpListener,
    address: SocketAddr,
    tls: Option<ReloadableTls>,
    public_host: pullpass::registry::RegistryHost,
}

async fn bind_gateway(settings: &GatewaySettings, insecure_plaintext: bool) -> Result<GatewayListener, StartupError> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {} for the gateway: {e}", settings.listen)))?;
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    let tls = match &settings.tls {
        Some(files) => Some(ReloadableTls::load_with_alpn(files, crate::tls::HTTP_ALPN).map_err(StartupError)?),
        None => {
            refuse_exposed_plaintext("gateway", address, insecure_plaintext)?;
            None
        }
    };
    let public_host = match &settings.public_host {
        Some(host) => host.clone(),
        None => pullpass::registry::RegistryHost::parse(&address.to_string())
            .map_err(|e| StartupError(format!("the gateway address {address} is not a registry host: {e}")))?,
    };
    Ok(GatewayListener { listener, address, tls, public_host })
}

/// What start-up produced before serving.
struct Prepared {
    opened: Opened,
    /// A root token minted on this start (dev mode, first start only).
    new_root_token: Option<(String, access::TokenString)>,
}

async fn prepare(settings: &Settings) -> Result<Prepared, StartupError> {
    let keyring = startup::load_keys(settings)?;
    let opened = startup::open_database(settings, keyring).await?;
    let new_root_token = if settings.dev { dev_root_token(&opened).await? } else { None };
    Ok(Prepared { opened, new_root_token })
}

/// A pullpassd running inside this process on 127.0.0.1, for tests,
/// examples and doctests of code that talks to pullpass. Stops when dropped.
#[derive(Debug)]
pub struct Embedded {
    /// `127.0.0.1:PORT`.
    pub address: SocketAddr,
    /// The pull gateway's address, when it is served.
    pub gateway_address: Option<SocketAddr>,
    /// The metrics endpoint's address, when it is served.
    pub metrics_address: Option<SocketAddr>,
    /// The console's URL (`http://127.0.0.1:PORT/console/`), when it is served.
    pub console_url: Option<String>,
    /// The issuer's own listener (`--issuer-listen`), when it is served.
    pub issuer_address: Option<SocketAddr>,
    /// The root token (dev mode mints one on first start).
    pub root_token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), StartupError>>>,
}

impl Embedded {
    /// Starts a server with `settings` (its `listen` is ignored: an
    /// ephemeral port on 127.0.0.1 is used).
    pub async fn start(settings: Settings) -> Result<Self, StartupError> {
        let prepared = prepare(&settings).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| StartupError(e.to_string()))?;
        let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
        let gateway = match &settings.gateway {
            Some(gateway) => Some(bind_gateway(gateway, settings.insecure_plaintext).await?),
            None => None,
        };
        let gateway_address = gateway.as_ref().map(|g| g.address);
        let metrics = bind_metrics(&settings).await?;
        let metrics_address = metrics.as_ref().map(|m| m.address);
        let console = bind_console(&settings).await?;
        let console_url = console.as_ref().map(|c| format!("{}/console/", c.public_url));
        let issuer = bind_issuer(&settings).await?;
        let issuer_address = issuer.as_ref().map(|m| m.address);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let listeners = Listeners { grpc: listener, tls: None, gateway, metrics, console, issuer };
            serve(prepared.opened, listeners, Instant::now(), &settings, shutdown).await
        });
        let root_token = prepared.new_root_token.map(|(_, token)| token.expose().to_owned());
        Ok(Self {
            address,
            gateway_address,
            metrics_address,
            console_url,
            issuer_address,
            root_token,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving, drains, and closes the database.
    pub async fn shutdown(mut self) -> Result<(), StartupError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| StartupError(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// In dev mode, mints a root token on first start.
async fn dev_root_token(opened: &Opened) -> Result<Option<(String, access::TokenString)>, StartupError> {
    let fail = |e: crate::error::Error| StartupError(format!("cannot create the root token: {e}"));
    if access::has_root_token(&opened.store).await.map_err(fail)? {
        return Ok(None);
    }
    let actor = Actor::command("--dev");
    let (record, token) =
        access::create_root_token(&opened.store, &actor, "created by pullpassd --dev").await.map_err(fail)?;
    Ok(Some((record.resource_name(), token)))
}

/// Tokens and passwords must not cross a network in clear.
fn refuse_exposed_plaintext(what: &str, address: SocketAddr, allowed: bool) -> Result<(), StartupError> {
    if address.ip().is_loopback() {
        Ok(())
    } else if allowed {
        tracing::warn!(%address, listener = what, "serving plaintext on a non-loopback address (--insecure-plaintext)");
        Ok(())
    } else {
        let flags = if what == "gateway" {
            "--gateway-tls-cert and --gateway-tls-key (or --tls-cert and --tls-key)"
        } else {
            "--tls-cert and --tls-key"
        };
        Err(StartupError(format!(
            "refusing to serve plaintext {what} on the non-loopback address {address}: tokens and passwords would cross the network unencrypted. \
             Serve TLS with {flags}, listen on 127.0.0.1 or [::1], or (behind a TLS-terminating proxy only) pass --insecure-plaintext"
        )))
    }
}

async fn serve(
    opened: Opened,
    listeners: Listeners,
    started: Instant,
    settings: &Settings,
    signal: impl std::future::Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let Listeners { grpc: listener, tls, gateway, metrics, console, issuer: issuer_listener } = listeners;
    if metrics.is_some() {
        crate::metrics::enable();
        tokio::spawn(crate::credentials::health::keep_gauges(opened.store.clone(), settings.health_refresh));
    }
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    let grace = settings.shutdown_grace;
    let drain_delay = settings.drain_delay;
    let pages = Arc::new(PageTokens::new(opened.sealer.derive_mac_key("page-tokens")));
    let changes = match &settings.database {
        crate::store::Location::Postgres(_) => ChangeFeed::bounded(settings.max_staleness),
        crate::store::Location::Sqlite(_) => ChangeFeed::default(),
    };
    let (auditor, audit_flusher) = Auditor::new(opened.store.clone(), Arc::clone(&pages));
    let credentials =
        Credentials::new(opened.store.clone(), Arc::clone(&opened.sealer), Arc::clone(&pages), changes.clone());
    let workspaces = Workspaces::new(opened.store.clone(), Arc::clone(&pages), changes.clone());
    let callers = Arc::new(
        crate::access::identity::callers::IdentityCallers::new(opened.store.clone())
            .map_err(|e| StartupError(format!("workload identity: {e}")))?,
    );
    let identities = crate::identities::Identities::new(
        opened.store.clone(),
        Arc::clone(&pages),
        changes.clone(),
        Arc::clone(&callers),
    );
    // Identities first: `following` hands its listener a copy.
    let authn = Authenticator::new(opened.store.clone()).with_identities(Arc::clone(&callers)).following(&changes);
    let follower = match &settings.database {
        crate::store::Location::Postgres(config) => Some(
            crate::store::postgres::changes::follow(config.as_ref().clone(), opened.store.clone(), changes.clone())
                .await,
        ),
        crate::store::Location::Sqlite(_) => {
            Some(crate::store::sqlite::changes::follow(opened.store.clone(), changes.clone()).await)
        }
    };
    let tokens = AccessTokens::new(opened.store.clone(), authn.clone(), pages);
    let sessions = ConsoleSessions::new(
        opened.store.clone(),
        authn.clone(),
        opened.sealer.derive_mac_key("console-csrf"),
        console.as_ref().map(|c| format!("{}/console/login", c.public_url)),
    );
    let issuer = match issuer_url(settings, gateway.as_ref()) {
        Some(url) => Some(Arc::new(
            crate::issuer::Issuer::open(
                url,
                opened.store.clone(),
                Arc::clone(&opened.sealer),
                settings.issuer.as_ref().map_or(crate::issuer::RELOAD, |i| i.reload),
            )
            .await
            .map_err(|e| StartupError(format!("the OIDC issuer: {e}")))?,
        )),
        None => None,
    };
    let upstream = Upstream::new(settings.upstream.clone())
        .map_err(StartupError)?
        .with_federation(issuer.clone().map(|i| i as Arc<dyn crate::upstream::FederationTokens>));
    let broker = Broker::new(credentials.clone(), upstream, settings.lease_cache_size, &changes, auditor.clone());
    let pulls = match (&gateway, &settings.gateway) {
        (Some(listener), Some(gateway_settings)) => Some(Pulls::new(
            broker.clone(),
            authn.clone(),
            GatewayPasswords::new(
                opened.sealer.active_key_id().to_owned(),
                opened.sealer.derive_mac_keys(gateway_password::KEY_PURPOSE),
            )
            .fitting(settings.connections.max_header_bytes),
            PullSettings {
                addressing: Addressing {
                    public_host: listener.public_host.clone(),
                    aliases: gateway_settings.aliases.clone(),
                },
                password_ttl: gateway_settings.password_ttl,
                tag_ttl: gateway_settings.tag_ttl,
            },
            auditor.clone(),
        )),
        _ => None,
    };
    let console_services = crate::console::Services {
        credentials: credentials.clone(),
        workspaces: workspaces.clone(),
        tokens: tokens.clone(),
        identities: identities.clone(),
        auditor: auditor.clone(),
        broker: broker.clone(),
        sessions: sessions.clone(),
        upstream_timeout: settings.upstream_timeout,
    };
    let services = api::services(
        ApiState {
            credentials,
            workspaces,
            identities,
            tokens,
            auditor: auditor.clone(),
            broker,
            pulls: pulls.clone(),
            sessions,
            upstream_timeout: settings.upstream_timeout,
        },
        settings.max_request_bytes,
    );
    let limiter = (settings.rate_limit > 0).then(|| Arc::new(RateLimiter::new(settings.rate_limit)));
    let pruner = settings.audit_retention.map(|retention| tokio::spawn(prune_audit(opened.store.clone(), retention)));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = reflection().build_v1().map_err(|e| StartupError(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| StartupError(format!("reflection: {e}")))?;

    let connections = Connections::new(settings.connections, crate::connections::raise_open_file_limit());
    let limits = connections.limits();
    let router = Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_header_list_size(limits.max_header_bytes)
        // Pings find peers that vanished without closing (NAT timeouts,
        // crashed hosts) so their connections give their place back.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        // Responses' data cut into frames h2 sends together (see coalesce).
        .layer(tower::util::MapResponseLayer::new(crate::coalesce::small_frames))
        .layer(MetricsLayer::new(metrics.is_some()))
        .layer(TraceLayer)
        .layer(RpcLayer::new(authn, limiter.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(services.credentials)
        .add_service(services.access)
        .add_service(services.registry_auth)
        .add_service(services.audit);

    for name in SERVICE_NAMES.into_iter().chain(["", LIVENESS]) {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let shutting_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let staleness_watch = changes
        .limit()
        .map(|_| tokio::spawn(report_staleness(changes.clone(), health_reporter.clone(), Arc::clone(&shutting_down))));
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    tracing::info!(%address, transport = scheme, startup_ms = started.elapsed().as_millis() as u64, "serving");

    let stopping = Arc::new(tokio::sync::Notify::new());
    let (gateway_stop, mut gateway_stopped) = tokio::sync::watch::channel(false);
    let mut metrics_stopped = gateway_stop.subscribe();
    let mut console_stopped = gateway_stop.subscribe();
    let mut issuer_stopped = gateway_stop.subscribe();
    let shutdown = {
        let health = health_reporter.clone();
        let stopping = Arc::clone(&stopping);
        async move {
            signal.await;
            shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
            // Health first, so load balancers move calls elsewhere while
            // this replica still serves them.
            for name in SERVICE_NAMES.into_iter().chain([""]) {
                health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
            }
            if !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay_s = drain_delay.as_secs(),
                    "shutting down: health is NOT_SERVING; still serving during the drain delay"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!(grace_s = grace.as_secs(), "shutting down: no new connections, draining in-flight RPCs");
            let _ = gateway_stop.send(true);
            stopping.notify_one();
        }
    };
    let gateway_tls = gateway.as_ref().and_then(|g| g.tls.clone());
    let metrics_tls = metrics.as_ref().and_then(|m| m.tls.clone());
    let console_tls = console.as_ref().and_then(|c| c.tls.clone());
    let gateway_task = match (gateway, pulls) {
        (Some(bound), Some(pulls)) => {
            tracing::info!(address = %bound.address, public_host = %bound.public_host, transport = if bound.tls.is_some() { "TLS" } else { "plaintext" }, "gateway serving");
            let handler = Gateway::new(pulls, settings.upstream_timeout, limiter).with_issuer(issuer.clone());
            let stopped = async move {
                let _ = gateway_stopped.wait_for(|stop| *stop).await;
            };
            Some(tokio::spawn(crate::gateway::serve(
                handler,
                bound.listener,
                bound.tls,
                connections.clone(),
                stopped,
                grace,
            )))
        }
        _ => None,
    };
    let metrics_task = metrics.map(|bound| {
        let stopped = async move {
            let _ = metrics_stopped.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::metrics::listener::serve(bound.listener, bound.tls, connections.clone(), stopped, grace))
    });
    let issuer_task = match (issuer_listener, &issuer) {
        (Some(bound), Some(issuer)) => {
            let issuer = Arc::clone(issuer);
            let stopped = async move {
                let _ = issuer_stopped.wait_for(|stop| *stop).await;
            };
            tracing::info!(address = %bound.address, issuer = %issuer.url(), "issuer documents serving");
            Some(tokio::spawn(crate::issuer::documents::serve(
                issuer,
                bound.listener,
                bound.tls,
                connections.clone(),
                stopped,
                grace,
            )))
        }
        _ => None,
    };
    let console_max_connections = settings.console.as_ref().and_then(|c| c.max_connections);
    let console_task = console.map(|bound| {
        // Cookies are `Secure` whenever people reach the console over
        // HTTPS: served here with TLS, or behind a proxy that terminates it.
        let secure = bound.public_url.starts_with("https://");
        let console_connections =
            connections.capped(console_max_connections.unwrap_or(limits.max_connections / CONSOLE_SHARE));
        tracing::info!(url = %format!("{}/console/", bound.public_url), "console serving");
        let stopped = async move {
            let _ = console_stopped.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::console::serve(
            crate::console::Console::new(console_services, secure),
            bound.listener,
            bound.tls,
            console_connections,
            stopped,
            grace,
        ))
    });
    let open_connections = connections.clone();
    let grace_over = async {
        stopping.notified().await;
        tokio::time::sleep(grace).await;
        // tonic's connection tasks outlive `serving`: end them, so the
        // handlers still running let go of the store (see connections).
        open_connections.close_all();
    };
    let reloadable: Vec<ReloadableTls> =
        tls.iter().cloned().chain(gateway_tls).chain(metrics_tls).chain(console_tls).collect();
    let reloader = (!reloadable.is_empty()).then(|| tokio::spawn(reload_on_sighup(reloadable)));
    let served = match tls {
        Some(tls) => {
            let serving = router.serve_with_incoming_shutdown(tls.incoming(listener, connections), shutdown);
            tokio::select! {
                served = serving => served,
                () = grace_over => {
                    tracing::warn!("grace period over: closing connections that are still open");
                    Ok(())
                }
            }
        }
        None => {
            let incoming =
                futures_util::stream::unfold((listener, connections), |(listener, connections)| async move {
                    let (stream, _, permit) = connections.accept(&listener, "grpc").await;
                    Some((Ok::<_, std::io::Error>(Held::new(Coalesced::new(stream), permit)), (listener, connections)))
                });
            let serving = router.serve_with_incoming_shutdown(incoming, shutdown);
            tokio::select! {
                served = serving => served,
                () = grace_over => {
                    tracing::warn!("grace period over: closing connections that are still open");
                    Ok(())
                }
            }
        }
    };
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    if let Some(pruner) = pruner {
        pruner.abort();
    }
    if let Some(watch) = staleness_watch {
        watch.abort();
    }
    if let Some(follower) = follower {
        follower.abort();
    }
    if let Some(gateway_task) = gateway_task {
        let _ = gateway_task.await;
    }
    if let Some(metrics_task) = metrics_task {
        let _ = metrics_task.await;
    }
    if let Some(console_task) = console_task {
        let _ = console_task.await;
    }
    if let Some(issuer_task) = issuer_task {
        let _ = issuer_task.await;
    }
    auditor.close(audit_flusher).await;
    opened.store.close().await;
    tracing::info!("database closed; goodbye");
    served.map_err(|e| StartupError(format!("server failed: {e}")))
}

/// Reloads the TLS certificates (and client CA) on SIGHUP.
async fn reload_on_sighup(listeners: Vec<ReloadableTls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        for tls in &listeners {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the previous certificate"),
            }
        }
    }
}

/// Prunes the audit trail hourly.
async fn prune_audit(store: crate::store::Store, retention: std::time::Duration) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        match crate::audit::prune(&store, retention).await {
            Ok(pruned) if pruned.deleted == 0 && pruned.kept_older == 0 => {}
            Ok(pruned) => tracing::info!(
                deleted = pruned.deleted,
                kept_older = pruned.kept_older,
                "pruned old audit events (older ones after a newer one in the chain are kept for now)"
            ),
            Err(e) => tracing::warn!(error = %e, "audit pruning failed"),
        }
    }
}

/// On a replica: health follows the change feed. SERVING while what the
/// replica derived is within `--max-staleness` of the database (calls may
/// still confirm it themselves past that), NOT_SERVING once it is not, so
/// load balancers send calls to replicas that can answer them.
async fn report_staleness(
    changes: ChangeFeed,
    health: tonic_health::server::HealthReporter,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        if shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let fresh = changes.is_fresh();
        if fresh == serving {
            continue;
        }
        serving = fresh;
        let status = if fresh {
            tracing::info!("the change feed is within --max-staleness again: health is SERVING");
            tonic_health::ServingStatus::Serving
        } else {
            tracing::warn!(
                staleness_s = changes.staleness().as_secs(),
                "the change feed is older than --max-staleness: health is NOT_SERVING until it is confirmed"
            );
            tonic_health::ServingStatus::NotServing
        };
        for name in SERVICE_NAMES.into_iter().chain([""]) {
            health.set_service_status(name, status).await;
        }
    }
}

/// Reflection over every service served: pullpass.v1, health, and both
/// reflection versions (grpcurl before 1.8.8 speaks only v1alpha).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(pullpass::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// SIGTERM or SIGINT. The handlers are installed here, before the future
/// is first polled: a signal that comes right after "serving on" is printed
/// drains the server rather than killing it.
fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
