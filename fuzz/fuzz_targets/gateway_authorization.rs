//! The pull gateway's `Authorization` header. Property: credentials read
//! from a header, written back as `Basic base64(user:password)`, read the
//! same; and their `Debug` does not depend on the password.
#![no_main]

mod swap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use pullpass_server::gateway::credentials::basic;

fuzz_target!(|data: &[u8]| {
    let Some(credentials) = basic(Some(data)) else { return };
    let written = format!("Basic {}", STANDARD.encode(format!("{}:{}", credentials.username, *credentials.password)));
    let again = basic(Some(written.as_bytes())).expect("written credentials read back");
    assert_eq!(again.username, credentials.username);
    assert_eq!(*again.password, *credentials.password);
    assert!(!credentials.username.contains(':'), "a username with ':' cannot be written back");
    // `Debug` does not depend on the password: the same credentials with
    // another password of the same length print the same.
    let mut swapped = basic(Some(data)).expect("deterministic");
    *swapped.password = swap::other_text(&credentials.password);
    assert_eq!(format!("{credentials:?}"), format!("{swapped:?}"), "Debug shows something of the password");
});
