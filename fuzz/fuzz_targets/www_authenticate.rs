//! `WWW-Authenticate` challenges from registries. Property: whatever the
//! headers, the parser answers; schemes and parameter names come out
//! lowercased; and each parsed challenge, written back canonically, parses
//! to the same challenge.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::upstream::challenge::{self, Challenge};

fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn canonical(challenge: &Challenge) -> String {
    let params: Vec<String> = challenge.params.iter().map(|(k, v)| format!("{k}={}", quoted(v))).collect();
    if params.is_empty() { challenge.scheme.clone() } else { format!("{} {}", challenge.scheme, params.join(", ")) }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let headers: Vec<&str> = text.split('\n').take(4).collect();
    for parsed in challenge::parse(&headers) {
        assert!(!parsed.scheme.is_empty());
        assert_eq!(parsed.scheme, parsed.scheme.to_ascii_lowercase());
        for name in parsed.params.keys() {
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(parsed.param(name).is_some());
        }
        let written = canonical(&parsed);
        let reread = challenge::parse(&[&written]);
        assert_eq!(reread.len(), 1, "{written:?} reads as {} challenges", reread.len());
        assert_eq!(reread[0].scheme, parsed.scheme, "{written:?}");
        assert_eq!(reread[0].params, parsed.params, "{written:?}");
    }
});
