//! Google service-account JSON keys: the secret of a GOOGLE credential.
//!
//! Parsed when the credential is stored (so a truncated or wrong file is
//! refused at once) and again when a token is issued, to sign the JWT that
//! is exchanged for an OAuth access token.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::RsaKeyPair;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// The parts of a service-account key pullpass uses.
pub struct GoogleServiceAccountKey {
    /// The service account's e-mail (the JWT issuer).
    pub client_email: String,
    /// Where the signed JWT is exchanged for an access token.
    pub token_uri: String,
    /// Id of the signing key, for the JWT header.
    pub private_key_id: String,
    /// The RSA signing key.
    pub key_pair: RsaKeyPair,
}

impl fmt::Debug for GoogleServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl GoogleServiceAccountKey {
    /// Parses and checks a JSON key. Errors name the missing or bad field,
    /// never its value.
    pub fn parse(secret: &SecretBytes) -> Result<Self, String> {
        let file: KeyFile = serde_json::from_slice(secret.expose()).map_err(|e| {
            format!(
                "a GOOGLE secret must be a service-account JSON key; it does not parse as JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if let Some(kind) = &file.kind
            && kind != "service_account"
        {
            // The value is echoed only when it looks like a type name: in a
            // mangled file it may hold part of the private key (found by
            // the google_key fuzz target).
            let looks_like_a_type = kind.len() <= 32 && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            return Err(if looks_like_a_type {
                format!("the JSON key has type `{kind}`; expected `service_account`")
            } else {
                "the JSON key's `type` is not `service_account`".to_owned()
            });
        }
        let client_email = file
            .client_email
            .filter(|e| e.contains('@') && !e.chars().any(char::is_whitespace))
            .ok_or("the JSON key has no valid `client_email`")?;
        let token_uri = file
            .token_uri
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or("the JSON key has no valid `token_uri` (an https URL)")?;
        let pem = Zeroizing::new(file.private_key.ok_or("the JSON key has no `private_key`")?);
        let der = pem_to_der(&pem).ok_or("the JSON key's `private_key` is not a PEM `PRIVATE KEY` block")?;
        let key_pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("the JSON key's `private_key` is not a usable RSA key ({e})"))?;
        Ok(Self { client_email, token_uri, private_key_id: file.private_key_id.unwrap_or_default(), key_pair })
    }
}

/// Decodes the body of a `-----BEGIN PRIVATE KEY-----` block.
fn pem_to_der(pem: &str) -> Option<Zeroizing<Vec<u8>>> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = pem.find(begin)? + begin.len();
    let stop = start + pem[start..].find(end)?;
    let body: Zeroizing<String> = Zeroizing::new(pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect());
    STANDARD.decode(body.as_bytes()).ok().map(Zeroizing::new)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit RSA key made for these tests only.
    pub(crate) const TEST_RSA_PKCS8_PEM: &str = include_str!("../../../tests/fixtures/test-rsa-2048.pem");

    pub(crate) fn key_json(email: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "test",
            "private_key_id": "abc123",
            "private_key": TEST_RSA_PKCS8_PEM,
            "client_email": email,
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string()
    }

    #[test]
    fn a_complete_service_account_key_parses() {
        let key =
            GoogleServiceAccountKey::parse(&SecretBytes::from_string(key_json("ci@test.iam.gserviceaccount.com")))
                .unwrap();
        assert_eq!(key.client_email, "ci@test.iam.gserviceaccount.com");
        assert_eq!(key.private_key_id, "abc123");
    }

    #[test]
    fn incomplete_keys_name_the_missing_field_without_echoing_the_key() {
        let full: serde_json::Value = serde_json::from_str(&key_json("a@b.c")).unwrap();
        for field in ["client_email", "private_key", "token_uri"] {
            let mut partial = full.clone();
            partial.as_object_mut().unwrap().remove(field);
            let error = GoogleServiceAccountKey::parse(&SecretBytes::from_string(partial.to_string())).unwrap_err();
            assert!(error.contains(field), "{error}");
            assert!(!error.contains("BEGIN"), "{error}");
        }
        let error = GoogleServiceAccountKey::parse(&SecretBytes::from_string("{not json".into())).unwrap_err();
        assert!(error.contains("JSON"));
    }

    #[test]
    fn a_mangled_type_is_not_echoed() {
        // Found by the google_key fuzz target: a file cut so that the
        // private key lands inside `type` had it echoed in the error.
        let mangled = r#"{"type": "service_-----BEGIN PRIVATE KEY-----
MIIEvQ0BAQEFAASC
-----END PRIVATE KEY-----
"}"#;
        let error = GoogleServiceAccountKey::parse(&SecretBytes::from_string(mangled.into())).unwrap_err();
        assert!(!error.contains("MIIEvQ") && !error.contains("BEGIN"), "{error}");
        let error = GoogleServiceAccountKey::parse(&SecretBytes::from_string(r#"{"type": "authorized_user"}"#.into()))
            .unwrap_err();
        assert!(error.contains("`authorized_user`"), "{error}");
    }
}
