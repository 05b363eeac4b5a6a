//! Console sign-ins: who a browser is, for the web console.
//!
//! A person signs in by pasting an access token once, or with a one-time
//! login link (`pullpass console-link`, which asks `CreateConsoleLink`).
//! Either way the browser gets a session secret (`pps_` + 256 random bits)
//! in a cookie, and the store keeps only its SHA-256. A session acts as the
//! access token it was opened with: every request checks that token again
//! (revoked or expired: the session is over), it ends after
//! [`SESSION_IDLE`] without a request, and never outlives the token. Login
//! links (`ppl_…`) live [`LOGIN_LINK_TTL`] and work once, on any replica
//! (the store takes them in one step).
//!
//! Every form carries a CSRF token: an HMAC of the session's hash under a
//! key derived from the master key, compared in constant time. The sign-in
//! form, which no session protects yet, carries one too (login CSRF, in
//! browsers that do not say where a request comes from): the page sets a
//! random pre-session value (`ppf_…`) in a cookie and the form carries its
//! HMAC under the same key, with another label; a sign-in needs both, and
//! only this console's own page can pair them.
//!
//! Anonymous work stays cheap: a session cookie or login code the database
//! did not know is remembered by its hash ([`Unknown`]) and refused from
//! memory, and a login code is read before it is taken, so a code nobody
//! made never reaches the writer.
//!
//! Knows nothing of HTTP or gRPC: the console and the gRPC API both call it.

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use zeroize::Zeroizing;

use super::policy::{Permission, authorize};
use super::token::{hash_token, is_shaped, random_secret};
use super::unknown::Unknown;
use super::{Authenticator, Principal};
use crate::audit::Actor;
use crate::domain::Timestamp;
use crate::domain::session::{ConsoleSession, SessionKind};
use crate::error::Error;
use crate::store::Store;

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// A session ends after this long, however active.
pub const SESSION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// A login link works for this long after it was made.
pub const LOGIN_LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// A session's activity is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Prefix of session secrets (the cookie's value).
pub const SESSION_PREFIX: &str = "pps_";
/// Prefix of login-link codes.
pub const LOGIN_PREFIX: &str = "ppl_";
/// Prefix of the sign-in form's pre-session value (its cookie).
pub const SIGN_IN_PREFIX: &str = "ppf_";
/// What the HMAC of a sign-in form's CSRF token starts with, so that it is
/// never the CSRF token of a session.
const SIGN_IN_LABEL: &[u8] = b"pullpass console sign-in form\0";

/// A secret to hand to a browser once (cookie value or login code).
/// `Debug` is redacted; zeroized on drop.
pub struct SessionSecret(Zeroizing<String>);

impl SessionSecret {
    /// The secret, for the one response that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who it acts as.
    pub principal: Arc<Principal>,
    /// The hash of its secret (what the store keys it by).
    pub id_hash: [u8; 32],
    /// Its forms' CSRF token.
    pub csrf: String,
    /// When the cookie must be gone at the latest.
    pub expire_time: Timestamp,
}

/// A one-time login link.
#[derive(Debug)]
pub struct LoginLink {
    /// The link: the console's sign-in page with the code in its fragment,
    /// which browsers never send over the network.
    pub url: SessionSecret,
    /// When it stops working.
    pub expire_time: Timestamp,
}

/// The console sign-in service.
#[derive(Clone)]
pub struct ConsoleSessions {
    store: Store,
    authn: Authenticator,
    csrf_key: Arc<hmac::Key>,
    /// Cookies and login codes the database did not know.
    unknown: Arc<Unknown>,
    /// The console's sign-in page (`http://127.0.0.1:50053/console/login`),
    /// when a console is served.
    login_page: Option<String>,
}

impl std::fmt::Debug for ConsoleSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessions").field("login_page", &self.login_page).finish_non_exhaustive()
    }
}

impl ConsoleSessions {
    /// The service; `login_page` is `None` when no console is served.
    pub fn new(store: Store, authn: Authenticator, csrf_key: hmac::Key, login_page: Option<String>) -> Self {
        Self { store, authn, csrf_key: Arc::new(csrf_key), unknown: Arc::default(), login_page }
    }

    /// Opens a session for what a person pasted into the sign-in form: an
    /// access token, or the code of a login link.
    pub async fn sign_in(&self, presented: &str, actor: &Actor) -> Result<(SessionSecret, Session), Error> {
        let presented = presented.trim();
        let principal = if is_shaped(presented, LOGIN_PREFIX) {
            let used =
                || Error::Unauthenticated("this login link was used already or has expired; ask for a new one".into());
            let hash = hash_token(presented);
            if self.unknown.contains(&hash) {
                return Err(used());
            }
            // Read first: only a link that exists is taken, through the
            // writer.
            let now = Timestamp::now();
            if self.store.console_login(&hash).await?.is_none_or(|link| link.expire_time <= now) {
                self.unknown.insert(hash);
                return Err(used());
            }
            let link = self.store.redeem_console_login(&hash, now).await?;
            self.unknown.insert(hash);
            let link = link.ok_or_else(used)?;
            self.authn.principal_by_id(&link.token_id).await?
        } else {
            self.authn.authenticate_token(presented).await?
        };
        authorize(&principal, Permission::UseConsole)?;
        let secret = SessionSecret(random_secret(SESSION_PREFIX)?);
        let now = Timestamp::now();
        let expire_time = self.end_of(&principal, now.plus(SESSION_MAX));
        let stored = ConsoleSession {
            id_hash: hash_token(secret.expose()),
            kind: SessionKind::Session,
            token_id: principal.token_id.clone(),
            create_time: now,
            expire_time,
            last_seen: now,
        };
        self.store.insert_console_session(&stored).await?;
        let mut event = actor.event("ConsoleSignIn", principal.workspace.as_ref().map_or("", |w| w.as_str()), "", 0);
        event.principal = principal.resource_name.to_string();
        event.resource = principal.resource_name.to_string();
        self.store.append_audit(&[event]).await?;
        let session = self.session_of(principal, stored.id_hash, expire_time);
        Ok((secret, session))
    }

    /// The session a cookie value stands for, if it is still good: known,
    /// not expired, used within [`SESSION_IDLE`], and its token still valid.
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, Error> {
        if !is_shaped(cookie, SESSION_PREFIX) {
            return Ok(None);
        }
        let hash = hash_token(cookie);
        if self.unknown.contains(&hash) {
            return Ok(None);
        }
        let Some(stored) = self.store.console_session(&hash).await? else {
            self.unknown.insert(hash);
            return Ok(None);
        };
        let now = Timestamp::now();
        if stored.expire_time <= now || stored.last_seen.plus(SESSION_IDLE) <= now {
            self.store.delete_console_session(&hash).await?;
            self.unknown.insert(hash);
            return Ok(None);
        }
        let principal = match self.authn.principal_by_id(&stored.token_id).await {
            Ok(principal) => principal,
            Err(Error::Unauthenticated(_)) => {
                self.store.delete_console_session(&hash).await?;
                self.unknown.insert(hash);
                return Ok(None);
            }
            Err(other) => return Err(other),
        };
        if now.saturating_since(stored.last_seen) >= TOUCH_EVERY {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_console_session(&hash, now).await {
                    tracing::warn!(error = %e, "could not record a console session's activity");
                }
            });
        }
        let expire_time = self.end_of(&principal, stored.expire_time);
        Ok(Some(self.session_of(principal, hash, expire_time)))
    }

    /// Ends a session.
    pub async fn sign_out(&self, session: &Session) -> Result<(), Error> {
        self.store.delete_console_session(&session.id_hash).await?;
        self.unknown.insert(session.id_hash);
        Ok(())
    }

    /// A one-time login link for `principal`: valid [`LOGIN_LINK_TTL`], for
    /// one sign-in. FAILED_PRECONDITION when no console is served.
    pub async fn create_login_link(&self, principal: &Principal) -> Result<LoginLink, Error> {
        let login_page = self.login_page.as_ref().ok_or_else(|| Error::FailedPrecondition {
            reason: "CONSOLE_DISABLED",
            message: "this pullpassd serves no web console; start it with --console-listen ADDR".into(),
        })?;
        authorize(principal, Permission::UseConsole)?;
        let code = random_secret(LOGIN_PREFIX)?;
        let now = Timestamp::now();
        let expire_time = self.end_of(principal, now.plus(LOGIN_LINK_TTL));
        self.store
            .insert_console_session(&ConsoleSession {
                id_hash: hash_token(&code),
                kind: SessionKind::LoginLink,
                token_id: principal.token_id.clone(),
                create_time: now,
                expire_time,
                last_seen: now,
            })
            .await?;
        let url = SessionSecret(Zeroizing::new(format!("{login_page}#{}", code.as_str())));
        Ok(LoginLink { url, expire_time })
    }

    /// Is `presented` the CSRF token of `session`?
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        let Some(bytes) = from_hex(presented) else { return false };
        hmac::verify(&self.csrf_key, &session.id_hash, &bytes).is_ok()
    }

    /// Is `cookie` shaped like a session's (else it is no session, and
    /// looking it up costs nothing)?
    pub fn is_session_cookie(cookie: &str) -> bool {
        is_shaped(cookie, SESSION_PREFIX)
    }

    /// A new pre-session value for the sign-in form's cookie.
    pub fn sign_in_nonce(&self) -> Result<SessionSecret, Error> {
        random_secret(SIGN_IN_PREFIX).map(SessionSecret)
    }

    /// Is `cookie` shaped like a sign-in form's pre-session value?
    pub fn is_sign_in_nonce(cookie: &str) -> bool {
        is_shaped(cookie, SIGN_IN_PREFIX)
    }

    /// The CSRF token of the sign-in form whose cookie holds `nonce`.
    pub fn sign_in_csrf(&self, nonce: &str) -> String {
        hex(hmac::sign(&self.csrf_key, &sign_in_message(nonce)).as_ref())
    }

    /// Does a sign-in carry a matching pair: the form's cookie `nonce` and
    /// the form's token `presented`?
    pub fn sign_in_csrf_matches(&self, nonce: Option<&str>, presented: &str) -> bool {
        let Some(nonce) = nonce.filter(|n| Self::is_sign_in_nonce(n)) else { return false };
        let Some(bytes) = from_hex(presented) else { return false };
        hmac::verify(&self.csrf_key, &sign_in_message(nonce), &bytes).is_ok()
    }

    fn session_of(&self, principal: Arc<Principal>, id_hash: [u8; 32], expire_time: Timestamp) -> Session {
        let csrf = hex(hmac::sign(&self.csrf_key, &id_hash).as_ref());
        Session { principal, id_hash, csrf, expire_time }
    }

    /// `at`, or the token's expiry if sooner: nothing outlives its token.
    fn end_of(&self, principal: &Principal, at: Timestamp) -> Timestamp {
        principal.expire_time.map_or(at, |expiry| expiry.min(at))
    }
}

fn sign_in_message(nonce: &str) -> Vec<u8> {
    [SIGN_IN_LABEL, nonce.as_bytes()].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::create_root_token;
    use crate::store::sqlite::test_support::temp_store;

    fn sessions(store: &Store) -> ConsoleSessions {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"test key");
        ConsoleSessions::new(
            store.clone(),
            Authenticator::new(store.clone()),
            key,
            Some("http://c/console/login".into()),
        )
    }

    #[tokio::test]
    async fn a_pasted_token_opens_a_session_whose_cookie_and_csrf_token_work_until_sign_out() {
        let (_dir, store) = temp_store();
        let (_, token) = create_root_token(&store, &Actor::default(), "test").await.unwrap();
        let sessions = sessions(&store);
        let (secret, session) = sessions.sign_in(token.expose(), &Actor::default()).await.unwrap();
        assert!(secret.expose().starts_with(SESSION_PREFIX));
        assert!(!format!("{secret:?}").contains(secret.expose()));
        let found = sessions.session(secret.expose()).await.unwrap().expect("the cookie works");
        assert_eq!(found.principal.token_id, session.principal.token_id);
        assert!(sessions.csrf_matches(&found, &session.csrf));
        assert!(!sessions.csrf_matches(&found, &"0".repeat(64)));
        assert!(!sessions.csrf_matches(&found, "not hex"));
        sessions.sign_out(&found).await.unwrap();
        assert!(sessions.session(secret.expose()).await.unwrap().is_none());
        assert!(sessions.session("pps_forged").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_login_link_signs_in_once_and_never_appears_in_the_store() {
        let (dir, store) = temp_store();
        let (record, token) = create_root_token(&store, &Actor::default(), "test").await.unwrap();
        let sessions = sessions(&store);
        let principal = sessions.authn.authenticate_token(token.expose()).await.unwrap();
        let link = sessions.create_login_link(&principal).await.unwrap();
        let code = link.url.expose().split_once('#').unwrap().1.to_owned();
        assert!(code.starts_with(LOGIN_PREFIX) && link.url.expose().starts_with("http://c/console/login#"));
        let (_, session) = sessions.sign_in(&code, &Actor::default()).await.unwrap();
        assert_eq!(session.principal.token_id, record.id);
        let again = sessions.sign_in(&code, &Actor::default()).await.unwrap_err();
        assert!(matches!(again, Error::Unauthenticated(_)), "{again:?}");
        store.close().await;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(code.len()).any(|w| w == code.as_bytes()), "the code is stored in clear");
        }
    }

    #[tokio::test]
    async fn unknown_cookies_and_codes_are_then_refused_from_memory_and_no_code_is_taken_unread() {
        let (_dir, store) = temp_store();
        let (_, token) = create_root_token(&store, &Actor::default(), "test").await.unwrap();
        let sessions = sessions(&store);
        let cookie = random_secret(SESSION_PREFIX).unwrap();
        assert!(sessions.session(&cookie).await.unwrap().is_none());
        assert!(sessions.unknown.contains(&hash_token(&cookie)), "remembered as unknown");
        let code = random_secret(LOGIN_PREFIX).unwrap();
        assert!(matches!(sessions.sign_in(&code, &Actor::default()).await, Err(Error::Unauthenticated(_))));
        assert!(sessions.unknown.contains(&hash_token(&code)));
        // A real link still works, once; then it is known to be used.
        let principal = sessions.authn.authenticate_token(token.expose()).await.unwrap();
        let link = sessions.create_login_link(&principal).await.unwrap();
        let code = link.url.expose().split_once('#').unwrap().1.to_owned();
        assert!(!sessions.unknown.contains(&hash_token(&code)));
        let (secret, session) = sessions.sign_in(&code, &Actor::default()).await.unwrap();
        assert!(sessions.unknown.contains(&hash_token(&code)), "a used code is refused from memory");
        sessions.sign_out(&session).await.unwrap();
        assert!(sessions.unknown.contains(&hash_token(secret.expose())), "so is an ended session");
    }

    #[tokio::test]
    async fn the_sign_in_form_needs_its_cookie_and_the_tokens_of_a_session_and_a_form_differ() {
        let (_dir, store) = temp_store();
        let sessions = sessions(&store);
        let nonce = sessions.sign_in_nonce().unwrap();
        let csrf = sessions.sign_in_csrf(nonce.expose());
        assert!(sessions.sign_in_csrf_matches(Some(nonce.expose()), &csrf));
        assert!(!sessions.sign_in_csrf_matches(None, &csrf), "no cookie");
        assert!(!sessions.sign_in_csrf_matches(Some(nonce.expose()), ""), "no field");
        let other = sessions.sign_in_nonce().unwrap();
        assert!(!sessions.sign_in_csrf_matches(Some(other.expose()), &csrf), "another browser's pair");
        assert!(!sessions.sign_in_csrf_matches(Some("ppf_short"), &sessions.sign_in_csrf("ppf_short")), "not a nonce");
        let id_hash = hash_token(nonce.expose());
        let session_csrf = hex(hmac::sign(&sessions.csrf_key, &id_hash).as_ref());
        assert_ne!(session_csrf, csrf);
    }

    #[tokio::test]
    async fn a_revoked_token_ends_its_sessions() {
        let (_dir, store) = temp_store();
        let (mut record, token) = create_root_token(&store, &Actor::default(), "test").await.unwrap();
        let sessions = sessions(&store);
        let (secret, _) = sessions.sign_in(token.expose(), &Actor::default()).await.unwrap();
        record.revoke_time = Some(Timestamp::now());
        sessions.authn.refresh(&record);
        assert!(sessions.session(secret.expose()).await.unwrap().is_none());
    }
}
