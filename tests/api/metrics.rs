//! `/metrics` on the admin port: scraped over real HTTP, parsed, and the
//! counters move as calls are made.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, assert_error};

/// One scrape: every sample as (name, labels, value).
pub struct Scrape {
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// GET /metrics over plain HTTP/1.1.
    pub async fn fetch(admin: SocketAddr) -> Self {
        let mut stream = tokio::net::TcpStream::connect(admin).await.expect("connect to the admin port");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("send request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
        Self::parse(body)
    }

    /// The Prometheus text format: `name{k="v",...} value` per sample line.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Self { text: text.to_owned(), samples }
    }

    /// The sum over the samples of `name` carrying all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The label sets of the samples of `name`.
    pub fn labels_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
        self.samples.iter().filter(move |(n, _, _)| n == name).map(|(_, l, _)| l)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    // Label values here never contain `",` (method names, codes, reasons).
    s.split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair:?}"));
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

#[tokio::test]
async fn counters_move_as_calls_are_made() {
    let app = TestApp::spawn().await;
    let before = Scrape::fetch(app.admin_addr).await;
    assert_eq!(before.value("invitations_rpc_requests_total", &[("rpc_method", "Redeem")]), 0.0);

    let invitations = app.mint_for("ayo", 3).await;
    let code = &invitations[0].code;
    app.redeem(code, "bo").await.expect("redeem");
    app.redeem(code, "bo").await.expect("a retry is the same success");
    let spent = app.redeem(code, "cy").await.expect_err("single use");
    assert_error(&spent, tonic::Code::FailedPrecondition, "ALREADY_REDEEMED", None);
    let bad = app.redeem("", "cy").await.expect_err("no code");
    assert_error(&bad, tonic::Code::InvalidArgument, "INVALID_ARGUMENT", Some("code"));

    let m = Scrape::fetch(app.admin_addr).await;
    let redeem = |code: &str| m.value("invitations_rpc_requests_total", &[("rpc_method", "Redeem"), ("code", code)]);
    assert_eq!(m.value("invitations_rpc_requests_total", &[("rpc_method", "Mint"), ("code", "OK")]), 1.0);
    assert_eq!(redeem("OK"), 2.0);
    assert_eq!(redeem("FAILED_PRECONDITION"), 1.0);
    assert_eq!(redeem("INVALID_ARGUMENT"), 1.0);
    assert_eq!(m.value("invitations_rpc_errors_total", &[("rpc_method", "Redeem")]), 2.0);
    assert_eq!(m.value("invitations_rpc_errors_total", &[("rpc_method", "Mint")]), 0.0);
    assert_eq!(
        m.value("invitations_rejections_total", &[("rpc_method", "Redeem"), ("reason", "ALREADY_REDEEMED")]),
        1.0
    );
    assert_eq!(
        m.value("invitations_rejections_total", &[("rpc_method", "Redeem"), ("reason", "INVALID_ARGUMENT")]),
        1.0
    );
    assert_eq!(m.value("invitations_rpc_duration_seconds_count", &[("rpc_method", "Redeem")]), 4.0);
    assert!(m.value("invitations_rpc_duration_seconds_sum", &[("rpc_method", "Redeem")]) > 0.0);
    // Domain counters: three minted; one use spent (the retry spent nothing).
    assert_eq!(m.value("invitations_minted_total", &[]), 3.0);
    assert_eq!(m.value("invitations_redeemed_total", &[]), 1.0);
    // Health checks are counted too (the harness waited for SERVING).
    assert!(m.value("invitations_rpc_requests_total", &[("rpc_service", "grpc.health.v1.Health")]) >= 1.0);
    // The pools: the configured maximum each, and connections by pool and
    // state (the calls above used both: Mint the general pool, Redeem the
    // statement pool).
    assert_eq!(m.value("invitations_db_pool_max", &[("pool", "general")]), 8.0);
    assert_eq!(m.value("invitations_db_pool_max", &[("pool", "statements")]), 8.0);
    for pool in ["general", "statements"] {
        assert!(m.value("invitations_db_pool_connections", &[("pool", pool)]) >= 1.0, "{pool}: {}", m.text);
    }

    for inv in &invitations {
        assert!(!m.text.contains(&inv.code), "a code leaked into /metrics");
        assert!(!m.text.contains(&inv.code.replace('-', "")), "a code leaked into /metrics");
    }
    assert!(!m.text.contains("ayo") && !m.text.contains("\"bo\""), "user ids are not labels");
}
