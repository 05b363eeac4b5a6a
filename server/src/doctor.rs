//! `pullpassd doctor`: checks a configuration before it serves, without
//! writing anything: the master key (its file's mode, that it opens the
//! database's secrets), the database (reachable, at a schema this binary
//! knows), the TLS files (certificate and key load and match), the
//! listeners (free), and the OIDC issuer URL. One line per check, a fix
//! under each failure, and a non-zero exit status if any failed, so it fits
//! an `ExecStartPre=` or an init container.

use std::net::{SocketAddr, TcpListener};

use crate::config::{KeySource, Settings};
use crate::seal::{Keyring, Sealer};
use crate::store::{self, Location};

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked ("master key").
    pub name: &'static str,
    /// What was found, when it passed.
    pub found: Result<String, Failure>,
}

/// A failed check: what is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Result<String, Failure> {
    Err(Failure { problem: problem.into(), fix: fix.into() })
}

/// Runs every check and prints one line per check (a fix under each
/// failure); true when all passed.
pub async fn run(settings: &Settings) -> bool {
    let checks = checks(settings).await;
    for check in &checks {
        match &check.found {
            Ok(found) => println!("ok    {}: {found}", check.name),
            Err(failure) => {
                println!("FAIL  {}: {}", check.name, failure.problem);
                println!("      fix: {}", failure.fix);
            }
        }
    }
    let failed = checks.iter().filter(|c| c.found.is_err()).count();
    if failed == 0 {
        println!("pullpassd doctor: {} checks passed", checks.len());
    } else {
        println!("pullpassd doctor: {failed} of {} checks failed", checks.len());
    }
    failed == 0
}

/// Every check, in order.
pub async fn checks(settings: &Settings) -> Vec<Check> {
    let (key_check, keyring) = master_key(settings);
    let mut checks = vec![Check { name: "master key", found: key_check }];
    checks.push(Check { name: "database", found: database(settings, keyring).await });
    checks.extend(tls(settings));
    checks.push(Check { name: "listeners", found: listeners(settings) });
    if let Some(issuer) = &settings.issuer {
        checks.push(Check {
            name: "issuer",
            found: Ok(format!(
                "{} (clouds fetch {}/.well-known/openid-configuration and the keys it names: that URL must reach this server's gateway or --issuer-listen)",
                issuer.url.as_str(),
                issuer.url.as_str().trim_end_matches('/')
            )),
        });
    }
    checks
}

fn master_key(settings: &Settings) -> (Result<String, Failure>, Option<Keyring>) {
    match &settings.keys {
        KeySource::File(path) if settings.dev && !path.exists() => {
            (Ok(format!("{} does not exist yet; --dev creates it", path.display())), None)
        }
        KeySource::File(path) => match Keyring::load_file(path) {
            Ok(keyring) => {
                let ids: Vec<&str> = keyring.ids().collect();
                (Ok(format!("{} opens, mode private, key ids {}", path.display(), ids.join(", "))), Some(keyring))
            }
            Err(e) => {
                let fix = match &e {
                    crate::seal::KeyError::TooOpen { .. } => format!("chmod 600 {}", path.display()),
                    _ if !path.exists() => format!("pullpassd keys generate --key-file {}", path.display()),
                    _ => "restore the key file from its backup (without it the stored secrets cannot be opened)".into(),
                };
                (fail(e.to_string(), fix), None)
            }
        },
        KeySource::Environment => {
            let text = zeroize::Zeroizing::new(std::env::var(crate::config::MASTER_KEY_ENV).unwrap_or_default());
            match Keyring::parse(&text, crate::config::MASTER_KEY_ENV) {
                Ok(keyring) => (Ok(format!("{} parses", crate::config::MASTER_KEY_ENV)), Some(keyring)),
                Err(e) => (
                    fail(
                        e.to_string(),
                        format!(
                            "put the text of a key file made by `pullpassd keys generate` in {}",
                            crate::config::MASTER_KEY_ENV
                        ),
                    ),
                    None,
                ),
            }
        }
        KeySource::None => (
            fail(
                "no master key is configured",
                "pullpassd keys generate --key-file /etc/pullpass/master.key, then pass --key-file (or PULLPASS_KEY_FILE)",
            ),
            None,
        ),
    }
}

async fn database(settings: &Settings, keyring: Option<Keyring>) -> Result<String, Failure> {
    let location = &settings.database;
    let known = match location {
        Location::Sqlite(_) => store::sqlite::SCHEMA_VERSION,
        Location::Postgres(_) => store::postgres::SCHEMA_VERSION,
    };
    // A PostgreSQL that accepts the connection and never answers (a hung
    // server, a proxy whose backend is gone) passes the connect timeout:
    // the whole inspection gets the URL's query_timeout.
    let inspected = match location {
        Location::Postgres(config) => {
            tokio::time::timeout(config.query_timeout, store::inspect(location)).await.unwrap_or_else(|_| {
                Err(store::StoreError::Unreachable(format!(
                    "no answer within {} s (the URL's query_timeout)",
                    config.query_timeout.as_secs()
                )))
            })
        }
        Location::Sqlite(_) => store::inspect(location).await,
    };
    let facts = match inspected {
        Ok(Some(facts)) => facts,
        Ok(None) => {
            return Ok(format!("{}: no database yet; it is created at start (schema {known})", location.describe()));
        }
        Err(store::StoreError::TooNew { found, supported }) => {
            return fail(
                format!("{}: schema {found} is newer than this binary knows ({supported})", location.describe()),
                "run the pullpassd release that wrote it (or newer); never downgrade a database in place",
            );
        }
        Err(e) => {
            let fix = match location {
                Location::Postgres(_) => {
                    "check that PostgreSQL runs and answers, and --database-url (host, port, database, user) and --database-password-file"
                }
                Location::Sqlite(_) => {
                    "check --data-dir and the file's owner and mode (the server's user must read and write it)"
                }
            };
            return fail(format!("{}: {e}", location.describe()), fix);
        }
    };
    let version = facts.schema_version;
    if version == 0 {
        return Ok(format!("{}: empty; the schema ({known}) is created at start", location.describe()));
    }
    if version > known {
        return fail(
            format!("{}: schema {version} is newer than this binary knows ({known})", location.describe()),
            "run the pullpassd release that wrote it (or newer); never downgrade a database in place",
        );
    }
    if let Some(keyring) = keyring
        && let Err(e) = crate::startup::verify_keys(&facts, &Sealer::new(keyring))
    {
        // The start-up wording ("refusing to start") does not fit a check.
        let problem = e.0.replace("; refusing to start, nothing was written", "").replace("; refusing to start", "");
        return fail(
            problem,
            "pass the key file this database was sealed with (--key-file); `pullpassd keys list` shows the ids it needs",
        );
    }
    if version < known {
        Ok(format!(
            "{}: schema {version}; this binary migrates it to {known} at start (take a backup first: pullpassd backup --to FILE)",
            location.describe()
        ))
    } else {
        Ok(format!("{}: schema {version}, current", location.describe()))
    }
}

fn tls(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |name: &'static str, files: &crate::config::TlsFiles| {
        let found = match crate::tls::ReloadableTls::load(files) {
            Ok(_) => Ok(format!("{} and {} load and match", files.cert.display(), files.key.display())),
            Err(e) => fail(
                e,
                "give a PEM certificate chain and the PEM private key it was issued for (the first certificate must be the server's)",
            ),
        };
        checks.push(Check { name, found });
    };
    if let Some(files) = &settings.tls {
        check("gRPC TLS", files);
    }
    if let Some(files) = settings.gateway.as_ref().and_then(|g| g.tls.as_ref()) {
        check("gateway TLS", files);
    }
    checks
}

fn listeners(settings: &Settings) -> Result<String, Failure> {
    let mut wanted: Vec<(&str, SocketAddr)> = vec![("--listen", settings.listen)];
    wanted.extend(settings.gateway.as_ref().map(|g| ("--gateway-listen", g.listen)));
    wanted.extend(settings.metrics_listen.map(|a| ("--metrics-listen", a)));
    wanted.extend(settings.console.as_ref().map(|c| ("--console-listen", c.listen)));
    wanted.extend(settings.issuer.as_ref().and_then(|i| i.listen).map(|a| ("--issuer-listen", a)));
    let mut busy = Vec::new();
    let mut held = Vec::new();
    for (flag, address) in &wanted {
        if address.port() == 0 {
            continue;
        }
        match TcpListener::bind(address) {
            Ok(listener) => held.push(listener),
            Err(e) => busy.push(format!("{flag} {address}: {e}")),
        }
    }
    drop(held);
    if busy.is_empty() {
        let all: Vec<String> = wanted.iter().map(|(_, a)| a.to_string()).collect();
        Ok(format!("free: {}", all.join(", ")))
    } else {
        fail(
            busy.join("; "),
            "stop what holds the port (another pullpassd? `ss -ltnp` names it) or choose another address with the flag",
        )
    }
}
