//! The pull gateway's request paths and queries. Property: a path the
//! gateway serves names a registry and a repository whose every component
//! is a valid path component (so no `.`, `..`, empty, percent-encoded or
//! upper-case component ever reaches an upstream URL), and a digest or tag
//! that obeys the grammar.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass::registry::{RegistryHost, is_path_component};
use pullpass_server::gateway::route::{self, Route, Target};
use pullpass_server::pulls::ManifestRef;
use pullpass_server::pulls::address::{Addressing, Alias};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    let addressing = Addressing {
        public_host: RegistryHost::parse("127.0.0.1:50052").unwrap(),
        aliases: vec![Alias::parse("local=127.0.0.1:5000").unwrap()],
    };
    let Ok(Route::Pull(pull)) = route::parse(path, query, &addressing) else { return };
    assert!(!pull.repository.is_empty());
    for component in pull.repository.split('/') {
        assert!(is_path_component(component), "component {component:?} of {:?}", pull.repository);
    }
    assert!(RegistryHost::parse(pull.registry.as_str()).is_ok_and(|h| h == pull.registry));
    match &pull.target {
        Target::Manifest(ManifestRef::Tag(tag)) => {
            assert!(!tag.is_empty() && tag.len() <= 128, "tag {tag:?}");
            assert!(tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "tag {tag:?}");
        }
        Target::Manifest(ManifestRef::Digest(digest)) | Target::Blob(digest) => {
            let printed = digest.to_string();
            assert!(printed.contains(':') && !printed.contains('/'), "digest {printed:?}");
        }
        Target::Tags => {}
    }
});
