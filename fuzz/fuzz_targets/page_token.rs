//! Page tokens (`page_token` of every List call). Property: a token decodes
//! only for the query it was made for, to the cursor it was made with; and
//! a token that decodes is exactly the token the server would have made
//! (tokens cannot be forged or altered).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::paging::PageTokens;
use ring::hmac;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let tokens = PageTokens::new(hmac::Key::new(hmac::HMAC_SHA256, b"pullpass fuzz page-token key"));
    let (query, rest) = text.split_once('\n').unwrap_or(("credentials|workspaces/acme", text));
    // Arbitrary text as a token: it must be refused, or be canonical.
    if let Ok(Some(cursor)) = tokens.decode(query, rest) {
        assert_eq!(tokens.encode(query, &cursor), rest, "a token that is not ours decoded");
    }
    // Arbitrary text as a cursor: it comes back, for its query only.
    let token = tokens.encode(query, rest);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "not URL-safe: {token}");
    if rest.is_empty() {
        return;
    }
    assert_eq!(tokens.decode(query, &token).unwrap().as_deref(), Some(rest));
    let other = format!("{query}x");
    assert!(tokens.decode(&other, &token).is_err(), "a token decoded for another query");
});
