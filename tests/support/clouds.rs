//! Cloud peers for keyless credentials (`support/fixtures/clouds.py`):
//! moto in server mode behind a recording proxy (AWS STS and ECR), protocol
//! fixtures of Entra ID, Google STS and IAM Credentials written from their
//! public documentation, and a registry front serving ACR's
//! `/oauth2/exchange` and `/oauth2/token` and Quay's robot federation in
//! front of the real docker-registry. Every JWT pullpass sends them is
//! checked with PyJWT against pullpass's published key set; what they
//! record names what was asked, never a token.
//!
//! [`CloudWorld`] starts all of it with pullpassd pointed at it (its
//! issuer at the gateway's address, as `--dev` does).

use std::time::Duration;

use pullpass::v1::credential::ProviderSettings;
use pullpass::v1::{
    Action, AwsRole, AzureIdentity, Credential, GoogleFederation, IssueRegistryAuthRequest, Provider,
    QuayRobotFederation, RegistryAuth,
};
use pullpass_client::Client;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::registry::world::users;
use crate::registry::{Issuer, Peer, Registry, http_request, python, seed};
use crate::{Options, Pullpassd, create_workspace, repo_root};

/// The ECR registry the tests use (moto answers for any account).
pub const ECR_REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
/// The role pullpass assumes.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/pullpass-pull";
/// The Entra tenant and app of the ACR credentials.
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// The app registration's client id.
pub const CLIENT_ID: &str = "0a1b2c3d-0000-4000-8000-00000000ac01";
/// Its client secret (a canary: it must appear nowhere but the request to Entra).
pub const CLIENT_SECRET: &str = "entra-client-secret-canary-7f3a9c";
/// The workload identity pool provider of the Google credentials.
pub const GOOGLE_AUDIENCE: &str =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pullpass/providers/pullpass";
/// The service account they impersonate.
pub const SERVICE_ACCOUNT: &str = "puller@acme-prod.iam.gserviceaccount.com";
/// The ECS container credentials endpoint's authorization token.
pub const ECS_TOKEN: &str = "ecs-authorization-token-canary";
/// The Quay robot.
pub const ROBOT: &str = "acme+ci";
/// The robot's token, as Quay's federation answers it (a canary).
pub const ROBOT_TOKEN: &str = "quay-robot-token-canary-51c0";

/// An ECR credential assuming `role_arn`: with pullpass's token
/// (`web_identity`), else with pullpass's own identity (no secret given).
pub fn ecr_role(role_arn: &str, web_identity: bool, external_id: &str) -> Credential {
    Credential {
        provider: Provider::Ecr as i32,
        registry_server: ECR_REGISTRY.into(),
        provider_settings: Some(ProviderSettings::AwsRole(AwsRole {
            role_arn: role_arn.into(),
            external_id: external_id.into(),
            web_identity,
        })),
        ..Default::default()
    }
}

/// An ACR credential of the test app on `registry`: with its client
/// `secret`, or federated when it is empty.
pub fn acr(secret: &str, registry: &str) -> Credential {
    Credential {
        provider: Provider::Acr as i32,
        registry_server: registry.into(),
        secret: secret.into(),
        provider_settings: Some(ProviderSettings::Azure(AzureIdentity {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
        })),
        ..Default::default()
    }
}

/// A GOOGLE credential federating with the test pool provider, on
/// `registry` whose token realm is `realm`, impersonating
/// `service_account` unless it is empty.
pub fn google_federation(registry: &str, service_account: &str, realm: Option<String>) -> Credential {
    Credential {
        provider: Provider::Google as i32,
        registry_server: registry.into(),
        provider_settings: Some(ProviderSettings::GoogleFederation(GoogleFederation {
            audience: GOOGLE_AUDIENCE.into(),
            service_account: service_account.into(),
        })),
        token_realm_allowlist: realm.into_iter().collect(),
        ..Default::default()
    }
}

/// A QUAY credential federating as the test robot, on `registry`.
pub fn quay_robot(registry: &str) -> Credential {
    Credential {
        provider: Provider::Quay as i32,
        registry_server: registry.into(),
        provider_settings: Some(ProviderSettings::QuayRobot(QuayRobotFederation { robot: ROBOT.into() })),
        ..Default::default()
    }
}

/// The cloud peers and their shared config file.
#[derive(Debug)]
pub struct Clouds {
    /// AWS, Entra and Google.
    pub clouds: Peer,
    /// The registry front (ACR and Quay endpoints on the registry's host).
    pub front: Peer,
    dir: TempDir,
}

impl Clouds {
    /// Starts both peers; they trust pullpass's issuer once [`Clouds::trust`]
    /// names it.
    pub fn start(issuer: &Issuer, registry: &Registry) -> Self {
        let dir = tempfile::Builder::new().prefix("pullpass-clouds-").tempdir().expect("temp dir");
        let config = json!({
            "jwks_uri": "http://127.0.0.1:9/unset",
            "issuer": "unset",
            "state_dir": issuer.state.path(),
            "peers_url": issuer.peer.url(),
            "entra_key": "entra-hmac-key",
            "registry": registry.address,
            "registry_service": crate::registry::SERVICE,
            "front_user": "acr-front",
            "front_password": "acr-front-pw",
            "entra": {
                "tenant": TENANT,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "subject": "workspaces/acme/credentials/acr-federated",
            },
            "google": {
                "audience": GOOGLE_AUDIENCE,
                "service_account": SERVICE_ACCOUNT,
                "subject": "workspaces/acme/credentials/gar",
            },
            "quay": {"robot": ROBOT, "subject": "workspaces/acme/credentials/quay", "token": ROBOT_TOKEN},
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
        let start = |command: &str| {
            let mut process = std::process::Command::new(python());
            process
                .arg(repo_root().join("tests/support/fixtures/clouds.py"))
                .arg(command)
                .arg(dir.path().join("config.json"))
                .stderr(std::process::Stdio::inherit());
            Peer::spawn(
                process,
                &format!("clouds.py {command} (moto[server] missing? run scripts/install-test-deps.sh)"),
            )
        };
        let clouds = start("serve");
        let front = start("front");
        Self { clouds, front, dir }
    }

    /// Makes the peers trust `issuer_url` (pullpass's issuer).
    pub fn trust(&self, issuer_url: &str) {
        let path = self.dir.path().join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
        config["issuer"] = json!(issuer_url);
        config["jwks_uri"] = json!(format!("{issuer_url}/.well-known/jwks.json"));
        std::fs::write(&path, config.to_string()).expect("config");
    }

    /// Makes the Entra, Google and Quay peers trust every credential of
    /// workspace acme (a `sub` prefix), for benchmarks that make many.
    pub fn trust_every_credential(&self) {
        let path = self.dir.path().join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
        for peer in ["entra", "google", "quay"] {
            config[peer]["subject"] = json!("workspaces/acme/credentials/*");
        }
        std::fs::write(&path, config.to_string()).expect("config");
    }

    /// pullpassd's flags and environment pointing at the peers.
    pub fn pullpassd_options(&self, registry: &Registry, issuer: &Issuer) -> (Vec<String>, Vec<(String, String)>) {
        let clouds = self.clouds.url();
        let args = vec![
            "--insecure-registry".into(),
            registry.address.clone(),
            "--insecure-registry".into(),
            issuer.peer.address.clone(),
            "--insecure-registry".into(),
            self.clouds.address.clone(),
            "--insecure-registry".into(),
            self.front.address.clone(),
            "--entra-authority-host".into(),
            format!("{clouds}/entra"),
            "--google-sts-endpoint".into(),
            format!("{clouds}/google/sts/v1/token"),
            "--google-iam-credentials-endpoint".into(),
            format!("{clouds}/google/iam"),
        ];
        let env = vec![
            ("AWS_ENDPOINT_URL".into(), format!("{clouds}/")),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ];
        (args, env)
    }

    /// Everything the cloud peers recorded, in order.
    pub fn recorded(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for peer in [&self.clouds, &self.front] {
            let (status, body) = http_request(&peer.address, "GET", "/recorded", None);
            assert_eq!(status, 200, "recorded: {body}");
            all.extend(serde_json::from_str::<Vec<Value>>(&body).expect("recorded JSON"));
        }
        all
    }

    /// Every secret that crossed the peers (tokens received and issued,
    /// session credentials), plus the fixed ones the tests configure.
    pub fn canaries(&self) -> Vec<String> {
        let mut all: Vec<String> = vec![CLIENT_SECRET.into(), ROBOT_TOKEN.into()];
        for peer in [&self.clouds, &self.front] {
            let (status, body) = http_request(&peer.address, "GET", "/canaries", None);
            assert_eq!(status, 200, "canaries: {body}");
            all.extend(serde_json::from_str::<Vec<String>>(&body).expect("canaries JSON"));
        }
        all
    }

    /// Recorded entries whose `field` is `value`.
    pub fn recorded_where(&self, field: &str, value: &str) -> Vec<Value> {
        self.recorded().into_iter().filter(|e| e[field] == value).collect()
    }

    /// Recorded calls of one endpoint (`entra`, `acr_exchange`, …).
    pub fn calls(&self, endpoint: &str) -> Vec<Value> {
        self.recorded_where("endpoint", endpoint)
    }

    /// Makes the registry front answer `path` (`/oauth2/exchange`,
    /// `/oauth2/token`) with `status`.
    pub fn front_refuses(&self, path: &str, status: u16) {
        let settings = json!({ path: status }).to_string();
        let (code, body) = http_request(&self.front.address, "POST", "/control", Some(&settings));
        assert_eq!(code, 200, "control: {body}");
    }

    /// Changes the cloud peer's behaviour (`{"sts_status": 403}`, …).
    pub fn control(&self, settings: Value) {
        let (status, body) = http_request(&self.clouds.address, "POST", "/control", Some(&settings.to_string()));
        assert_eq!(status, 200, "control: {body}");
    }
}

/// The registry, its issuer, the cloud peers and pullpassd.
#[allow(missing_debug_implementations)]
pub struct CloudWorld {
    /// The registry's token issuer.
    pub issuer: Issuer,
    /// The real docker-registry.
    pub registry: Registry,
    /// The cloud peers.
    pub clouds: Clouds,
    /// pullpassd.
    pub server: Pullpassd,
    /// A root client.
    pub client: Client,
    /// pullpass's issuer URL.
    pub issuer_url: String,
}

impl CloudWorld {
    /// Starts everything; `env` goes to pullpassd too.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, &[]).await
    }

    /// Starts everything, with extra pullpassd flags.
    pub async fn start_with(env: &[(&str, &str)], extra_args: &[&str]) -> Self {
        let mut accounts = users();
        accounts["acr-front"] = json!({"password": "acr-front-pw", "grants": {"*": ["pull"]}});
        accounts[ROBOT] = json!({"password": ROBOT_TOKEN, "grants": {"team/*": ["pull"]}});
        let issuer = Issuer::start(accounts);
        // IAM Credentials hands out access tokens of the issuer's Google endpoint.
        issuer.write_state("google.key.pem", crate::fixtures::TEST_RSA_PKCS8_PEM);
        let registry = Registry::start(&issuer.realm(), &issuer.bundle());
        seed(&registry, "team/app:1.0", "seed", "seed-pw");
        seed(&registry, "other/tool:1.0", "seed", "seed-pw");
        let clouds = Clouds::start(&issuer, &registry);
        let (mut args, mut cloud_env) = clouds.pullpassd_options(&registry, &issuer);
        args.extend(extra_args.iter().map(|a| a.to_string()));
        // `{clouds}` in a value stands for the cloud peer's URL.
        let url = clouds.clouds.url();
        cloud_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.replace("{clouds}", &url))));
        let server = Pullpassd::start_with(Options { args, env: cloud_env, ..Default::default() })
            .unwrap_or_else(|f| panic!("pullpassd did not start: {f:?}"));
        let issuer_url = server
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("pullpassd: OIDC issuer ").map(str::to_owned))
            .expect("pullpassd names its OIDC issuer");
        clouds.trust(&issuer_url);
        let client = server.client().await;
        create_workspace(&client, "acme").await;
        Self { issuer, registry, clouds, server, client, issuer_url }
    }

    /// Creates a credential in workspace acme.
    pub async fn add(&self, id: &str, credential: Credential) -> Credential {
        self.client.create_credential("acme", id, credential).await.expect("create credential")
    }

    /// Issues auth for one image with `accept`, pull only.
    pub async fn issue(&self, image: &str, accept: Option<pullpass::v1::AuthKind>) -> RegistryAuth {
        let request = IssueRegistryAuthRequest {
            workspace: "workspaces/acme".into(),
            images: vec![image.into()],
            actions: vec![Action::Pull as i32],
            accept: accept.map(|a| a as i32).into_iter().collect(),
            ..Default::default()
        };
        let mut auths = self
            .client
            .registry_auth_service()
            .issue_registry_auth(request)
            .await
            .expect("IssueRegistryAuth")
            .into_inner()
            .auths;
        auths.remove(0)
    }

    /// The raw web identity tokens STS received, in order (from the peer's
    /// canaries), for the tests that verify them independently.
    pub fn web_identity_tokens(&self) -> Vec<String> {
        self.clouds.canaries().into_iter().filter(|c| c.matches('.').count() == 2 && c.starts_with("ey")).collect()
    }

    /// Waits (bounded) until the peers recorded `count` entries matching.
    pub async fn wait_recorded(&self, field: &str, value: &str, count: usize) -> Vec<Value> {
        crate::eventually(&format!("{count} recorded {field}={value}"), Duration::from_secs(10), || async {
            let found = self.clouds.recorded_where(field, value);
            (found.len() >= count).then_some(found)
        })
        .await
    }
}
