//! `pullpassd doctor`, run as an operator runs it: against a key file made by
//! `pullpassd keys generate`, a data directory (fresh, or holding a database
//! a real server created), real TLS files, real listeners and a real
//! PostgreSQL. A good configuration passes with exit status 0 and every line
//! `ok`; each broken part fails on its own line with the fix it needs, exit
//! status 1, within a bounded time, and doctor writes nothing.
//!
//! And `pullpassd --dev`'s last lines, the three things to try: run as
//! printed (through bash, with the root token exported as PULLPASS_TOKEN),
//! each works; over TLS too, for a machine that trusts the certificate.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pullpass_tests::gateway::http_client;
use pullpass_tests::postgres::Database;
use pullpass_tests::registry::private_ca;
use pullpass_tests::replicas::free_port;
use pullpass_tests::{Options, Pullpassd, binary, eventually, grpcurl};
use tempfile::TempDir;

/// Longest any doctor run may take here: its slowest check is a database
/// that does not answer, bounded by the URL's `query_timeout`.
const DOCTOR_LIMIT: Duration = Duration::from_secs(60);

/// What one `pullpassd doctor` run printed.
#[derive(Debug)]
struct Report {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Report {
    /// The line of check `name` (`ok    NAME: …` or `FAIL  NAME: …`).
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(&format!("ok    {name}: ")) || l.starts_with(&format!("FAIL  {name}: ")))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{self}"))
    }

    /// The text after `ok    NAME: ` (panics when that check failed).
    fn passed(&self, name: &str) -> &str {
        let line = self.line(name);
        line.strip_prefix(&format!("ok    {name}: ")).unwrap_or_else(|| panic!("`{name}` should pass:\n{self}"))
    }

    /// The problem and the fix of failed check `name` (panics when it
    /// passed).
    fn failed(&self, name: &str) -> (&str, &str) {
        let line = self.line(name);
        let problem =
            line.strip_prefix(&format!("FAIL  {name}: ")).unwrap_or_else(|| panic!("`{name}` should fail:\n{self}"));
        let fix = self
            .stdout
            .lines()
            .skip_while(|l| *l != line)
            .nth(1)
            .and_then(|l| l.strip_prefix("      fix: "))
            .unwrap_or_else(|| panic!("no fix under `{name}`:\n{self}"));
        (problem, fix)
    }

    /// The last line, the summary.
    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} after {:?}]\n{}{}", self.status, self.took, self.stdout, self.stderr)
    }
}

/// Runs `pullpassd doctor ARGS` with none of this process's PULLPASS_*
/// variables (nor a systemd credentials directory), for at most
/// [`DOCTOR_LIMIT`].
fn doctor(args: &[&str]) -> Report {
    let mut command = Command::new(binary("pullpassd"));
    command.arg("doctor").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PULLPASS_") {
            command.env_remove(name);
        }
    }
    command.env_remove("CREDENTIALS_DIRECTORY").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn pullpassd doctor");
    loop {
        if child.try_wait().expect("wait for doctor").is_some() {
            break;
        }
        if started.elapsed() > DOCTOR_LIMIT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("doctor's output");
            panic!(
                "pullpassd doctor {args:?} still ran after {DOCTOR_LIMIT:?}; it printed:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let output = child.wait_with_output().expect("doctor's output");
    Report {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took,
    }
}

/// Asserts a run failed (exit status 1) with `failed` of its checks.
fn assert_failed(report: &Report, failed: usize) {
    assert_eq!(report.status.code(), Some(1), "{report}");
    assert!(report.summary().starts_with(&format!("pullpassd doctor: {failed} of ")), "{report}");
    assert_eq!(report.stdout.lines().filter(|l| l.starts_with("FAIL  ")).count(), failed, "{report}");
}

/// A new master key file at `path`, made the way the docs say.
fn generate_key(path: &Path) -> String {
    let out = Command::new(binary("pullpassd"))
        .args(["keys", "generate", "--key-file"])
        .arg(path)
        .env_remove("PULLPASS_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run pullpassd keys generate");
    assert!(out.status.success(), "keys generate: {out:?}");
    // "created master key file … with active key `kek-…`"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('`').nth(1).unwrap_or_else(|| panic!("no key id in {text}")).to_owned()
}

/// A home directory with a key file (`master.key`) and the path of a data
/// directory in it (not created).
fn home_with_key() -> (TempDir, PathBuf, PathBuf, String) {
    let home = tempfile::Builder::new().prefix("pullpass-doctor-").tempdir().expect("temp dir");
    let key = home.path().join("master.key");
    let id = generate_key(&key);
    let data = home.path().join("data");
    (home, key, data, id)
}

/// Starts a dev server in `home` with `key`, so it creates its database;
/// stops it. Returns its PostgreSQL database when on PostgreSQL.
fn create_database(home: &Path, key: &Path) -> Option<Database> {
    let mut server = Pullpassd::start_with(Options {
        home: Some(home.to_owned()),
        args: vec!["--key-file".into(), key.display().to_string()],
        ..Default::default()
    })
    .unwrap_or_else(|f| panic!("pullpassd did not start: {f:?}"));
    // SIGTERM before the server answers can kill it before its signal
    // handler is installed: stop it once it serves.
    server.block_until_serving();
    assert!(server.stop(), "pullpassd stops cleanly: {}", server.logs());
    server.database.clone()
}

/// `--database-url URL --database-password-file FILE` for `database`.
fn database_args(database: Option<&Database>) -> Vec<String> {
    database.map_or_else(Vec::new, |db| {
        vec![
            "--database-url".into(),
            db.url.clone(),
            "--database-password-file".into(),
            db.password_file.display().to_string(),
        ]
    })
}

/// Every file under `dir` with its size and modification time.
fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
        } else {
            files.insert(path, (meta.len(), meta.modified().expect("mtime")));
        }
    }
    files
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn a_good_configuration_passes_every_check_with_exit_status_zero_and_changes_no_file() {
    let (home, key, data, key_id) = home_with_key();
    let database = create_database(home.path(), &key);
    let (_pki, _ca, cert, tls_key) = private_ca();
    let ports: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut args: Vec<String> = [
        "--data-dir",
        data.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--listen",
        &ports[0],
        "--gateway-listen",
        &ports[1],
        "--metrics-listen",
        &ports[2],
        "--console-listen",
        &ports[3],
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        tls_key.to_str().unwrap(),
        "--issuer-url",
        "https://pullpass.example",
    ]
    .map(String::from)
    .into();
    args.extend(database_args(database.as_ref()));
    let before = listing(home.path());

    let report = doctor(&strings(&args));

    assert_eq!(report.status.code(), Some(0), "{report}");
    let (checks, summary) = report.stdout.trim_end().rsplit_once('\n').expect("checks and a summary");
    assert!(checks.lines().all(|l| l.starts_with("ok    ")), "every line is ok:\n{report}");
    assert_eq!(summary, "pullpassd doctor: 6 checks passed", "{report}");
    assert!(report.passed("master key").contains(&key_id), "{report}");
    assert!(report.passed("database").ends_with(", current"), "{report}");
    assert!(report.passed("gRPC TLS").contains("load and match"), "{report}");
    assert!(report.passed("gateway TLS").contains("load and match"), "{report}");
    assert!(ports.iter().all(|p| report.passed("listeners").contains(p.as_str())), "{report}");
    assert!(report.passed("issuer").starts_with("https://pullpass.example"), "{report}");
    assert_eq!(listing(home.path()), before, "doctor changes no file (database, WAL, key)");
}

#[test]
fn a_fresh_data_dir_passes_as_no_database_yet_and_doctor_leaves_nothing_behind() {
    let (home, key, data, _) = home_with_key();
    let listen = format!("127.0.0.1:{}", free_port());
    let report =
        doctor(&["--data-dir", data.to_str().unwrap(), "--key-file", key.to_str().unwrap(), "--listen", &listen]);
    assert_eq!(report.status.code(), Some(0), "{report}");
    assert!(report.passed("database").contains("no database yet; it is created at start"), "{report}");
    assert_eq!(report.passed("listeners"), format!("free: {listen}"), "{report}");
    assert!(!data.exists(), "doctor created {}", data.display());

    // --dev, whose key file does not exist yet either: still nothing written.
    let dev_data = home.path().join("dev-data");
    let report = doctor(&[
        "--dev",
        "--data-dir",
        dev_data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--console-listen",
        "off",
    ]);
    assert_eq!(report.status.code(), Some(0), "{report}");
    assert!(report.passed("master key").contains("does not exist yet; --dev creates it"), "{report}");
    assert!(report.passed("database").contains("no database yet"), "{report}");
    assert!(!dev_data.exists(), "doctor --dev created {}", dev_data.display());
    let left: Vec<_> = listing(home.path()).into_keys().collect();
    assert_eq!(left, vec![key], "only the key file is in the home directory");
}

#[test]
fn a_key_file_readable_by_others_fails_with_chmod_600() {
    use std::os::unix::fs::PermissionsExt;
    let (_home, key, data, _) = home_with_key();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report =
        doctor(&["--data-dir", data.to_str().unwrap(), "--key-file", key.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_failed(&report, 1);
    let (problem, fix) = report.failed("master key");
    assert!(problem.contains("mode 644"), "{report}");
    assert_eq!(fix, format!("chmod 600 {}", key.display()), "{report}");
    assert_eq!(report.summary(), "pullpassd doctor: 1 of 3 checks failed", "{report}");
}

#[test]
fn a_missing_key_file_fails_with_the_command_that_makes_one() {
    let (_home, key, data, _) = home_with_key();
    let missing = key.with_file_name("missing.key");
    let report = doctor(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--key-file",
        missing.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_failed(&report, 1);
    let (problem, fix) = report.failed("master key");
    assert!(problem.contains("does not exist"), "{report}");
    assert_eq!(fix, format!("pullpassd keys generate --key-file {}", missing.display()), "{report}");

    // No key at all (no --dev, no file, no variable) says how to get one.
    let report = doctor(&["--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_failed(&report, 1);
    let (problem, fix) = report.failed("master key");
    assert_eq!(problem, "no master key is configured", "{report}");
    assert!(fix.starts_with("pullpassd keys generate --key-file "), "{report}");
}

#[test]
fn the_wrong_key_file_for_an_existing_database_fails_naming_the_key_it_needs() {
    let (home, key, data, key_id) = home_with_key();
    let database = create_database(home.path(), &key);
    let other = home.path().join("other.key");
    let other_id = generate_key(&other);
    let mut args: Vec<String> =
        ["--data-dir", data.to_str().unwrap(), "--key-file", other.to_str().unwrap(), "--listen", "127.0.0.1:0"]
            .map(String::from)
            .into();
    args.extend(database_args(database.as_ref()));

    let report = doctor(&strings(&args));

    assert_failed(&report, 1);
    assert!(report.passed("master key").contains(&other_id), "the key file itself is fine:\n{report}");
    let (problem, fix) = report.failed("database");
    assert!(problem.contains(&format!("master key `{key_id}`")) && problem.contains("wrong key file"), "{report}");
    assert!(fix.contains("--key-file") && fix.contains("pullpassd keys list"), "{report}");
    // And the server agrees: it refuses to start with that key.
    let refused = Pullpassd::start_with(Options {
        home: Some(home.path().to_owned()),
        args: vec!["--key-file".into(), other.display().to_string()],
        database,
        ..Default::default()
    })
    .expect_err("pullpassd must not start with the wrong key");
    assert!(refused.stderr.contains(&key_id), "{refused:?}");
}

#[test]
fn a_database_with_a_newer_schema_fails_saying_it_is_newer() {
    let (home, key, data, _) = home_with_key();
    let database = create_database(home.path(), &key);
    match &database {
        Some(db) => {
            db.sql("UPDATE pullpass_schema SET version = 999");
        }
        None => {
            let conn = rusqlite::Connection::open(data.join("pullpass.db")).expect("open the database");
            conn.pragma_update(None, "user_version", 999).expect("set user_version");
        }
    }
    let mut args: Vec<String> =
        ["--data-dir", data.to_str().unwrap(), "--key-file", key.to_str().unwrap(), "--listen", "127.0.0.1:0"]
            .map(String::from)
            .into();
    args.extend(database_args(database.as_ref()));

    let report = doctor(&strings(&args));

    assert_failed(&report, 1);
    let (problem, fix) = report.failed("database");
    assert!(problem.contains("schema 999 is newer than this binary knows"), "{report}");
    assert!(fix.contains("never downgrade"), "{report}");
}

#[test]
fn a_busy_listener_fails_naming_its_flag_and_address() {
    let (_home, key, data, _) = home_with_key();
    let grpc = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let (grpc, metrics) = (grpc.local_addr().unwrap().to_string(), metrics.local_addr().unwrap().to_string());
    let gateway = format!("127.0.0.1:{}", free_port());

    let report = doctor(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--listen",
        &grpc,
        "--metrics-listen",
        &metrics,
        "--gateway-listen",
        &gateway,
    ]);

    assert_failed(&report, 1);
    let (problem, fix) = report.failed("listeners");
    assert!(problem.contains(&format!("--listen {grpc}: ")), "{report}");
    assert!(problem.contains(&format!("--metrics-listen {metrics}: ")), "{report}");
    assert!(!problem.contains(&gateway), "the free gateway address is not blamed:\n{report}");
    assert!(fix.contains("choose another address"), "{report}");
}

#[test]
fn a_certificate_and_a_private_key_that_do_not_match_fail_the_tls_check() {
    let (_home, key, data, _) = home_with_key();
    let (_one, _, cert, _) = private_ca();
    let (_other, _, other_cert, other_key) = private_ca();
    let report = doctor(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other_key.to_str().unwrap(),
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-tls-cert",
        other_cert.to_str().unwrap(),
        "--gateway-tls-key",
        other_key.to_str().unwrap(),
    ]);
    assert_failed(&report, 1);
    let (problem, fix) = report.failed("gRPC TLS");
    assert!(problem.contains(cert.to_str().unwrap()) && problem.contains("do not fit"), "{report}");
    assert!(fix.contains("private key it was issued for"), "{report}");
    assert!(report.passed("gateway TLS").contains("load and match"), "each pair is checked on its own:\n{report}");
}

#[test]
fn a_configuration_that_does_not_resolve_fails_as_configuration() {
    let report = doctor(&["--metrics-listen", "nine-four-six-four"]);
    assert_eq!(report.status.code(), Some(1), "{report}");
    let (problem, fix) = report.failed("configuration");
    assert!(problem.starts_with("--metrics-listen `nine-four-six-four` is not an address"), "{report}");
    assert!(fix.contains("pullpassd doctor --help"), "{report}");
}

#[test]
fn an_unreachable_postgresql_fails_within_a_bounded_time() {
    let (_home, key, _data, _) = home_with_key();
    // Nothing listens on a port just freed: refused at once.
    let closed = format!("postgres://pullpass@127.0.0.1:{}/x?sslmode=disable", free_port());
    let report = doctor(&["--key-file", key.to_str().unwrap(), "--listen", "127.0.0.1:0", "--database-url", &closed]);
    assert_failed(&report, 1);
    let (problem, fix) = report.failed("database");
    assert!(problem.contains("cannot be reached"), "{report}");
    assert!(fix.contains("--database-url"), "{report}");
    assert!(report.took < Duration::from_secs(10), "took {:?}", report.took);

    // A port that accepts connections and never answers (a hung server or
    // proxy): bounded by the URL's query_timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("postgres://pullpass@{}/x?sslmode=disable&query_timeout=2", silent.local_addr().unwrap());
    let report = doctor(&["--key-file", key.to_str().unwrap(), "--listen", "127.0.0.1:0", "--database-url", &silent]);
    assert_failed(&report, 1);
    let (problem, _) = report.failed("database");
    assert!(problem.contains("no answer within 2 s"), "{report}");
    assert!(report.took < Duration::from_secs(10), "a silent database took {:?}:\n{report}", report.took);
}

#[test]
fn a_reachable_postgresql_database_passes_before_and_after_the_server_creates_its_schema() {
    let (home, key, _data, key_id) = home_with_key();
    let database = Database::fresh();
    let mut args: Vec<String> =
        ["--key-file", key.to_str().unwrap(), "--listen", "127.0.0.1:0"].map(String::from).into();
    args.extend(database_args(Some(&database)));

    let empty = doctor(&strings(&args));
    assert_eq!(empty.status.code(), Some(0), "{empty}");
    assert!(empty.passed("database").starts_with("postgres://pullpass@127.0.0.1:"), "{empty}");
    assert!(!empty.passed("database").contains(&database.password), "the password is never shown:\n{empty}");
    assert_eq!(
        database.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").trim(),
        "0",
        "nothing written"
    );

    let mut server = Pullpassd::start_with(Options {
        home: Some(home.path().to_owned()),
        args: vec!["--key-file".into(), key.display().to_string()],
        database: Some(database.clone()),
        ..Default::default()
    })
    .unwrap_or_else(|f| panic!("pullpassd did not start on PostgreSQL: {f:?}"));
    server.block_until_serving();
    assert!(server.stop(), "pullpassd stops cleanly: {}", server.logs());
    let created = doctor(&strings(&args));
    assert_eq!(created.status.code(), Some(0), "{created}");
    assert!(created.passed("database").ends_with(", current"), "{created}");
    assert!(created.passed("master key").contains(&key_id), "{created}");

    // The wrong key for this PostgreSQL database fails as it does on SQLite.
    let other = home.path().join("other.key");
    generate_key(&other);
    args[1] = other.display().to_string();
    let wrong = doctor(&strings(&args));
    assert_failed(&wrong, 1);
    assert!(wrong.failed("database").0.contains(&key_id), "{wrong}");
}

/// Runs `script` with bash the way a person pastes it into a shell: with
/// grpcurl on the PATH and none of this process's PULLPASS_* variables.
fn bash(script: &str) -> std::process::Output {
    bash_with(script, &[])
}

/// [`bash`] with more environment variables.
fn bash_with(script: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let tools = tempfile::Builder::new().prefix("pullpass-path-").tempdir().expect("temp dir");
    std::os::unix::fs::symlink(grpcurl(), tools.path().join("grpcurl")).expect("grpcurl on the PATH");
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).env("PATH", path).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PULLPASS_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run bash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_start_up_ends_with_three_lines_to_try_that_work_as_printed() {
    let server = Pullpassd::start();
    pullpass_tests::create_workspace(&server.client().await, "acme").await;
    // They follow `serving on`: wait until the last one is out.
    let stdout = eventually("--dev's lines to try", Duration::from_secs(20), || {
        let out = server.stdout();
        let done = out.ends_with('\n') && out.lines().last().is_some_and(|l| l.starts_with("  curl "));
        std::future::ready(done.then_some(out))
    })
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    let serving = lines.iter().position(|l| l.starts_with("pullpassd: serving on ")).expect("serving line");
    let tail = &lines[serving + 1..];
    assert_eq!(tail.len(), 4, "the output ends with a heading and three lines:\n{stdout}");
    assert_eq!(
        tail[0], "pullpassd: try next, in another shell, with the root token above exported as PULLPASS_TOKEN:",
        "{stdout}"
    );
    let token_line = lines[..serving]
        .iter()
        .find(|l| l.starts_with("PULLPASS_TOKEN="))
        .unwrap_or_else(|| panic!("the root token is above:\n{stdout}"));
    let (grpcurl_line, console_line, curl_line) = (tail[1].trim(), tail[2].trim(), tail[3].trim());
    assert!(grpcurl_line.starts_with("grpcurl ") && grpcurl_line.contains(&server.address), "{stdout}");
    assert!(console_line.starts_with(&server.console), "{stdout}");
    assert!(curl_line.starts_with("curl ") && curl_line.contains(&server.gateway), "{stdout}");

    // The grpcurl line, pasted after `export PULLPASS_TOKEN=…`.
    let listed = bash(&format!("export {token_line}\n{grpcurl_line}"));
    assert!(listed.status.success(), "{grpcurl_line}: {listed:?}");
    let answer: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("grpcurl prints JSON");
    assert_eq!(answer["workspaces"][0]["name"], "workspaces/acme", "{answer}");
    // (It is the token that lets it in.)
    let anonymous = bash(grpcurl_line);
    assert!(!anonymous.status.success(), "without PULLPASS_TOKEN: {anonymous:?}");
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("Unauthenticated"), "{anonymous:?}");

    // The console URL answers a browser with HTML: the console, or a
    // redirect to its sign-in page.
    let url = console_line.split_whitespace().next().unwrap();
    let http = http_client();
    let mut response = http.get(url).send().await.expect("GET the console");
    if response.status().is_redirection() {
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("login") || location.contains("sign"), "redirected to {location}");
        let next = reqwest::Url::parse(url).unwrap().join(&location).unwrap();
        response = http.get(next).send().await.expect("GET the sign-in page");
    }
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(response.text().await.unwrap().contains("<html"), "{url} answers a page");

    // The curl line prints the gateway's `{}`.
    let answered = bash(&format!("export {token_line}\n{curl_line}"));
    assert!(answered.status.success(), "{curl_line}: {answered:?}");
    assert_eq!(String::from_utf8_lossy(&answered.stdout), "{}", "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_over_tls_prints_lines_to_try_that_use_tls() {
    let (_pki, ca, cert, key) = private_ca();
    let server = Pullpassd::start_with(Options {
        args: vec!["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()],
        ..Default::default()
    })
    .unwrap_or_else(|f| panic!("pullpassd did not start: {f:?}"));
    let stdout = eventually("--dev's lines to try", Duration::from_secs(20), || {
        let out = server.stdout();
        let done = out.ends_with('\n') && out.lines().last().is_some_and(|l| l.starts_with("  curl "));
        std::future::ready(done.then_some(out))
    })
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    let token_line = lines.iter().find(|l| l.starts_with("PULLPASS_TOKEN=")).expect("the root token");
    let [grpcurl_line, console_line, curl_line] = [3, 2, 1].map(|back| lines[lines.len() - back].trim());
    assert!(!grpcurl_line.contains("-plaintext") && grpcurl_line.contains("-cacert"), "{stdout}");
    assert!(console_line.starts_with("https://"), "{stdout}");
    assert!(curl_line.contains(&format!("https://{}/v2/", server.gateway)), "{stdout}");

    // As printed, by someone whose machine trusts the CA (Go's grpcurl reads
    // SSL_CERT_FILE, curl CURL_CA_BUNDLE).
    let trusted = [("SSL_CERT_FILE", ca.as_path()), ("CURL_CA_BUNDLE", ca.as_path())];
    let listed = bash_with(&format!("export {token_line}\n{grpcurl_line}"), &trusted);
    assert!(listed.status.success(), "{grpcurl_line}: {listed:?}");
    let answer: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("grpcurl prints JSON");
    assert_eq!(answer, serde_json::json!({}), "no workspaces yet");
    let console_url = console_line.split_whitespace().next().unwrap();
    let page = bash_with(&format!("curl -sS -o /dev/null -w '%{{http_code}}' '{console_url}'"), &trusted);
    let code = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(code == "200" || code.starts_with('3'), "GET {console_url}: {page:?}");
    let answered = bash_with(&format!("export {token_line}\n{curl_line}"), &trusted);
    assert!(answered.status.success(), "{curl_line}: {answered:?}");
    assert_eq!(String::from_utf8_lossy(&answered.stdout), "{}", "{answered:?}");
}

#[test]
fn server_options_before_doctor_are_refused_rather_than_silently_left_unchecked() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(binary("pullpassd"))
        .args(["--dev", "--listen", "127.0.0.1:0", "doctor"])
        .current_dir(home.path())
        .env_remove("PULLPASS_DEV")
        .stdin(Stdio::null())
        .output()
        .expect("run pullpassd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dev, --listen before `doctor` would not be checked"), "{stderr}");
    assert!(stderr.contains("pullpassd doctor --dev"), "{stderr}");
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "nothing was written");
}
