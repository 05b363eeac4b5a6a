//! The `Range` header of a blob request, forwarded to the registry only
//! when it is one well-formed byte range (`bytes=0-99`, `bytes=100-`,
//! `bytes=-100`). Anything else is dropped, which RFC 9110 allows: the
//! whole blob is then served with 200.

/// The range to forward, normalized, or `None`.
pub fn single_byte_range(header: Option<&[u8]>) -> Option<String> {
    let text = std::str::from_utf8(header?).ok()?.trim();
    if text.len() > 64 {
        return None;
    }
    let spec = text.strip_prefix("bytes=")?.trim();
    let (start, end) = spec.split_once('-')?;
    let number = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    match (number(start)?, number(end)?) {
        (Some(start), Some(end)) if start <= end => Some(format!("bytes={start}-{end}")),
        (Some(start), None) => Some(format!("bytes={start}-")),
        (None, Some(suffix)) if suffix > 0 => Some(format!("bytes=-{suffix}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_byte_range_is_kept_and_anything_else_dropped() {
        let range = |t: &str| single_byte_range(Some(t.as_bytes()));
        assert_eq!(range("bytes=0-99").as_deref(), Some("bytes=0-99"));
        assert_eq!(range("bytes=100-").as_deref(), Some("bytes=100-"));
        assert_eq!(range("bytes=-100").as_deref(), Some("bytes=-100"));
        assert_eq!(range(" bytes= 5 - 6 ").as_deref(), Some("bytes=5-6"));
        for dropped in [
            "bytes=9-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=-",
            "bytes=-0",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(range(dropped), None, "{dropped}");
        }
        assert_eq!(single_byte_range(None), None);
    }

    proptest! {
        #[test]
        fn what_is_forwarded_reads_back_the_same(text in "bytes=[0-9 -,]{0,30}|\\PC{0,40}") {
            if let Some(kept) = single_byte_range(Some(text.as_bytes())) {
                prop_assert_eq!(single_byte_range(Some(kept.as_bytes())), Some(kept.clone()));
            }
        }
    }
}
