//! Who may run the audit page's full chain check, and when.
//!
//! The check re-hashes every event of every workspace, and what it finds
//! (how many events there are, where a link broke) is about every tenant.
//! So it is ROOT's alone, and rationed: one run at a time in the process,
//! and at most one per [`CHECK_EVERY`] per session. A refusal says why (a
//! page, not an error), so a person knows when to come back; a workspace
//! role is told the check is ROOT's and learns nothing of other tenants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::access::sessions::Session;
use crate::domain::Role;

/// A session checks the chain at most once this often.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Sessions whose last check is remembered, at most.
const MAX_REMEMBERED: usize = 10_000;

/// The gate of the full chain check.
#[derive(Debug)]
pub struct ChainChecks {
    running: Semaphore,
    /// When each session (by its hash) last started a check.
    last: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Default for ChainChecks {
    fn default() -> Self {
        Self { running: Semaphore::new(1), last: Mutex::default() }
    }
}

/// Why a check does not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The caller is not ROOT.
    NotRoot,
    /// Another check is running.
    Busy,
    /// This session checked less than [`CHECK_EVERY`] ago; it may again
    /// after this long.
    TooSoon(Duration),
}

impl Refusal {
    /// The page's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotRoot => StatusCode::FORBIDDEN,
            Self::Busy | Self::TooSoon(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRoot => f.write_str(
                "Checking the chain is for ROOT: it re-hashes the events of every workspace. \
                 Ask your operator to run it (or `pullpassd audit verify`).",
            ),
            Self::Busy => f.write_str("Another chain check is running; try again when it has finished."),
            Self::TooSoon(wait) => write!(
                f,
                "This session checked the chain less than {} s ago; try again in {} s.",
                CHECK_EVERY.as_secs(),
                wait.as_secs().max(1)
            ),
        }
    }
}

impl ChainChecks {
    /// Lets `session` start a check, which runs while the returned permit
    /// lives, or says why not.
    pub fn start(&self, session: &Session) -> Result<SemaphorePermit<'_>, Refusal> {
        if session.principal.role != Role::Root {
            return Err(Refusal::NotRoot);
        }
        let running = self.running.try_acquire().map_err(|_| Refusal::Busy)?;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = last.get(&session.id_hash).map(|at| now.duration_since(*at))
            && since < CHECK_EVERY
        {
            return Err(Refusal::TooSoon(CHECK_EVERY - since));
        }
        if last.len() >= MAX_REMEMBERED {
            last.retain(|_, at| now.duration_since(*at) < CHECK_EVERY);
            if last.len() >= MAX_REMEMBERED {
                last.clear();
            }
        }
        last.insert(session.id_hash, now);
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;
    use crate::domain::{AccessTokenId, WorkspaceId};
    use std::sync::Arc;

    fn session(role: Role, hash: u8) -> Session {
        let workspace = (role != Role::Root).then(|| WorkspaceId::parse("acme").unwrap());
        Session {
            principal: Arc::new(Principal {
                token_id: AccessTokenId::parse("t").unwrap(),
                resource_name: Arc::from("rootTokens/t"),
                role,
                workspace,
                projects: Vec::new(),
                expire_time: None,
                identity: None,
            }),
            id_hash: [hash; 32],
            csrf: String::new(),
            expire_time: crate::domain::Timestamp::now(),
        }
    }

    #[test]
    fn root_checks_one_at_a_time_and_once_a_minute_per_session_and_others_never() {
        let checks = ChainChecks::default();
        for role in [Role::Admin, Role::Viewer, Role::Launcher] {
            assert_eq!(checks.start(&session(role, 9)).unwrap_err(), Refusal::NotRoot);
        }
        let root = session(Role::Root, 1);
        let running = checks.start(&root).unwrap();
        assert_eq!(checks.start(&session(Role::Root, 2)).unwrap_err(), Refusal::Busy);
        drop(running);
        assert!(matches!(checks.start(&root), Err(Refusal::TooSoon(wait)) if wait <= CHECK_EVERY));
        assert!(checks.start(&session(Role::Root, 2)).is_ok(), "another session may");
        assert_eq!(Refusal::NotRoot.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refusal::Busy.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
