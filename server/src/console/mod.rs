//! The web console: people of a workspace add and manage their registry
//! credentials, access tokens, identity bindings and audit trail in a
//! browser (and ROOT its workspaces and identity providers), served by
//! `pullpassd` itself under `/console/` on its own listener
//! (`--console-listen`).
//!
//! A third front end beside `api/` (gRPC) and `gateway/`, over the same
//! domain services and the same policy function: it is not a second API.
//! It knows no gRPC and no SQL and never sees key material. Pages are
//! rendered on the server ([`views`], maud); the browser gets two static
//! files ([`ASSETS`](route::ASSETS)) and no inline script.
//!
//! A request's journey, in [`Console::respond`]:
//! 1. the path becomes a typed [`Route`] (else 404; `/` is sent to
//!    `/console/`) that must allow the method (else 405);
//! 2. a POST body is read once, bounded in size ([`MAX_FORM_BYTES`]) and
//!    time ([`BODY_DEADLINE`], else 408), into a zeroizing buffer and then
//!    a [`Form`];
//! 3. the session cookie is looked up ([`ConsoleSessions`]): none sends the
//!    browser to the sign-in page;
//! 4. a POST must carry the session's CSRF token and, when the browser says
//!    where it comes from (`Sec-Fetch-Site`, else `Origin`), come from this
//!    console; a sign-in, which has no session yet, must carry the pair of
//!    its form's cookie ([`SIGN_IN_COOKIE`]) and token;
//! 5. the handler ([`pages`]) checks the permission and does the work;
//! 6. every answer gets the security headers (a strict CSP, `nosniff`,
//!    `no-referrer`, no caching) and one log line without query or body.
//!
//! Anyone who can reach the console can make it work before signing in,
//! so that work is bounded: each client address (an IPv6 one by its /64)
//! has a bucket of [`ANONYMOUS_PER_SECOND`] lookups a second (a burst of
//! twice as many) for sign-ins and session cookies, and a lookup that finds
//! a session, or a sign-in that succeeds, gives its turn back; a cookie
//! that found a session lately is not charged at all. Past the limit, the
//! answer is 429 with `Retry-After`. Cookies and login codes the database
//! did not know are refused from memory, and login codes are read before
//! they are taken ([`ConsoleSessions`]). The console's connections have
//! their own cap within the process's budget (`--console-max-connections`,
//! [`crate::connections`]). Behind a proxy every client has the proxy's
//! address, and shares one bucket: anonymous floods then slow everyone's
//! sign-in, never a signed-in person's pages.
//!
//! What went wrong inside (a database error) is never shown to someone not
//! signed in: they get a request id, and the log gets the detail.

pub mod chain_check;
pub mod form;
pub mod identity_pages;
pub mod identity_views;
pub mod pages;
pub mod route;
pub mod views;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use maud::Markup;
use tokio::net::TcpListener;

use crate::access::rate_limit::RateLimiter;
use crate::access::sessions::{ConsoleSessions, Session};
use crate::access::tokens::AccessTokens;
use crate::audit::{Actor, Auditor, Origin};
use crate::broker::Broker;
use crate::connections::Connections;
use crate::credentials::Credentials;
use crate::error::Error;
use crate::identities::Identities;
use crate::tls::ReloadableTls;
use crate::workspaces::Workspaces;
use chain_check::ChainChecks;
use form::{Form, FormError, MAX_FORM_BYTES};
use route::Route;
use views::Errors;

/// The session cookie's name.
pub const COOKIE: &str = "pullpass_session";
/// The sign-in form's cookie: a random pre-session value whose HMAC the
/// form carries (login CSRF).
pub const SIGN_IN_COOKIE: &str = "pullpass_signin";
/// Longest a client may take to send a form's body, once its headers are
/// in; a slower one gets 408.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Sign-ins and session-cookie lookups per second per client address,
/// with bursts of twice as many (those that find a session are given back).
pub const ANONYMOUS_PER_SECOND: u32 = 10;

/// The Content-Security-Policy of every answer: only this origin's files,
/// no inline script or style, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// The domain services the console calls.
#[derive(Debug, Clone)]
pub struct Services {
    /// Credential management.
    pub credentials: Credentials,
    /// Workspace management.
    pub workspaces: Workspaces,
    /// Access-token management.
    pub tokens: AccessTokens,
    /// Identity providers and bindings, and TestIdentityToken.
    pub identities: Identities,
    /// The audit trail.
    pub auditor: Auditor,
    /// TestCredential.
    pub broker: Broker,
    /// Sign-ins.
    pub sessions: ConsoleSessions,
    /// Upstream time budget for Test.
    pub upstream_timeout: Duration,
}

/// The console front end.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Services>,
    /// Reached over HTTPS (cookies get `Secure`).
    secure: bool,
    /// Anonymous work per client address.
    anonymous: Arc<RateLimiter<IpAddr>>,
    /// Hashes of session cookies that found a session lately: their
    /// lookups are not anonymous work, and never wait for the limit.
    signed_in: Arc<crate::access::unknown::Unknown>,
    /// Who may check the whole audit chain, and when.
    chain_checks: Arc<ChainChecks>,
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// A page with its status.
    Page(StatusCode, Markup),
    /// 303 to another page.
    Redirect(String),
}

impl Console {
    /// The console over `services`; `secure` when people reach it over
    /// HTTPS (with TLS here, or through a proxy).
    pub fn new(services: Services, secure: bool) -> Self {
        Self {
            inner: Arc::new(services),
            secure,
            anonymous: Arc::new(RateLimiter::new(ANONYMOUS_PER_SECOND)),
            signed_in: Arc::new(crate::access::unknown::Unknown::remembering(SIGNED_IN_MEMORY)),
            chain_checks: Arc::default(),
        }
    }

    /// Answers one request from `peer`.
    pub async fn respond<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let request_id = crate::request_id::of(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (response, principal) = self.journey(request, peer, &request_id).await;
        let mut response = with_security_headers(response);
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let status = response.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(target: "pullpass::console", %method, path, status, latency_ms, principal, request_id = &*request_id, "console request");
        } else {
            tracing::info!(target: "pullpass::console", %method, path, status, latency_ms, principal, request_id = &*request_id, "console request");
        }
        response
    }

    async fn journey<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        request_id: &str,
    ) -> (Response<Full<Bytes>>, String)
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        if request.uri().path() == "/" && get {
            return (redirect("/console/"), String::new());
        }
        let Some(route) = Route::parse(request.uri().path()) else {
            return (
                page(StatusCode::NOT_FOUND, views::problem(None, "Not found", "There is no such page.")),
                String::new(),
            );
        };
        if !route.allows(request.method()) {
            let mut response = page(
                StatusCode::METHOD_NOT_ALLOWED,
                views::problem(None, "Not allowed", "This page does not take that method."),
            );
            let allow = if matches!(route, Route::Logout | Route::Test(_) | Route::Revoke(..)) {
                "POST"
            } else {
                "GET, HEAD, POST"
            };
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            return (response, String::new());
        }
        if let Route::Asset(file) = route {
            return (asset(file), String::new());
        }
        let post = request.method() == Method::POST;
        let same_origin = same_origin(&request);
        let cookie = cookie(request.headers(), COOKIE);
        let sign_in_cookie = self::cookie(request.headers(), SIGN_IN_COOKIE);
        let had_cookie = cookie.is_some();
        let query = request.uri().query().unwrap_or("").to_owned();
        let form = if post {
            let (parts, body) = request.into_parts();
            let read = match tokio::time::timeout(BODY_DEADLINE, form::collect(body)).await {
                Ok(read) => read.and_then(|bytes| Form::read(&parts.headers, bytes)),
                Err(_) => return (too_slow(), String::new()),
            };
            match read {
                Ok(form) => Some(form),
                Err(FormError::TooLarge) => return (too_large(), String::new()),
                Err(FormError::Broken) => {
                    let message = "The form did not arrive whole; send it again.";
                    return (page(StatusCode::BAD_REQUEST, views::problem(None, "Not a form", message)), String::new());
                }
                Err(FormError::Malformed(why)) => {
                    return (page(StatusCode::BAD_REQUEST, views::problem(None, "Not a form", &why)), String::new());
                }
            }
        } else {
            None
        };
        if post && !same_origin {
            let message = "This form was sent from another site; the console takes forms from its own pages only.";
            return (page(StatusCode::FORBIDDEN, views::problem(None, "Refused", message)), String::new());
        }
        let client = client_key(peer.ip());
        let session = match cookie {
            Some(value) if ConsoleSessions::is_session_cookie(&value) => {
                let hash = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
                let hash: [u8; 32] = hash.as_ref().try_into().unwrap_or_default();
                let known = self.signed_in.contains(&hash);
                if !known && let Err(wait) = self.anonymous.check(&client) {
                    return (too_many(wait), String::new());
                }
                match self.inner.sessions.session(&value).await {
                    Ok(Some(session)) => {
                        if !known {
                            self.anonymous.give_back(&client);
                        }
                        self.signed_in.insert(hash);
                        Some(session)
                    }
                    Ok(None) => {
                        self.signed_in.remove(&hash);
                        None
                    }
                    Err(error) => {
                        tracing::error!(target: "pullpass::console", error = %error.message(), request_id, "a console session could not be looked up");
                        let message = format!(
                            "The console cannot check your sign-in right now. Try again in a moment; if this goes on, tell your operator the request id {request_id}."
                        );
                        return (
                            page(StatusCode::SERVICE_UNAVAILABLE, views::problem(None, "Unavailable", &message)),
                            String::new(),
                        );
                    }
                }
            }
            _ => None,
        };
        let origin = Origin::Peer(peer);
        if route == Route::Login {
            let attempt = SignIn { session, form, form_cookie: sign_in_cookie, client, origin };
            return (self.login(attempt, request_id).await, String::new());
        }
        let Some(session) = session else {
            // Not signed in (or the session ended): sign in first.
            let mut response = redirect(&route::to::login());
            if had_cookie {
                set_cookie(&mut response, &self.clear_cookie());
            }
            return (response, String::new());
        };
        let principal = session.principal.resource_name.to_string();
        if post {
            let presented = form.as_ref().map(|f| f.text("csrf")).unwrap_or_default();
            if !self.inner.sessions.csrf_matches(&session, &presented) {
                let message = "This form's CSRF token is missing or wrong (the page may be from an older session): reload the page and send it again.";
                return (page(StatusCode::FORBIDDEN, views::problem(None, "Refused", message)), principal);
            }
        }
        if route == Route::Logout {
            let _ = self.inner.sessions.sign_out(&session).await;
            let mut response = redirect(&route::to::login());
            set_cookie(&mut response, &self.clear_cookie());
            return (response, principal);
        }
        let actor = Actor {
            principal: Arc::clone(&session.principal.resource_name),
            request_id: Arc::from(request_id),
            origin,
        };
        let call = pages::Call { session: &session, actor, form, query };
        let reply = pages::handle(self, route, call).await;
        (reply_response(reply), principal)
    }

    /// The sign-in page, and signing in.
    async fn login(&self, attempt: SignIn, request_id: &str) -> Response<Full<Bytes>> {
        let sessions = &self.inner.sessions;
        let Some(form) = attempt.form else {
            if attempt.session.is_some() {
                return redirect("/console/");
            }
            return self.sign_in_page(StatusCode::OK, &Errors::default(), attempt.form_cookie.as_deref(), request_id);
        };
        if !sessions.sign_in_csrf_matches(attempt.form_cookie.as_deref(), &form.text("csrf")) {
            let message = "This sign-in was not sent from this console's sign-in page, or the page is too old: sign in again here.";
            let errors = Errors { items: vec![(String::new(), message.into())] };
            return self.sign_in_page(StatusCode::FORBIDDEN, &errors, None, request_id);
        }
        if let Err(wait) = self.anonymous.check(&attempt.client) {
            return too_many(wait);
        }
        let presented = form.secret("token").unwrap_or_default();
        let actor = Actor { principal: Arc::from(""), request_id: Arc::from(request_id), origin: attempt.origin };
        match sessions.sign_in(&presented, &actor).await {
            Ok((secret, session)) => {
                self.anonymous.give_back(&attempt.client);
                let hash = ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes());
                if let Ok(hash) = hash.as_ref().try_into() {
                    self.signed_in.insert(hash);
                }
                let mut response = redirect("/console/");
                let max_age = session.expire_time.saturating_since(crate::domain::Timestamp::now()).as_secs();
                set_cookie(&mut response, &self.session_cookie(secret.expose(), max_age));
                response
            }
            Err(error @ (Error::Unauthenticated(_) | Error::PermissionDenied { .. })) => {
                tracing::warn!(target: "pullpass::console", error = %error.message(), request_id, "console sign-in refused");
                let errors = Errors { items: vec![("token".into(), error.message())] };
                let form_cookie = attempt.form_cookie.as_deref();
                self.sign_in_page(StatusCode::UNAUTHORIZED, &errors, form_cookie, request_id)
            }
            Err(error) => {
                tracing::error!(target: "pullpass::console", error = %error.message(), request_id, "console sign-in failed");
                let message = format!(
                    "Signing in is not possible right now. Try again in a moment; if this goes on, tell your operator the request id {request_id}."
                );
                let errors = Errors { items: vec![(String::new(), message)] };
                let form_cookie = attempt.form_cookie.as_deref();
                self.sign_in_page(StatusCode::SERVICE_UNAVAILABLE, &errors, form_cookie, request_id)
            }
        }
    }

    /// The sign-in form, with its CSRF token: of the form cookie the
    /// browser sent, else of a new one set with this answer.
    fn sign_in_page(
        &self,
        status: StatusCode,
        errors: &Errors,
        form_cookie: Option<&str>,
        request_id: &str,
    ) -> Response<Full<Bytes>> {
        let sessions = &self.inner.sessions;
        let (nonce, fresh) = match form_cookie.filter(|c| ConsoleSessions::is_sign_in_nonce(c)) {
            Some(nonce) => (zeroize::Zeroizing::new(nonce.to_owned()), false),
            None => match sessions.sign_in_nonce() {
                Ok(nonce) => (zeroize::Zeroizing::new(nonce.expose().to_owned()), true),
                Err(error) => {
                    tracing::error!(target: "pullpass::console", error = %error.message(), request_id, "no sign-in form");
                    let message = format!("Try again in a moment; the request id is {request_id}.");
                    return page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        views::problem(None, "Something went wrong", &message),
                    );
                }
            },
        };
        let mut response = page(status, pages::login_page(errors, &sessions.sign_in_csrf(&nonce)));
        if fresh {
            let secure = if self.secure { "; Secure" } else { "" };
            let cookie =
                format!("{SIGN_IN_COOKIE}={}; Path=/console/login; HttpOnly; SameSite=Strict{secure}", &*nonce);
            set_cookie(&mut response, &cookie);
        }
        response
    }

    fn session_cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// What a sign-in request brings.
struct SignIn {
    /// The session of the cookie sent, if it is one.
    session: Option<Session>,
    /// The sign-in form, for a POST.
    form: Option<Form>,
    /// The sign-in form's cookie, if sent.
    form_cookie: Option<String>,
    /// Whose bucket pays for the attempt.
    client: IpAddr,
    /// Where it comes from, for the audit trail.
    origin: Origin,
}

/// How long a session cookie that found a session is spared the
/// anonymous-work limit after its last lookup (the sessions' idle time).
const SIGNED_IN_MEMORY: Duration = Duration::from_secs(12 * 3600);

/// The key of a client address in the anonymous-work limit: an IPv4
/// address (also when mapped into IPv6), or an IPv6 address's /64, which
/// one client usually holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Serves the console on `listener` until `shutdown`.
pub async fn serve(
    console: Console,
    listener: TcpListener,
    tls: Option<ReloadableTls>,
    connections: Connections,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let handle = move |request: Request<hyper::body::Incoming>, peer: SocketAddr| {
        let console = console.clone();
        async move { console.respond(request, peer).await }
    };
    crate::http_listener::serve("console", listener, tls, connections, handle, shutdown, grace).await;
}

fn page(status: StatusCode, markup: Markup) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(markup.into_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut response = page(StatusCode::SEE_OTHER, views::moved(to));
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn reply_response(reply: Reply) -> Response<Full<Bytes>> {
    match reply {
        Reply::Page(status, markup) => page(status, markup),
        Reply::Redirect(to) => redirect(&to),
    }
}

fn too_slow() -> Response<Full<Bytes>> {
    let message = format!("The form took longer than {} s to arrive; send it again.", BODY_DEADLINE.as_secs());
    page(StatusCode::REQUEST_TIMEOUT, views::problem(None, "Too slow", &message))
}

fn too_many(wait: Duration) -> Response<Full<Bytes>> {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let message =
        format!("Too many sign-in attempts or unknown session cookies from your address; try again in {seconds} s.");
    let mut response = page(StatusCode::TOO_MANY_REQUESTS, views::problem(None, "Too many requests", &message));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn too_large() -> Response<Full<Bytes>> {
    let message = format!("The form is larger than {} KiB.", MAX_FORM_BYTES / 1024);
    page(StatusCode::PAYLOAD_TOO_LARGE, views::problem(None, "Too large", &message))
}

fn asset(file: &str) -> Response<Full<Bytes>> {
    let (body, content_type) = match file {
        "console.css" => (STYLESHEET, "text/css; charset=utf-8"),
        _ => (SCRIPT, "text/javascript; charset=utf-8"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    response
}

fn set_cookie(response: &mut Response<Full<Bytes>>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Adds the headers every console answer carries.
fn with_security_headers(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The value of cookie `name`, if sent.
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// Does a POST come from this console's own pages? Browsers say where a
/// request comes from in `Sec-Fetch-Site`; anything but `same-origin` (or
/// `none`, typed by the person) is refused. Without it, an `Origin` must
/// name the host the request was sent to (`null`, which browsers send under
/// `Referrer-Policy: no-referrer`, says nothing). A request saying neither
/// (not a browser form) goes on to the CSRF check.
fn same_origin<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).filter(|o| *o != "null") else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let origin_host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_posts_from_other_origins_are_told_apart() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; pullpass_session=pps_x ; b=2"));
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("pps_x"));
        assert_eq!(cookie(&headers, "c"), None);
        let request = |header_name: &str, value: Option<&str>| {
            let mut builder = Request::post("/console/login").header(header::HOST, "127.0.0.1:50053");
            if let Some(value) = value {
                builder = builder.header(header_name, value);
            }
            builder.body(()).unwrap()
        };
        assert!(same_origin(&request("origin", None)));
        assert!(same_origin(&request("origin", Some("http://127.0.0.1:50053"))));
        assert!(!same_origin(&request("origin", Some("http://evil.example"))));
        assert!(same_origin(&request("origin", Some("null"))), "says nothing");
        assert!(same_origin(&request("sec-fetch-site", Some("same-origin"))));
        assert!(!same_origin(&request("sec-fetch-site", Some("cross-site"))));
        assert!(!same_origin(&request("sec-fetch-site", Some("same-site"))));
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_or_ipv6_slash_64() {
        let key = |text: &str| client_key(text.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        let response = with_security_headers(page(StatusCode::OK, maud::html! { p { "x" } }));
        let headers = response.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline")
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
}
