//! A fault proxy: an HTTP/1.1 server on loopback in front of an upstream
//! (the token-realm fixture, or any plain-http registry) that passes
//! requests through, or misbehaves the ways a network can, on the requests
//! whose path starts with a chosen prefix.
//!
//! The proxy rewrites the upstream's address to its own in the answers'
//! headers, so a `WWW-Authenticate` realm leads back through it. It may
//! serve TLS with a given certificate (a wrong name, an expired one). It
//! counts connections and requests, so a test can say how much a failure
//! cost upstream. It runs on a thread of its own and stops with the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the proxy treats a request it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and return the upstream's answer.
    Pass,
    /// Send part of a status line and headers, then reset the connection.
    ResetMidHeaders,
    /// Send the headers and part of the body, then reset the connection.
    ResetMidBody,
    /// Read the request and never answer (the connection stays open).
    Blackhole,
    /// Forward it, then send the upstream's answer one byte per second.
    Slowloris,
    /// Wait this long, then forward it and return the upstream's answer.
    Delay(Duration),
    /// A 200 whose chunked body (no length) runs to this many bytes.
    Huge(usize),
    /// A canned answer.
    Respond {
        /// The status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body (sent with its length).
        body: String,
    },
}

struct State {
    fault: Fault,
    prefix: String,
}

/// A running proxy.
#[derive(Clone)]
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub address: String,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    faulted: Arc<AtomicU64>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("address", &self.address).finish_non_exhaustive()
    }
}

/// A certificate and key (PEM files) for a TLS proxy.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate chain, PEM.
    pub certificate: std::path::PathBuf,
    /// The private key, PEM.
    pub key: std::path::PathBuf,
}

impl FaultProxy {
    /// A plain-http proxy in front of `upstream` (`host:port`), passing
    /// everything through until told otherwise.
    pub fn start(upstream: &str) -> Self {
        Self::start_with(upstream, None)
    }

    /// Like [`FaultProxy::start`], serving TLS with `tls` if given.
    pub fn start_with(upstream: &str, tls: Option<ServerTls>) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let address = std_listener.local_addr().expect("address").to_string();
        let proxy = Self {
            address: address.clone(),
            state: Arc::new(Mutex::new(State { fault: Fault::Pass, prefix: "/".into() })),
            connections: Arc::default(),
            requests: Arc::default(),
            faulted: Arc::default(),
        };
        let acceptor = tls.map(|tls| tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&tls))));
        let (running, upstream) = (proxy.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    running.connections.fetch_add(1, Ordering::SeqCst);
                    let (proxy, upstream, acceptor) = (running.clone(), upstream.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        match acceptor {
                            None => {
                                let mut stream = stream;
                                if proxy.serve(&mut stream, &upstream).await == End::Reset {
                                    let _ = stream.set_zero_linger();
                                }
                            }
                            Some(acceptor) => {
                                // A handshake the client refuses ends here.
                                if let Ok(mut stream) = acceptor.accept(stream).await
                                    && proxy.serve(&mut stream, &upstream).await == End::Reset
                                {
                                    let _ = stream.get_ref().0.set_zero_linger();
                                }
                            }
                        }
                    });
                }
            });
        });
        proxy
    }

    /// From now on, treat requests whose path starts with `prefix` with
    /// `fault`; the others pass.
    pub fn set(&self, prefix: &str, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        state.prefix = prefix.to_owned();
        state.fault = fault;
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far (passed or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests a fault other than [`Fault::Pass`] was applied to.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::SeqCst)
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, client: &mut S, upstream: &str) -> End {
        loop {
            let Some(request) = read_request(client).await else { return End::Close };
            self.requests.fetch_add(1, Ordering::SeqCst);
            let fault = {
                let state = self.state.lock().unwrap();
                if request.path.starts_with(&state.prefix) { state.fault.clone() } else { Fault::Pass }
            };
            if fault != Fault::Pass {
                self.faulted.fetch_add(1, Ordering::SeqCst);
            }
            if let Fault::Delay(wait) = fault {
                tokio::time::sleep(wait).await;
            }
            let keep_going = match fault {
                Fault::Pass | Fault::Delay(_) => match self.forward(&request, upstream).await {
                    Some(answer) => client.write_all(&answer).await.is_ok(),
                    None => false,
                },
                Fault::ResetMidHeaders => {
                    let _ = client.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: applic").await;
                    let _ = client.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return End::Reset;
                }
                Fault::ResetMidBody => {
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n";
                    let _ = client.write_all(format!("{head}{{\"token\":\"cut-").as_bytes()).await;
                    let _ = client.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return End::Reset;
                }
                Fault::Blackhole => {
                    // Hold the connection until the client gives up.
                    let mut sink = [0u8; 1024];
                    while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                    false
                }
                Fault::Slowloris => match self.forward(&request, upstream).await {
                    Some(answer) => {
                        for byte in answer {
                            if client.write_all(&[byte]).await.is_err() || client.flush().await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        false
                    }
                    None => false,
                },
                Fault::Huge(size) => {
                    let head =
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                    let chunk = vec![b'a'; 64 * 1024];
                    let mut sent = 0;
                    let mut ok = client.write_all(head.as_bytes()).await.is_ok()
                        && client.write_all(b"a\r\n{\"token\":\"\r\n").await.is_ok();
                    while ok && sent < size {
                        let part = chunk.len().min(size - sent);
                        ok = client.write_all(format!("{part:x}\r\n").as_bytes()).await.is_ok()
                            && client.write_all(&chunk[..part]).await.is_ok()
                            && client.write_all(b"\r\n").await.is_ok();
                        sent += part;
                    }
                    let _ = client.write_all(b"2\r\n\"}\r\n0\r\n\r\n").await;
                    false
                }
                Fault::Respond { status, headers, body } => {
                    let mut answer = format!("HTTP/1.1 {status} Fault\r\nContent-Length: {}\r\n", body.len());
                    for (name, value) in headers {
                        answer.push_str(&format!("{name}: {value}\r\n"));
                    }
                    answer.push_str("\r\n");
                    answer.push_str(&body);
                    client.write_all(answer.as_bytes()).await.is_ok()
                }
            };
            if !keep_going {
                return End::Close;
            }
        }
    }

    /// The upstream's whole answer to `request`, its headers rewritten to
    /// name this proxy: the body by its `Content-Length`, or (asked with
    /// `Connection: close`) to the end. `None` if the upstream cannot be
    /// reached.
    async fn forward(&self, request: &Request, upstream: &str) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        stream.write_all(&request.head_with_close()).await.ok()?;
        stream.write_all(&request.body).await.ok()?;
        let read = async {
            let mut answer = Vec::new();
            let mut buffer = [0u8; 16 * 1024];
            loop {
                if let Some(at) = memchr::memmem::find(&answer, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&answer[..at]).to_string();
                    if let Some(length) = content_length(&head) {
                        while answer.len() < at + 4 + length {
                            let n = stream.read(&mut buffer).await.ok()?;
                            if n == 0 {
                                return None;
                            }
                            answer.extend_from_slice(&buffer[..n]);
                        }
                        answer.truncate(at + 4 + length);
                        return Some(answer);
                    }
                }
                let n = stream.read(&mut buffer).await.ok()?;
                if n == 0 {
                    return Some(answer);
                }
                answer.extend_from_slice(&buffer[..n]);
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(30), read).await.ok()??;
        let split = memchr::memmem::find(&answer, b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&answer[..split]).replace(upstream, &self.address);
        let mut rewritten = head.into_bytes();
        rewritten.extend_from_slice(&answer[split..]);
        Some(rewritten)
    }
}

/// The `Content-Length` of a message head, if it has one.
fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

/// How a connection ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Closed (FIN).
    Close,
    /// Reset (RST): linger zero, then closed.
    Reset,
}

struct Request {
    path: String,
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn head_with_close(&self) -> Vec<u8> {
        let mut lines: Vec<&str> = self
            .head
            .split("\r\n")
            .filter(|line| !line.is_empty() && !line.to_ascii_lowercase().starts_with("connection:"))
            .collect();
        lines.push("Connection: close");
        let mut head = lines.join("\r\n");
        head.push_str("\r\n\r\n");
        head.into_bytes()
    }
}

/// One request: its head (at most 64 KiB) and a `Content-Length` body.
async fn read_request<S: AsyncRead + Unpin>(client: &mut S) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        if buffer.len() > 64 * 1024 || client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buffer.push(byte[0]);
    }
    let head = String::from_utf8(buffer).ok()?;
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length = content_length(&head).unwrap_or(0);
    let mut body = vec![0u8; length.min(1024 * 1024)];
    client.read_exact(&mut body).await.ok()?;
    Some(Request { path, head, body })
}

fn server_config(tls: &ServerTls) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&tls.certificate).expect("certificate").collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&tls.key).expect("key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate")
}

/// `127.0.0.1:PORT` where nothing listens: connections are refused.
pub fn refusing_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// A TCP path that can go silent: a proxy on loopback in front of a
/// database (or any TCP service) that passes bytes both ways until
/// [`SilentPath::silence`], then forwards nothing and refuses nothing, as a
/// network that drops packets does: connections stay open, new ones are
/// accepted, queries hang. [`SilentPath::heal`] lets the held bytes through
/// again (as TCP retransmission would). It runs on a thread of its own and
/// stops with the process.
#[derive(Clone)]
pub struct SilentPath {
    /// `127.0.0.1:PORT`.
    pub address: String,
    silent: Arc<tokio::sync::watch::Sender<bool>>,
    connections: Arc<AtomicU64>,
}

impl std::fmt::Debug for SilentPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SilentPath").field("address", &self.address).finish_non_exhaustive()
    }
}

impl SilentPath {
    /// A path to `upstream` (`host:port`), passing everything.
    pub fn start(upstream: &str) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let address = std_listener.local_addr().expect("address").to_string();
        let (silent, _) = tokio::sync::watch::channel(false);
        let path = Self { address, silent: Arc::new(silent), connections: Arc::default() };
        let (running, upstream) = (path.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    running.connections.fetch_add(1, Ordering::SeqCst);
                    let (silent, upstream) = (running.silent.subscribe(), upstream.clone());
                    tokio::spawn(async move {
                        let mut gate = silent.clone();
                        // A connection opened while silent waits, unanswered.
                        let _ = gate.wait_for(|silent| !silent).await;
                        let Ok(server) = TcpStream::connect(&upstream).await else { return };
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pass_unless_silent(client_read, server_write, silent.clone()),
                            pass_unless_silent(server_read, client_write, silent),
                        );
                    });
                }
            });
        });
        path
    }

    /// From now on nothing passes either way (bytes already sent are held).
    pub fn silence(&self) {
        self.silent.send_replace(true);
    }

    /// Lets everything through again.
    pub fn heal(&self) {
        self.silent.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`, holding each piece while the path is silent.
async fn pass_unless_silent(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut silent: tokio::sync::watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                // Even the end is held back while silent.
                let _ = silent.wait_for(|silent| !silent).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if silent.wait_for(|silent| !silent).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
