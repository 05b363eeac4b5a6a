//! Gateway passwords: short-lived, stateless passwords for the pull gateway.
//!
//! A runtime that takes only a username and password (kubelet, containerd,
//! podman, Apptainer) pulls through the gateway with username `pullpass`
//! and one of these. It names what it allows (a [`GatewayGrant`]: the
//! workspace, the project, the repositories, pull only, and the access token
//! that asked for it, until an expiry) and carries an HMAC-SHA256 over all
//! of that, keyed by a key derived from a master key. Checking one needs no
//! database read, and every server holding the same master keys accepts the
//! others' passwords. Revocation is not in the password: the gateway looks
//! up the asking token (in memory) on every request.
//!
//! Layout (version 1), all integers big-endian, every string a `u16` length
//! and its bytes:
//! `ppg_` ‖ base64url( 0x01 ‖ key id ‖ token id ‖ workspace ‖ project ‖
//! u64 expiry (Unix seconds) ‖ u16 count ‖ count × (registry ‖ repository) ‖
//! HMAC-SHA256(key, label ‖ everything before) ).
//!
//! Version 2, for a caller that presented a workload identity (a JWT) rather
//! than an access token, appends after the repositories: provider id ‖
//! u16 count ‖ count × (binding name ‖ i64 update time, microseconds). There
//! is no token to look up then: the gateway checks instead that every
//! binding named is still there, unchanged, so changing or deleting one
//! ends the password as revoking a token does.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pullpass::registry::RegistryHost;
use ring::hmac;

use crate::domain::{AccessTokenId, ProjectName, Timestamp, WorkspaceId};

/// The prefix of every gateway password (lets secret scanners find leaks,
/// and tells them apart from access tokens, which start with `pp_`).
pub const PREFIX: &str = "ppg_";
/// Longest lifetime of a gateway password.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Most repositories one password may name.
pub const MAX_REPOSITORIES: usize = 100;
/// Longest password text accepted for checking.
const MAX_TEXT_LEN: usize = 32 * 1024;
const VERSION: u8 = 1;
const VERSION_IDENTITY: u8 = 2;
/// Most bindings a password names.
const MAX_BINDINGS: usize = 16;
const TAG_LEN: usize = 32;
const LABEL: &[u8] = b"pullpass/v1 gateway password\0";
/// The HKDF purpose of the MAC keys.
pub const KEY_PURPOSE: &str = "gateway-passwords";

/// What a gateway password allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayGrant {
    /// The access token that asked for it; revoking that token ends it.
    pub token: AccessTokenId,
    /// The workspace whose credentials serve the pulls.
    pub workspace: WorkspaceId,
    /// The project the pulls run for.
    pub project: Option<ProjectName>,
    /// The repositories it may pull: (registry as in image references, such
    /// as `docker.io`, repository path).
    pub repositories: Vec<(RegistryHost, String)>,
    /// When it stops working (whole seconds).
    pub expires: Timestamp,
    /// For a workload identity: the provider and the bindings (with their
    /// update times) that granted it; `token` is then only the identity's
    /// stable id.
    pub identity: Option<IdentityRef>,
}

/// The bindings a workload identity's password stands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef {
    /// The provider's id.
    pub provider: String,
    /// Each binding's resource name and update time.
    pub bindings: Vec<(String, Timestamp)>,
}

impl GatewayGrant {
    /// May it pull `repository` of `registry`?
    pub fn allows(&self, registry: &RegistryHost, repository: &str) -> bool {
        self.repositories.iter().any(|(r, repo)| r == registry && repo == repository)
    }
}

/// Why a password is not accepted. Never carries the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    /// Not shaped like a gateway password.
    Malformed,
    /// The MAC does not match (altered, forged, or made with a master key
    /// this server does not hold).
    Unauthentic,
    /// Past its expiry.
    Expired,
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the password is not a pullpass gateway password or access token",
            Self::Unauthentic => "the gateway password is not valid here (altered, or made with another master key)",
            Self::Expired => "the gateway password has expired; ask pullpass for a new one",
        })
    }
}

/// A minted password. `Debug` is redacted.
pub struct GatewayPassword(zeroize::Zeroizing<String>);

impl GatewayPassword {
    /// The password, for the one response it was minted for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GatewayPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayPassword(<redacted>)")
    }
}

/// The header limit passwords fit unless told another
/// ([`GatewayPasswords::fitting`]): `--max-header-bytes`' default.
const DEFAULT_HEADER_LIMIT: u32 = 16 * 1024;

/// The username runtimes send with a gateway password.
pub const USERNAME: &str = "pullpass";

/// The longest gateway password whose `authorization: Basic
/// base64(pullpass:password)` header takes at most half of a
/// `max_header_bytes` header block (counted as HTTP/2 counts a header: name,
/// value and 32 bytes), leaving the other half for the request's other
/// headers.
pub fn max_len_for_header_limit(max_header_bytes: u32) -> usize {
    let half = max_header_bytes as usize / 2;
    let value = half.saturating_sub("authorization".len() + 32 + "Basic ".len());
    (value / 4 * 3).saturating_sub(USERNAME.len() + 1)
}

/// Mints and checks gateway passwords.
pub struct GatewayPasswords {
    active: String,
    keys: HashMap<String, hmac::Key>,
    /// Longest password minted (see [`max_len_for_header_limit`]).
    max_len: usize,
}

impl fmt::Debug for GatewayPasswords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayPasswords").field("active_key", &self.active).finish_non_exhaustive()
    }
}

impl GatewayPasswords {
    /// Mints under the key of `active` and accepts the keys of every id in
    /// `keys` (so a password minted before a master-key change still works
    /// while that key is loaded).
    pub fn new(active: String, keys: HashMap<String, hmac::Key>) -> Self {
        Self { active, keys, max_len: max_len_for_header_limit(DEFAULT_HEADER_LIMIT) }
    }

    /// Mints passwords that a runtime can send within `max_header_bytes`
    /// of request headers (the gateway's limit).
    pub fn fitting(mut self, max_header_bytes: u32) -> Self {
        self.max_len = max_len_for_header_limit(max_header_bytes);
        self
    }

    /// The longest password this mints, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// How long the password for `grant` would be, in bytes.
    pub fn len_of(&self, grant: &GatewayGrant) -> usize {
        let field = |text: &str| 2 + text.len();
        let body = 1
            + field(&self.active)
            + field(grant.token.as_str())
            + field(grant.workspace.as_str())
            + field(grant.project.as_ref().map_or("", |p| p.as_str()))
            + 8
            + 2
            + grant.repositories.iter().map(|(r, repo)| field(r.as_str()) + field(repo)).sum::<usize>()
            + grant.identity.as_ref().map_or(0, |identity| {
                field(&identity.provider) + 2 + identity.bindings.iter().map(|(b, _)| field(b) + 8).sum::<usize>()
            })
            + TAG_LEN;
        PREFIX.len() + (body * 4).div_ceil(3)
    }

    /// A password for `grant`; refused when it would be longer than a
    /// runtime can send (see [`GatewayPasswords::fitting`]).
    pub fn mint(&self, grant: &GatewayGrant) -> Result<GatewayPassword, String> {
        let key = self.keys.get(&self.active).ok_or("the active master key has no gateway-password key")?;
        if grant.repositories.is_empty() || grant.repositories.len() > MAX_REPOSITORIES {
            return Err(format!("a gateway password names 1 to {MAX_REPOSITORIES} repositories"));
        }
        let len = self.len_of(grant);
        if len > self.max_len {
            return Err(format!(
                "a gateway password naming these {} repositories would be {len} bytes, more than the {} a runtime can send",
                grant.repositories.len(),
                self.max_len
            ));
        }
        if grant.identity.as_ref().is_some_and(|i| i.bindings.is_empty() || i.bindings.len() > MAX_BINDINGS) {
            return Err(format!("a workload identity's gateway password names 1 to {MAX_BINDINGS} bindings"));
        }
        let mut body = vec![if grant.identity.is_some() { VERSION_IDENTITY } else { VERSION }];
        put(&mut body, self.active.as_bytes())?;
        put(&mut body, grant.token.as_str().as_bytes())?;
        put(&mut body, grant.workspace.as_str().as_bytes())?;
        put(&mut body, grant.project.as_ref().map_or("", |p| p.as_str()).as_bytes())?;
        let expires = u64::try_from(grant.expires.as_seconds()).map_err(|_| "expiry before 1970")?;
        body.extend_from_slice(&expires.to_be_bytes());
        body.extend_from_slice(&(grant.repositories.len() as u16).to_be_bytes());
        for (registry, repository) in &grant.repositories {
            put(&mut body, registry.as_str().as_bytes())?;
            put(&mut body, repository.as_bytes())?;
        }
        if let Some(identity) = &grant.identity {
            put(&mut body, identity.provider.as_bytes())?;
            body.extend_from_slice(&(identity.bindings.len() as u16).to_be_bytes());
            for (binding, updated) in &identity.bindings {
                put(&mut body, binding.as_bytes())?;
                body.extend_from_slice(&updated.as_micros().to_be_bytes());
            }
        }
        let tag = sign(key, &body);
        body.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        let password = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&body));
        debug_assert_eq!(password.len(), len);
        Ok(GatewayPassword(zeroize::Zeroizing::new(password)))
    }

    /// The grant of `password`, if it is authentic and unexpired at `now`.
    /// The MAC is checked (in constant time) before any field is read.
    pub fn verify(&self, password: &str, now: Timestamp) -> Result<GatewayGrant, PasswordError> {
        let encoded = password.strip_prefix(PREFIX).ok_or(PasswordError::Malformed)?;
        if encoded.len() > MAX_TEXT_LEN {
            return Err(PasswordError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| PasswordError::Malformed)?;
        if raw.len() < 1 + TAG_LEN || !matches!(raw[0], VERSION | VERSION_IDENTITY) {
            return Err(PasswordError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut reader = Reader { bytes: &body[1..] };
        let key_id = reader.text()?;
        let key = self.keys.get(key_id).ok_or(PasswordError::Unauthentic)?;
        hmac::verify(key, &[LABEL, body].concat(), tag).map_err(|_| PasswordError::Unauthentic)?;
        let grant = read_grant(&mut reader, raw[0] == VERSION_IDENTITY)?;
        if grant.expires <= now {
            return Err(PasswordError::Expired);
        }
        // Defence in depth: no server mints longer-lived ones (a minute of
        // clock skew between replicas allowed).
        if grant.expires > now.plus(MAX_TTL + Duration::from_secs(60)) {
            return Err(PasswordError::Unauthentic);
        }
        Ok(grant)
    }
}

fn sign(key: &hmac::Key, body: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(LABEL);
    context.update(body);
    context.sign()
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "a gateway password field is too long")?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn read_grant(reader: &mut Reader<'_>, identity: bool) -> Result<GatewayGrant, PasswordError> {
    let bad = |_| PasswordError::Malformed;
    let token = AccessTokenId::parse(reader.text()?).map_err(bad)?;
    let workspace = WorkspaceId::parse(reader.text()?).map_err(bad)?;
    let project = match reader.text()? {
        "" => None,
        project => Some(ProjectName::parse(project).map_err(bad)?),
    };
    let expires = i64::try_from(reader.u64()?).map_err(|_| PasswordError::Malformed)?;
    let count = usize::from(reader.u16()?);
    if count == 0 || count > MAX_REPOSITORIES {
        return Err(PasswordError::Malformed);
    }
    let mut repositories = Vec::with_capacity(count);
    for _ in 0..count {
        let registry = RegistryHost::parse(reader.text()?).map_err(|_| PasswordError::Malformed)?;
        repositories.push((registry, reader.text()?.to_owned()));
    }
    let identity = match identity {
        false => None,
        true => {
            let provider = reader.text()?.to_owned();
            let count = usize::from(reader.u16()?);
            if count == 0 || count > MAX_BINDINGS {
                return Err(PasswordError::Malformed);
            }
            let mut bindings = Vec::with_capacity(count);
            for _ in 0..count {
                let binding = reader.text()?.to_owned();
                let updated = i64::from_be_bytes(reader.u64()?.to_be_bytes());
                bindings.push((binding, Timestamp::from_micros(updated)));
            }
            Some(IdentityRef { provider, bindings })
        }
    };
    if !reader.bytes.is_empty() {
        return Err(PasswordError::Malformed);
    }
    Ok(GatewayGrant {
        token,
        workspace,
        project,
        repositories,
        expires: Timestamp::from_micros(expires.saturating_mul(1_000_000)),
        identity,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PasswordError> {
        if self.bytes.len() < n {
            return Err(PasswordError::Malformed);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, PasswordError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, PasswordError> {
        let b = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(b);
        Ok(u64::from_be_bytes(array))
    }

    fn text(&mut self) -> Result<&'a str, PasswordError> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| PasswordError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn passwords(ids: &[&str], active: &str) -> GatewayPasswords {
        let keys = ids
            .iter()
            .map(|id| ((*id).to_owned(), hmac::Key::new(hmac::HMAC_SHA256, format!("key of {id}").as_bytes())))
            .collect();
        GatewayPasswords::new(active.to_owned(), keys)
    }

    fn grant(expires_in: i64) -> GatewayGrant {
        GatewayGrant {
            token: AccessTokenId::parse("tok1").unwrap(),
            workspace: WorkspaceId::parse("acme").unwrap(),
            project: Some(ProjectName::parse("rnaseq").unwrap()),
            repositories: vec![
                (RegistryHost::parse("ghcr.io").unwrap(), "acme/aligner".into()),
                (RegistryHost::parse("127.0.0.1:5000").unwrap(), "team/app".into()),
            ],
            expires: Timestamp::from_micros((Timestamp::now().as_seconds() + expires_in) * 1_000_000),
            identity: None,
        }
    }

    #[test]
    fn a_workload_identitys_password_names_its_bindings_and_verifies_to_them() {
        let passwords = passwords(&["k1"], "k1");
        let grant = GatewayGrant {
            identity: Some(IdentityRef {
                provider: "k8s".into(),
                bindings: vec![
                    ("workspaces/acme/identityBindings/ci".into(), Timestamp::from_micros(1_700_000_000_123_456)),
                    ("workspaces/acme/identityBindings/all".into(), Timestamp::from_micros(-5)),
                ],
            }),
            ..grant(600)
        };
        let password = passwords.mint(&grant).unwrap();
        assert_eq!(password.expose().len(), passwords.len_of(&grant));
        assert_eq!(passwords.verify(password.expose(), Timestamp::now()).unwrap(), grant);
        let token_only = passwords.mint(&super::tests::grant(600)).unwrap();
        assert_eq!(passwords.verify(token_only.expose(), Timestamp::now()).unwrap().identity, None);
    }

    #[test]
    fn a_minted_password_verifies_to_its_grant() {
        let keys = passwords(&["k1"], "k1");
        let minted = keys.mint(&grant(600)).unwrap();
        assert!(minted.expose().starts_with(PREFIX));
        assert!(!format!("{minted:?}").contains(minted.expose()));
        let verified = keys.verify(minted.expose(), Timestamp::now()).unwrap();
        assert_eq!(verified, grant(600));
        assert!(verified.allows(&RegistryHost::parse("ghcr.io").unwrap(), "acme/aligner"));
        assert!(!verified.allows(&RegistryHost::parse("ghcr.io").unwrap(), "acme/other"));
        assert!(!verified.allows(&RegistryHost::parse("quay.io").unwrap(), "acme/aligner"));
    }

    #[test]
    fn expired_altered_and_foreign_passwords_are_refused() {
        let keys = passwords(&["k1"], "k1");
        let expired = keys.mint(&grant(-1)).unwrap();
        assert_eq!(keys.verify(expired.expose(), Timestamp::now()), Err(PasswordError::Expired));
        let minted = keys.mint(&grant(600)).unwrap();
        // Flip one bit of every byte in turn: none verifies.
        let raw = URL_SAFE_NO_PAD.decode(&minted.expose()[PREFIX.len()..]).unwrap();
        for at in 0..raw.len() {
            let mut altered = raw.clone();
            altered[at] ^= 1;
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
            assert!(keys.verify(&text, Timestamp::now()).is_err(), "byte {at}");
        }
        let other_server = passwords(&["k1"], "k1");
        let other_key = GatewayPasswords::new(
            "k1".into(),
            [("k1".to_owned(), hmac::Key::new(hmac::HMAC_SHA256, b"another master key"))].into(),
        );
        assert!(other_server.verify(minted.expose(), Timestamp::now()).is_ok(), "same keys: accepted");
        assert_eq!(other_key.verify(minted.expose(), Timestamp::now()), Err(PasswordError::Unauthentic));
        for junk in ["", "pp_abc", "ppg_", "ppg_!!!", "ppg_AQ", &format!("{}x", minted.expose())] {
            assert!(keys.verify(junk, Timestamp::now()).is_err(), "{junk}");
        }
    }

    #[test]
    fn every_password_minted_fits_in_half_the_header_limit_as_basic_auth() {
        for limit in [8 * 1024, 16 * 1024, 64 * 1024] {
            let keys = passwords(&["k1"], "k1").fitting(limit);
            let long = |n: usize| GatewayGrant {
                repositories: (0..n)
                    .map(|i| {
                        (RegistryHost::parse("registry.example.com").unwrap(), format!("{i:03}/{}", "r".repeat(200)))
                    })
                    .collect(),
                ..grant(600)
            };
            let mut minted = 0;
            for n in 1..=MAX_REPOSITORIES {
                let grant = long(n);
                match keys.mint(&grant) {
                    Ok(password) => {
                        assert_eq!(password.expose().len(), keys.len_of(&grant));
                        let basic = URL_SAFE_NO_PAD.encode(format!("{USERNAME}:{}", password.expose()));
                        let field = "authorization".len() + "Basic ".len() + basic.len() + 32;
                        assert!(field <= limit as usize / 2, "{limit}: {n} repositories take {field} bytes");
                        minted = n;
                    }
                    Err(e) => {
                        assert!(keys.len_of(&grant) > keys.max_len(), "{e}");
                        assert!(e.contains(&keys.max_len().to_string()), "{e}");
                        break;
                    }
                }
            }
            assert!((1..MAX_REPOSITORIES).contains(&minted), "{limit}: {minted}");
        }
    }

    #[test]
    fn a_password_claiming_more_than_the_longest_life_is_refused() {
        let keys = passwords(&["k1"], "k1");
        let minted = keys.mint(&grant(MAX_TTL.as_secs() as i64 + 3600)).unwrap();
        assert_eq!(keys.verify(minted.expose(), Timestamp::now()), Err(PasswordError::Unauthentic));
    }

    #[test]
    fn passwords_minted_under_an_older_loaded_key_still_verify() {
        let old = passwords(&["k1"], "k1");
        let minted = old.mint(&grant(600)).unwrap();
        let rotated = passwords(&["k1", "k2"], "k2");
        assert!(rotated.verify(minted.expose(), Timestamp::now()).is_ok());
        let newer = rotated.mint(&grant(600)).unwrap();
        assert_eq!(old.verify(newer.expose(), Timestamp::now()), Err(PasswordError::Unauthentic));
    }

    proptest! {
        #[test]
        fn checking_never_panics_on_any_text(text in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = passwords(&["k1"], "k1");
            let _ = keys.verify(&text, Timestamp::now());
            let _ = keys.verify(&format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes)), Timestamp::now());
        }
    }
}
