//! List filters (`ListCredentials.filter`, `ListAuditEvents.filter`).
//! Property: accepted terms, written back canonically (values quoted with
//! `filter::quoted`, as the console's audit filter is built),
//! parse to the same terms; a credential filter written back as a filter
//! parses to the same filter; and two filters with the same page-token form
//! (`canonical`) are the same filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::credentials::filter as credential_filter;
use pullpass_server::filter::{self, Op, quoted};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(terms) = filter::terms(text) {
        let written: Vec<String> = terms
            .iter()
            .map(|t| {
                let op = match t.op {
                    Op::Equals => "=",
                    Op::AtLeast => ">=",
                    Op::Below => "<",
                };
                format!("{} {op} {}", t.field, quoted(&t.value))
            })
            .collect();
        let written = written.join(" AND ");
        let again = filter::terms(&written).unwrap_or_else(|e| panic!("{written:?} does not parse back: {e:?}"));
        assert_eq!(again, terms, "{written:?}");
    }
    if let Ok(parsed) = credential_filter::parse(text) {
        let mut terms = Vec::new();
        if let Some(registry) = &parsed.registry {
            terms.push(format!("registry_server = {}", quoted(&registry.to_string())));
        }
        if let Some(provider) = parsed.provider {
            terms.push(format!("provider = {}", provider.wire_name()));
        }
        let written = terms.join(" AND ");
        let again =
            credential_filter::parse(&written).unwrap_or_else(|e| panic!("{written:?} does not parse back: {e:?}"));
        assert_eq!(again, parsed, "{written:?}");
        assert_eq!(credential_filter::canonical(&again), credential_filter::canonical(&parsed));
    }
});
