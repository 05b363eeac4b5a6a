//! Registry-server strings (`Credential.registry_server`, docker
//! `config.json` keys). Property: an accepted server prints in a form that
//! parses back to the same server with nothing left to normalize, and whose
//! host and namespace are themselves valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass::registry::{RegistryHost, RegistryServer, is_path_component};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = RegistryServer::parse(text) else { return };
    let server = parsed.server;
    let printed = server.to_string();
    let again = RegistryServer::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
    assert!(again.server == server, "{printed:?} parses to another server");
    assert!(
        again.normalizations.is_empty(),
        "the normal form {printed:?} is normalized again: {:?}",
        again.normalizations
    );
    let host = server.host().to_string();
    assert!(RegistryHost::parse(&host).is_ok_and(|h| h == *server.host()), "host {host:?} does not parse back");
    assert!(!host.contains('/') && !host.contains('@') && !host.contains(char::is_whitespace));
    if let Some(namespace) = server.namespace() {
        assert!(namespace.split('/').all(is_path_component), "namespace {namespace:?} has a bad component");
        assert!(server.serves(server.host(), &format!("{namespace}/app")));
    }
});
