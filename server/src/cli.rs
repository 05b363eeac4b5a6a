//! The `pullpassd` command line (clap). Without a subcommand it serves.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{CommonArgs, ServeArgs};

/// pullpassd: the pullpass registry-credential broker.
///
/// Stores container-registry credentials sealed in SQLite and hands callers
/// short-lived, repository-scoped registry auth over gRPC. Without a
/// subcommand, it serves. Every option can also come from a PULLPASS_*
/// environment variable or a TOML file given with --config (flags win over
/// the environment, which wins over the file).
///
/// Quick start: `pullpassd --dev` creates ./pullpass-data with a key file and
/// a database, prints a root token once, and listens on 127.0.0.1:50051.
#[derive(Debug, Parser)]
#[command(name = "pullpassd", version, max_term_width = 100)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Options of the server.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A maintenance command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Maintenance commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage master keys (key-encryption keys).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a consistent copy of the live database to an SQLite file (the
    /// SQLite online backup, or a snapshot of the PostgreSQL database with
    /// --database-url). Safe while servers run. The master key is not
    /// included.
    ///
    /// The copy is written to a temporary file beside FILE, synced, then
    /// renamed over FILE: a backup that fails leaves FILE as it was. FILE
    /// is refused when it is (or a symlink or hard link leads to) the live
    /// database, its -wal, -shm or -journal file, the master key file, or
    /// the data directory.
    Backup {
        /// Destination file.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Replace the destination if it exists (once the new copy is
        /// complete).
        #[arg(long)]
        force: bool,
    },
    /// Manage root tokens offline.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Check or maintain the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Move an installation between databases.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Ask a server's grpc.health.v1 whether it is SERVING: exit status 0
    /// if so, 1 otherwise (for container and orchestrator probes).
    Healthcheck {
        /// The server: `HOST:PORT` (plaintext), or `https://HOST:PORT`.
        #[arg(value_name = "ADDR", default_value = "127.0.0.1:50051")]
        address: String,
        /// CA certificates (PEM) to verify a TLS server with (implies TLS).
        /// [default: the Mozilla roots]
        #[arg(long, value_name = "FILE")]
        tls_ca: Option<PathBuf>,
        /// The name the server's certificate must carry, when it differs
        /// from ADDR's host (a probe dialling 127.0.0.1 of a server whose
        /// certificate names its service).
        #[arg(long, value_name = "NAME")]
        tls_server_name: Option<String>,
        /// The service to ask about: `liveness` answers SERVING while the
        /// process serves at all (for liveness probes); the whole server
        /// also turns NOT_SERVING while shutting down or, on a replica,
        /// past --max-staleness (for readiness). [default: the whole server]
        #[arg(long, default_value = "")]
        service: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Check a configuration before serving it, writing nothing: the master
    /// key (file mode, and that it opens this database), the database
    /// (reachable, at a schema this binary knows; PostgreSQL too), the TLS
    /// files (load and match), the listeners (free) and the OIDC issuer
    /// URL. Takes the server's options (flags, PULLPASS_* variables or
    /// --config). Prints one line per check with a fix for each failure;
    /// exit status 1 if any failed.
    Doctor {
        /// The server's options, as `pullpassd` would serve them.
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
    /// Write man pages (pullpassd.1 and one per subcommand) into DIR.
    Man {
        /// Where to write them (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `pullpassd store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every workspace, credential (still sealed: no key needed),
    /// access token (hashes) and audit event (the chain stays verifiable)
    /// from one database into an empty one, from a consistent snapshot.
    /// Interrupted? Run the same command again: it resumes. Stop the
    /// servers using the source first, or changes made during the copy are
    /// not in it.
    ///
    /// Example: pullpassd store copy --from sqlite:/var/lib/pullpass/pullpass.db
    /// --to postgres://pullpass@db.internal/pullpass?sslmode=verify-full
    Copy {
        /// The source: `sqlite:PATH` or `postgres://…`.
        #[arg(long, value_name = "DATABASE")]
        from: String,
        /// The destination (created and migrated if needed; must be empty or
        /// an interrupted copy from the same source).
        #[arg(long, value_name = "DATABASE")]
        to: String,
        /// Rows per transaction.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
        /// Testing hook: abort after this many batches (simulates a crash).
        #[arg(long, hide = true)]
        fault_abort_after_batches: Option<usize>,
    },
}

/// `pullpassd audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of every audit event; report the first broken
    /// link (exit status 1) or the chain head.
    Verify,
    /// Print the chain head (sequence number and hash) as JSON, to anchor it
    /// outside pullpass (a ticket, a log service, a notary).
    Head,
    /// Delete events older than DAYS days; the chain stays verifiable.
    ///
    /// It never deletes a newer event and never leaves a gap in the chain:
    /// it deletes the events from the start of the chain up to the first
    /// one that is not older than the cutoff. Event times are not quite in
    /// sequence order (a group commit's events, replicas whose clocks
    /// differ), so a few older events that come after a newer one can stay;
    /// it prints how many, and a later prune deletes them.
    Prune {
        /// Retention in days.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..), required_unless_present = "older_than_seconds")]
        older_than_days: Option<u64>,
        /// Testing hook: retention in seconds.
        #[arg(long, hide = true)]
        older_than_seconds: Option<u64>,
    },
}

/// `pullpassd keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new key file (mode 0600) holding one fresh key.
    Generate,
    /// Append a fresh key to the key file; it becomes the active key for new
    /// secrets. Restart the server to load it, then run `keys rotate`.
    Add,
    /// Rewrap every stored data key under the active (last) master key, in
    /// batches, one transaction each. Interrupted? Run it again: it resumes.
    /// Safe while a server that has loaded the same keys runs.
    Rotate {
        /// Append a fresh key first (same as `keys add`).
        #[arg(long)]
        new_key: bool,
        /// Data keys per transaction.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
        batch_size: u16,
        /// Testing hook: abort after this many batches (simulates a crash).
        #[arg(long, hide = true)]
        fault_abort_after_batches: Option<usize>,
    },
    /// Add a new signing key for pullpass as an OIDC issuer (--issuer-url).
    /// It is published in the key set at once and signs federation tokens
    /// after --activate-in, so that clouds and every replica see it first;
    /// the key it replaces stays published until every token it signed has
    /// expired (15 minutes). Safe while servers run: they read the key set
    /// every 30 s.
    RotateSigning {
        /// Publish the new key this long before it signs: SECONDS, or a
        /// number with a unit (90s, 2m). 0 signs at once (a single server
        /// whose clouds refetch keys they do not know).
        #[arg(long, value_name = "SECONDS", default_value = "120", value_parser = parse_delay)]
        activate_in: std::time::Duration,
    },
    /// List loaded keys, the active one, and how many data keys each wraps.
    List,
    /// Open every stored secret and report those that cannot be opened
    /// (altered or moved ciphertext, missing key). Changes nothing.
    Verify,
}

/// `pullpassd tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Mint a root token (manages workspaces, mints ADMIN tokens) and print it
    /// once. For production set-ups where --dev is not used.
    CreateRoot {
        /// A note on who or what the token is for.
        #[arg(long, default_value = "created by pullpassd tokens create-root")]
        description: String,
        /// The token stops working this long after it is minted: SECONDS,
        /// as every duration flag takes, or a number with a unit (90s, 30m,
        /// 12h, 90d). [default: it does not expire]
        #[arg(long, value_name = "SECONDS", value_parser = parse_ttl)]
        ttl: Option<std::time::Duration>,
    },
    /// Revoke a root token: every server refuses it within a second (a
    /// running server on the same SQLite file, and every replica on
    /// PostgreSQL). Revoking the last usable one is allowed here (not over
    /// the API); mint the next with `tokens create-root`.
    RevokeRoot {
        /// The root token: its id, or `rootTokens/ID` (see `tokens
        /// list-root`).
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List root tokens: id, description, when each was created, expires
    /// and was revoked (never the token or its hash).
    ListRoot,
}

/// A delay: like [`parse_ttl`], and 0 allowed, at most a day.
fn parse_delay(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let delay = parse_ttl(text)?;
    if delay > std::time::Duration::from_secs(86_400) {
        return Err(format!("`{text}` is out of range: at most a day"));
    }
    Ok(delay)
}

/// Longest `--ttl`: 100 years.
const MAX_TTL_SECONDS: u64 = 100 * 365 * 86_400;

/// A duration: seconds, or a number followed by `s`, `m`, `h` or `d`;
/// at least a second, at most 100 years.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` is not a duration: use SECONDS or a number with s, m, h or d (as in 90d)")),
    };
    let amount: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration: use SECONDS or a number with s, m, h or d"))?;
    let seconds = amount.saturating_mul(scale);
    if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(format!("`{text}` is out of range: from 1 second to 100 years"));
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// Writes the man pages of `command` and its subcommands into `dir`;
/// returns the exit code.
pub fn write_man_pages(command: clap::Command, dir: &std::path::Path) -> i32 {
    let name = command.get_name().to_owned();
    let written = std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir));
    match written {
        Ok(()) => {
            println!("{name}: man pages written to {} (try: man -l {}/{name}.1)", dir.display(), dir.display());
            0
        }
        Err(e) => {
            eprintln!("{name}: cannot write man pages to {}: {e}", dir.display());
            1
        }
    }
}

/// The command line of this process. Server options given before a
/// subcommand are the server's, not the subcommand's: for `doctor`, whose
/// own options come after it, that is refused with a usage error rather
/// than silently checking another configuration than the one written.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches!(cli.command, Some(Command::Doctor { .. })) {
        let serve = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let before: Vec<String> = serve
            .get_arguments()
            .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        if !before.is_empty() {
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "{} before `doctor` would not be checked: put the server's options after it (`pullpassd doctor [OPTIONS]`, e.g. `pullpassd doctor --dev`)",
                        before.join(", ")
                    ),
                )
                .exit();
        }
    }
    cli
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_seconds_or_a_number_with_a_unit() {
        let secs = |t: &str| parse_ttl(t).map(|d| d.as_secs());
        assert_eq!(secs("2"), Ok(2));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("90d"), Ok(7_776_000));
        for bad in ["", "0", "1w", "-5", "1.5h", "h", "99999999999999999999", "36500000d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
