//! A TCP proxy between a server under test and Postgres that counts round
//! trips: it reads the frontend half of the wire protocol and records each
//! exchange the client waits on (a `Sync`, or a simple `Query`), with the
//! SQL it ran. How the service talks to Postgres is then an observable fact,
//! not a claim (docs/performance.md, "Round trips per call").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One exchange: the client sent messages and waited for ReadyForQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Ran these statements (the SQL of each Bind, or a simple query).
    Statement(Vec<String>),
    /// Prepared a statement without running it (sqlx's first use of a
    /// statement on a connection).
    Prepare(String),
    /// A Sync with nothing before it (sqlx's ping when a connection goes
    /// back to its pool).
    Ping,
}

pub struct PgCounter {
    pub port: u16,
    /// Each exchange with the number of the connection it was on.
    log: Arc<Mutex<Vec<(usize, Exchange)>>>,
    task: JoinHandle<()>,
}

impl PgCounter {
    pub async fn start() -> Self {
        let opts: PgConnectOptions = crate::helpers::server_url().parse().expect("Postgres URL");
        let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind counter");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut number = 0;
            while let Ok((inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let log = shared.clone();
                number += 1;
                conns.spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(upstream).await {
                        relay(inbound, outbound, log, number).await;
                    }
                });
            }
        });
        Self { port, log, task }
    }

    /// The URL of `database` through this counter (no TLS: the counter reads
    /// the protocol).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    /// The exchanges since the last call.
    pub fn take(&self) -> Vec<Exchange> {
        self.take_by_connection().into_iter().map(|(_, e)| e).collect()
    }

    /// The exchanges since the last call, each with the number of the
    /// connection it was on (1 for the first the counter accepted).
    pub fn take_by_connection(&self) -> Vec<(usize, Exchange)> {
        std::mem::take(&mut *self.log.lock().expect("log lock"))
    }
}

impl Drop for PgCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both directions; parses what the client sends.
async fn relay(inbound: TcpStream, outbound: TcpStream, log: Arc<Mutex<Vec<(usize, Exchange)>>>, number: usize) {
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = outbound.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    let mut parser = Frontend::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for exchange in parser.feed(&buf[..n]) {
            log.lock().expect("log lock").push((number, exchange));
        }
        if to_server.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    down.abort();
}

/// The frontend stream: untyped start-up packets first, then typed messages.
#[derive(Default)]
struct Frontend {
    pending: Vec<u8>,
    started: bool,
    /// Prepared statement name -> SQL, per connection.
    statements: HashMap<String, String>,
    /// What the current exchange did so far.
    ran: Vec<String>,
    prepared: Option<String>,
}

impl Frontend {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Exchange> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if !self.started {
                // Length-prefixed, no type byte: SSLRequest/GSSENCRequest
                // (then another start-up packet) or the StartupMessage.
                let Some(len) = self.pending.get(..4).map(be32) else { break };
                if self.pending.len() < len {
                    break;
                }
                let code = self.pending.get(4..8).map(be32).unwrap_or(0);
                self.pending.drain(..len);
                if code != 80_877_103 && code != 80_877_104 {
                    self.started = true;
                }
                continue;
            }
            let Some(len) = self.pending.get(1..5).map(be32) else { break };
            if self.pending.len() < len + 1 {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..len + 1).collect();
            let (kind, body) = (message[0], &message[5..]);
            match kind {
                b'P' => {
                    let mut parts = body.split(|b| *b == 0);
                    let name = text(parts.next());
                    let sql = text(parts.next());
                    self.statements.insert(name, sql.clone());
                    self.prepared = Some(sql);
                }
                b'B' => {
                    let mut parts = body.split(|b| *b == 0);
                    let _portal = parts.next();
                    let name = text(parts.next());
                    let sql = self.statements.get(&name).cloned().unwrap_or(name);
                    self.ran.push(sql);
                }
                b'Q' => out.push(Exchange::Statement(vec![text(body.split(|b| *b == 0).next())])),
                b'S' => {
                    let ran = std::mem::take(&mut self.ran);
                    let prepared = self.prepared.take();
                    out.push(match (ran.is_empty(), prepared) {
                        (false, _) => Exchange::Statement(ran),
                        (true, Some(sql)) => Exchange::Prepare(sql),
                        (true, None) => Exchange::Ping,
                    });
                }
                _ => {}
            }
        }
        out
    }
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn text(part: Option<&[u8]>) -> String {
    String::from_utf8_lossy(part.unwrap_or_default()).into_owned()
}
