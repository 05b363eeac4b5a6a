//! Assembling and running the gRPC server: the pullpass services, health,
//! reflection (v1 and v1alpha), the RPC layer, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::access::{self, Authenticator};
use crate::api::rpc_layer::RpcLayer;
use crate::api::{self, ApiState};
use crate::broker::Broker;
use crate::changes::ChangeFeed;
use crate::config::Settings;
use crate::credentials::Credentials;
use crate::paging::PageTokens;
use crate::startup::{self, Opened, StartupError};
use crate::upstream::Upstream;
use crate::workspaces::Workspaces;

/// gRPC service names, as reported by health checks.
pub const SERVICE_NAMES: [&str; 4] = [
    "pullpass.v1.CredentialService",
    "pullpass.v1.RegistryAuthService",
    "pullpass.v1.AccessService",
    "pullpass.v1.AuditService",
];

/// Runs `pullpassd` until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartupError> {
    let started = Instant::now();
    let keyring = startup::load_keys(&settings)?;
    let opened = startup::open_database(&settings, keyring).await?;
    if settings.dev {
        print_dev_root_token(&opened).await?;
    }
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {}: {e}", settings.listen)))?;
    let address = listener.local_addr().map_err(|e| StartupError(e.to_string()))?;
    refuse_exposed_plaintext(address)?;
    serve(opened, listener, address, started, &settings).await
}

/// In dev mode, mints a root token on first start and prints it once.
async fn print_dev_root_token(opened: &Opened) -> Result<(), StartupError> {
    let fail = |e: crate::error::Error| StartupError(format!("cannot create the root token: {e}"));
    if access::has_root_token(&opened.store).await.map_err(fail)? {
        return Ok(());
    }
    let (record, token) = access::create_root_token(&opened.store, "created by pullpassd --dev").await.map_err(fail)?;
    println!("pullpassd: root token for {} (shown once, store it now):", record.resource_name());
    println!("PULLPASS_TOKEN={}", token.expose());
    Ok(())
}

/// Bearer tokens must not cross a network in clear.
fn refuse_exposed_plaintext(address: SocketAddr) -> Result<(), StartupError> {
    if address.ip().is_loopback() {
        Ok(())
    } else {
        Err(StartupError(format!(
            "refusing to serve plaintext gRPC on the non-loopback address {address}: bearer tokens would cross the network unencrypted. Listen on 127.0.0.1 or [::1]"
        )))
    }
}

async fn serve(
    opened: Opened,
    listener: TcpListener,
    address: SocketAddr,
    started: Instant,
    settings: &Settings,
) -> Result<(), StartupError> {
    let grace = settings.shutdown_grace;
    let pages = Arc::new(PageTokens::new(opened.sealer.derive_mac_key("page-tokens")));
    let changes = ChangeFeed::default();
    let credentials =
        Credentials::new(opened.store.clone(), Arc::clone(&opened.sealer), Arc::clone(&pages), changes.clone());
    let workspaces = Workspaces::new(opened.store.clone(), pages, changes.clone());
    let authn = Authenticator::new(opened.store.clone());
    let upstream = Upstream::new(settings.upstream.clone()).map_err(StartupError)?;
    let broker = Broker::new(credentials.clone(), upstream, settings.lease_cache_size, &changes);
    let services =
        api::services(ApiState { credentials, workspaces, broker, upstream_timeout: settings.upstream_timeout });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = reflection().build_v1().map_err(|e| StartupError(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| StartupError(format!("reflection: {e}")))?;

    let router = Server::builder()
        .layer(RpcLayer::new(authn))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(services.credentials)
        .add_service(services.access)
        .add_service(services.registry_auth)
        .add_service(services.audit);

    for name in SERVICE_NAMES.into_iter().chain([""]) {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    tracing::info!(%address, startup_ms = started.elapsed().as_millis() as u64, "serving");
    println!("pullpassd: serving on {address}");

    let stopping = Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let health = health_reporter.clone();
        let stopping = Arc::clone(&stopping);
        async move {
            wait_for_signal().await;
            tracing::info!(grace_s = grace.as_secs(), "shutting down: no new connections, draining in-flight RPCs");
            for name in SERVICE_NAMES.into_iter().chain([""]) {
                health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
            }
            stopping.notify_one();
        }
    };
    let serving = router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown);
    let grace_over = async {
        stopping.notified().await;
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace_over => {
            tracing::warn!("grace period over: closing connections that are still open");
            Ok(())
        }
    };
    opened.store.close().await;
    tracing::info!("database closed; goodbye");
    served.map_err(|e| StartupError(format!("server failed: {e}")))
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

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
