//! The tower plumbing of per-RPC telemetry: a layer around the whole gRPC
//! server that starts a [`Call`](super::rpc) when request headers arrive and
//! finishes it with the final status. The status of a successful unary call
//! travels in the trailers, so the response body is wrapped and the call
//! finishes when they pass (or when the body ends or is dropped early).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use super::metrics::RpcMetrics;
use super::rpc::{Call, status_from};

/// The layer: `Server::builder().layer(RpcLayer::new(metrics))`.
#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let call = Call::start(&request, self.metrics.clone());
        request.extensions_mut().insert(call.caller.clone());
        let inner = {
            let _entered = call.span.enter();
            self.inner.call(request)
        };
        ResponseFuture { inner, call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|c| c.span.enter());
            match this.inner.poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            }
        };
        let Some(call) = this.call.take() else {
            return Poll::Ready(result.map(|r| r.map(|body| ObservedBody { inner: body, call: None })));
        };
        match result {
            Ok(response) => {
                // Errors (and trailers-only answers) carry the status in the
                // headers; a successful call's status follows in the trailers.
                let call = match status_from(response.headers()) {
                    Some(code) => {
                        call.finish(code, Some(response.headers()));
                        None
                    }
                    None => Some(call),
                };
                Poll::Ready(Ok(response.map(|body| ObservedBody { inner: body, call })))
            }
            Err(e) => {
                call.finish(Code::Unknown, None);
                Poll::Ready(Err(e))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response body, finishing the call when the trailers pass (or when
    /// the body ends or is dropped early: the client went away).
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(Code::Cancelled, None);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.take()
                {
                    call.finish(status_from(trailers).unwrap_or(Code::Unknown), Some(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Internal, None);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    // A body that ends without trailers is a protocol error.
                    call.finish(Code::Unknown, None);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;
    use crate::telemetry::{CallerSlot, Metrics};

    /// A response body: its frames, in order.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// The inner service: answers with `status` in the headers (an error) or
    /// in the trailers (success), naming the caller like an auth layer would.
    #[derive(Clone)]
    struct Inner {
        status_in_headers: Option<&'static str>,
        authenticated: Option<&'static str>,
    }

    impl Service<http::Request<()>> for Inner {
        type Response = http::Response<Frames>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            if let (Some(name), Some(slot)) = (self.authenticated, request.extensions().get::<CallerSlot>()) {
                slot.set(name);
            }
            let mut frames = VecDeque::from([Frame::data(Bytes::from_static(b"\0\0\0\0\0"))]);
            let mut response = http::Response::builder();
            match self.status_in_headers {
                Some(code) => response = response.header("grpc-status", code),
                None => {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    frames.push_back(Frame::trailers(trailers));
                }
            }
            std::future::ready(Ok(response.body(Frames(frames)).expect("response")))
        }
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .uri("/invitations.v1.InvitationService/Redeem")
            .header("x-caller", "claimed-name")
            .body(())
            .expect("request")
    }

    fn count(metrics: &Metrics, code: &str) -> bool {
        let text = metrics.render().expect("render");
        text.lines().any(|l| {
            l.starts_with("invitations_rpc_requests_total")
                && l.contains(&format!("code=\"{code}\""))
                && l.ends_with(" 1")
        })
    }

    async fn drain(mut body: ObservedBody<Frames>) {
        while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_some() {}
    }

    #[test]
    fn a_status_in_the_trailers_is_recorded_when_they_pass() {
        let metrics = Metrics::new(false).expect("metrics");
        let mut service =
            RpcLayer::new(metrics.rpc.clone()).layer(Inner { status_in_headers: None, authenticated: None });
        futures::executor::block_on(async {
            let response = service.call(request()).await.expect("response");
            assert!(!count(&metrics, "OK"), "not finished before the trailers");
            drain(response.into_body()).await;
        });
        assert!(count(&metrics, "OK"));
    }

    #[test]
    fn a_body_dropped_early_is_cancelled() {
        let metrics = Metrics::new(false).expect("metrics");
        let mut service =
            RpcLayer::new(metrics.rpc.clone()).layer(Inner { status_in_headers: None, authenticated: None });
        let response = futures::executor::block_on(service.call(request())).expect("response");
        drop(response);
        assert!(count(&metrics, "CANCELLED"));
    }

    #[test]
    fn an_authenticated_caller_wins_over_the_claimed_one() {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(sink.clone())).finish();
        let metrics = Metrics::new(false).expect("metrics");
        let inner = Inner { status_in_headers: Some("5"), authenticated: Some("signup-service") };
        let mut service = RpcLayer::new(metrics.rpc.clone()).layer(inner);
        tracing::subscriber::with_default(subscriber, || {
            futures::executor::block_on(service.call(request())).expect("response");
        });
        assert!(count(&metrics, "NOT_FOUND"));
        let text = String::from_utf8(logs.lock().expect("lock").clone()).expect("utf-8");
        assert!(text.contains("rpc finished") && text.contains("caller=\"signup-service\""), "{text}");
        assert!(!text.contains("claimed-name"), "{text}");

        // Without an authentication layer, the claim is what is recorded.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Capture(sink.clone())).finish();
        let inner = Inner { status_in_headers: Some("5"), authenticated: None };
        let mut service = RpcLayer::new(metrics.rpc.clone()).layer(inner);
        tracing::subscriber::with_default(subscriber, || {
            futures::executor::block_on(service.call(request())).expect("response");
        });
        let text = String::from_utf8(logs.lock().expect("lock").clone()).expect("utf-8");
        assert!(text.contains("caller=\"claimed-name\""), "{text}");
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
