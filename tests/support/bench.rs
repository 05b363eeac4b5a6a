//! What the benchmarks share: latency figures (rate, p50, p99) and a driver
//! that runs calls in concurrent sequences and times each one, and the
//! h2load driver.

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

/// Driving pullpassd with `h2load` (Debian nghttp2-client, a load
/// generator we did not write): unary gRPC calls over HTTP/2 cleartext.
pub mod h2load {
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    use prost::Message;

    use super::{Figures, figures};
    use crate::process::cpu_time;

    /// A gRPC length-prefixed message (uncompressed).
    pub fn grpc_frame(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    pub fn which_h2load() -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join("h2load")).find(|p| p.is_file())
    }

    /// Alternating h2load rounds per method.
    pub const ROUNDS: usize = 5;

    /// One gRPC method as h2load calls it.
    #[derive(Debug)]
    pub struct Call<'a> {
        /// The method's path.
        pub path: &'a str,
        /// The framed request message.
        pub body: &'a [u8],
        /// The DATA bytes of one successful response.
        pub response_bytes: usize,
    }

    /// h2load against the server: unary calls over HTTP/2 cleartext, one
    /// h2load thread.
    #[derive(Debug)]
    pub struct H2load<'a> {
        /// The h2load binary.
        pub program: &'a Path,
        /// `host:port` of pullpassd.
        pub address: &'a str,
        /// The bearer token.
        pub token: &'a str,
        /// pullpassd, whose CPU time each round reads.
        pub pid: u32,
    }

    /// One h2load run.
    #[derive(Debug)]
    pub struct Round {
        /// How long it took.
        pub elapsed: Duration,
        /// Every call's latency.
        pub latencies: Vec<Duration>,
        /// pullpassd's CPU time meanwhile.
        pub server_cpu: Duration,
    }

    impl Round {
        /// Calls per second in this round.
        pub fn rate(&self) -> f64 {
            self.latencies.len() as f64 / self.elapsed.as_secs_f64()
        }

        /// The median over paired rounds of `a`'s rate over `b`'s: pairs run
        /// back to back, so a drift in the machine's load (it is noisy:
        /// ±10 % from run to run) moves both sides of a pair alike.
        pub fn median_ratio(a: &[Round], b: &[Round]) -> f64 {
            let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rate() / b.rate()).collect();
            ratios.sort_by(f64::total_cmp);
            ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
        }

        /// This round's rate and latency percentiles.
        pub fn figures(self) -> Figures {
            figures(self.latencies, self.elapsed)
        }

        /// Rate over all rounds' time; percentiles over all their calls; and
        /// pullpassd's CPU time per call.
        pub fn combine(rounds: Vec<Round>) -> (Figures, Duration) {
            let elapsed = rounds.iter().map(|r| r.elapsed).sum();
            let cpu: Duration = rounds.iter().map(|r| r.server_cpu).sum();
            let calls: usize = rounds.iter().map(|r| r.latencies.len()).sum();
            (figures(rounds.into_iter().flat_map(|r| r.latencies).collect(), elapsed), cpu / calls.max(1) as u32)
        }
    }

    impl H2load<'_> {
        /// Runs `requests` calls, 64 at a time (4 connections with 16
        /// streams each); every response must carry exactly the expected
        /// DATA bytes (a gRPC error carries none), so a failed call cannot
        /// pass for a fast one.
        pub fn run(&self, call: &Call<'_>, requests: usize) -> Round {
            self.run_with(call, requests, 4, 16)
        }

        /// Runs `requests` calls one at a time, over one connection: the
        /// latency of a call on an idle server.
        pub fn serial(&self, call: &Call<'_>, requests: usize) -> Round {
            self.run_with(call, requests, 1, 1)
        }

        /// Warms `a` and `b` up, then runs [`ROUNDS`] rounds of each,
        /// alternating, so that a drift in the machine's load moves both
        /// sides alike.
        pub fn alternate(&self, a: &Call<'_>, b: &Call<'_>, requests: usize) -> (Vec<Round>, Vec<Round>) {
            self.run(a, requests / 10);
            self.run(b, requests / 10);
            let (mut a_rounds, mut b_rounds) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                a_rounds.push(self.run(a, requests / ROUNDS));
                b_rounds.push(self.run(b, requests / ROUNDS));
            }
            (a_rounds, b_rounds)
        }

        fn run_with(&self, call: &Call<'_>, requests: usize, connections: usize, streams: usize) -> Round {
            let requests = requests.max(100);
            let dir = tempfile::tempdir().unwrap();
            let (body_file, log_file) = (dir.path().join("body"), dir.path().join("log"));
            std::fs::write(&body_file, call.body).unwrap();
            let cpu_before = cpu_time(self.pid);
            let output = Command::new(self.program)
                .args(["-n", &requests.to_string(), "-t", "1"])
                .args(["-c", &connections.to_string(), "-m", &streams.to_string()])
                .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .args(["-H", &format!("authorization: Bearer {}", self.token)])
                .arg("-d")
                .arg(&body_file)
                .arg("--log-file")
                .arg(&log_file)
                .arg(format!("http://{}{}", self.address, call.path))
                .output()
                .expect("run h2load");
            let server_cpu = cpu_time(self.pid).saturating_sub(cpu_before);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "h2load failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
            let answered = h2load_number(&stdout, "status codes: ", " 2xx");
            assert_eq!(answered, requests as u64, "h2load: not every call answered 200\n{stdout}");
            let data = h2load_data_bytes(&stdout);
            assert_eq!(
                data,
                (requests * call.response_bytes) as u64,
                "h2load: not every call got a full answer\n{stdout}"
            );
            let per_second = h2load_rate(&stdout);
            let latencies = std::fs::read_to_string(&log_file)
                .unwrap()
                .lines()
                .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok().map(Duration::from_micros))
                .collect();
            Round { elapsed: Duration::from_secs_f64(requests as f64 / per_second), latencies, server_cpu }
        }
    }

    /// The number between `before` and `after` on the first line containing both.
    fn h2load_number(stdout: &str, before: &str, after: &str) -> u64 {
        stdout
            .lines()
            .find_map(|line| line.split_once(before).and_then(|(_, rest)| rest.split_once(after)))
            .and_then(|(number, _)| number.trim().parse().ok())
            .unwrap_or_else(|| panic!("h2load output without `{before}…{after}`:\n{stdout}"))
    }

    /// The exact DATA byte count of `traffic: … , 2.67MB (2800000) data`.
    fn h2load_data_bytes(stdout: &str) -> u64 {
        let line = stdout.lines().find(|l| l.trim_start().starts_with("traffic:")).expect("h2load traffic line");
        let before_data = line.rsplit_once(" data").expect("data figure").0;
        let number = before_data.rsplit_once('(').and_then(|(_, n)| n.strip_suffix(')')).expect("(bytes)");
        number.parse().expect("byte count")
    }

    /// The rate of `finished in 1.2s, 16260.16 req/s, 3.37MB/s`.
    fn h2load_rate(stdout: &str) -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("finished in ").and_then(|r| r.split(", ").nth(1)))
            .and_then(|r| r.strip_suffix(" req/s"))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("h2load output without a rate:\n{stdout}"))
    }
}
