//! The accept loop of pullpassd's plain-HTTP front ends (the pull gateway,
//! the metrics endpoint): HTTP/1.1 and h2 with hyper, optional TLS with a
//! handshake timeout, a header-read timeout, and a graceful stop that
//! closes what is still open once the grace period is over.
//!
//! It knows nothing of what it serves: each request goes to `handle`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::tls::{HANDSHAKE_TIMEOUT, ReloadableTls};

/// Longest a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `handle` on `listener` (over TLS when given) until `shutdown`
/// completes, then lets open requests finish for up to `grace` and closes
/// whatever is still open. `name` goes into log lines.
pub async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    handle: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(60)));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handle(request, peer);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.as_ref().map(ReloadableTls::acceptor);
        connections.spawn(async move {
            let served = match tls {
                None => watcher.watch(builder.serve_connection(TokioIo::new(tcp), service).into_owned()).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                    }
                    Ok(Err(e)) => {
                        tracing::info!(listener = name, %peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(listener = name, %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(listener = name, open = connections.len(), "grace period over; closing open connections");
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
}
