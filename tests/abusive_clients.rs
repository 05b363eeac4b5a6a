//! Clients that try to wear the server down, on loopback: thousands of idle
//! connections, the connection limit, a client that opens streams and
//! never reads, oversized metadata, and a flood of calls without a valid
//! token. Each time, other callers must still be served.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pullpass::v1::{ListAuditEventsRequest, ListWorkspacesRequest};
use pullpass_tests::bench::h2load::grpc_frame;
use pullpass_tests::process::{cpu_time, open_fds, own_file_limit, rss_kib};
use pullpass_tests::{Options, Pullpassd};
use tonic::Code;

/// The HTTP/2 client preface and an empty SETTINGS frame: what an idle
/// gRPC channel sends before its first call.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn idle_connections(address: &str, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(address).expect("connect");
            stream.write_all(H2_PREFACE).expect("preface");
            stream
        })
        .collect()
}

async fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list_workspaces(client: &pullpass_client::Client) -> Result<(), tonic::Status> {
    client.access().list_workspaces(ListWorkspacesRequest::default()).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_the_server_serving_other_callers() {
    // 10,000, or as many as this process's descriptor limit allows.
    let count = 10_000.min(own_file_limit().saturating_sub(512));
    let server = Pullpassd::start();
    let pid = server.pid();
    let client = server.client().await;
    list_workspaces(&client).await.expect("serving");
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    let idle = idle_connections(&server.address, count);
    wait_for("the server to accept every idle connection", Duration::from_secs(60), || {
        open_fds(pid) >= fds_before + count
    })
    .await;
    let started = Instant::now();
    list_workspaces(&client).await.expect("served beside the idle connections");
    let fresh = server.client().await;
    list_workspaces(&fresh).await.expect("a new connection is served too");
    let took = started.elapsed();
    let per_connection = (rss_kib(pid).saturating_sub(rss_before)) as f64 / count as f64;
    println!(
        "{count} idle HTTP/2 connections: {per_connection:.1} KiB of server RSS each; two calls beside them took {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(per_connection < 64.0, "{per_connection:.1} KiB per idle connection");

    drop(idle);
    wait_for("the server to close the idle connections", Duration::from_secs(30), || open_fds(pid) <= fds_before + 8)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_new_connections_wait_without_spinning_and_get_in_when_one_closes() {
    let server =
        Pullpassd::start_with(Options { args: vec!["--max-connections".into(), "40".into()], ..Default::default() })
            .expect("pullpassd starts");
    let pid = server.pid();
    let fds_before = open_fds(pid);
    let mut idle = idle_connections(&server.address, 45);
    wait_for("connections up to the limit", Duration::from_secs(20), || open_fds(pid) >= fds_before + 35).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = open_fds(pid) - fds_before;
    assert!(accepted <= 40, "{accepted} connections accepted, over the limit of 40");

    // The 41st is not accepted, and waiting for it costs no CPU.
    let cpu = cpu_time(pid);
    let waiting = pullpass_client::Client::builder(server.endpoint())
        .token(server.root_token.clone())
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_millis(500))
        .retries(0)
        .connect()
        .await;
    let refused = match waiting {
        Err(_) => true,
        Ok(client) => list_workspaces(&client).await.is_err(),
    };
    assert!(refused, "a connection over the limit is not served");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_time(pid).saturating_sub(cpu);
    assert!(spent <= Duration::from_millis(200), "the server used {spent:?} of CPU while at its limit");
    // Written by the accept loop, not by anything the client waited for.
    let logs = server.wait_for_log(Duration::from_secs(5), |logs| logs.contains("connection limit reached")).await;
    assert_eq!(logs.matches("connection limit reached").count(), 1, "once, not per connection");

    idle.truncate(25);
    let client = server.client().await;
    list_workspaces(&client).await.expect("served once connections closed");
}

/// A raw HTTP/2 connection to `address` whose receive window is zero, so
/// the server can send it no response body; and the server's stream limit
/// as it announced it.
async fn never_reading_connection(address: &str) -> (h2::client::SendRequest<bytes::Bytes>, usize) {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (h2, connection) = h2::client::Builder::new().initial_window_size(0).handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let h2 = h2.ready().await.unwrap();
    // Let the server's SETTINGS arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = h2.current_max_send_streams();
    (h2, limit)
}

/// A `ListAuditEvents` call on `h2`, whose answer a never-reading
/// connection leaves unread; the stream, and the request with it.
fn unread_call(
    h2: &mut h2::client::SendRequest<bytes::Bytes>,
    server: &Pullpassd,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let framed =
        grpc_frame(&ListAuditEventsRequest { parent: "workspaces/-".into(), page_size: 1000, ..Default::default() });
    let request = http::Request::post(format!("http://{}/pullpass.v1.AuditService/ListAuditEvents", server.address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", server.root_token))
        .body(())
        .unwrap();
    let (response, mut stream) = h2.send_request(request, false).unwrap();
    stream.send_data(bytes::Bytes::from(framed), true).unwrap();
    (response, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_opens_streams_and_never_reads_costs_bounded_memory_and_starves_nobody() {
    let server = Pullpassd::start();
    let pid = server.pid();
    let limited = Pullpassd::start_with(Options {
        args: vec!["--max-streams-per-connection".into(), "7".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(never_reading_connection(&limited.address).await.1, 7, "the flag sets the announced limit");

    let rss_before = rss_kib(pid);
    let mut held = Vec::new();
    for _ in 0..10 {
        let (mut h2, limit) = never_reading_connection(&server.address).await;
        assert_eq!(limit, 100, "100 streams per connection by default");
        for _ in 0..150 {
            let Ok(Ok(ready)) = tokio::time::timeout(Duration::from_millis(500), h2.ready()).await else { break };
            h2 = ready;
            held.push(unread_call(&mut h2, &server));
        }
    }
    let client = server.client().await;
    let started = Instant::now();
    for _ in 0..20 {
        list_workspaces(&client).await.expect("other callers are served");
    }
    let took = started.elapsed();
    let growth_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
    println!("10 connections x 150 calls never read: server RSS +{growth_mib} MiB; 20 calls beside them took {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_client_that_never_reads_keeps_the_server_up_no_longer_than_the_grace_period() {
    let mut server =
        Pullpassd::start_with(Options { args: vec!["--shutdown-grace".into(), "1".into()], ..Default::default() })
            .unwrap();
    let (mut h2, _) = never_reading_connection(&server.address).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        h2 = h2.ready().await.unwrap();
        held.push(unread_call(&mut h2, &server));
    }
    // The pull gateway too: its 401 to an anonymous `GET /v2/` has a body.
    let (gateway, _) = never_reading_connection(&server.gateway).await;
    let request = http::Request::get(format!("http://{}/v2/", server.gateway)).body(()).unwrap();
    let (unread_401, _gateway_stream) = gateway.ready().await.unwrap().send_request(request, true).unwrap();
    // The answers are written as far as the window allows: their headers.
    for (response, _) in &mut held {
        tokio::time::timeout(Duration::from_secs(5), response).await.expect("headers").expect("a response");
    }
    let status = tokio::time::timeout(Duration::from_secs(5), unread_401).await.expect("headers").unwrap().status();
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    let started = Instant::now();
    assert!(server.stop(), "exit status 0 after SIGTERM");
    let took = started.elapsed();
    println!("SIGTERM with 6 unread answers (5 gRPC, 1 gateway) and --shutdown-grace 1: exited after {took:?}");
    assert!(took < Duration::from_secs(5), "exited {took:?} after SIGTERM, with a 1 s grace period");
    let logs = server.current_logs();
    assert!(logs.contains("grace period over"), "{logs}");
    assert!(logs.contains("database closed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_is_refused_and_the_server_serves_on() {
    let server = Pullpassd::start();
    let client = server.client().await;
    let mut request = tonic::Request::new(ListWorkspacesRequest::default());
    request.metadata_mut().insert("x-padding", "p".repeat(64 * 1024).parse().unwrap());
    let refused = client.access().list_workspaces(request).await.expect_err("64 KiB of metadata is refused");
    println!("64 KiB of metadata: {:?}: {}", refused.code(), refused.message());
    assert_ne!(refused.code(), Code::Ok);
    list_workspaces(&server.client().await).await.expect("the server serves on");
    let logs = server.current_logs();
    assert!(!logs.contains(&"p".repeat(1024)), "the padding is not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_calls_without_a_valid_token_does_not_starve_authenticated_ones() {
    let server = Pullpassd::start();
    let flood_started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = Vec::new();
    for worker in 0..6 {
        // Unknown but well-formed tokens, malformed ones, and none.
        let token = match worker % 3 {
            0 => Some(format!("pp_{}", "x".repeat(43))),
            1 => Some("not-a-token".to_owned()),
            _ => None,
        };
        let (stop, refused) = (stop.clone(), refused.clone());
        let client = server.client_with(token.as_deref()).await;
        flood.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let calls = (0..16).map(|_| list_workspaces(&client));
                for result in futures_util::future::join_all(calls).await {
                    assert_eq!(result.expect_err("refused").code(), Code::Unauthenticated);
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = server.client().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let call = Instant::now();
        list_workspaces(&client).await.expect("authenticated calls are served during the flood");
        latencies.push(call.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    latencies.sort();
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "during a flood of {refused} refused calls ({:.0}/s), 200 authenticated calls: p50 {:?}, p99 {:?}",
        refused as f64 / elapsed.as_secs_f64(),
        latencies[100],
        latencies[197]
    );
    assert!(latencies[197] < Duration::from_secs(1), "p99 {:?}", latencies[197]);
    // One line per refusal would be thousands; a few per second are logged
    // one by one, and the rest summed up once their second is over.
    let logs = server.wait_for_log(Duration::from_secs(5), |logs| logs.contains("were not logged one by one")).await;
    let lines = logs.lines().filter(|l| l.contains("Unauthenticated")).count();
    // Every calendar second the flood touched (the first and last only in
    // part) may log 10 refusals and one summary line.
    let seconds = flood_started.elapsed().as_secs() as usize + 3;
    assert!(lines <= seconds * 11, "{lines} log lines for {refused} refusals over at most {seconds} calendar seconds");
}
