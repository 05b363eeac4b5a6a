//! Property tests for the parsers that read what callers and registries
//! send: challenges, docker `config.json`, realm origins, list filters, ids
//! and service-account keys. Whatever the input, they answer without
//! panicking; challenges written by the grammar come back intact.

use proptest::prelude::*;

use crate::credentials::docker_config;
use crate::domain::credential::RealmOrigin;
use crate::domain::{CredentialId, ProjectName, WorkspaceId};
use crate::providers::google_key::GoogleServiceAccountKey;
use crate::secret::SecretBytes;
use crate::upstream::challenge;

/// A quoted-string value with its escapes, and the value it stands for.
fn quoted_value() -> impl Strategy<Value = (String, String)> {
    "[ -~]{0,24}".prop_map(|value: String| {
        let escaped: String =
            value.chars().flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect();
        (format!("\"{escaped}\""), value)
    })
}

/// Text shaped like `WWW-Authenticate` values, plus arbitrary text.
fn header_like() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9 ,=\"\\\\:/._\\-]{0,80}", "\\PC{0,60}"]
}

proptest! {
    #[test]
    fn challenges_never_panic(headers in proptest::collection::vec(header_like(), 0..3)) {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        for parsed in challenge::parse(&headers) {
            prop_assert!(!parsed.scheme.is_empty());
            prop_assert_eq!(parsed.scheme.to_ascii_lowercase(), parsed.scheme.clone());
        }
    }

    #[test]
    fn bearer_challenges_keep_their_quoted_parameters(
        scheme in "(?i)bearer",
        (realm_text, realm) in quoted_value(),
        (service_text, service) in quoted_value(),
        (scope_text, scope) in quoted_value(),
        space in "[ ]{0,2}",
        basic_first in any::<bool>(),
    ) {
        let bearer = format!("{scheme} realm={realm_text},{space}service={service_text},scope={scope_text}");
        let header = if basic_first { format!("Basic realm=\"registry\", {bearer}") } else { bearer };
        let parsed = challenge::parse(&[&header]);
        let found = parsed.iter().find(|c| c.scheme == "bearer");
        prop_assert!(found.is_some(), "{} -> {:?}", header, parsed);
        let found = found.unwrap();
        prop_assert_eq!(found.param("realm"), Some(realm.as_str()));
        prop_assert_eq!(found.param("service"), Some(service.as_str()));
        prop_assert_eq!(found.param("scope"), Some(scope.as_str()));
    }

    #[test]
    fn docker_config_documents_never_panic(
        key in "\\PC{0,30}",
        auth in "[A-Za-z0-9+/=:]{0,40}|\\PC{0,20}",
        username in "\\PC{0,12}",
        raw in "\\PC{0,80}",
    ) {
        let document = serde_json::json!({
            "auths": {key.clone(): {"auth": auth, "username": username, "password": "p", "identitytoken": raw}},
            "credHelpers": {key: "helper"},
        });
        let _ = docker_config::read(&document.to_string());
        let _ = docker_config::read(&raw);
    }

    #[test]
    fn names_origins_and_keys_never_panic(input in "\\PC{0,80}|[a-z0-9:/._\\-]{0,40}") {
        let _ = RealmOrigin::parse(&input);
        let _ = WorkspaceId::parse(&input);
        let _ = WorkspaceId::from_name(&input);
        let _ = CredentialId::parse(&input);
        let _ = ProjectName::parse(&input);
        let _ = crate::filter::terms(&input);
        let _ = GoogleServiceAccountKey::parse(&SecretBytes::new(input.into_bytes()));
    }

    #[test]
    fn service_account_keys_with_odd_pem_never_panic(
        body in "[A-Za-z0-9+/=\n ]{0,200}|\\PC{0,40}",
        email in "\\PC{0,20}",
        token_uri in "\\PC{0,30}",
    ) {
        let key = serde_json::json!({
            "type": "service_account",
            "client_email": email,
            "private_key": format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"),
            "token_uri": token_uri,
        });
        prop_assert!(GoogleServiceAccountKey::parse(&SecretBytes::new(key.to_string().into_bytes())).is_err());
    }

    #[test]
    fn list_filters_never_panic(input in "[a-z_ ]{0,12}(=|!=|>=|<|>|<=| AND |\"|:)[a-zA-Z0-9:.\\-\" ]{0,30}") {
        let _ = crate::filter::terms(&input);
    }
}
