//! Load shedding: at most `--max-concurrent-calls` calls run at once; one
//! more is refused at once with UNAVAILABLE (reason OVERLOADED), which
//! clients retry with backoff, instead of queueing behind the database pool
//! until every caller times out. Health is never shed (probes must see a
//! busy server as alive).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct OverloadLayer {
    permits: Arc<Semaphore>,
}

impl OverloadLayer {
    pub fn new(max_concurrent_calls: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_concurrent_calls.max(1))) }
    }
}

impl<S> tower_layer::Layer<S> for OverloadLayer {
    type Service = OverloadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadService { inner, permits: self.permits.clone() }
    }
}

#[derive(Clone)]
pub struct OverloadService<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

pin_project_lite::pin_project! {
    /// The inner call's future, holding its permit until it completes.
    pub struct Permitted<F> {
        #[pin]
        inner: F,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F: Future> Future for Permitted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(out)
    }
}

fn overloaded<B: Default>() -> http::Response<B> {
    use tonic_types::{ErrorDetails, StatusExt};
    tonic::Status::with_error_details(
        tonic::Code::Unavailable,
        "the service is at its limit of concurrent calls; retry with backoff",
        ErrorDetails::with_error_info("OVERLOADED", super::status::ERROR_DOMAIN, std::collections::HashMap::new()),
    )
    .into_http()
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for OverloadService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Self::Response, S::Error>>, Permitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let permit = if request.uri().path().starts_with("/grpc.health.v1.Health/") {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return futures_util::future::Either::Left(std::future::ready(Ok(overloaded()))),
            }
        };
        futures_util::future::Either::Right(Permitted { inner: self.inner.call(request), permit })
    }
}
