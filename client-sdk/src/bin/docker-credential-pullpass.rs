//! `docker-credential-pullpass`: the docker credential-helper protocol,
//! answered by pullpass.
//!
//! Configure it in `config.json` (`"credHelpers": {"ghcr.io": "pullpass"}`)
//! and set `PULLPASS_ENDPOINT` (one address, or replicas as a comma-separated
//! list or a DNS name with several addresses), `PULLPASS_TOKEN` (or `PULLPASS_TOKEN_FILE`),
//! `PULLPASS_WORKSPACE` and optionally `PULLPASS_PROJECT`. Instead of an
//! access token, the helper can present a workload-identity JWT:
//! `PULLPASS_IDENTITY_TOKEN_FILE` (a file read on every call, such as a
//! projected service-account token) or `PULLPASS_IDENTITY_TOKEN`; never both
//! kinds. The helper protocol has no configuration of its own: these
//! variables are its configuration.
//!
//! The protocol carries only a username and password, so only BASIC leases
//! can be served: ECR (`AWS` + 12 h password), Google (`oauth2accesstoken` +
//! ~1 h access token), and credentials that allow passthrough. For
//! registries that issue bearer tokens, `get` fails and says what to use
//! instead. The helper sees only the registry host, so it is served by a
//! credential covering the whole host (not one limited to a namespace).
//!
//! With `PULLPASS_GATEWAY` set to the pull gateway's `host[:port]`, `get`
//! for that host answers with the helper's own access token (or its
//! workload-identity JWT, as the file holds it now) as the password
//! (username `PULLPASS_PROJECT`, or `pullpass`): the gateway accepts
//! LAUNCHER and ADMIN tokens and JWTs, and authorizes every request as
//! `IssueRegistryAuth` would, and the registries' secrets stay in pullpass.
//! This serves every registry, bearer-only ones included, because the
//! helper protocol names only the host and a gateway password names
//! repositories.
//!
//! `store` and `erase` are refused (pullpass manages credentials itself);
//! `list` shows the hosts this caller can be served (empty without
//! permission to list credentials).

use std::io::Read;

use pullpass::registry::RegistryServer;
use pullpass::v1::Provider;
use pullpass_client::{Client, Error};

/// The repository asked for when only a host is known.
const PROBE_REPOSITORY: &str = "pullpass-credential-helper/probe";

fn main() {
    let action = std::env::args().nth(1).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else { fail("cannot start the async runtime") };
    match action.as_str() {
        "get" => runtime.block_on(get()),
        "store" | "erase" => {
            let mut ignored = String::new();
            let _ = std::io::stdin().read_to_string(&mut ignored);
            fail(
                "docker-credential-pullpass is read-only: credentials are managed in pullpass (`pullpass credentials add`)",
            )
        }
        "list" => runtime.block_on(list()),
        "version" => println!("docker-credential-pullpass {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!("usage: docker-credential-pullpass get|store|erase|list|version");
            std::process::exit(2);
        }
    }
}

/// Errors are written to standard output, as the protocol wants.
fn fail(message: &str) -> ! {
    println!("{message}");
    std::process::exit(1);
}

fn workspace() -> String {
    std::env::var("PULLPASS_WORKSPACE")
        .unwrap_or_else(|_| fail("set PULLPASS_WORKSPACE to the pullpass workspace to use"))
}

async fn connect() -> Client {
    match Client::from_env().connect().await {
        Ok(client) => client,
        Err(e) => fail(&format!("pullpass: {e}")),
    }
}

async fn get() {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        fail("cannot read the server URL from standard input");
    }
    let server_url = input.trim().to_owned();
    let host = match RegistryServer::parse(&server_url) {
        Ok(parsed) => parsed.server.host().to_string(),
        Err(e) => fail(&format!("`{server_url}` is not a registry address: it {e}")),
    };
    if std::env::var("PULLPASS_GATEWAY").is_ok_and(|gateway| gateway.trim() == host) {
        let username = std::env::var("PULLPASS_PROJECT").ok().filter(|p| !p.is_empty());
        let answer = serde_json::json!({
            "ServerURL": server_url,
            "Username": username.as_deref().unwrap_or("pullpass"),
            "Secret": gateway_password().as_str(),
        });
        println!("{answer}");
        return;
    }
    let client = connect().await;
    let mut request = client.registry_auth(format!("{host}/{PROBE_REPOSITORY}")).workspace(workspace()).basic();
    if let Ok(project) = std::env::var("PULLPASS_PROJECT")
        && !project.is_empty()
    {
        request = request.project(project);
    }
    match request.send().await {
        Ok(lease) => {
            let (username, password) = lease.basic().unwrap_or_default();
            let answer = serde_json::json!({ "ServerURL": server_url, "Username": username, "Secret": password });
            println!("{answer}");
        }
        // The protocol's "not found": callers fall back to anonymous access.
        Err(Error::NotFoundForRegistry(_)) => fail("credentials not found in native keychain"),
        Err(Error::PassthroughNotAllowed(message)) => fail(&format!(
            "pullpass cannot answer the credential-helper protocol for {host}: the protocol carries only a username and password, \
             and {message}. Pull through the pullpass gateway instead (set PULLPASS_GATEWAY and use the gateway's image references), \
             use bearer tokens (skopeo --registry-token via `pullpass auth IMAGE --format skopeo-args`), \
             or allow passthrough on the credential"
        )),
        Err(e) => fail(&format!("pullpass: {e}")),
    }
}

/// The helper's password for the gateway: its access token, from
/// `PULLPASS_TOKEN` or the file named by `PULLPASS_TOKEN_FILE`, or its
/// workload-identity JWT, from `PULLPASS_IDENTITY_TOKEN` or the file named
/// by `PULLPASS_IDENTITY_TOKEN_FILE` (read now: it rotates).
fn gateway_password() -> zeroize::Zeroizing<String> {
    let access = token_from("PULLPASS_TOKEN", "PULLPASS_TOKEN_FILE");
    let identity = token_from(pullpass_client::IDENTITY_TOKEN_ENV, pullpass_client::IDENTITY_TOKEN_FILE_ENV);
    match (access, identity) {
        (Some(_), Some(_)) => fail(
            "both an access token (PULLPASS_TOKEN or PULLPASS_TOKEN_FILE) and a workload-identity token \
             (PULLPASS_IDENTITY_TOKEN or PULLPASS_IDENTITY_TOKEN_FILE) are set: set one",
        ),
        (Some(token), None) | (None, Some(token)) => token,
        (None, None) => fail(
            "set PULLPASS_TOKEN or PULLPASS_TOKEN_FILE to a LAUNCHER access token, \
             or PULLPASS_IDENTITY_TOKEN_FILE to a workload-identity token's file",
        ),
    }
}

/// A token from the variable `value`, else from the file the variable
/// `file` names; `None` when neither is set.
fn token_from(value: &str, file: &str) -> Option<zeroize::Zeroizing<String>> {
    if let Ok(token) = std::env::var(value)
        && !token.trim().is_empty()
    {
        return Some(zeroize::Zeroizing::new(token.trim().to_owned()));
    }
    let path = std::env::var(file).ok().filter(|p| !p.is_empty())?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            Some(zeroize::Zeroizing::new(text.trim().to_owned()))
        }
        Err(e) => fail(&format!("{file} {path}: {e}")),
    }
}

async fn list() {
    let client = connect().await;
    let mut hosts = serde_json::Map::new();
    if let Ok(gateway) = std::env::var("PULLPASS_GATEWAY")
        && !gateway.trim().is_empty()
    {
        hosts.insert(gateway.trim().to_owned(), "pullpass".into());
    }
    match client.list_credentials(&workspace(), "").await {
        Ok(credentials) => {
            for credential in credentials {
                let username = match Provider::try_from(credential.provider) {
                    Ok(Provider::Ecr) => "AWS".to_owned(),
                    Ok(Provider::Google) => "oauth2accesstoken".to_owned(),
                    _ if credential.allow_passthrough => credential.username.clone(),
                    _ => continue,
                };
                if !credential.registry_server.contains('/') {
                    hosts.insert(credential.registry_server.clone(), username.into());
                }
            }
        }
        Err(Error::PermissionDenied { .. }) => {}
        Err(e) => fail(&format!("pullpass: {e}")),
    }
    println!("{}", serde_json::Value::Object(hosts));
}
