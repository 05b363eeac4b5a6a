//! Limits on client connections, shared by every listener (gRPC, the pull
//! gateway, metrics, the console), so slow or abusive clients cannot
//! exhaust the process:
//!
//! * **a connection budget**: at most `max_connections` client
//!   connections open at once, across listeners. At the limit the accept
//!   loops stop accepting, and new connections wait in the kernel's queue
//!   until one closes, rather than failing `accept` with EMFILE over and
//!   over (which, unchecked, spins a core);
//! * **a listener's share** ([`Connections::capped`]): the console, whose
//!   clients need no token to connect, may hold at most its own part of
//!   the budget (`--console-max-connections`), so that anonymous clients
//!   holding connections open cannot take the places gRPC callers need;
//! * **the open-file limit**: raised at start-up from the soft to the hard
//!   limit, and the budget lowered to fit it, leaving room for the
//!   database, log files and connections to registries;
//! * **accept errors** (out of descriptors, or anything else) pause the
//!   loop for a moment and are logged at most once a minute;
//! * **per connection**: HTTP/2 streams at once, header bytes, and the time
//!   an HTTP/1.1 client may take over its headers, applied by each
//!   listener's HTTP stack;
//! * **closing what is left when the grace period is over**: tonic runs
//!   each gRPC connection in a task of its own that pullpassd cannot
//!   abort, and a client that never reads keeps its connection (and the
//!   handlers' hold on the store) alive past any grace. Every accepted
//!   connection is registered, and [`Connections::close_all`] makes the
//!   reads and writes of each [`Held`] stream fail, which ends it. There is
//!   no lock on the I/O path: an atomic load per read or write, and the
//!   reading task's waker kept in an `AtomicWaker`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything but client connections.
const RESERVED_FILES: u64 = 256;
/// Pause after a failed `accept`.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The configured limits (see `--max-connections` and its siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once, across listeners.
    pub max_connections: usize,
    /// HTTP/2 streams at once per connection.
    pub max_streams_per_connection: u32,
    /// Largest request header block, in bytes.
    pub max_header_bytes: u32,
    /// Longest an HTTP/1.1 client may take to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_streams_per_connection: 100,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// The process's connection budget and per-connection limits.
#[derive(Debug, Clone)]
pub struct Connections {
    permits: Arc<Semaphore>,
    /// This listener's own share of the budget, when it has one.
    share: Option<Share>,
    limits: Limits,
    /// When the last "at the limit" or accept-error line was logged
    /// (seconds since the epoch), so a flood logs once a minute.
    last_logged: Arc<AtomicU64>,
    /// The connections open now, to close once the grace period is over.
    open: Arc<Mutex<OpenConnections>>,
}

/// A listener's own cap, within the budget (see [`Connections::capped`]).
#[derive(Debug, Clone)]
struct Share {
    permits: Arc<Semaphore>,
    max: usize,
    /// When its "at its cap" line was last logged (its own: it must not
    /// silence the budget's).
    last_logged: Arc<AtomicU64>,
}

/// The registry behind [`Connections::close_all`].
#[derive(Debug, Default)]
struct OpenConnections {
    next: u64,
    closers: HashMap<u64, Arc<Closer>>,
    /// Set by `close_all`: connections accepted after it start closed.
    closing: bool,
}

/// How a connection learns it is to close.
#[derive(Debug, Default)]
struct Closer {
    closed: AtomicBool,
    /// The task last polling the connection, woken to see `closed`.
    waker: AtomicWaker,
}

impl Closer {
    /// An error once the connection is to close.
    fn check(&self) -> std::io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the shutdown grace period is over",
            ));
        }
        Ok(())
    }

    /// Like [`Closer::check`], registering the polling task first, so that
    /// `close_all` wakes it. Reads do this: a connection's task polls its
    /// reads whenever it runs, so its writes need only check.
    fn check_and_register(&self, cx: &Context<'_>) -> std::io::Result<()> {
        if !self.closed.load(Ordering::Acquire) {
            self.waker.register(cx.waker());
        }
        // A close before the registration woke no one: look again.
        self.check()
    }
}

impl Connections {
    /// The budget for `limits`, lowered to fit `open_files` descriptors.
    pub fn new(limits: Limits, open_files: Option<u64>) -> Self {
        let mut limits = limits;
        if let Some(files) = open_files {
            let fits = usize::try_from(files.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
            if fits < limits.max_connections {
                tracing::warn!(
                    configured = limits.max_connections,
                    open_file_limit = files,
                    max_connections = fits,
                    "--max-connections lowered to fit the open-file limit"
                );
                limits.max_connections = fits;
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            share: None,
            limits,
            last_logged: Arc::default(),
            open: Arc::default(),
        }
    }

    /// The same budget for a listener that may hold at most `max` of its
    /// connections (at least one, at most the budget): its connections count
    /// against both, and at its cap it stops accepting while the others go
    /// on.
    pub fn capped(&self, max: usize) -> Self {
        let max = max.clamp(1, self.limits.max_connections);
        let share = Share { permits: Arc::new(Semaphore::new(max)), max, last_logged: Arc::default() };
        Self { share: Some(share), ..self.clone() }
    }

    /// Makes every connection accepted so far, or from now on, fail its
    /// next read or write, so that it ends (see the module docs). For the
    /// end of the shutdown grace period.
    pub fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.closing = true;
        for closer in open.closers.values() {
            closer.closed.store(true, Ordering::Release);
            closer.waker.wake();
        }
    }

    /// Registers a connection just accepted.
    fn register(&self, held: (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit)) -> Permit {
        let closer = Arc::new(Closer::default());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        closer.closed.store(open.closing, Ordering::Release);
        let id = open.next;
        open.next += 1;
        open.closers.insert(id, Arc::clone(&closer));
        Permit { _held: held, id, closer, open: Arc::clone(&self.open) }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The next connection on `listener`, once the budget has room for it.
    /// Never fails: errors are paused on and logged (rate-limited).
    pub async fn accept(&self, listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr, Permit) {
        // The listener's share first: a listener at its cap waits without
        // holding a place of the budget.
        let share = match &self.share {
            None => None,
            Some(share) => Some(match Arc::clone(&share.permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if may_log(&share.last_logged) {
                        tracing::warn!(
                            listener = name,
                            max_connections = share.max,
                            "this listener's connection limit is reached: its new connections wait until one closes"
                        );
                    }
                    Arc::clone(&share.permits).acquire_owned().await.expect("the semaphore is never closed")
                }
            }),
        };
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.may_log() {
                    tracing::warn!(
                        listener = name,
                        max_connections = self.limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, self.register((share, permit)));
                }
                Err(e) => {
                    if self.may_log() {
                        tracing::warn!(listener = name, error = %e, "accept failed; pausing before the next one");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }

    fn may_log(&self) -> bool {
        may_log(&self.last_logged)
    }
}

/// May a line last logged at `last_logged` (seconds since the epoch) be
/// logged again (once a minute)? Records now if so.
fn may_log(last_logged: &AtomicU64) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = last_logged.load(Ordering::Relaxed);
    now >= last + 60 && last_logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// A connection's place in the budget and in the registry of open
/// connections, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    _held: (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit),
    id: u64,
    closer: Arc<Closer>,
    open: Arc<Mutex<OpenConnections>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).closers.remove(&self.id);
    }
}

/// Raises this process's soft open-file limit to its hard limit, and
/// returns the soft limit then in force (None where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::debug!(error = %e, "the open-file limit could not be raised");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// A stream holding its connection's [`Permit`] for as long as it lives,
/// whose reads and writes fail once [`Connections::close_all`] is called.
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    permit: Permit,
}

impl<S> Held<S> {
    /// `inner`, counted against the budget until dropped.
    pub fn new(inner: S, permit: Permit) -> Self {
        Self { inner, permit }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.permit.closer.check_and_register(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.permit.closer.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.permit.closer.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.permit.closer.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Held<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_lowered_to_fit_the_open_file_limit() {
        let limits = Limits::default();
        assert_eq!(Connections::new(limits, Some(1024)).limits().max_connections, 1024 - 256);
        assert_eq!(Connections::new(limits, Some(1_048_576)).limits().max_connections, 16_384);
        assert_eq!(Connections::new(limits, None).limits().max_connections, 16_384);
        assert_eq!(Connections::new(limits, Some(100)).limits().max_connections, 16, "never below 16");
    }

    #[tokio::test]
    async fn at_the_limit_accept_waits_until_a_connection_closes() {
        let connections = Connections::new(Limits { max_connections: 2, ..Limits::default() }, None);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| TcpStream::connect(address))).await;
        let first = connections.accept(&listener, "test").await;
        let second = connections.accept(&listener, "test").await;
        assert_eq!(connections.open(), 2);
        let third = tokio::time::timeout(Duration::from_millis(200), connections.accept(&listener, "test")).await;
        assert!(third.is_err(), "a third connection waits");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), connections.accept(&listener, "test")).await;
        assert!(third.is_ok(), "and is accepted once one closes");
        drop(second);
    }

    #[tokio::test]
    async fn a_capped_listener_waits_at_its_cap_while_the_budget_serves_the_others() {
        let connections = Connections::new(Limits { max_connections: 16, ..Limits::default() }, None);
        let console = connections.capped(2);
        let capped = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (capped_address, other_address) = (capped.local_addr().unwrap(), other.local_addr().unwrap());
        let _clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| TcpStream::connect(capped_address))).await;
        let first = console.accept(&capped, "console").await;
        let _second = console.accept(&capped, "console").await;
        let third = tokio::time::timeout(Duration::from_millis(200), console.accept(&capped, "console")).await;
        assert!(third.is_err(), "a third console connection waits");
        assert_eq!(connections.open(), 2, "the console's connections count against the budget");
        let _peer = TcpStream::connect(other_address).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(5), connections.accept(&other, "grpc")).await;
        assert!(served.is_ok(), "other listeners still accept");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), console.accept(&capped, "console")).await;
        assert!(third.is_ok(), "and the console accepts again once one of its connections closes");
        assert_eq!(connections.capped(0).share.unwrap().max, 1, "a cap is at least one");
        assert_eq!(connections.capped(100).share.unwrap().max, 16, "and at most the budget");
    }

    #[tokio::test]
    async fn close_all_ends_a_read_waiting_on_an_idle_peer_and_closes_later_connections_at_once() {
        use tokio::io::AsyncReadExt;
        let connections = Connections::new(Limits::default(), None);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _idle_peer = TcpStream::connect(address).await.unwrap();
        let (stream, _, permit) = connections.accept(&listener, "test").await;
        let mut held = Held::new(stream, permit);
        let read = tokio::spawn(async move { held.read(&mut [0u8; 16]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "the peer sent nothing: the read waits");
        connections.close_all();
        let ended = tokio::time::timeout(Duration::from_secs(5), read).await.expect("woken").unwrap();
        assert_eq!(ended.unwrap_err().kind(), std::io::ErrorKind::ConnectionAborted);

        let _late_peer = TcpStream::connect(address).await.unwrap();
        let (stream, _, permit) = connections.accept(&listener, "test").await;
        let mut late = Held::new(stream, permit);
        assert!(late.read(&mut [0u8; 16]).await.is_err(), "accepted after close_all: closed from the start");
        drop(late);
        assert_eq!(connections.open.lock().unwrap().closers.len(), 0, "dropped connections leave the registry");
    }
}
