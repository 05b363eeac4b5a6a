//! The pull gateway's `Range` header. Property: what is forwarded is one
//! well-formed byte range (`bytes=A-B` with A <= B, `bytes=A-`, or
//! `bytes=-N` with N > 0), already in normal form (reading it again gives
//! it back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullpass_server::gateway::range::single_byte_range;

fuzz_target!(|data: &[u8]| {
    let Some(range) = single_byte_range(Some(data)) else { return };
    assert_eq!(single_byte_range(Some(range.as_bytes())).as_deref(), Some(range.as_str()), "not in normal form");
    let spec = range.strip_prefix("bytes=").expect("a bytes range");
    let (start, end) = spec.split_once('-').expect("one dash");
    let number = |s: &str| s.parse::<u64>().ok().filter(|_| s == "0" || !s.starts_with('0'));
    match (start.is_empty(), end.is_empty()) {
        (false, false) => assert!(number(start).unwrap() <= number(end).unwrap(), "{range}"),
        (false, true) => assert!(number(start).is_some(), "{range}"),
        (true, false) => assert!(number(end).unwrap() > 0, "{range}"),
        (true, true) => panic!("an empty range was forwarded"),
    }
});
