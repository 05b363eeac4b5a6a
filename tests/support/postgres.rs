//! Real PostgreSQL 15 for the tests (Debian's `postgresql-15`, installed by
//! `scripts/install-test-deps.sh`): a private cluster started with
//! `initdb`/`pg_ctl` as the `postgres` user, on a free loopback port and a
//! private socket directory, password (SCRAM) authentication.
//!
//! `scripts/test.sh` starts one cluster for the whole run and exports its
//! admin URL as `PULLPASS_TEST_POSTGRES` (with the password in
//! `PULLPASS_TEST_POSTGRES_PASSWORD_FILE`); each test then gets its own fresh
//! database in it. Without it (a test run by hand), [`Database::fresh`]
//! starts a cluster that lives as long as the database handle. Tests that stop the server
//! ([`Cluster::start`]) always get a cluster of their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tempfile::TempDir;

/// The binaries of Debian's PostgreSQL 15.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role the tests connect as.
pub const USER: &str = "pullpass";
/// Set to `postgres` to run the end-to-end tests' servers on PostgreSQL.
pub const BACKEND_ENV: &str = "PULLPASS_TEST_BACKEND";

/// Should servers started by the test support use PostgreSQL?
pub fn selected() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v == "postgres")
}

/// A private PostgreSQL cluster; stopped (immediately) when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's files (data dir, socket dir, log, password file).
    pub dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The password of [`USER`].
    pub password: String,
    /// A file holding the password (for `--database-password-file`).
    pub password_file: PathBuf,
    _temp: TempDir,
}

fn as_postgres(command: &str) -> Command {
    let mut c = if is_root() {
        let mut su = Command::new("su");
        su.args(["postgres", "-s", "/bin/sh", "-c", command]);
        su
    } else {
        let mut sh = Command::new("sh");
        sh.args(["-c", command]);
        sh
    };
    c.stdin(Stdio::null());
    c
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Cluster {
    /// Creates and starts a cluster (fsync off unless `durable`).
    pub fn start_with(durable: bool) -> Self {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed: run scripts/install-test-deps.sh"
        );
        let temp = tempfile::Builder::new().prefix("pullpass-pg-").tempdir_in("/tmp").expect("temp dir");
        let dir = temp.path().to_owned();
        let mut password = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut password).expect("random");
        let password: String = password.iter().map(|b| format!("{b:02x}")).collect();
        let password_file = dir.join("password");
        std::fs::write(&password_file, format!("{password}\n")).expect("password file");
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&dir);
            run(chown, "chown the cluster dir");
        }
        let data = dir.join("data");
        run(
            as_postgres(&format!(
                "{BIN}/initdb -D {} -U {USER} -A scram-sha-256 --pwfile={} -E UTF8 --no-sync >/dev/null",
                data.display(),
                password_file.display()
            )),
            "initdb",
        );
        let cluster = Self { dir, port: free_port(), password, password_file, _temp: temp };
        cluster.pg_ctl_start(durable);
        cluster
    }

    /// A cluster for tests that do not test durability.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    fn pg_ctl_start(&self, durable: bool) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync={} -c synchronous_commit={} -c full_page_writes={}",
            self.port,
            self.dir.display(),
            if durable { "on" } else { "off" },
            if durable { "on" } else { "off" },
            if durable { "on" } else { "off" },
        );
        run(
            as_postgres(&format!(
                "{BIN}/pg_ctl -D {} -l {} -w -t 30 -o '{options}' start >/dev/null",
                self.dir.join("data").display(),
                self.dir.join("server.log").display()
            )),
            "pg_ctl start",
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        run(
            as_postgres(&format!("{BIN}/pg_ctl -D {} -m fast -w stop >/dev/null", self.dir.join("data").display())),
            "pg_ctl stop",
        );
    }

    /// Starts it again after [`Cluster::stop`], on the same port.
    pub fn resume(&self) {
        self.pg_ctl_start(false);
    }

    /// The URL of database `db` (without the password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// Creates a fresh database; returns its URL.
    pub fn create_database(&self) -> String {
        create_database(&self.url("postgres"), &self.password)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&format!("{BIN}/pg_ctl -D {} -m immediate -w stop", self.dir.join("data").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A connection string for `psql` from our URL and password.
fn psql(url: &str, password: &str, sql: &str) -> std::process::Output {
    let url = url.replace("?sslmode=disable", "");
    Command::new(Path::new(BIN).join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d", &url, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

fn create_database(admin_url: &str, password: &str) -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("random");
    let name: String = std::iter::once("t_".to_owned()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
    let out = psql(admin_url, password, &format!("CREATE DATABASE {name}"));
    assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    admin_url.replacen("/postgres?", &format!("/{name}?"), 1)
}

/// One test's database: a fresh database in the run's cluster (or in a
/// cluster of this process).
#[derive(Debug, Clone)]
pub struct Database {
    /// `postgres://pullpass@127.0.0.1:PORT/t_…?sslmode=disable`.
    pub url: String,
    /// The password.
    pub password: String,
    /// A file holding it.
    pub password_file: PathBuf,
    /// The cluster's files (data and WAL), when known.
    pub cluster_dir: Option<PathBuf>,
    _own: Option<Arc<Cluster>>,
}

impl Database {
    /// A fresh, empty database.
    pub fn fresh() -> Self {
        if let (Ok(admin), Ok(file)) =
            (std::env::var("PULLPASS_TEST_POSTGRES"), std::env::var("PULLPASS_TEST_POSTGRES_PASSWORD_FILE"))
        {
            let password = std::fs::read_to_string(&file).expect("password file").trim().to_owned();
            return Self {
                url: create_database(&admin, &password),
                password,
                password_file: file.into(),
                cluster_dir: std::env::var_os("PULLPASS_TEST_POSTGRES_DIR").map(PathBuf::from),
                _own: None,
            };
        }
        let cluster = Arc::new(Cluster::start());
        Self {
            url: cluster.create_database(),
            password: cluster.password.clone(),
            password_file: cluster.password_file.clone(),
            cluster_dir: Some(cluster.dir.clone()),
            _own: Some(cluster),
        }
    }

    /// A fresh database in `cluster` (a test's own cluster, to stop and
    /// start).
    pub fn in_cluster(cluster: &Cluster) -> Self {
        Self {
            url: cluster.create_database(),
            password: cluster.password.clone(),
            password_file: cluster.password_file.clone(),
            cluster_dir: Some(cluster.dir.clone()),
            _own: None,
        }
    }

    /// Runs SQL with `psql`; returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = psql(&self.url, &self.password, sql);
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where this database's rows are stored: its directory under `base/`,
    /// the shared WAL, and the server's log (when the cluster dir is known).
    pub fn stored_dirs(&self) -> Vec<PathBuf> {
        let Some(dir) = &self.cluster_dir else { return Vec::new() };
        let oid = self.sql("SELECT oid FROM pg_database WHERE datname = current_database()");
        let data = dir.join("data");
        vec![data.join("base").join(oid.trim()), data.join("pg_wal"), data.join("global"), dir.join("server.log")]
    }

    /// The same database reached through `address` (`127.0.0.1:PORT`, a
    /// proxy in front of the cluster, such as a
    /// [`crate::faults::SilentPath`]).
    pub fn through(&self, address: &str) -> Self {
        let mut routed = self.clone();
        if let Some(at) = routed.url.find("@127.0.0.1:") {
            let host_start = at + 1;
            let host_end = routed.url[host_start..].find('/').map_or(routed.url.len(), |end| host_start + end);
            routed.url.replace_range(host_start..host_end, address);
        }
        routed
    }

    /// The cluster's `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        let after = self.url.split_once('@').map_or("", |(_, rest)| rest);
        after.split('/').next().unwrap_or_default().to_owned()
    }

    /// The URL with the password in it (for the embedded server's settings).
    pub fn url_with_password(&self) -> String {
        self.url.replacen(&format!("{USER}@"), &format!("{USER}:{}@", self.password), 1)
    }
}
