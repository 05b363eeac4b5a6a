//! Google service-account JSON keys (GOOGLE credentials). Property: any
//! bytes get an answer; an accepted key has an email and an https token
//! URI; and neither its `Debug` nor an error shows the private key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::providers::google_key::GoogleServiceAccountKey;
use pullpass_server::secret::SecretBytes;

fuzz_target!(|data: &[u8]| {
    let secret = SecretBytes::new(data.to_vec());
    let text = String::from_utf8_lossy(data);
    // The base64 body of a PEM private key, if the input holds one.
    let key_body = text
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END").next())
        .map(|b| b.replace("\\n", "").replace(['\n', '\r'], "").chars().take(16).collect::<String>())
        .filter(|b| b.len() >= 16 && b.is_ascii());
    match GoogleServiceAccountKey::parse(&secret) {
        Ok(key) => {
            assert!(!key.client_email.is_empty());
            assert!(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://"), "{}", key.token_uri);
            if let Some(body) = &key_body {
                assert!(!format!("{key:?}").contains(body.as_str()), "Debug shows the private key");
            }
        }
        Err(message) => {
            if let Some(body) = &key_body {
                assert!(!message.contains(body.as_str()), "an error shows the private key");
            }
        }
    }
});
