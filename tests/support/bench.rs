//! What the benchmarks share: latency figures (rate, p50, p99) and a driver
//! that runs calls in concurrent sequences and times each one.

use std::future::Future;
use std::time::{Duration, Instant};

/// Throughput and latency of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Calls (or commits) per second over the whole run.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Figures of `latencies` measured over `elapsed`.
pub fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

/// The `q` quantile of sorted, non-empty `latencies`.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Runs `calls` calls split over `callers` concurrent sequences; `call`
/// gets the sequence number and the call's number within it.
pub async fn measure<F, Fut>(callers: usize, calls: usize, call: F) -> Figures
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let per_caller = (calls / callers).max(1);
    let started = Instant::now();
    let sequences = (0..callers).map(|c| {
        let call = &call;
        async move {
            let mut latencies = Vec::with_capacity(per_caller);
            for i in 0..per_caller {
                let t = Instant::now();
                call(c, i).await;
                latencies.push(t.elapsed());
            }
            latencies
        }
    });
    let latencies: Vec<Duration> = futures_util::future::join_all(sequences).await.into_iter().flatten().collect();
    figures(latencies, started.elapsed())
}

/// A count from the environment variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
