//! Choosing the credential for an image: same registry host, the namespace
//! covering the repository with the longest path (so two credentials on one
//! host can serve different repositories), allowed for the caller's project.
//! Ties go to the smallest credential id, so the choice is stable.

use std::sync::Arc;

use pullpass::reason;
use pullpass::reference::ImageRef;

use crate::domain::credential::StoredCredential;
use crate::domain::{ProjectName, WorkspaceId};
use crate::error::Error;

/// The best credential for `image`, or NOT_FOUND with reason
/// `CREDENTIAL_NOT_FOUND_FOR_REGISTRY` naming registry and workspace.
pub fn choose<'a>(
    candidates: &'a [Arc<StoredCredential>],
    workspace: &WorkspaceId,
    image: &ImageRef,
    project: Option<&ProjectName>,
) -> Result<&'a Arc<StoredCredential>, Error> {
    let serving: Vec<&Arc<StoredCredential>> =
        candidates.iter().filter(|c| c.credential.registry.serves(image.registry(), image.repository())).collect();
    let best = serving.iter().filter(|c| c.credential.allows_project(project)).max_by(|a, b| {
        a.credential
            .registry
            .namespace_depth()
            .cmp(&b.credential.registry.namespace_depth())
            .then_with(|| b.credential.name.credential.cmp(&a.credential.name.credential))
    });
    match best {
        Some(found) => Ok(found),
        None if !serving.is_empty() => Err(Error::NoMatch {
            reason: reason::CREDENTIAL_NOT_FOUND_FOR_REGISTRY,
            message: format!(
                "{} has credentials for {}/{}, but none allowed for {}",
                workspace.name(),
                image.registry(),
                image.repository(),
                match project {
                    Some(p) => format!("project `{p}`"),
                    None => "callers without a project (set `project`)".to_owned(),
                }
            ),
        }),
        None => Err(Error::NoMatch {
            reason: reason::CREDENTIAL_NOT_FOUND_FOR_REGISTRY,
            message: format!(
                "{} has no credential for registry {} that covers repository {}",
                workspace.name(),
                image.registry(),
                image.repository()
            ),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{Credential, CredentialId, CredentialName, CredentialUid, Provider, SealedSecret, Timestamp};
    use pullpass::registry::RegistryServer;

    /// A GENERIC credential of workspace `acme` (for tests elsewhere too).
    pub(crate) fn stored(id: &str, registry: &str, projects: &[&str]) -> Arc<StoredCredential> {
        Arc::new(StoredCredential {
            credential: Credential {
                name: CredentialName {
                    workspace: WorkspaceId::parse("acme").unwrap(),
                    credential: CredentialId::parse(id).unwrap(),
                },
                uid: CredentialUid([0; 16]),
                provider: Provider::Generic,
                registry: RegistryServer::parse(registry).unwrap().server,
                username: "u".into(),
                secret_version: 1,
                settings: Default::default(),
                allowed_projects: projects.iter().map(|p| ProjectName::parse(p).unwrap()).collect(),
                allow_passthrough: false,
                token_realm_allowlist: vec![],
                ca_bundle_pem: String::new(),
                description: String::new(),
                create_time: Timestamp::from_micros(0),
                update_time: Timestamp::from_micros(0),
                last_used_time: None,
                expire_time: None,
                last_failure: None,
            },
            sealed: SealedSecret { kek_id: "k".into(), wrapped_dek: vec![], ciphertext: vec![] },
        })
    }

    fn chosen(candidates: &[Arc<StoredCredential>], image: &str, project: Option<&str>) -> Result<String, Error> {
        let workspace = WorkspaceId::parse("acme").unwrap();
        let project = project.map(|p| ProjectName::parse(p).unwrap());
        choose(candidates, &workspace, &ImageRef::parse(image).unwrap(), project.as_ref())
            .map(|c| c.credential.name.credential.to_string())
    }

    #[test]
    fn the_longest_covering_namespace_wins() {
        let all = [
            stored("host", "registry.example.com", &[]),
            stored("team", "registry.example.com/team", &[]),
            stored("team-app", "registry.example.com/team/app", &[]),
            stored("other-host", "ghcr.io", &[]),
        ];
        assert_eq!(chosen(&all, "registry.example.com/team/app:1", None).unwrap(), "team-app");
        assert_eq!(chosen(&all, "registry.example.com/team/tool:1", None).unwrap(), "team");
        assert_eq!(chosen(&all, "registry.example.com/teamx/app:1", None).unwrap(), "host");
        assert_eq!(chosen(&all, "ghcr.io/acme/app", None).unwrap(), "other-host");
    }

    #[test]
    fn project_restrictions_are_honoured() {
        let all = [stored("rnaseq-only", "ghcr.io", &["rnaseq"]), stored("generic", "ghcr.io/acme", &["atac"])];
        assert_eq!(chosen(&all, "ghcr.io/acme/x", Some("rnaseq")).unwrap(), "rnaseq-only");
        assert_eq!(chosen(&all, "ghcr.io/acme/x", Some("atac")).unwrap(), "generic");
        let error = chosen(&all, "ghcr.io/acme/x", None).unwrap_err();
        assert!(matches!(error, Error::NoMatch { .. }));
        assert!(error.message().contains("none allowed"), "{error}");
    }

    #[test]
    fn no_credential_for_the_registry_is_not_found_with_the_reason() {
        let all = [stored("a", "ghcr.io", &[])];
        match chosen(&all, "quay.io/acme/x", None).unwrap_err() {
            Error::NoMatch { reason, message } => {
                assert_eq!(reason, "CREDENTIAL_NOT_FOUND_FOR_REGISTRY");
                assert!(message.contains("quay.io") && message.contains("workspaces/acme"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(chosen(&[stored("hub", "docker.io", &[])], "ubuntu", None).unwrap(), "hub");
    }
}
