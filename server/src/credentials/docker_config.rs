//! Reading a docker `config.json` into credential inputs, one per entry.
//!
//! Handled: `auths` entries with `auth` (base64 `user:password`) or
//! `username` + `password`. Reported per entry, never silently skipped:
//! `identitytoken` (an OAuth refresh token), `registrytoken` (a short-lived
//! bearer token), entries without credentials, `credHelpers` and
//! `credsStore` (programs pullpass cannot run), and entries that hold
//! short-lived tokens (ECR, Google `oauth2accesstoken`).
//!
//! The parsed document holds every secret of the file, so it is wiped
//! (every string in it zeroized) when reading is done ([`Wiped`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pullpass::registry::RegistryServer;
use serde_json::Value;
use zeroize::Zeroizing;

use super::spec::CredentialInput;
use crate::domain::Provider;
use crate::domain::ids::shorten;
use crate::error::Error;
use crate::secret::SecretBytes;

/// Largest accepted document.
pub const MAX_CONFIG_LEN: usize = 1024 * 1024;

/// One entry of the document.
#[derive(Debug)]
pub struct ConfigEntry {
    /// The key as written (`https://index.docker.io/v1/`, or `credsStore`).
    pub config_key: String,
    /// What to create, or why this entry cannot be imported.
    pub outcome: Result<(RegistryServer, CredentialInput), Error>,
}

/// Splits a document into entries. A document that is not a JSON object, or
/// whose `auths`/`credHelpers` are not objects, fails as a whole.
pub fn read(config_json: &str) -> Result<Vec<ConfigEntry>, Error> {
    let invalid = |message: String| Error::invalid("config_json", message);
    if config_json.len() > MAX_CONFIG_LEN {
        return Err(invalid(format!("is larger than {MAX_CONFIG_LEN} bytes")));
    }
    // The parser error names a position only, never the document's content.
    let parsed = Wiped(
        serde_json::from_str(config_json)
            .map_err(|e| invalid(format!("is not valid JSON (line {}, column {})", e.line(), e.column())))?,
    );
    let Value::Object(document) = &parsed.0 else {
        return Err(invalid("must be a JSON object with `auths`".into()));
    };
    let mut entries = Vec::new();
    match document.get("auths") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auths)) => {
            for (key, entry) in auths {
                entries.push(ConfigEntry { config_key: key.clone(), outcome: read_auth_entry(key, entry) });
            }
        }
        Some(_) => return Err(invalid("`auths` must be an object".into())),
    }
    match document.get("credHelpers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(helpers)) => {
            for (key, helper) in helpers {
                let helper = helper.as_str().unwrap_or("?");
                entries.push(ConfigEntry {
                    config_key: key.clone(),
                    outcome: Err(unsupported(format!(
                        "`credHelpers` sends {} to the program docker-credential-{}, which pullpass cannot run; get the credential from that helper and create it with CreateCredential",
                        shorten(key),
                        shorten(helper)
                    ))),
                });
            }
        }
        Some(_) => return Err(invalid("`credHelpers` must be an object".into())),
    }
    if let Some(store) = document.get("credsStore").and_then(Value::as_str) {
        entries.push(ConfigEntry {
            config_key: "credsStore".into(),
            outcome: Err(unsupported(format!(
                "`credsStore` keeps credentials in the program docker-credential-{}, which pullpass cannot run; entries of `auths` without `auth` are stored there",
                shorten(store)
            ))),
        });
    }
    if entries.is_empty() {
        return Err(invalid("holds no `auths`, `credHelpers` or `credsStore` entries".into()));
    }
    Ok(entries)
}

/// A parsed document, every string of which is zeroized when dropped.
struct Wiped(Value);

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroizes every string in `value` (object keys are registry names and
/// field names: they are dropped as they are).
fn wipe(value: &mut Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(fields) => fields.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn unsupported(message: String) -> Error {
    Error::FailedPrecondition { reason: "UNSUPPORTED_DOCKER_CONFIG_ENTRY", message }
}

fn entry_error(message: impl Into<String>) -> Error {
    Error::invalid("config_json", message)
}

fn read_auth_entry(key: &str, entry: &Value) -> Result<(RegistryServer, CredentialInput), Error> {
    let server = RegistryServer::parse(key).map_err(|e| entry_error(format!("registry key {e}")))?.server;
    let Value::Object(fields) = entry else { return Err(entry_error("entry must be an object")) };
    let text = |name: &str| fields.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    if text("identitytoken").is_some() {
        return Err(unsupported(
            "holds an `identitytoken` (an OAuth refresh token from `docker login` with an identity provider), not a username and password; create the credential with a personal access token instead".into(),
        ));
    }
    if text("registrytoken").is_some() {
        return Err(unsupported(
            "holds a `registrytoken` (a short-lived bearer token), not a username and password; create the credential with a personal access token instead".into(),
        ));
    }
    let (username, password) = if let Some(auth) = text("auth") {
        let decoded = Zeroizing::new(STANDARD.decode(auth.trim()).map_err(|_| entry_error("`auth` is not base64"))?);
        let decoded = std::str::from_utf8(&decoded).map_err(|_| entry_error("`auth` is not UTF-8"))?;
        let (user, pass) =
            decoded.split_once(':').ok_or_else(|| entry_error("`auth` does not decode to `username:password`"))?;
        (user.to_owned(), Zeroizing::new(pass.to_owned()))
    } else if let (Some(user), Some(pass)) = (text("username"), text("password")) {
        (user.to_owned(), Zeroizing::new(pass.to_owned()))
    } else {
        return Err(unsupported(
            "holds no credentials (no `auth`, or `username` and `password`); they are probably kept by a credential helper".into(),
        ));
    };
    let provider = infer_provider(&server, &username)?;
    let username = if provider == Provider::Google { String::new() } else { username };
    Ok((
        server.clone(),
        CredentialInput {
            provider: provider.code(),
            registry_server: server.to_string(),
            username,
            secret: Some(SecretBytes::from_string(password.to_string())),
            ..Default::default()
        },
    ))
}

/// Guesses the provider from the registry host and user name.
fn infer_provider(server: &RegistryServer, username: &str) -> Result<Provider, Error> {
    let host = server.host().hostname();
    if server.host().is_docker_hub() {
        return Ok(Provider::DockerHub);
    }
    if crate::providers::ecr::ecr_region(server.host().as_str()).is_some() {
        return Err(unsupported(
            "is an ECR login, which holds a 12-hour token rather than an access key; create an ECR credential with an access key id and secret access key".into(),
        ));
    }
    let google = host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev");
    if google {
        return match username {
            "_json_key" => Ok(Provider::Google),
            "oauth2accesstoken" => Err(unsupported(
                "holds a short-lived Google access token (`oauth2accesstoken`); create a GOOGLE credential with the service-account JSON key".into(),
            )),
            _ => Ok(Provider::Generic),
        };
    }
    Ok(match host {
        "ghcr.io" => Provider::Ghcr,
        "quay.io" => Provider::Quay,
        "registry.gitlab.com" | "gitlab.com" => Provider::Gitlab,
        _ => Provider::Generic,
    })
}

/// The credential id for an entry: `prefix` + the registry with everything
/// but letters and digits turned into `-`, at most 64 characters.
pub fn credential_id_for(prefix: &str, server: &RegistryServer) -> String {
    let mut slug = String::new();
    for c in server.to_string().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let mut id = format!("{prefix}{slug}");
    id.truncate(64);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_of_a_parsed_document_is_wiped() {
        let mut document: Value = serde_json::from_str(
            r#"{"auths": {"quay.io": {"auth": "c2VjcmV0", "list": ["secret", 1, true, null]}}, "credsStore": "x"}"#,
        )
        .unwrap();
        wipe(&mut document);
        fn strings(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::String(text) => found.push(text.clone()),
                Value::Array(items) => items.iter().for_each(|v| strings(v, found)),
                Value::Object(fields) => fields.values().for_each(|v| strings(v, found)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        strings(&document, &mut found);
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(String::is_empty), "{found:?}");
        assert_eq!(document["auths"]["quay.io"]["list"][1], 1, "only strings are touched");
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn auth_and_username_password_entries_become_inputs_with_folded_registries() {
        let doc = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("alice:canary-hub-1")},
                "ghcr.io": {"username": "octo", "password": "canary-ghcr-2"},
                "registry.example.com:5000": {"auth": b64("bob:pa:ss")},
            }
        });
        let entries = read(&doc.to_string()).unwrap();
        assert_eq!(entries.len(), 3);
        let (server, input) = entries[0].outcome.as_ref().unwrap();
        assert_eq!(server.to_string(), "docker.io");
        assert_eq!(input.provider, Provider::DockerHub.code());
        assert_eq!(input.username, "alice");
        let (_, input) = entries[1].outcome.as_ref().unwrap();
        assert_eq!(input.provider, Provider::Ghcr.code());
        let (_, input) = entries[2].outcome.as_ref().unwrap();
        assert_eq!(input.secret.as_ref().unwrap().expose(), b"pa:ss");
        assert_eq!(input.provider, Provider::Generic.code());
    }

    #[test]
    fn tokens_helpers_and_empty_entries_get_their_own_errors() {
        let doc = serde_json::json!({
            "auths": {
                "a.example.com": {"identitytoken": "canary-refresh"},
                "b.example.com": {"registrytoken": "canary-bearer"},
                "c.example.com": {},
                "d.example.com": {"auth": "!!!"},
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com": {"auth": b64("AWS:canary-ecr")},
                "gcr.io": {"auth": b64("oauth2accesstoken:canary-ya29")},
            },
            "credHelpers": {"e.example.com": "gcloud"},
            "credsStore": "desktop",
        });
        let entries = read(&doc.to_string()).unwrap();
        assert_eq!(entries.len(), 8);
        for entry in &entries {
            let error = entry.outcome.as_ref().unwrap_err();
            assert!(!error.message().contains("canary"), "{error:?}");
        }
        assert!(entries[0].outcome.as_ref().unwrap_err().message().contains("identitytoken"));
        assert!(entries[1].outcome.as_ref().unwrap_err().message().contains("registrytoken"));
        assert_eq!(entries[7].config_key, "credsStore");
    }

    #[test]
    fn malformed_documents_fail_as_a_whole_without_echoing_content() {
        for bad in ["{\"auths\": {\"canary-x\"", "[]", "{\"auths\": []}", "{}", "{\"credHelpers\": 3}"] {
            match read(bad) {
                Err(Error::InvalidArgument(v)) => {
                    assert_eq!(v[0].field, "config_json");
                    assert!(!v[0].description.contains("canary"));
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn generated_ids_are_valid_and_bounded() {
        let server = RegistryServer::parse("registry.example.com:5000/team").unwrap().server;
        assert_eq!(credential_id_for("imp-", &server), "imp-registry-example-com-5000-team");
        let long = RegistryServer::parse(&format!("{}.example.com", "a".repeat(60))).unwrap().server;
        assert_eq!(credential_id_for("x-", &long).len(), 64);
    }
}
