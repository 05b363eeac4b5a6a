//! Docker `config.json` documents (`ImportDockerConfig`). Property: any
//! document gets an answer; each importable entry names a server that
//! prints and parses back to itself; the same document gives the same
//! entries; and no secret shows in the entries' `Debug`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass::registry::RegistryServer;
use pullpass_server::credentials::docker_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(entries) = docker_config::read(text) else { return };
    let debug = format!("{entries:?}");
    assert_eq!(debug, format!("{:?}", docker_config::read(text).unwrap()), "not deterministic");
    for entry in &entries {
        let Ok((server, input)) = &entry.outcome else { continue };
        let printed = server.to_string();
        let again = RegistryServer::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
        assert!(again.server == *server);
        if let Some(secret) = &input.secret {
            let secret = String::from_utf8_lossy(secret.expose());
            if secret.len() >= 12 {
                assert!(!debug.contains(secret.as_ref()), "Debug shows a secret");
            }
        }
    }
});
