//! A real `nats-server -js` per test (its own free port and store directory,
//! so a test can stop and restart its broker), and a JetStream consumer that
//! reads back everything the service published.
//!
//! The binary: NATS_SERVER_BIN (scripts/test sets it, installing Debian's
//! `nats-server` if needed), else `nats-server` on PATH or in /usr/sbin.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;
use prost::Message as _;

use crate::helpers::wait_until;

/// The stream the service creates by default.
pub const STREAM: &str = "INVITATIONS";

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path.expect("no nats-server binary: run scripts/test (it installs one) or set NATS_SERVER_BIN")
}

pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            probe.local_addr().expect("addr").port()
        };
        let dir = tempfile::tempdir().expect("temp dir for the JetStream store");
        let mut server = Self { port, dir, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store: streams survive.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let store = self.dir.path().join("store");
        let log = self.dir.path().join("nats.log");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let url = self.url();
        wait_until(Duration::from_secs(20), "nats-server to take connections", || {
            let url = url.clone();
            async move {
                match async_nats::connect(url).await {
                    Ok(client) => client.flush().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    /// Kills the broker (like a crash: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn consumer(&self) -> Consumer {
        let client = async_nats::connect(self.url()).await.expect("connect to nats-server");
        Consumer { js: jetstream::new(client) }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message on the stream, decoded.
#[derive(Debug, Clone)]
pub struct Received {
    pub subject: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
    pub event: pb::InvitationEvent,
    pub stream_seq: u64,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("no {name} header on {}", self.subject))
    }

    /// `minted`, `reservation.lapsed`, ... (from ce-type).
    pub fn kind(&self) -> &str {
        self.header("ce-type").strip_prefix("invitations.v1.").expect("ce-type under invitations.v1.")
    }

    pub fn payload(&self) -> &Payload {
        self.event.event.as_ref().expect("an event")
    }
}

pub struct Consumer {
    js: jetstream::Context,
}

impl Consumer {
    /// Messages in the stream (0 before the relay created it).
    pub async fn stored(&self) -> u64 {
        match self.js.get_stream(STREAM).await {
            Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until the stream holds at least `n` messages, then reads them all.
    pub async fn wait_for(&self, n: u64, deadline: Duration) -> Vec<Received> {
        wait_until(deadline, &format!("{n} messages on the stream"), || async { self.stored().await >= n }).await;
        self.read_all().await
    }

    /// Every message in the stream, in stream order, through a fresh
    /// ephemeral pull consumer.
    pub async fn read_all(&self) -> Vec<Received> {
        let total = self.stored().await as usize;
        let stream = self.js.get_stream(STREAM).await.expect("the stream exists");
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("create a consumer");
        let mut out = Vec::with_capacity(total);
        let start = tokio::time::Instant::now();
        while out.len() < total {
            assert!(start.elapsed() < Duration::from_secs(20), "read {} of {total} messages", out.len());
            let mut batch = consumer
                .fetch()
                .max_messages(total - out.len())
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .expect("fetch");
            while let Some(message) = batch.next().await {
                out.push(decode(message.expect("a message")));
            }
        }
        out
    }
}

fn decode(message: jetstream::Message) -> Received {
    let stream_seq = message.info().expect("JetStream metadata").stream_sequence;
    let headers = message
        .headers
        .as_ref()
        .map(|h| h.iter().map(|(k, v)| (k.to_string(), v.first().map(|v| v.to_string()).unwrap_or_default())).collect())
        .unwrap_or_default();
    let payload = message.payload.to_vec();
    let event = pb::InvitationEvent::decode(payload.as_slice()).expect("an InvitationEvent");
    Received { subject: message.subject.to_string(), headers, payload, event, stream_seq }
}
