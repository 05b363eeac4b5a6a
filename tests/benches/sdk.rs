//! SDK figures: the cost of a client-cache hit (p50/p99 per call), the cost
//! of a call that reaches pullpassd (for comparison), and how many RPCs N
//! identical concurrent calls cost.
//!
//! Run: `scripts/bench.sh sdk`. Environment: `BENCH_HITS` (default 200000),
//! `BENCH_CONCURRENT` (default 1000).

use std::time::Instant;

use pullpass::v1::{Credential, Provider, WorkspaceKind};
use pullpass_client::Client;
use pullpass_tests::bench::{env_count, percentile};
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::{allow_insecure, embedded_server};

fn main() {
    let hits = env_count("BENCH_HITS", 200_000);
    let concurrent = env_count("BENCH_CONCURRENT", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let realm = TokenRealm::start(3600, "ci", "bench-pw");
        let address = realm.address.clone();
        let (_dir, server) = embedded_server(|settings| {
            allow_insecure(settings, &address);
            settings.rate_limit = 0;
        })
        .await;
        let client =
            Client::builder(server.endpoint()).token(server.root_token.clone().unwrap()).connect().await.unwrap();
        client.create_workspace("acme", WorkspaceKind::Organization, "").await.unwrap();
        client
            .create_credential(
                "acme",
                "fixture",
                Credential {
                    provider: Provider::Generic as i32,
                    registry_server: realm.address.clone(),
                    username: "ci".into(),
                    secret: "bench-pw".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let image = format!("{}/acme/aligner:2.1", realm.address);
        client.registry_auth(&image).workspace("acme").send().await.unwrap();

        println!("pullpass SDK bench ({hits} cache hits, {concurrent} concurrent identical calls)");
        println!();
        let mut latencies = Vec::with_capacity(hits);
        let rpcs_before = client.stats().issue_rpcs;
        let started = Instant::now();
        for _ in 0..hits {
            let t = Instant::now();
            let lease = client.registry_auth(&image).workspace("acme").send().await.unwrap();
            latencies.push(t.elapsed());
            std::hint::black_box(lease);
        }
        let elapsed = started.elapsed();
        assert_eq!(client.stats().issue_rpcs, rpcs_before, "every call must be a cache hit");
        latencies.sort();
        println!(
            "client cache hit:            p50 {:>8.2} us   p99 {:>8.2} us   {:>10.0} calls/s   RPCs sent: 0",
            percentile(&latencies, 0.5).as_secs_f64() * 1e6,
            percentile(&latencies, 0.99).as_secs_f64() * 1e6,
            hits as f64 / elapsed.as_secs_f64()
        );

        let rpc_calls = 2000;
        let mut latencies = Vec::with_capacity(rpc_calls);
        for _ in 0..rpc_calls {
            let t = Instant::now();
            client.registry_auth(&image).workspace("acme").no_cache().send().await.unwrap();
            latencies.push(t.elapsed());
        }
        latencies.sort();
        println!(
            "call reaching pullpassd:     p50 {:>8.2} us   p99 {:>8.2} us   (server-side cache hit; for comparison)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e6,
            percentile(&latencies, 0.99).as_secs_f64() * 1e6
        );

        let fresh = format!("{}/acme/other:1", realm.address);
        let before = client.stats().issue_rpcs;
        let tokens_before = realm.token_requests();
        let calls = (0..concurrent).map(|_| client.registry_auth(&fresh).workspace("acme").send());
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        println!(
            "{concurrent} identical concurrent calls: {} RPC(s) to pullpassd, {} token request(s) to the registry",
            client.stats().issue_rpcs - before,
            realm.token_requests() - tokens_before
        );
        server.shutdown().await.unwrap();
    });
}
