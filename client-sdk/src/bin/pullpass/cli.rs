//! The command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pullpass: manage a pullpass service and ask it for short-lived registry auth.
///
/// Connects to PULLPASS_ENDPOINT (default http://127.0.0.1:50051) with the
/// token in PULLPASS_TOKEN or the file --token-file / PULLPASS_TOKEN_FILE,
/// or with a workload-identity JWT instead: PULLPASS_IDENTITY_TOKEN, the
/// file --identity-token-file, or --identity-token-from github-actions.
/// Secrets are read from a file, standard input or a no-echo prompt, never
/// from arguments.
///
/// Exit codes: 0 ok, 1 other error, 2 usage or invalid input, 3 not found,
/// 4 unauthenticated or permission denied, 5 unavailable or rate limited,
/// 6 failed precondition.
#[derive(Debug, Parser)]
#[command(name = "pullpass", version, max_term_width = 100)]
pub struct Cli {
    /// Connection options.
    #[command(flatten)]
    pub connection: Connection,
    /// Output format of results: human tables, or JSON (stable, for scripts).
    #[arg(long, short = 'o', global = true, env = "PULLPASS_OUTPUT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach pullpassd.
#[derive(Debug, Args)]
pub struct Connection {
    /// pullpassd address (http:// or https://); for replicas, a
    /// comma-separated list or a DNS name with several addresses (calls fail
    /// over between them).
    #[arg(long, global = true, env = "PULLPASS_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// File holding the access token (else PULLPASS_TOKEN).
    #[arg(long, global = true, env = "PULLPASS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding a workload-identity JWT to present instead of an access
    /// token (a Kubernetes projected service-account token, say); read again
    /// on every call, as such tokens rotate. Else PULLPASS_IDENTITY_TOKEN
    /// (the JWT itself, as GitLab CI's `id_tokens:` gives it).
    #[arg(long, global = true, env = "PULLPASS_IDENTITY_TOKEN_FILE", value_name = "FILE")]
    pub identity_token_file: Option<PathBuf>,
    /// Fetch the workload-identity JWT from the CI platform: `github-actions`
    /// asks the runner (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN; the job
    /// needs `permissions: id-token: write`) for a token for
    /// --identity-audience, and again before it expires.
    #[arg(long, global = true, env = "PULLPASS_IDENTITY_TOKEN_FROM", value_enum, value_name = "PLATFORM")]
    pub identity_token_from: Option<IdentityPlatform>,
    /// The audience of the token --identity-token-from asks for: one of the
    /// audiences of pullpass's identity provider for that platform.
    #[arg(long, global = true, env = "PULLPASS_IDENTITY_AUDIENCE", value_name = "AUD", default_value = "pullpass")]
    pub identity_audience: String,
    /// CA certificates (PEM) to trust for an https:// endpoint.
    #[arg(long, global = true, env = "PULLPASS_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, env = "PULLPASS_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "PULLPASS_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Deadline per call, in seconds.
    #[arg(long, global = true, env = "PULLPASS_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,
}

/// Platforms that hand a job a workload-identity token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityPlatform {
    /// GitHub Actions: the job's OIDC token, from the runner.
    GithubActions,
}

/// Table or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    Table,
    /// JSON (stable field names, documented in docs/launchers.md).
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Workspaces (ROOT token).
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// Registry credentials of a workspace.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Access tokens of a workspace.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Audit events of a workspace (`-` for all, ROOT only).
    Audit {
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// AIP-160 filter: `action = X`, `resource = X`, `principal = X`,
        /// `event_time >= "RFC3339"`, joined by AND.
        #[arg(long, default_value = "")]
        filter: String,
        /// Most events to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Short-lived registry auth for images, rendered for a consumer.
    Auth(AuthArgs),
    /// Print a one-time link that signs this token in to the web console
    /// (it works once, within five minutes; open it in your browser).
    ConsoleLink,
    /// Show how an image reference is normalized (JSON), without a server.
    ParseRef {
        /// The image reference.
        image: String,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (pullpass.1 and one per subcommand) into DIR.
    Man {
        /// Where to write them (created if missing).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

/// `pullpass workspaces …`
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace.
    Create {
        /// Its id (lowercase letters, digits, `-`).
        id: String,
        /// Organization or personal.
        #[arg(long, value_enum, default_value_t = Kind::Organization)]
        kind: Kind,
        /// Human-readable name.
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// List workspaces.
    List,
    /// Delete a workspace.
    Rm {
        /// Its id.
        id: String,
        /// Also delete its credentials and tokens.
        #[arg(long)]
        force: bool,
    },
}

/// Workspace kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// An organization.
    Organization,
    /// One person.
    Personal,
}

/// Where a secret comes from (never an argument).
#[derive(Debug, Args, Clone, Default)]
pub struct SecretSource {
    /// Read the secret from this file (a JSON key for GOOGLE).
    #[arg(long, value_name = "FILE", conflicts_with = "secret_stdin")]
    pub secret_file: Option<PathBuf>,
    /// Read the secret from standard input (up to end of input; one
    /// trailing newline is removed).
    #[arg(long)]
    pub secret_stdin: bool,
}

/// Credential fields given on the command line.
#[derive(Debug, Args, Clone, Default)]
pub struct CredentialFields {
    /// Registry: host[:port][/namespace].
    #[arg(long, value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// User name at the registry.
    #[arg(long)]
    pub username: Option<String>,
    /// A project the credential may serve (repeat); none = all projects.
    #[arg(long = "project", value_name = "PROJECT")]
    pub projects: Vec<String>,
    /// May the stored secret be handed out to Basic-only registries?
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_passthrough: Option<bool>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// An extra token-realm origin the secret may be sent to (repeat).
    #[arg(long = "realm", value_name = "URL")]
    pub realms: Vec<String>,
    /// PEM file of CA certificates for a private registry.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

/// `pullpass credentials …`
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a credential. The secret comes from --secret-file,
    /// --secret-stdin, or a no-echo prompt.
    Add {
        /// Its id in the workspace.
        id: String,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// The registry kind.
        #[arg(long, value_enum)]
        provider: ProviderArg,
        /// Fields.
        #[command(flatten)]
        fields: CredentialFields,
        /// The secret.
        #[command(flatten)]
        secret: SecretSource,
    },
    /// List credentials.
    List {
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// Filter: `provider = GHCR`, `registry_server = "ghcr.io"`.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Show one credential.
    Show {
        /// Its id (or full name).
        id: String,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
    },
    /// Change fields of a credential; with --secret-file, --secret-stdin or
    /// --new-secret (prompt), rotate its secret.
    Update {
        /// Its id (or full name).
        id: String,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// Fields to change.
        #[command(flatten)]
        fields: CredentialFields,
        /// Remove every project restriction.
        #[arg(long, conflicts_with = "projects")]
        clear_projects: bool,
        /// A new secret from a file or standard input.
        #[command(flatten)]
        secret: SecretSource,
        /// Prompt for a new secret (no echo).
        #[arg(long)]
        new_secret: bool,
    },
    /// Delete a credential.
    Rm {
        /// Its id (or full name).
        id: String,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
    },
    /// Run a credential's token flow for a repository (the token is not shown).
    Test {
        /// Its id (or full name).
        id: String,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// Repository, such as `acme/aligner`.
        #[arg(long)]
        repository: String,
        /// Ask for push too.
        #[arg(long)]
        push: bool,
    },
    /// Create credentials from a docker config.json (`-` for standard input).
    ImportDockerConfig {
        /// The config.json.
        file: PathBuf,
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// Prefix of the created ids.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Show what would be created without storing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Registry kinds.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    /// Docker Hub.
    DockerHub,
    /// GitHub Container Registry.
    Ghcr,
    /// GitLab.
    Gitlab,
    /// Google Artifact/Container Registry (secret: service-account JSON key).
    Google,
    /// Amazon ECR (username: access key id; secret: secret access key).
    Ecr,
    /// Quay.
    Quay,
    /// Any distribution registry.
    Generic,
}

/// `pullpass tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Mint a token; it is printed once.
    Create {
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A project a LAUNCHER is limited to (repeat).
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// Lifetime, such as `90d`, `12h`, `30m` (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their strings).
    List {
        /// The workspace.
        #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
        workspace: String,
    },
    /// Revoke a token by name (`workspaces/W/accessTokens/ID`).
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Token roles.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Manages credentials and tokens.
    Admin,
    /// Issues registry auth only.
    Launcher,
    /// Reads metadata and audit events.
    Viewer,
}

/// `pullpass auth …`
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// Image references.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The workspace.
    #[arg(long, short = 'w', env = "PULLPASS_WORKSPACE")]
    pub workspace: String,
    /// The project the caller runs for.
    #[arg(long, env = "PULLPASS_PROJECT")]
    pub project: Option<String>,
    /// Ask for push access too.
    #[arg(long)]
    pub push: bool,
    /// Accept only a username and password (for kubelet, Apptainer,
    /// credential helpers). Implied by --format k8s-secret and apptainer-env.
    #[arg(long, conflicts_with = "via_gateway")]
    pub basic: bool,
    /// Pull through pullpass's pull gateway: a short-lived username and
    /// password for the gateway host, for any registry. The image to pull
    /// (on the gateway) is printed on standard error, or by --format image.
    #[arg(long, conflicts_with = "push")]
    pub via_gateway: bool,
    /// How to render the result.
    #[arg(long, value_enum, default_value_t = AuthFormat::Json)]
    pub format: AuthFormat,
    /// Write to this file (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Name of the Secret for --format k8s-secret.
    #[arg(long, default_value = "pullpass-registry-auth")]
    pub secret_name: String,
    /// Namespace of the Secret for --format k8s-secret.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Renderings of registry auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthFormat {
    /// Every field, as JSON.
    Json,
    /// The `Authorization` header value, one line per image.
    Header,
    /// The arguments to put before `docker://IMAGE` in skopeo, one per line.
    SkopeoArgs,
    /// A docker config.json.
    DockerConfig,
    /// A Kubernetes dockerconfigjson Secret (basic auth only).
    K8sSecret,
    /// `export` lines for Apptainer/Singularity (basic auth only).
    ApptainerEnv,
    /// The image reference to pull, one line per image (with --via-gateway:
    /// the gateway's reference).
    Image,
}
