//! Test inputs: credentials of every provider with distinctive canary
//! secrets, and a Google service-account key made for tests only.

use pullpass::v1::{Credential, Provider};

/// A 2048-bit RSA key (PKCS#8 PEM) generated for these tests; it guards
/// nothing.
pub const TEST_RSA_PKCS8_PEM: &str = include_str!("../fixtures/test-rsa-2048.pem");

/// A Google service-account JSON key around [`TEST_RSA_PKCS8_PEM`].
pub fn google_key_json(client_email: &str, token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "pullpass-test",
        "private_key_id": "0123456789abcdef",
        "private_key": TEST_RSA_PKCS8_PEM,
        "client_email": client_email,
        "client_id": "1",
        "token_uri": token_uri,
    })
    .to_string()
}

/// A credential of `provider` with `secret`, on a sensible registry.
pub fn credential(provider: Provider, secret: &str) -> Credential {
    let (registry, username) = match provider {
        Provider::DockerHub => ("https://index.docker.io/v1/", "alice"),
        Provider::Ghcr => ("", "octocat"),
        Provider::Gitlab => ("gitlab.example.com:5050/group", "gitlab+deploy-token-7"),
        Provider::Google => ("europe-docker.pkg.dev/pullpass-test", ""),
        Provider::Ecr => ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "AKIAIOSFODNN7EXAMPLE"),
        Provider::Quay => ("quay.io/acme", "acme+robot"),
        Provider::Generic | Provider::Unspecified => ("registry.example.com:5000", "ci"),
        Provider::Acr => ("acme.azurecr.io", ""),
    };
    // ACR names its app registration; the secret is its client secret.
    let provider_settings = (provider == Provider::Acr).then(|| {
        pullpass::v1::credential::ProviderSettings::Azure(pullpass::v1::AzureIdentity {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "0a1b2c3d-0000-4000-8000-000000000001".into(),
        })
    });
    Credential {
        provider: provider as i32,
        registry_server: registry.into(),
        username: username.into(),
        secret: secret.into(),
        provider_settings,
        ..Default::default()
    }
}
