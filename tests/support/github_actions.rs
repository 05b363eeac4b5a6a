//! A GitHub Actions runner's OIDC token endpoint, on loopback: what a job
//! reaches through `ACTIONS_ID_TOKEN_REQUEST_URL` with `Authorization:
//! Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering `{"count": N,
//! "value": JWT}`. The JWTs are GitHub-shaped tokens minted by the PyJWT
//! issuer of `identity.rs` for the audience the request asks for
//! (`&audience=`), so pullpassd verifies them like GitHub's. Requests with
//! another request token are answered 401, as the runner does; every
//! request is recorded, for tests that check what a client sent.
//!
//! HTTP/1.1, one thread per connection, 127.0.0.1 only. `Debug` leaves the
//! request token and the minted tokens out.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::identity::IdentityIssuer;
use crate::registry::http_request;

/// One request the endpoint received.
#[derive(Clone)]
pub struct Asked {
    /// Did it carry the right request token?
    pub authorized: bool,
    /// Its `audience` query parameter, decoded (`None` when absent).
    pub audience: Option<String>,
    /// The token answered (`None` when refused).
    pub token: Option<String>,
}

impl fmt::Debug for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asked")
            .field("authorized", &self.authorized)
            .field("audience", &self.audience)
            .field("token", &self.token.as_ref().map(|_| "<left out>"))
            .finish()
    }
}

/// The running endpoint; it serves until the process ends.
pub struct ActionsTokenEndpoint {
    /// `127.0.0.1:PORT`.
    pub address: String,
    request_token: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl fmt::Debug for ActionsTokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionsTokenEndpoint").field("address", &self.address).finish_non_exhaustive()
    }
}

/// The path GitHub's runner URL has, up to its own query.
const PATH: &str = "/_apis/distributedtask/hubs/build/plans/plan-1/jobs/job-1/idtoken";

impl ActionsTokenEndpoint {
    /// Serves tokens for the job of `repository` (`owner/name`), whose owner
    /// has the immutable id `repository_owner_id`, minted by `issuer`.
    pub fn start(issuer: &IdentityIssuer, repository: &str, repository_owner_id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let mut secret = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).expect("random bytes");
        let request_token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let job = Job {
            issuer: issuer.address().to_owned(),
            repository: repository.to_owned(),
            owner_id: repository_owner_id.to_owned(),
            expected: format!("Bearer {request_token}"),
            asked: Arc::clone(&asked),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let job = job.clone();
                std::thread::spawn(move || job.serve(stream));
            }
        });
        Self { address, request_token, asked }
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL`: with a query of its own, as GitHub's.
    pub fn request_url(&self) -> String {
        format!("http://{}{PATH}?api-version=2.0", self.address)
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn request_token(&self) -> &str {
        &self.request_token
    }

    /// The two variables a job with `permissions: id-token: write` has.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ACTIONS_ID_TOKEN_REQUEST_URL", self.request_url()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", self.request_token.clone()),
        ]
    }

    /// Every request so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct Job {
    issuer: String,
    repository: String,
    owner_id: String,
    expected: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Job {
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        });
        let mut writer = stream;
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.trim().eq_ignore_ascii_case("authorization")
            {
                authorization = Some(value.trim().to_owned());
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let audience = query.split('&').find_map(|pair| pair.strip_prefix("audience=")).map(form_decode);
        let authorized = authorization.as_deref() == Some(self.expected.as_str());
        let (status, body, token) = if path != PATH {
            ("404 Not Found", String::new(), None)
        } else if !authorized {
            ("401 Unauthorized", r#"{"message":"Bad credentials"}"#.to_owned(), None)
        } else {
            // GitHub's default audience is the owner's URL.
            let audience = audience.clone().unwrap_or_else(|| format!("https://github.com/{}", self.owner()));
            let token = self.mint(&audience);
            ("200 OK", json!({"count": 1, "value": token}).to_string(), Some(token))
        };
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).push(Asked { authorized, audience, token });
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = writer.write_all(response.as_bytes());
    }

    fn owner(&self) -> &str {
        self.repository.split('/').next().unwrap_or_default()
    }

    fn mint(&self, audience: &str) -> String {
        let request = json!({
            "kind": "github",
            "repository": self.repository,
            "repository_owner_id": self.owner_id,
            "audience": audience,
        });
        let (status, body) = http_request(&self.issuer, "POST", "/mint", Some(&request.to_string()));
        assert_eq!(status, 200, "the issuer refused to mint: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("mint answer");
        answer["token"].as_str().expect("a token").to_owned()
    }
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
