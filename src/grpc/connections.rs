//! The connection limit on the gRPC listener (`--max-connections`). Each
//! open HTTP/2 connection costs memory whether or not it carries calls
//! (about 36 KiB idle: hyper's read and write buffers, the connection task,
//! the service stack), so a storm of idle connections could take the pod
//! past its memory limit. One connection more than the limit is closed as
//! soon as it is accepted (the client sees UNAVAILABLE and retries, through
//! its load balancer, on another replica); the open ones are untouched.
//! Calls in flight are bounded separately (`overload`); the plaintext
//! health-only listener is not counted, so probes sent there still answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Meter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Refusals are logged at most this often (a storm refuses thousands).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// An accepted connection holding one of the limit's slots until it closes.
pub struct Limited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Accepted connections, at most `max` open at once; the others are closed
/// on arrival and counted in `invitations_connections_refused_total`.
/// `invitations_connections_open` reports how many are open.
pub fn limit<S>(incoming: S, max: usize, meter: &Meter) -> impl Stream<Item = io::Result<Limited>> + use<S>
where
    S: Stream<Item = io::Result<TcpStream>>,
{
    let slots = Arc::new(Semaphore::new(max));
    let in_use = slots.clone();
    meter
        .u64_observable_gauge("invitations.connections.open")
        .with_description("Open gRPC connections (at most --max-connections)")
        .with_callback(move |observer| observer.observe((max - in_use.available_permits()) as u64, &[]))
        .build();
    let refused: Counter<u64> = meter
        .u64_counter("invitations.connections.refused")
        .with_description("gRPC connections closed on arrival because --max-connections were open")
        .build();
    let mut last_log: Option<Instant> = None;
    incoming.filter_map(move |accepted| match accepted {
        Err(e) => Some(Err(e)),
        Ok(stream) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(Ok(Limited { stream, _slot: slot })),
            Err(_) => {
                refused.add(1, &[]);
                if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(max_connections = max, "connection limit reached: closing new connections");
                    last_log = Some(Instant::now());
                }
                None
            }
        },
    })
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
