//! Token realms' JSON answers. Property: an accepted answer has a token;
//! its lifetime, by our clock, starts no later than now and lasts at most a
//! day (a realm's clock can never stretch it); a granted scope is part of
//! the request; and the answer's `Debug` does not depend on the token.
#![no_main]

mod swap;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pullpass::scope::{Action, Scope};
use pullpass_server::domain::Timestamp;
use pullpass_server::upstream::token_flow::parse_token_answer;

fuzz_target!(|data: &[u8]| {
    let requested = Scope::request("acme/app", &[Action::Pull]);
    let now = Timestamp::from_micros(1_790_000_000_000_000);
    let Ok(answer) = parse_token_answer(data, &requested, now) else { return };
    assert!(!answer.token.is_empty());
    assert!(answer.issued <= now, "issued after now");
    assert!(answer.expires > answer.issued, "expires before it is issued");
    assert!(answer.expires <= now.plus(Duration::from_secs(24 * 3600)), "a lifetime beyond a day");
    if let Some(granted) = &answer.granted {
        assert_eq!(granted.repository(), requested.repository());
        assert!(!granted.is_empty());
        assert!(granted.actions().iter().all(|a| requested.allows(a)), "granted more than asked: {granted}");
    }
    // `Debug` does not depend on the token: the same answer with another
    // token prints the same (a substring check would also flag a token
    // that happens to read like a time or a scope).
    let mut swapped = parse_token_answer(data, &requested, now).expect("deterministic");
    swapped.token = swap::other_text(&answer.token);
    assert_eq!(format!("{answer:?}"), format!("{swapped:?}"), "Debug shows something of the token");
});
