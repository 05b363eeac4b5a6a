//! A blob streamed from the registry to the client while it is hashed.
//!
//! The last piece received is held back until the registry's body ends and
//! the digest is checked: a blob that does not match its digest is never
//! delivered whole (the response ends with an error instead of its last
//! bytes), and nothing of it is kept. Memory stays at about two pieces per
//! stream, whatever the blob's size.

use std::time::Duration;

use bytes::Bytes;
use ring::digest::Context;

use super::PullError;
use super::digest::Digest;
use crate::upstream::content::Opened;

/// The body of a blob answer.
pub struct BlobStream {
    opened: Opened,
    check: Option<(Digest, Context)>,
    held: Option<Bytes>,
    idle: Duration,
    name: String,
    done: bool,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream").field("name", &self.name).field("verified", &self.check.is_some()).finish()
    }
}

impl BlobStream {
    /// Streams `opened`'s body, checking it against `verify` when given (a
    /// whole blob; a range cannot be checked). `idle` bounds a stall;
    /// `name` is the repository, for messages.
    pub fn new(opened: Opened, verify: Option<Digest>, idle: Duration, name: String) -> Self {
        let check = verify.map(|digest| {
            let hasher = digest.hasher();
            (digest, hasher)
        });
        Self { opened, check, held: None, idle, name, done: false }
    }

    /// The next piece to send; `None` at the end. After an error, the
    /// stream is over.
    pub async fn next(&mut self) -> Option<Result<Bytes, PullError>> {
        while !self.done {
            match self.opened.chunk(self.idle).await {
                Ok(Some(chunk)) if chunk.is_empty() => {}
                Ok(Some(chunk)) => {
                    if let Some((_, hasher)) = &mut self.check {
                        hasher.update(&chunk);
                    }
                    if let Some(previous) = self.held.replace(chunk) {
                        return Some(Ok(previous));
                    }
                }
                Ok(None) => {
                    self.done = true;
                    if let Some((wanted, hasher)) = self.check.take() {
                        let actual = wanted.finish(hasher);
                        if actual != wanted {
                            crate::metrics::gateway_digest_mismatch("blob");
                            self.held = None;
                            return Some(Err(PullError::BadUpstream(format!(
                                "the registry sent blob {wanted} of {} with digest {actual}; the transfer is cut short",
                                self.name
                            ))));
                        }
                    }
                    return self.held.take().map(Ok);
                }
                Err(failure) => {
                    self.done = true;
                    self.held = None;
                    return Some(Err(PullError::Unavailable(format!(
                        "the registry's blob of {} broke off: {failure:?}",
                        self.name
                    ))));
                }
            }
        }
        None
    }
}
