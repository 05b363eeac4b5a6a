//! The registry hosts of the clouds whose federated tokens pullpass sends to
//! the registry itself (ACR's `/oauth2/exchange`, a Google access token as
//! a registry password): a token that reaches a whole cloud account goes
//! only to that cloud's registries (or to hosts the operator lists as
//! `--insecure-registry`, for tests and local mirrors).

/// ACR login servers: `<name>.azurecr.io` and the sovereign clouds'.
pub fn is_acr_host(host: &str) -> bool {
    let hostname = host.split(':').next().unwrap_or(host);
    [".azurecr.io", ".azurecr.cn", ".azurecr.us"]
        .iter()
        .any(|suffix| hostname.strip_suffix(suffix).is_some_and(|name| !name.is_empty() && !name.contains('.')))
}

/// Google Artifact Registry and Container Registry hosts.
pub fn is_google_host(host: &str) -> bool {
    let hostname = host.split(':').next().unwrap_or(host);
    hostname == "gcr.io"
        || hostname.strip_suffix(".gcr.io").is_some_and(|r| !r.is_empty() && !r.contains('.'))
        || hostname.strip_suffix("-docker.pkg.dev").is_some_and(|r| !r.is_empty() && !r.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clouds_own_registry_hosts_match() {
        assert!(is_acr_host("acme.azurecr.io"));
        assert!(is_acr_host("acme.azurecr.us"));
        assert!(!is_acr_host("azurecr.io"));
        assert!(!is_acr_host("evil.com/acme.azurecr.io"));
        assert!(!is_acr_host("acme.azurecr.io.evil.com"));
        assert!(!is_acr_host("a.b.azurecr.io"));
        assert!(is_google_host("gcr.io"));
        assert!(is_google_host("eu.gcr.io"));
        assert!(is_google_host("europe-west1-docker.pkg.dev"));
        assert!(!is_google_host("docker.pkg.dev.evil.com"));
        assert!(!is_google_host("evil.com"));
    }
}
