//! Docker `config.json` documents (`ImportDockerConfig`). Property: any
//! document gets an answer; each importable entry names a server that
//! prints and parses back to itself; the same document gives the same
//! entries; and the entries' `Debug` does not depend on any secret's value
//! (the same entries with every secret swapped for other bytes of the same
//! length print the same, so no secret shows, even where its text is also a
//! server or user name).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass::registry::RegistryServer;
use pullpass_server::credentials::docker_config;
use pullpass_server::secret::SecretBytes;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(entries) = docker_config::read(text) else { return };
    let debug = format!("{entries:?}");
    assert_eq!(debug, format!("{:?}", docker_config::read(text).unwrap()), "not deterministic");
    for entry in &entries {
        let Ok((server, _)) = &entry.outcome else { continue };
        let printed = server.to_string();
        let again = RegistryServer::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
        assert!(again.server == *server);
    }
    let mut swapped = docker_config::read(text).unwrap();
    for entry in &mut swapped {
        if let Ok((_, input)) = &mut entry.outcome
            && let Some(secret) = &input.secret
        {
            // Differs from the secret in every byte.
            let other = secret.expose().iter().map(|b| b ^ 0x5a).collect();
            input.secret = Some(SecretBytes::new(other));
        }
    }
    assert_eq!(debug, format!("{swapped:?}"), "Debug shows something of a secret");
});
