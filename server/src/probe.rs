//! `pullpassd healthcheck ADDR`: a tiny client of `grpc.health.v1`, so a
//! container image or a unit needs no other program to probe the server.
//! Exit status 0 when the server (or the named service) is SERVING, 1
//! otherwise, with one line saying why.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How to check a TLS server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tls<'a> {
    /// CA certificates to trust instead of the Mozilla roots.
    pub ca: Option<&'a Path>,
    /// The name the certificate must carry, when not the address's host.
    pub server_name: Option<&'a str>,
}

/// Asks `address` about `service` within `timeout`; returns the exit code.
pub fn healthcheck(address: &str, tls: Tls<'_>, service: &str, timeout: Duration) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pullpassd healthcheck: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let answer = runtime.block_on(async { tokio::time::timeout(timeout, check(address, tls, service)).await });
    match answer {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("SERVING");
            0
        }
        Ok(Ok(status)) => {
            println!("{}", status.as_str_name());
            1
        }
        Ok(Err(message)) => {
            eprintln!("pullpassd healthcheck: {message}");
            1
        }
        Err(_) => {
            eprintln!("pullpassd healthcheck: no answer from {address} within {} s", timeout.as_secs());
            1
        }
    }
}

async fn check(address: &str, settings: Tls<'_>, service: &str) -> Result<ServingStatus, String> {
    let tls = address.starts_with("https://") || settings.ca.is_some() || settings.server_name.is_some();
    let url = match address.split_once("://") {
        Some(_) => address.to_owned(),
        None if tls => format!("https://{address}"),
        None => format!("http://{address}"),
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("`{address}` is not an address: {e}"))?;
    if tls {
        let mut config = ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = settings.ca {
            let pem = std::fs::read(path).map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(name) = settings.server_name {
            config = config.domain_name(name);
        }
        endpoint = endpoint.tls_config(config).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map_err(|status| format!("{url} answered {:?}: {}", status.code(), status.message()))?;
    Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
