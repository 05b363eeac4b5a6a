//! Hand-written `Debug` for the generated messages that carry secrets. A
//! secret field prints as `<redacted>` (or `""` when empty, so logs still show
//! whether one was sent); every other field prints as prost would.

use std::fmt;

use crate::v1::{
    AccessToken, CreateConsoleLinkResponse, Credential, ImportDockerConfigRequest, RegistryAuth,
    TestIdentityTokenRequest,
};

/// Shows whether a secret field is set without showing it.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("\"\"") } else { f.write_str("<redacted>") }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("provider", &self.provider())
            .field("registry_server", &self.registry_server)
            .field("username", &self.username)
            .field("secret", &Redacted(&self.secret))
            .field("secret_set", &self.secret_set)
            .field("secret_version", &self.secret_version)
            .field("allowed_projects", &self.allowed_projects)
            .field("allow_passthrough", &self.allow_passthrough)
            .field("description", &self.description)
            .field("create_time", &self.create_time)
            .field("update_time", &self.update_time)
            .field("token_realm_allowlist", &self.token_realm_allowlist)
            .field("ca_bundle_pem_len", &self.ca_bundle_pem.len())
            .field("normalizations", &self.normalizations)
            .field("last_used_time", &self.last_used_time)
            .finish()
    }
}

impl fmt::Debug for TestIdentityTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestIdentityTokenRequest")
            .field("parent", &self.parent)
            .field("token", &Redacted(&self.token))
            .finish()
    }
}

impl fmt::Debug for CreateConsoleLinkResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateConsoleLinkResponse")
            .field("url", &Redacted(&self.url))
            .field("expire_time", &self.expire_time)
            .finish()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("name", &self.name)
            .field("role", &self.role())
            .field("projects", &self.projects)
            .field("expire_time", &self.expire_time)
            .field("description", &self.description)
            .field("create_time", &self.create_time)
            .field("last_used_time", &self.last_used_time)
            .field("revoke_time", &self.revoke_time)
            .field("token", &Redacted(&self.token))
            .finish()
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("image", &self.image)
            .field("normalized_image", &self.normalized_image)
            .field("status", &self.status)
            .field("kind", &self.kind())
            .field("token", &Redacted(&self.token))
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .field("expire_time", &self.expire_time)
            .field("registry", &self.registry)
            .field("granted_scope", &self.granted_scope)
            .field("requested_scope", &self.requested_scope)
            .field("credential", &self.credential)
            .field("cached", &self.cached)
            .field("issue_time", &self.issue_time)
            .field("gateway_image", &self.gateway_image)
            .finish()
    }
}

impl fmt::Debug for ImportDockerConfigRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportDockerConfigRequest")
            .field("parent", &self.parent)
            .field("config_json", &Redacted(&self.config_json))
            .field("name_prefix", &self.name_prefix)
            .field("validate_only", &self.validate_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_secret_bearing_messages_never_shows_the_secret() {
        let canary = "canary-SECRET-7f3a";
        let credential = Credential { secret: canary.into(), ..Default::default() };
        let token = AccessToken { token: canary.into(), ..Default::default() };
        let auth = RegistryAuth { token: canary.into(), password: canary.into(), ..Default::default() };
        let import = ImportDockerConfigRequest { config_json: canary.into(), ..Default::default() };
        let link = CreateConsoleLinkResponse { url: canary.into(), ..Default::default() };
        for text in [
            format!("{link:?}"),
            format!("{credential:?}"),
            format!("{token:?}"),
            format!("{auth:?}"),
            format!("{import:?}"),
            format!(
                "{:?}",
                crate::v1::CreateCredentialRequest { credential: Some(credential.clone()), ..Default::default() }
            ),
        ] {
            assert!(!text.contains(canary), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
}
