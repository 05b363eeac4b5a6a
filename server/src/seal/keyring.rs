//! Master keys (key-encryption keys, KEKs): where they come from and how they
//! are written.
//!
//! Format, for a key file and for the `PULLPASS_MASTER_KEY` variable alike:
//! one key per line (or per `,` in the variable), `<key-id>:<base64url 32
//! bytes>`, `#` comments allowed. The **last** key is the active one: new
//! secrets are sealed under it and `pullpassd keys rotate` moves old ones to
//! it. Earlier keys stay loaded so secrets sealed under them still open.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Bytes in a master key (AES-256).
pub const KEY_LEN: usize = 32;

/// One master key.
pub struct Kek {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl Kek {
    /// The key id, recorded next to every data key it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, <redacted>)", self.id)
    }
}

/// The loaded master keys; the last one is active.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Kek>,
    origin: String,
}

/// Why master keys could not be loaded or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file is missing.
    Missing(PathBuf),
    /// The key file can be read or written by group or others.
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A line could not be parsed.
    Malformed {
        /// Where the keys came from.
        origin: String,
        /// 1-based entry number.
        entry: usize,
        /// What is wrong (never the key).
        problem: String,
    },
    /// No key in the source.
    Empty(String),
    /// The same key id twice.
    DuplicateId(String),
    /// File system trouble.
    Io(PathBuf, std::io::Error),
    /// The system random generator failed.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(path) => write!(
                f,
                "master key file {} does not exist; create one with `pullpassd keys generate --key-file {}`",
                path.display(),
                path.display()
            ),
            Self::TooOpen { path, mode } => write!(
                f,
                "master key file {} has mode {:o}: it must not be readable or writable by group or others; run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
            Self::Malformed { origin, entry, problem } => {
                write!(
                    f,
                    "{origin}: key entry {entry} is malformed: {problem} (expected `<key-id>:<base64url 32 bytes>`)"
                )
            }
            Self::Empty(origin) => write!(f, "{origin} holds no master key"),
            Self::DuplicateId(id) => write!(f, "master key id `{id}` appears twice"),
            Self::Io(path, e) => write!(f, "{}: {e}", path.display()),
            Self::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for KeyError {}

impl Keyring {
    /// Loads a key file, refusing one that others may read or anyone but
    /// its owner may write. Like PostgreSQL's rule for its TLS key, group
    /// read is allowed only when root owns the file: what Kubernetes makes
    /// of a Secret mounted for a non-root pod (root, the pod's group, 0440).
    pub fn load_file(path: &Path) -> Result<Self, KeyError> {
        let metadata = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing(path.to_owned())),
            Err(e) => return Err(KeyError::Io(path.to_owned(), e)),
        };
        let mode = metadata.permissions().mode();
        let private = mode & 0o077 == 0;
        let root_owned_group_read = std::os::unix::fs::MetadataExt::uid(&metadata) == 0 && mode & 0o037 == 0;
        if !private && !root_owned_group_read {
            return Err(KeyError::TooOpen { path: path.to_owned(), mode });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_owned(), e))?);
        Self::parse(&text, &format!("master key file {}", path.display()))
    }

    /// Parses keys from text; `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Kek> = Vec::new();
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let malformed = |problem: &str| KeyError::Malformed {
                origin: origin.to_owned(),
                entry: index + 1,
                problem: problem.to_owned(),
            };
            let (id, encoded) = entry.split_once(':').ok_or_else(|| malformed("no `:` between id and key"))?;
            if !is_key_id(id) {
                return Err(malformed("the key id must be 1-64 letters, digits, `-`, `_` or `.`"));
            }
            let decoded = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(encoded.trim_end_matches('='))
                    .map_err(|_| malformed("the key is not base64url"))?,
            );
            let key: [u8; KEY_LEN] = decoded
                .as_slice()
                .try_into()
                .map_err(|_| malformed(&format!("the key must be {KEY_LEN} bytes, got {}", decoded.len())))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::DuplicateId(id.to_owned()));
            }
            keys.push(Kek { id: id.to_owned(), key: Zeroizing::new(key) });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(origin.to_owned()));
        }
        Ok(Self { keys, origin: origin.to_owned() })
    }

    /// The active key (the last one).
    pub fn active(&self) -> &Kek {
        // `parse` refuses an empty keyring, so there is always a last key.
        &self.keys[self.keys.len() - 1]
    }

    /// The key with `id`, if loaded.
    pub fn get(&self, id: &str) -> Option<&Kek> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Ids of every loaded key, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Where the keys came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

fn is_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A new random key as a key-file line; returns `(id, line)`.
pub fn new_key_line() -> Result<(String, Zeroizing<String>), KeyError> {
    let rng = SystemRandom::new();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(key.as_mut()).map_err(|_| KeyError::Random)?;
    let mut suffix = [0u8; 3];
    rng.fill(&mut suffix).map_err(|_| KeyError::Random)?;
    let seconds =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let id = format!("kek-{seconds}-{:02x}{:02x}{:02x}", suffix[0], suffix[1], suffix[2]);
    let line = Zeroizing::new(format!("{id}:{}\n", URL_SAFE_NO_PAD.encode(key.as_ref())));
    Ok((id, line))
}

const FILE_HEADER: &str = "# pullpass master keys. Keep secret (mode 0600) and back up separately from the database.\n\
# One key per line, `<key-id>:<base64url 32 bytes>`; the last key is active.\n";

/// Creates a new key file with one fresh key, mode 0600. Refuses to overwrite.
pub fn create_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |e| KeyError::Io(path.to_owned(), e);
    let (id, line) = new_key_line()?;
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(FILE_HEADER.as_bytes()).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_parent(path)?;
    Ok(id)
}

/// Appends a fresh key to an existing key file, making it the active key.
/// The file is replaced atomically (write, fsync, rename), keeping mode 0600.
pub fn append_key(path: &Path) -> Result<String, KeyError> {
    let io = |e| KeyError::Io(path.to_owned(), e);
    Keyring::load_file(path)?;
    let mut text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let (id, line) = new_key_line()?;
    text.push_str(&line);
    let temporary = path.with_extension("new");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, path).map_err(io)?;
    sync_parent(path)?;
    Ok(id)
}

fn sync_parent(path: &Path) -> Result<(), KeyError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(parent).and_then(|dir| dir.sync_all()).map_err(|e| KeyError::Io(parent.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_files_are_private_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = create_key_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let second = append_key(&path).unwrap();
        let ring = Keyring::load_file(&path).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![first.as_str(), second.as_str()]);
        assert_eq!(ring.active().id(), second);
        assert!(create_key_file(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn world_readable_or_group_writable_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        create_key_file(&path).unwrap();
        for mode in [0o644, 0o660, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = Keyring::load_file(&path).unwrap_err();
            assert!(matches!(error, KeyError::TooOpen { .. }), "{mode:o}");
            assert!(error.to_string().contains("chmod 600"));
        }
    }

    #[test]
    fn group_read_is_allowed_only_on_a_key_file_root_owns() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        create_key_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).unwrap();
        let owner = fs::metadata(&path).unwrap().uid();
        assert_eq!(Keyring::load_file(&path).is_ok(), owner == 0, "owner uid {owner}");
        if owner == 0 {
            // Handed to another user, group read is too open again.
            let chowned = std::process::Command::new("chown").arg("65534").arg(&path).status().unwrap();
            assert!(chowned.success());
            assert!(matches!(Keyring::load_file(&path), Err(KeyError::TooOpen { .. })));
        }
    }

    #[test]
    fn malformed_entries_are_reported_without_echoing_key_material() {
        let short = format!("k1:{}", URL_SAFE_NO_PAD.encode([7u8; 16]));
        let error = Keyring::parse(&short, "test").unwrap_err().to_string();
        assert!(error.contains("32 bytes, got 16"), "{error}");
        assert!(!error.contains(&URL_SAFE_NO_PAD.encode([7u8; 16])));
        assert!(matches!(Keyring::parse("# only a comment\n", "test"), Err(KeyError::Empty(_))));
        let key = URL_SAFE_NO_PAD.encode([1u8; 32]);
        assert!(matches!(Keyring::parse(&format!("a:{key},a:{key}"), "t"), Err(KeyError::DuplicateId(_))));
        assert_eq!(Keyring::parse(&format!("a:{key}, b:{key}"), "t").unwrap().active().id(), "b");
    }
}
