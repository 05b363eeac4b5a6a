//! Google service-account JSON keys (GOOGLE credentials). Property: any
//! bytes get an answer; an accepted key has an email and an https token
//! URI; and neither its `Debug` nor an error shows the private key (its
//! PEM body, where that text is nowhere else in the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::providers::google_key::GoogleServiceAccountKey;
use pullpass_server::secret::SecretBytes;

fuzz_target!(|data: &[u8]| {
    let secret = SecretBytes::new(data.to_vec());
    let text = String::from_utf8_lossy(data);
    // The base64 body of a PEM private key, if the input holds one, and
    // the input without it.
    let block = text.split("-----BEGIN PRIVATE KEY-----").nth(1).and_then(|rest| rest.split("-----END").next());
    let outside = block.map(|b| text.replacen(b, "", 1)).unwrap_or_default();
    let key_body = block
        .map(|b| b.replace("\\n", "").replace(['\n', '\r'], "").chars().take(16).collect::<String>())
        .filter(|b| b.len() >= 16 && b.is_ascii())
        // Text that is also elsewhere in the input (an e-mail, a type) may
        // rightly be echoed; only a key body found nowhere else can be told
        // apart from it. (The substring check once failed on such an input.)
        .filter(|b| !outside.contains(b.as_str()));
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
