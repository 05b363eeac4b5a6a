//! Intermediate tokens of the federating flows, kept per credential until
//! a minute before they expire: an Entra access token and an ACR refresh
//! token, a Google federated or impersonated access token, a Quay robot
//! token. They are keyed by the credential's uid, `update_time` and secret
//! version, so a changed credential never reuses one; concurrent callers of
//! one key share one fetch, so a burst over many repositories costs one
//! exchange, then one scoped call per repository.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{Credential, CredentialUid, LeaseSecret, Timestamp};

/// Tokens kept until this long before they expire.
const MARGIN: Duration = Duration::from_secs(60);
/// Entries kept at most.
const CAPACITY: usize = 10_000;

/// What a key names: the credential as it is now, and which token.
type Key = (CredentialUid, Timestamp, u64, &'static str);

/// The cache.
#[derive(Debug, Default)]
pub struct Sessions {
    tokens: Mutex<HashMap<Key, (LeaseSecret, Timestamp)>>,
    fetching: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl Sessions {
    /// The `kind` token of `credential`, fetched by `fetch` (once for
    /// concurrent callers) when none is kept.
    pub async fn get_or_fetch<E, F, Fut>(
        &self,
        credential: &Credential,
        kind: &'static str,
        fetch: F,
    ) -> Result<(LeaseSecret, Timestamp), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(LeaseSecret, Timestamp), E>>,
    {
        let key = (credential.uid, credential.update_time, credential.secret_version, kind);
        if let Some(kept) = self.kept(&key) {
            return Ok(kept);
        }
        let gate = {
            let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
            if fetching.len() > CAPACITY {
                fetching.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            Arc::clone(fetching.entry(key).or_default())
        };
        let _one = gate.lock().await;
        if let Some(kept) = self.kept(&key) {
            return Ok(kept);
        }
        let (token, expiry) = fetch().await?;
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() > CAPACITY {
            let now = Timestamp::now();
            tokens.retain(|_, (_, expiry)| expiry.saturating_since(now) > MARGIN);
        }
        tokens.insert(key, (token.clone(), expiry));
        Ok((token, expiry))
    }

    /// Forgets `credential`'s `kind` token (its issuer refused it).
    pub fn forget(&self, credential: &Credential, kind: &'static str) {
        let key = (credential.uid, credential.update_time, credential.secret_version, kind);
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    fn kept(&self, key: &Key) -> Option<(LeaseSecret, Timestamp)> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(key).filter(|(_, expiry)| expiry.saturating_since(Timestamp::now()) > MARGIN).cloned()
    }
}
