//! The accept loop of pullpassd's plain-HTTP front ends (the pull gateway,
//! the metrics endpoint): HTTP/1.1 and h2 with hyper, optional TLS with a
//! handshake timeout, a header-read timeout, the process's connection
//! budget and per-connection limits ([`crate::connections`]), and a
//! graceful stop that closes what is still open once the grace period is
//! over.
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

use crate::connections::Connections;
use crate::tls::{HANDSHAKE_TIMEOUT, ReloadableTls};

/// Serves `handle` on `listener` (over TLS when given) until `shutdown`
/// completes, then lets open requests finish for up to `grace` and closes
/// whatever is still open. `name` goes into log lines.
pub async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    connections: Connections,
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
    let mut tasks = tokio::task::JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let limits = connections.limits();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size((limits.max_header_bytes as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(limits.max_header_bytes);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer, permit) = tokio::select! {
            accepted = connections.accept(&listener, name) => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handle(request, peer);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.as_ref().map(ReloadableTls::acceptor);
        tasks.spawn(async move {
            let _permit = permit;
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
            tracing::warn!(listener = name, open = tasks.len(), "grace period over; closing open connections");
            tasks.abort_all();
        }
    }
    while tasks.join_next().await.is_some() {}
}
