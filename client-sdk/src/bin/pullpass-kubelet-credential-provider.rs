//! `pullpass-kubelet-credential-provider`: a kubelet image credential
//! provider plugin (`credentialprovider.kubelet.k8s.io/v1`).
//!
//! The kubelet writes a `CredentialProviderRequest` (`{"image": …}`) on
//! standard input; the plugin answers a `CredentialProviderResponse` with a
//! username and password for that image, `cacheKeyType: Image`, and a
//! `cacheDuration` a minute shorter than the lease's remaining life (zero,
//! "do not cache", for a lease with less than a minute left).
//!
//! The kubelet takes only a username and password, so only BASIC leases are
//! served: ECR, Google, and credentials that allow passthrough. Registries
//! that issue bearer tokens fail with a message saying so, unless pods pull
//! through the pull gateway: with `--gateway HOST[:PORT]`, images on that
//! host (`gw.example:50052/ghcr.io/acme/aligner:2.1`) are answered with a
//! gateway password for exactly that repository, for any registry.
//!
//! Configuration (arguments in the kubelet's CredentialProviderConfig
//! `args`, or `env`): `--endpoint`/`PULLPASS_ENDPOINT` (one address, a
//! comma-separated list of replicas, or a DNS name with several addresses),
//! `--workspace`/`PULLPASS_WORKSPACE`, `--project`/`PULLPASS_PROJECT`,
//! `--token-file`/`PULLPASS_TOKEN_FILE` (or `PULLPASS_TOKEN`),
//! `--ca-file`/`PULLPASS_CA_FILE`.
//!
//! **The pod's own identity (KEP-4412).** With `tokenAttributes` in the
//! CredentialProviderConfig, the kubelet mints a token for the pod's
//! service account (audience `serviceAccountTokenAudience`) and passes it
//! as `serviceAccountToken`. The plugin then presents that JWT instead of
//! an access token (no token file on the node): pullpassd verifies it and
//! the workspace's identity bindings decide what it may lease. The
//! service account's `pullpass.dev/workspace` and `pullpass.dev/project`
//! annotations, when the kubelet passes them
//! (`optionalServiceAccountAnnotationKeys`), name the workspace and
//! project instead of `--workspace` and `--project`: they only route the
//! request, the bindings decide. Without a token, annotations are ignored
//! (a node's token is not the service account's to steer).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pullpass::reference::ImageRef;
use pullpass_client::{Client, Error};
use zeroize::Zeroizing;

/// Seconds subtracted from the lease's remaining life for `cacheDuration`.
const CACHE_MARGIN: Duration = Duration::from_secs(60);
/// The service-account annotation naming the workspace.
const WORKSPACE_ANNOTATION: &str = "pullpass.dev/workspace";
/// The service-account annotation naming the project.
const PROJECT_ANNOTATION: &str = "pullpass.dev/project";

/// pullpass kubelet image credential provider plugin.
#[derive(Debug, Parser)]
#[command(name = "pullpass-kubelet-credential-provider", version)]
struct Args {
    /// pullpassd address; for replicas, a comma-separated list or a DNS name
    /// with several addresses (calls fail over between them).
    #[arg(long, env = "PULLPASS_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    endpoint: String,
    /// The workspace whose credentials serve. A service account's
    /// `pullpass.dev/workspace` annotation, passed with its token, names
    /// another.
    #[arg(long, env = "PULLPASS_WORKSPACE")]
    workspace: Option<String>,
    /// The project pods run for. A service account's `pullpass.dev/project`
    /// annotation, passed with its token, names another.
    #[arg(long, env = "PULLPASS_PROJECT")]
    project: Option<String>,
    /// File with the access token (else PULLPASS_TOKEN). Not needed, and
    /// not used, when the kubelet passes the pod's service-account token.
    #[arg(long, env = "PULLPASS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) for an https endpoint.
    #[arg(long, env = "PULLPASS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The pull gateway's host[:port]: images on it get a gateway password.
    #[arg(long, env = "PULLPASS_GATEWAY", value_name = "HOST[:PORT]")]
    gateway: Option<String>,
}

/// The workspace and project of this request: the service account's
/// annotations when the kubelet passed its token (they route; the
/// workspace's identity bindings decide), else the plugin's configuration.
/// A workspace named by annotation takes its project from the annotations
/// only (the configured project belongs to the configured workspace).
fn route(args: &Args, with_token: bool, annotations: &serde_json::Value) -> (String, Option<String>) {
    let annotation = |key: &str| {
        if !with_token {
            return None;
        }
        annotations.get(key).and_then(|v| v.as_str()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    };
    let configured =
        |value: &Option<String>| value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let workspace = annotation(WORKSPACE_ANNOTATION).or_else(|| configured(&args.workspace)).unwrap_or_else(|| {
        fail(&format!(
            "no workspace: pass --workspace (or PULLPASS_WORKSPACE), or annotate the pod's service account with \
             {WORKSPACE_ANNOTATION} and list it in tokenAttributes.optionalServiceAccountAnnotationKeys"
        ))
    });
    let project = match annotation(WORKSPACE_ANNOTATION) {
        Some(_) => annotation(PROJECT_ANNOTATION),
        None => annotation(PROJECT_ANNOTATION).or_else(|| configured(&args.project)),
    };
    (workspace, project)
}

fn fail(message: &str) -> ! {
    eprintln!("pullpass-kubelet-credential-provider: {message}");
    std::process::exit(1);
}

fn main() {
    let args = Args::parse();
    // The request may carry the pod's service-account token.
    let mut input = Zeroizing::new(String::new());
    if std::io::stdin().read_to_string(&mut input).is_err() {
        fail("cannot read the CredentialProviderRequest from standard input");
    }
    let request: serde_json::Value =
        serde_json::from_str(&input).unwrap_or_else(|e| fail(&format!("the request is not JSON: {e}")));
    let api_version = request["apiVersion"].as_str().unwrap_or_default().to_owned();
    if !api_version.starts_with("credentialprovider.kubelet.k8s.io/") || request["kind"] != "CredentialProviderRequest"
    {
        fail("expected a credentialprovider.kubelet.k8s.io CredentialProviderRequest");
    }
    let image = request["image"].as_str().unwrap_or_default().to_owned();
    let parsed =
        ImageRef::parse(&image).unwrap_or_else(|e| fail(&format!("`{image}` is not an image reference: it {e}")));
    let service_account_token = request["serviceAccountToken"]
        .as_str()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Zeroizing::new(t.trim().to_owned()));
    let (workspace, project) = route(&args, service_account_token.is_some(), &request["serviceAccountAnnotations"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else { fail("cannot start the async runtime") };
    let lease = runtime.block_on(async {
        let mut builder = Client::builder(args.endpoint.clone());
        builder = match (&service_account_token, &args.token_file) {
            (Some(jwt), _) => builder.identity_token(jwt.as_str()),
            (None, Some(path)) => builder.token_file(path),
            (None, None) => builder.token_from_env(),
        };
        if let Some(ca) = &args.ca_file {
            builder = builder
                .ca_certificate_pem(std::fs::read(ca).unwrap_or_else(|e| fail(&format!("{}: {e}", ca.display()))));
        }
        let client = builder.connect().await.unwrap_or_else(|e| fail(&e.to_string()));
        let on_gateway = args.gateway.as_deref().is_some_and(|g| parsed.registry().as_str() == g.trim());
        let mut request = client.registry_auth(image.clone()).workspace(workspace);
        request = if on_gateway { request.via_gateway() } else { request.basic() };
        if let Some(project) = project {
            request = request.project(project);
        }
        request.send().await
    });
    let lease = match lease {
        Ok(lease) => lease,
        Err(Error::PassthroughNotAllowed(message)) => fail(&format!(
            "the kubelet takes only a username and password, and for {image}: {message}. \
             ECR and Google credentials work as they are; for other registries, pull through the pullpass gateway \
             (rewrite the image to the gateway host and pass --gateway HOST[:PORT]) or allow passthrough on the credential"
        )),
        Err(Error::PermissionDenied { reason: Some(reason), message })
            if reason == pullpass::reason::IDENTITY_NOT_BOUND =>
        {
            fail(&format!(
                "permission denied: {message}. No identity binding of the workspace matches the pod's service account: \
                 an admin of the workspace binds it (identityBindings; TestIdentityToken explains a token)"
            ))
        }
        Err(e) => fail(&e.to_string()),
    };
    let (username, password) = lease.basic().unwrap_or_default();
    let cache = lease.remaining().saturating_sub(CACHE_MARGIN);
    let entry = serde_json::json!({ "username": username, "password": password });
    let mut auth = serde_json::Map::new();
    auth.insert(parsed.name(), entry.clone());
    let as_written = image.split('@').next().unwrap_or(&image);
    let as_written = match as_written.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => as_written,
    };
    auth.insert(as_written.to_owned(), entry);
    let response = serde_json::json!({
        "apiVersion": api_version,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Image",
        "cacheDuration": format!("{}s", cache.as_secs()),
        "auth": auth,
    });
    println!("{response}");
}
