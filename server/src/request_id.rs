//! Request ids: the caller's `x-request-id` when it is sane, else a fresh
//! one. They correlate log lines and audit events of the gRPC API and the
//! pull gateway; they are not secrets.

use ring::rand::{SecureRandom, SystemRandom};

/// The `x-request-id` of `headers` when it is 1-128 of `[A-Za-z0-9-_.:]`,
/// else a fresh id. Shared (`Arc<str>`): the call's log line, context,
/// audit actor and audit note all hold it without copying.
pub fn of(headers: &http::HeaderMap) -> std::sync::Arc<str> {
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|id| {
        (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    });
    given.map_or_else(fresh, std::sync::Arc::from)
}

/// 16 hex digits: a random 32-bit prefix drawn once per process, then a
/// per-process counter. Unique within a process and, with overwhelming
/// likelihood, across restarts, without a system call per request.
pub fn fresh() -> std::sync::Arc<str> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let _ = SystemRandom::new().fill(&mut bytes);
        u32::from_be_bytes(bytes)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::sync::Arc::from(format!("{:016x}", (u64::from(prefix) << 32) | u64::from(count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_sixteen_hex_digits_and_never_repeat() {
        let ids: Vec<std::sync::Arc<str>> = (0..1000).map(|_| fresh()).collect();
        assert!(ids.iter().all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())), "{ids:?}");
        let unique: std::collections::HashSet<&str> = ids.iter().map(|id| &**id).collect();
        assert_eq!(unique.len(), ids.len());
        // One process, one prefix: ids sort with the counter.
        assert!(ids.windows(2).all(|pair| pair[0][..8] == pair[1][..8]));
    }

    #[test]
    fn a_sane_caller_id_is_kept_and_others_replaced() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", http::HeaderValue::from_static("job-42.a:b"));
        assert_eq!(&*of(&headers), "job-42.a:b");
        headers.insert("x-request-id", http::HeaderValue::from_static("spaces are not allowed"));
        assert_eq!(of(&headers).len(), 16);
    }
}
