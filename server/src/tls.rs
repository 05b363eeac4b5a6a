//! TLS for the gRPC listener and the pull gateway (rustls with ring),
//! optionally with client certificates (gRPC only).
//!
//! The acceptor reads the current `ServerConfig` for every new connection;
//! SIGHUP rebuilds it from the files, so renewed certificates take effect
//! without dropping established connections. A handshake that fails or
//! takes longer than 10 s closes that connection only.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::Stream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::coalesce::Coalesced;
use crate::connections::{Connections, Held};
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS configuration, swappable at run time.
#[derive(Debug, Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

/// ALPN of the gRPC listener.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN of the pull gateway: h2 first, HTTP/1.1 for the rest.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

impl ReloadableTls {
    /// Loads the certificate, key and (optional) client CA, offering the
    /// gRPC ALPN (`h2`).
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        Self::load_with_alpn(files, GRPC_ALPN)
    }

    /// Loads the files, offering `alpn` in the handshake.
    pub fn load_with_alpn(files: &TlsFiles, alpn: &'static [&'static [u8]]) -> Result<Self, String> {
        let config = build(files, alpn)?;
        Ok(Self { files: files.clone(), alpn, current: Arc::new(RwLock::new(Arc::new(config))) })
    }

    /// Reads the files again; on error the old configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files, self.alpn)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }

    /// TLS connections accepted on `listener`, within the budget of
    /// `connections` (a handshake under way counts against it).
    pub fn incoming(
        &self,
        listener: TcpListener,
        connections: Connections,
    ) -> impl Stream<Item = Result<Held<Coalesced<TlsStream<TcpStream>>>, io::Error>> + use<> {
        let (sender, receiver) = mpsc::channel::<Held<Coalesced<TlsStream<TcpStream>>>>(128);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer, permit) = connections.accept(&listener, "grpc").await;
                let acceptor = tls.acceptor();
                let handed = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = handed.send(Held::new(Coalesced::new(stream), permit)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
                if sender.is_closed() {
                    break;
                }
            }
        });
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|stream| (Ok(stream), receiver))
        })
    }
}

fn build(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate {} and key do not fit: {e}", files.cert.display()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}
