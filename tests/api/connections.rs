//! A connection storm: thousands of idle HTTP/2 connections must not take the
//! process past its memory limit (deploy/: 256 Mi), and health must keep
//! answering SERVING through it.

use std::time::Duration;

use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::wait_until;
use crate::metrics::Scrape;
use crate::process::Process;

/// Resident and peak resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn serving(channel: Channel) -> bool {
    let request = HealthCheckRequest { service: String::new() };
    HealthClient::new(channel).check(request).await.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

/// Every connect and call has a deadline: a connection the server closed on
/// arrival fails instead of waiting on it.
fn bounded(endpoint: Endpoint) -> Endpoint {
    endpoint.connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(10))
}

/// Opens `n` HTTP/2 connections (one health call each, then idle), 200 at a
/// time; returns those the server kept.
async fn storm(endpoint: &Endpoint, n: usize) -> Vec<Channel> {
    futures::stream::iter(0..n)
        .map(|_| async {
            let channel = endpoint.connect().await.ok()?;
            serving(channel.clone()).await.then_some(channel)
        })
        .buffer_unordered(200)
        .filter_map(|c| async { c })
        .collect()
        .await
}

/// The pod's memory limit in deploy/k8s/deployment.yaml.
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;
/// The default --max-connections.
const MAX_CONNECTIONS: usize = 2_000;
const STORM: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_stays_within_memory_and_health_stays_serving() {
    let health_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let health_listen = format!("127.0.0.1:{health_port}");
    let process = Process::spawn(&["--health-listen", &health_listen], &[]).await;
    let endpoint = bounded(Endpoint::from_shared(format!("http://{}", process.addr)).expect("endpoint"));
    let health_endpoint = bounded(Endpoint::from_shared(format!("http://{health_listen}")).expect("endpoint"));
    let before_storm = endpoint.connect().await.expect("connect");
    wait_until(Duration::from_secs(20), "SERVING", || serving(before_storm.clone())).await;
    let (before, _) = memory_kib(process.pid());

    let started = std::time::Instant::now();
    let held = storm(&endpoint, STORM).await;
    let (during, peak) = memory_kib(process.pid());
    eprintln!(
        "{} of {STORM} connections held after {:?}: RSS {before} KiB before, {during} KiB with them (peak {peak} \
         KiB): {:.1} KiB each",
        held.len(),
        started.elapsed(),
        during.saturating_sub(before) as f64 / held.len().max(1) as f64
    );
    assert_eq!(held.len() + 1, MAX_CONNECTIONS, "the limit holds, counting the connection from before");
    assert!(peak < MEMORY_LIMIT_KIB, "peak RSS {peak} KiB is over the pod's limit of {MEMORY_LIMIT_KIB} KiB");

    // Health answers SERVING through the storm: on a connection from before
    // it, on one of the storm's, and on a new one to the health-only port.
    assert!(serving(before_storm.clone()).await, "health on an open connection");
    assert!(serving(held[held.len() / 2].clone()).await, "health on a storm connection");
    let probe = health_endpoint.connect().await.expect("the health-only port takes a connection");
    assert!(serving(probe).await, "health on the health-only port");
    let metrics = Scrape::fetch(process.admin_addr).await;
    assert_eq!(metrics.value("invitations_connections_open", &[]), MAX_CONNECTIONS as f64);
    assert!(metrics.value("invitations_connections_refused_total", &[]) >= (STORM - held.len()) as f64);

    // When the storm ends, its slots are free again.
    drop(held);
    wait_until(Duration::from_secs(20), "a new connection to be served", || async {
        match endpoint.connect().await {
            Ok(channel) => serving(channel).await,
            Err(_) => false,
        }
    })
    .await;
}
