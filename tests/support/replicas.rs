//! Two `pullpassd` replicas on one PostgreSQL database, in front of the real
//! docker-registry and its token issuer: what the replica tests and the
//! replica bench start.
//!
//! Both replicas share the key file (as a deployment must) and listen on
//! fixed loopback ports, so a restarted replica comes back where clients
//! look for it.

use std::time::Duration;

use pullpass::v1::{Credential, Provider};
use pullpass_client::Client;

use crate::faults::SilentPath;
use crate::postgres::Database;
use crate::registry::world::{ALICE_PASSWORD, users};
use crate::registry::{Issuer, Registry, seed};
use crate::{Options, Pullpassd, create_workspace};

/// A registry, its issuer, one database and two replicas.
#[allow(missing_debug_implementations)]
pub struct Replicas {
    /// The token issuer (counts token requests).
    pub issuer: Issuer,
    /// The registry.
    pub registry: Registry,
    /// The shared database.
    pub database: Database,
    /// Replica A (created the database and the root token).
    pub a: Pullpassd,
    /// Replica B.
    pub b: Pullpassd,
    args: Vec<String>,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Replicas {
    /// Starts both replicas on a fresh database, with workspace `acme`.
    pub async fn start() -> Self {
        Self::start_on(Database::fresh(), &[]).await
    }

    /// Starts both replicas on `database`, with extra flags, B reaching it
    /// through a path that can go silent (a cut-off replica).
    pub async fn start_with_b_cuttable(database: Database, extra: &[&str]) -> (Self, SilentPath) {
        let path = SilentPath::start(&database.address());
        let replicas = Self::start_with(database, extra, Some(&path)).await;
        (replicas, path)
    }

    /// Starts both replicas on `database` with extra flags.
    pub async fn start_on(database: Database, extra: &[&str]) -> Self {
        Self::start_with(database, extra, None).await
    }

    async fn start_with(database: Database, extra: &[&str], b_path: Option<&SilentPath>) -> Self {
        let issuer = Issuer::start(users());
        let registry = Registry::start(&issuer.realm(), &issuer.bundle());
        seed(&registry, "team/app:1.0", "seed", "seed-pw");
        let mut args = vec![
            "--insecure-registry".to_owned(),
            registry.address.clone(),
            "--insecure-registry".to_owned(),
            issuer.peer.address.clone(),
            // The registry's name on both gateways.
            "--gateway-alias".to_owned(),
            format!("{}={}", crate::gateway::ALIAS, registry.address),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a = Self::replica(&database, &args, None);
        let key_file = a.data_dir.join("master.key");
        let b_database = b_path.map_or_else(|| database.clone(), |path| database.through(&path.address));
        let mut b = Self::replica(&b_database, &args, Some(&key_file));
        b.root_token = a.root_token.clone();
        assert!(!a.root_token.is_empty(), "replica A creates the root token");
        create_workspace(&a.client().await, "acme").await;
        let mut replicas = Self { issuer, registry, database, a, b, args };
        replicas.args.extend(["--key-file".to_owned(), key_file.display().to_string()]);
        replicas
    }

    fn replica(database: &Database, args: &[String], key_file: Option<&std::path::Path>) -> Pullpassd {
        let mut args = args.to_vec();
        args.extend(["--listen".to_owned(), format!("127.0.0.1:{}", free_port())]);
        if let Some(key_file) = key_file {
            args.extend(["--key-file".to_owned(), key_file.display().to_string()]);
        }
        Pullpassd::start_with(Options { args, database: Some(database.clone()), ..Default::default() })
            .expect("replica starts")
    }

    /// Restarts replica A or B (SIGTERM, wait, start) on the same port,
    /// with `extra` flags.
    pub fn restart(&mut self, replica_b: bool, extra: &[&str]) {
        let server = if replica_b { &mut self.b } else { &mut self.a };
        let mut args = self.args.clone();
        args.extend(["--listen".to_owned(), server.address.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let database = server.database.clone().or_else(|| Some(self.database.clone()));
        server.restart_with(Options { args, database, ..Default::default() });
    }

    /// `http://A,http://B`.
    pub fn endpoints(&self) -> String {
        format!("{},{}", self.a.endpoint(), self.b.endpoint())
    }

    /// A GENERIC credential for the registry whose realm (the issuer) is
    /// allow-listed.
    pub fn credential(&self, password: &str) -> Credential {
        Credential {
            provider: Provider::Generic as i32,
            registry_server: self.registry.address.clone(),
            username: "alice".into(),
            secret: password.into(),
            token_realm_allowlist: vec![self.issuer.peer.url()],
            ..Default::default()
        }
    }

    /// Creates credential `id` (alice, the right password) through `client`.
    pub async fn add(&self, client: &Client, id: &str) {
        client.create_credential("acme", id, self.credential(ALICE_PASSWORD)).await.expect("create credential");
    }

    /// The registry image `repository:tag`.
    pub fn image(&self, repository: &str) -> String {
        self.registry.image(repository)
    }

    /// Token requests the issuer has served.
    pub fn token_requests(&self) -> u64 {
        self.issuer.peer.count("token_requests")
    }
}

/// Polls `check` every 10 ms for at most `limit`; how long it took to hold.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
