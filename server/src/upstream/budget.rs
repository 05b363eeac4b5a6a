//! How much pullpass may ask of an upstream that is failing: a retry budget
//! and a circuit breaker per endpoint (scheme, host and port).
//!
//! Without them, a thousand calls for a registry that is down cost a
//! thousand connection attempts, and three times that with retries. With
//! them:
//! * **retries** spend tokens from a bucket of [`RETRY_TOKENS`] that refills
//!   at [`RETRY_REFILL_PER_SECOND`], so retries stay a small, fixed load on a
//!   struggling endpoint whatever the call rate;
//! * **the breaker** opens after [`FAILURES_TO_OPEN`] failures in a row
//!   (transport errors, 5xx, attempts that hit their deadline). While it is
//!   open, requests fail at once, without a dial, naming the last cause.
//!   After a cooldown (1 s, doubling to [`MAX_COOLDOWN`]) one request goes
//!   through as a probe; its success closes the breaker, its failure opens
//!   it again for longer.
//!
//! A success of any kind (any answer that is not a 5xx) closes the breaker:
//! 401, 404 and 429 are the endpoint working.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that open an endpoint's breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// Retries an endpoint may take at once (the bucket's size).
pub const RETRY_TOKENS: f64 = 10.0;
/// Retry tokens an endpoint regains per second.
pub const RETRY_REFILL_PER_SECOND: f64 = 5.0;
/// The first cooldown of an opened breaker.
pub const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30);
/// After this, a probe that never reported no longer holds others back.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Endpoints remembered; the healthy ones are forgotten first.
const MAX_ENDPOINTS: usize = 10_000;

/// Per-endpoint budgets and breakers.
#[derive(Debug, Default)]
pub struct Budgets {
    endpoints: Mutex<HashMap<String, Endpoint>>,
}

#[derive(Debug)]
struct Endpoint {
    retry_tokens: f64,
    refilled_at: Instant,
    failures_in_a_row: u32,
    last_cause: String,
    /// Set while the breaker is open (or half-open once this passed).
    open_until: Option<Instant>,
    cooldown: Duration,
    /// A probe is under way since then: the others still wait. A probe
    /// that never reports (its caller went away) counts as over after
    /// [`PROBE_TIMEOUT`].
    probing: Option<Instant>,
}

impl Endpoint {
    fn new(now: Instant) -> Self {
        Self {
            retry_tokens: RETRY_TOKENS,
            refilled_at: now,
            failures_in_a_row: 0,
            last_cause: String::new(),
            open_until: None,
            cooldown: FIRST_COOLDOWN,
            probing: None,
        }
    }

    fn is_healthy(&self) -> bool {
        self.failures_in_a_row == 0 && self.open_until.is_none()
    }
}

/// What an attempt showed of its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// An answer that is not a 5xx: the endpoint works.
    Answered,
    /// A transport error, a 5xx, or no answer in a fair time; the cause
    /// names no secret (callers are shown it).
    Failed(&'a str),
    /// Nothing learnt (the caller's deadline was too short to tell).
    Inconclusive,
}

/// Why a request is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    /// The endpoint's last failure.
    pub cause: String,
    /// When it will be tried again.
    pub retry_in: Duration,
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not contacted: its last {FAILURES_TO_OPEN} or more attempts failed ({}); next attempt in {} ms",
            self.cause,
            self.retry_in.as_millis().max(1)
        )
    }
}

impl Budgets {
    /// May a first attempt go to `endpoint` now? Refused while its breaker
    /// is open, and while another request probes it.
    pub fn admit(&self, endpoint: &str) -> Result<(), Shed> {
        self.admit_at(endpoint, Instant::now())
    }

    /// May a retry go to `endpoint` now? Takes a retry token.
    pub fn may_retry(&self, endpoint: &str) -> bool {
        self.may_retry_at(endpoint, Instant::now())
    }

    /// What an attempt to `endpoint` showed.
    pub fn record(&self, endpoint: &str, outcome: Outcome<'_>) {
        self.record_at(endpoint, outcome, Instant::now());
    }

    fn admit_at(&self, endpoint: &str, now: Instant) -> Result<(), Shed> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = map.get_mut(endpoint) else { return Ok(()) };
        let Some(until) = state.open_until else { return Ok(()) };
        let probe_running = state.probing.is_some_and(|since| now.saturating_duration_since(since) < PROBE_TIMEOUT);
        if now < until || probe_running {
            let retry_in = until.saturating_duration_since(now).max(Duration::from_millis(1));
            return Err(Shed { cause: state.last_cause.clone(), retry_in });
        }
        state.probing = Some(now);
        Ok(())
    }

    fn may_retry_at(&self, endpoint: &str, now: Instant) -> bool {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let state = entry(&mut map, endpoint, now);
        if state.open_until.is_some() {
            return false;
        }
        let elapsed = now.saturating_duration_since(state.refilled_at).as_secs_f64();
        state.retry_tokens = (state.retry_tokens + elapsed * RETRY_REFILL_PER_SECOND).min(RETRY_TOKENS);
        state.refilled_at = now;
        if state.retry_tokens < 1.0 {
            return false;
        }
        state.retry_tokens -= 1.0;
        true
    }

    fn record_at(&self, endpoint: &str, outcome: Outcome<'_>, now: Instant) {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Answered => {
                if let Some(state) = map.get_mut(endpoint) {
                    state.failures_in_a_row = 0;
                    state.open_until = None;
                    state.probing = None;
                    state.cooldown = FIRST_COOLDOWN;
                }
            }
            Outcome::Inconclusive => {
                if let Some(state) = map.get_mut(endpoint) {
                    state.probing = None;
                }
            }
            Outcome::Failed(cause) => {
                let state = entry(&mut map, endpoint, now);
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                cause.clone_into(&mut state.last_cause);
                if state.probing.take().is_some() {
                    // The probe failed: open again, for longer.
                    state.cooldown = (state.cooldown * 2).min(MAX_COOLDOWN);
                    state.open_until = Some(now + state.cooldown);
                } else if state.open_until.is_none() && state.failures_in_a_row >= FAILURES_TO_OPEN {
                    state.open_until = Some(now + state.cooldown);
                }
            }
        }
    }
}

fn entry<'a>(map: &'a mut HashMap<String, Endpoint>, endpoint: &str, now: Instant) -> &'a mut Endpoint {
    if !map.contains_key(endpoint) && map.len() >= MAX_ENDPOINTS {
        map.retain(|_, state| !state.is_healthy());
        if map.len() >= MAX_ENDPOINTS {
            map.clear();
        }
    }
    map.entry(endpoint.to_owned()).or_insert_with(|| Endpoint::new(now))
}

/// The endpoint a URL names: `scheme://host:port`.
pub fn endpoint_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "https://registry.example";

    fn fail(budgets: &Budgets, times: u32, now: Instant) {
        for _ in 0..times {
            budgets.record_at(E, Outcome::Failed("connection refused"), now);
        }
    }

    #[test]
    fn an_endpoint_opens_after_five_failures_in_a_row_and_names_the_cause() {
        let budgets = Budgets::default();
        let now = Instant::now();
        fail(&budgets, FAILURES_TO_OPEN - 1, now);
        assert_eq!(budgets.admit_at(E, now), Ok(()));
        fail(&budgets, 1, now);
        let shed = budgets.admit_at(E, now).unwrap_err();
        assert_eq!(shed.cause, "connection refused");
        assert_eq!(shed.retry_in, FIRST_COOLDOWN);
        assert!(shed.to_string().contains("next attempt in 1000 ms"), "{shed}");
        assert_eq!(budgets.admit_at("https://other.example", now), Ok(()), "other endpoints are not affected");
    }

    #[test]
    fn a_success_between_failures_keeps_the_breaker_closed() {
        let budgets = Budgets::default();
        let now = Instant::now();
        for _ in 0..10 {
            fail(&budgets, FAILURES_TO_OPEN - 1, now);
            budgets.record_at(E, Outcome::Answered, now);
        }
        assert_eq!(budgets.admit_at(E, now), Ok(()));
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_result_decides() {
        let budgets = Budgets::default();
        let start = Instant::now();
        fail(&budgets, FAILURES_TO_OPEN, start);
        let later = start + FIRST_COOLDOWN;
        assert_eq!(budgets.admit_at(E, later), Ok(()), "the probe");
        assert!(budgets.admit_at(E, later).is_err(), "no second request while the probe runs");
        budgets.record_at(E, Outcome::Failed("reset"), later);
        let shed = budgets.admit_at(E, later).unwrap_err();
        assert_eq!((shed.cause.as_str(), shed.retry_in), ("reset", FIRST_COOLDOWN * 2), "open again, for longer");

        let after = later + FIRST_COOLDOWN * 2;
        assert_eq!(budgets.admit_at(E, after), Ok(()));
        budgets.record_at(E, Outcome::Answered, after);
        assert_eq!(budgets.admit_at(E, after), Ok(()));
        assert_eq!(budgets.admit_at(E, after), Ok(()), "closed: every request goes");
    }

    #[test]
    fn an_inconclusive_or_abandoned_probe_lets_the_next_request_probe() {
        let budgets = Budgets::default();
        let start = Instant::now();
        fail(&budgets, FAILURES_TO_OPEN, start);
        let later = start + FIRST_COOLDOWN;
        budgets.admit_at(E, later).expect("probe");
        budgets.record_at(E, Outcome::Inconclusive, later);
        budgets.admit_at(E, later).expect("the next request probes");
        assert!(budgets.admit_at(E, later).is_err());
        budgets.admit_at(E, later + PROBE_TIMEOUT).expect("a probe that never reported is over");
    }

    #[test]
    fn cooldowns_double_up_to_thirty_seconds() {
        let budgets = Budgets::default();
        let mut now = Instant::now();
        fail(&budgets, FAILURES_TO_OPEN, now);
        let mut cooldowns = Vec::new();
        for _ in 0..8 {
            let shed = budgets.admit_at(E, now).unwrap_err();
            cooldowns.push(shed.retry_in.as_secs());
            now += shed.retry_in;
            budgets.admit_at(E, now).expect("probe");
            budgets.record_at(E, Outcome::Failed("refused"), now);
        }
        assert_eq!(cooldowns, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn retries_spend_a_bucket_that_refills_at_a_fixed_rate() {
        let budgets = Budgets::default();
        let now = Instant::now();
        let granted = (0..100).filter(|_| budgets.may_retry_at(E, now)).count();
        assert_eq!(granted, RETRY_TOKENS as usize);
        let later = now + Duration::from_secs(1);
        let granted = (0..100).filter(|_| budgets.may_retry_at(E, later)).count();
        assert_eq!(granted, RETRY_REFILL_PER_SECOND as usize);
        budgets.record_at(E, Outcome::Answered, later);
        assert!(!budgets.may_retry_at(E, later), "successes do not refill the bucket");
    }

    #[test]
    fn no_retry_while_the_breaker_is_open() {
        let budgets = Budgets::default();
        let now = Instant::now();
        fail(&budgets, FAILURES_TO_OPEN, now);
        assert!(!budgets.may_retry_at(E, now));
    }

    #[test]
    fn the_map_stays_bounded() {
        let budgets = Budgets::default();
        let now = Instant::now();
        for i in 0..(MAX_ENDPOINTS + 50) {
            budgets.record_at(&format!("https://r{i}.example"), Outcome::Failed("refused"), now);
        }
        assert!(budgets.endpoints.lock().unwrap().len() <= MAX_ENDPOINTS);
    }
}
