//! A tiny registry-and-token-realm in Rust, for in-process SDK tests and
//! benchmarks that need a token flow without the real registry: `GET /v2/`
//! answers 401 with a Bearer challenge pointing at `/token`, and `/token`
//! issues opaque tokens (`tok-N`, or padded to a registry JWT's length)
//! with a configurable `expires_in`, counting requests. HTTP/1.1, one
//! thread per connection, loopback only.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running fixture; it stops serving when the process ends.
#[derive(Debug, Clone)]
pub struct TokenRealm {
    /// `127.0.0.1:PORT`.
    pub address: String,
    token_requests: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl TokenRealm {
    /// Starts a realm whose tokens live `expires_in` seconds and that
    /// accepts `username`/`password`.
    pub fn start(expires_in: u64, username: &str, password: &str) -> Self {
        Self::start_issuing(expires_in, username, password, 0)
    }

    /// [`TokenRealm::start`], with tokens padded to `token_bytes` (registry
    /// JWTs are around a kilobyte or two; `tok-N` is a few bytes).
    pub fn start_issuing(expires_in: u64, username: &str, password: &str, token_bytes: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let token_requests = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{username}:{password}"))
        );
        let counters = Counters { tokens: Arc::clone(&token_requests), all: Arc::clone(&requests), token_bytes };
        let realm_address = address.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (counters, expected, realm_address) = (counters.clone(), expected.clone(), realm_address.clone());
                std::thread::spawn(move || serve(stream, &counters, &expected, expires_in, &realm_address));
            }
        });
        Self { address, token_requests, requests }
    }

    /// Token requests served so far.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Requests of any kind (challenges, tokens, others) so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Counters {
    tokens: Arc<AtomicU64>,
    all: Arc<AtomicU64>,
    token_bytes: usize,
}

fn serve(stream: TcpStream, counters: &Counters, expected: &str, expires_in: u64, address: &str) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut authorization = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = value.trim().to_owned();
            }
        }
        counters.all.fetch_add(1, Ordering::SeqCst);
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, extra, body) = if path.starts_with("/v2/") {
            (
                "401 Unauthorized",
                format!("WWW-Authenticate: Bearer realm=\"http://{address}/token\",service=\"fixture\"\r\n"),
                "{}".to_owned(),
            )
        } else if path.starts_with("/token") {
            if authorization != expected {
                ("401 Unauthorized", String::new(), "{}".to_owned())
            } else {
                let n = counters.tokens.fetch_add(1, Ordering::SeqCst) + 1;
                let token = padded(format!("tok-{n}"), counters.token_bytes);
                ("200 OK", String::new(), format!("{{\"token\":\"{token}\",\"expires_in\":{expires_in}}}"))
            }
        } else {
            ("404 Not Found", String::new(), "{}".to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// `token`, followed by base64url characters up to `length` bytes.
fn padded(mut token: String, length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let missing = length.saturating_sub(token.len());
    token.extend(ALPHABET.iter().cycle().take(missing).map(|&b| char::from(b)));
    token
}
