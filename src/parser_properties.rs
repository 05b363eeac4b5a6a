//! Property tests for the shared parsers: whatever the input, they answer
//! `Ok` or `Err` without panicking, and what they print parses back to the
//! same value (normalization is a fixed point).

use proptest::prelude::*;

use crate::reference::ImageRef;
use crate::registry::{RegistryHost, RegistryServer};
use crate::scope::Scope;
use crate::time::{format_rfc3339, parse_rfc3339_micros};

/// Text biased toward the characters references are made of, with some
/// arbitrary Unicode mixed in.
fn reference_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:/@\\-\\[\\]]{0,90}",
        "[a-z0-9]{1,12}(\\.[a-z0-9]{1,8})?(:[0-9]{1,6})?(/[a-z0-9._\\-]{0,12}){1,4}(:[A-Za-z0-9_.\\-]{0,20})?(@sha256:[0-9a-f]{0,70})?",
        "\\PC{0,60}",
        ".{0,40}",
    ]
}

/// A reference that is valid by the distribution grammar.
fn valid_reference() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,8}([._\\-][a-z0-9]{1,8}){0,2}";
    // Without a domain the first component must not look like one.
    let first = "[a-z0-9]{1,8}([_\\-][a-z0-9]{1,8}){0,2}";
    let domain = prop_oneof![
        Just(String::new()),
        "[a-z][a-z0-9]{0,8}\\.[a-z]{2,5}/",
        "localhost:[1-9][0-9]{0,3}/",
        "127\\.0\\.0\\.1:[1-9][0-9]{0,3}/",
    ];
    let tag = prop_oneof![Just(String::new()), ":[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,20}"];
    let digest = prop_oneof![Just(String::new()), "@sha256:[0-9a-f]{64}"];
    (domain, first, proptest::collection::vec(component, 0..3), tag, digest).prop_map(
        |(domain, first, rest, tag, digest)| {
            let path = std::iter::once(first).chain(rest).collect::<Vec<_>>().join("/");
            format!("{domain}{path}{tag}{digest}")
        },
    )
}

proptest! {
    #[test]
    fn image_references_never_panic_and_normalize_to_a_fixed_point(input in reference_like()) {
        if let Ok(image) = ImageRef::parse(&input) {
            let printed = image.to_string();
            let again = ImageRef::parse(&printed);
            prop_assert_eq!(again.as_ref().map(ToString::to_string), Ok(printed.clone()), "{}", input);
        }
    }

    #[test]
    fn references_of_the_grammar_parse_and_keep_their_path(input in valid_reference()) {
        let image = ImageRef::parse(&input);
        prop_assert!(image.is_ok(), "{}: {:?}", input, image);
        let image = image.unwrap();
        let without_suffix = input.split(['@']).next().unwrap_or_default();
        prop_assert!(without_suffix.contains(image.repository().trim_start_matches("library/")), "{}", input);
    }

    #[test]
    fn registry_servers_and_hosts_never_panic_and_print_what_they_parsed(input in reference_like()) {
        if let Ok(parsed) = RegistryServer::parse(&input) {
            let printed = parsed.server.to_string();
            let again = RegistryServer::parse(&printed).map(|p| p.server);
            prop_assert_eq!(again, Ok(parsed.server), "{}", input);
        }
        if let Ok(host) = RegistryHost::parse(&input) {
            prop_assert_eq!(RegistryHost::parse(host.as_str()), Ok(host.clone()));
        }
    }

    #[test]
    fn scopes_never_panic_and_round_trip(input in "(repository:)?[a-z0-9/._:,*\\-]{0,40}|\\PC{0,30}") {
        if let Some(scope) = Scope::parse(&input) {
            prop_assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
        }
    }
}

proptest! {
    // Cheap to run, and the interesting inputs are rare: more cases.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn timestamps_never_panic_on_any_text(
        input in "[0-9:.TZtz+\\- ]{0,32}|\\PC{0,32}|20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]([.+\\-]?\\PC{0,6}|[+\\-][0-9:\u{e9}\u{20ac}]{1,5})"
    ) {
        let _ = parse_rfc3339_micros(&input);
    }

    #[test]
    fn formatted_timestamps_parse_back(seconds in -62_135_596_800i64..253_402_300_799) {
        prop_assert_eq!(parse_rfc3339_micros(&format_rfc3339(seconds)), Some(seconds * 1_000_000));
    }
}
