//! The request messages a gRPC server holds at once, bounded by their bytes:
//! `[server.limits] message_budget_mib`.
//!
//! A gRPC request's first five bytes say how long its message is. Before the message is
//! received, its length is reserved from the budget, and given back once the call has been
//! answered (for a unary call, the message has been decoded and dropped by then). A request
//! that does not fit is refused at once with UNAVAILABLE `SERVER_BUSY` and a RetryInfo: its
//! body is not read, so its stream is reset and the bytes the client had sent are dropped.
//! Counting calls alone (the connection and stream caps) bounded the memory only by
//! `calls × largest message`: 64 CreateAuthorization calls of 4 MiB PDFs held 295 MiB.
//!
//! Why refuse rather than wait: a request waiting for the budget would keep its unread bytes in
//! its connection's HTTP/2 flow-control window, and with enough of them waiting, the calls that
//! hold the budget on the same connection could not receive the rest of theirs, and would never
//! give it back. A message larger than the whole budget takes all of it: it is taken only when
//! no other is held. One over the server's message size limit takes nothing: tonic refuses it
//! (RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`) without reading it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::Code;
use tonic::body::Body;

use crate::byte_budget::ByteBudget;
use crate::metrics::Metrics;
use crate::status::ApiError;

/// The gRPC message prefix: a compression flag, then the message's length (u32, big-endian).
const PREFIX: usize = 5;

/// A budget of `mib` MiB, or None for 0 (no bound but the connection and stream caps).
pub fn budget_of_mib(mib: usize) -> Option<Arc<ByteBudget>> {
    (mib > 0).then(|| Arc::new(ByteBudget::new(mib.saturating_mul(1024 * 1024))))
}

/// A tower layer reserving each request's message from the budget.
#[derive(Clone)]
pub struct MessageBudgetLayer {
    budget: Option<Arc<ByteBudget>>,
    /// The largest message the server decodes: a longer one is refused by tonic unread, and
    /// takes nothing.
    max_message_bytes: usize,
    /// The ErrorInfo domain of its refusals.
    domain: &'static str,
    /// Where its refusals are counted.
    metrics: Arc<Metrics>,
}

impl MessageBudgetLayer {
    pub fn new(
        budget: Option<Arc<ByteBudget>>,
        max_message_bytes: usize,
        domain: &'static str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { budget, max_message_bytes, domain, metrics }
    }
}

impl<S> tower::Layer<S> for MessageBudgetLayer {
    type Service = MessageBudgetService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageBudgetService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct MessageBudgetService<S> {
    inner: S,
    layer: MessageBudgetLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for MessageBudgetService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(budget) = self.layer.budget.clone() else {
            return Box::pin(self.inner.call(request));
        };
        // The service made ready is the one called (tower's contract); a clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let (max_message_bytes, domain) = (self.layer.max_message_bytes, self.layer.domain);
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let (parts, mut body) = request.into_parts();
            let head = read_prefix(&mut body).await;
            let length = message_length(&head);
            // tonic refuses a message over its size limit unread: it takes nothing.
            let reserved = (length <= max_message_bytes).then(|| budget.try_reserve(length));
            if let Some(None) = reserved {
                metrics.record_busy_refusal();
                return Ok(busy(length, budget.total_bytes(), domain));
            }
            let request = http::Request::from_parts(parts, Body::new(Replayed { head, rest: body }));
            let answer = inner.call(request).await;
            drop(reserved);
            answer
        })
    }
}

/// The refusal of a message that does not fit now.
fn busy(message_bytes: usize, budget_bytes: usize, domain: &str) -> http::Response<Body> {
    ApiError::new(
        Code::Unavailable,
        "SERVER_BUSY",
        format!(
            "the server is receiving as many request bytes as it holds at once ({budget_bytes}); this \
             request's {message_bytes} did not fit: retry after a moment"
        ),
    )
    .with("message_bytes", message_bytes)
    .with("budget_bytes", budget_bytes)
    .retry_after(Duration::from_secs(1))
    .into_status(domain)
    .into_http()
}

/// The body's first frames, up to and including the one that completes the message prefix (or
/// its end, its trailers or its error, whichever comes first).
async fn read_prefix(body: &mut Body) -> VecDeque<Result<Frame<Bytes>, tonic::Status>> {
    let mut head = VecDeque::new();
    let mut data = 0;
    while data < PREFIX {
        match body.frame().await {
            Some(Ok(frame)) => {
                let ends = !frame.is_data();
                data += frame.data_ref().map_or(0, Bytes::len);
                head.push_back(Ok(frame));
                if ends {
                    break;
                }
            }
            Some(Err(error)) => {
                head.push_back(Err(error));
                break;
            }
            None => break,
        }
    }
    head
}

/// The length the prefix declares; 0 when the body ended before it (tonic refuses that).
fn message_length(head: &VecDeque<Result<Frame<Bytes>, tonic::Status>>) -> usize {
    let prefix: Vec<u8> = head
        .iter()
        .filter_map(|frame| frame.as_ref().ok().and_then(Frame::data_ref))
        .flat_map(|data| data.iter().copied())
        .take(PREFIX)
        .collect();
    match prefix.get(1..PREFIX) {
        Some(length) => u32::from_be_bytes(length.try_into().expect("four bytes")) as usize,
        None => 0,
    }
}

/// A body whose first frames were read, with them put back in front.
struct Replayed {
    head: VecDeque<Result<Frame<Bytes>, tonic::Status>>,
    rest: Body,
}

impl http_body::Body for Replayed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.head.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::StreamBody;
    use tokio::sync::{Mutex, Semaphore};
    use tonic_types::StatusExt;
    use tower::util::BoxCloneService;
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::status::error_reason;

    type Handler = BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible>;

    /// A gRPC request body of a `len`-byte message, in frames of the given sizes (the rest in
    /// one).
    fn body_of(len: usize, frame_sizes: &[usize]) -> (Body, Vec<u8>) {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend((0..len).map(|i| i as u8));
        let mut frames = Vec::new();
        let mut at = 0;
        for size in frame_sizes.iter().copied().chain(std::iter::repeat(usize::MAX)) {
            if at == bytes.len() {
                break;
            }
            let end = bytes.len().min(at.saturating_add(size));
            frames.push(Ok::<_, tonic::Status>(Frame::data(Bytes::copy_from_slice(&bytes[at..end]))));
            at = end;
        }
        (Body::new(StreamBody::new(futures_util::stream::iter(frames))), bytes)
    }

    fn request(body: Body) -> http::Request<Body> {
        http::Request::builder()
            .uri("/fiscalbill.collection.v1.CollectionService/CreateAuthorization")
            .body(body)
            .unwrap()
    }

    /// Handlers that read the whole body, record it, and answer once let go (one per permit
    /// added to `release`).
    #[derive(Clone)]
    struct Held {
        release: Arc<Semaphore>,
        received: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Held {
        fn new() -> Self {
            Self { release: Arc::new(Semaphore::new(0)), received: Arc::default() }
        }

        /// The handler behind a budget of `kib` KiB.
        fn behind_budget(&self, kib: usize) -> MessageBudgetService<Handler> {
            let held = self.clone();
            let handler = BoxCloneService::new(tower::service_fn(move |request: http::Request<Body>| {
                let held = held.clone();
                async move {
                    let bytes = request.into_body().collect().await.unwrap().to_bytes().to_vec();
                    held.received.lock().await.push(bytes);
                    held.release.acquire().await.unwrap().forget();
                    Ok::<_, Infallible>(http::Response::new(Body::empty()))
                }
            }));
            let budget = Some(Arc::new(ByteBudget::new(kib * 1024)));
            let layer = MessageBudgetLayer::new(budget, 1024 * 1024, "test.fiscalbill", Metrics::new("test"));
            tower::Layer::layer(&layer, handler)
        }

        /// Waits until the handlers have received `n` bodies.
        async fn received(&self, n: usize) -> Vec<Vec<u8>> {
            loop {
                let received = self.received.lock().await.clone();
                if received.len() >= n {
                    return received;
                }
                tokio::task::yield_now().await;
            }
        }
    }

    async fn call(service: &mut MessageBudgetService<Handler>, body: Body) -> http::Response<Body> {
        service.ready().await.unwrap().call(request(body)).await.unwrap()
    }

    fn spawn_call(
        service: &mut MessageBudgetService<Handler>,
        body: Body,
    ) -> tokio::task::JoinHandle<http::Response<Body>> {
        let mut service = service.clone();
        tokio::spawn(async move { call(&mut service, body).await })
    }

    fn refusal(response: &http::Response<Body>) -> Option<tonic::Status> {
        tonic::Status::from_header_map(response.headers()).filter(|status| status.code() != Code::Ok)
    }

    #[tokio::test]
    async fn a_message_that_does_not_fit_is_refused_until_the_budget_is_given_back() {
        let held = Held::new();
        let mut service = held.behind_budget(100);
        // 80 KiB, its prefix split over two frames: held by the handler.
        let (body, sent) = body_of(80 * 1024, &[2, 3, 1000]);
        let first = spawn_call(&mut service, body);
        assert_eq!(held.received(1).await[0], sent, "the handler gets the body as it was sent");

        // 40 KiB more does not fit in 100: refused at once, and the handler never sees it.
        let (body, _) = body_of(40 * 1024, &[16 * 1024]);
        let status = refusal(&call(&mut service, body).await).expect("refused");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(error_reason(&status), "SERVER_BUSY");
        assert!(status.get_error_details().retry_info().is_some());
        assert_eq!(held.received.lock().await.len(), 1);

        // 20 KiB fits beside the 80.
        let (body, _) = body_of(20 * 1024, &[]);
        let second = spawn_call(&mut service, body);
        held.received(2).await;

        // Both answered, their budget given back: the 40 KiB is taken now.
        held.release.add_permits(2);
        assert!(refusal(&first.await.unwrap()).is_none());
        assert!(refusal(&second.await.unwrap()).is_none());
        let (body, sent) = body_of(40 * 1024, &[7]);
        let third = spawn_call(&mut service, body);
        assert_eq!(held.received(3).await[2], sent);
        held.release.add_permits(1);
        assert!(refusal(&third.await.unwrap()).is_none());
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_goes_alone() {
        let held = Held::new();
        let mut service = held.behind_budget(16);
        let (small, _) = body_of(1, &[]);
        let small = spawn_call(&mut service, small);
        held.received(1).await;
        let (large, _) = body_of(64 * 1024, &[]);
        let answer = call(&mut service, large).await;
        assert_eq!(refusal(&answer).map(|s| s.code()), Some(Code::Unavailable), "refused while another is held");

        held.release.add_permits(1);
        small.await.unwrap();
        let (large, sent) = body_of(64 * 1024, &[]);
        let large = spawn_call(&mut service, large);
        assert_eq!(held.received(2).await[1], sent, "taken alone");
        held.release.add_permits(1);
        assert!(refusal(&large.await.unwrap()).is_none());
    }

    /// tonic refuses a message over its size limit without reading it: it takes no budget.
    #[tokio::test]
    async fn a_message_over_the_size_limit_takes_nothing() {
        let held = Held::new();
        let mut service = held.behind_budget(16);
        let (small, _) = body_of(1, &[]);
        let small = spawn_call(&mut service, small);
        held.received(1).await;
        let (over, _) = body_of(1024 * 1024 + 1, &[5]);
        let over = spawn_call(&mut service, over);
        held.received(2).await;
        held.release.add_permits(2);
        assert!(refusal(&small.await.unwrap()).is_none());
        assert!(refusal(&over.await.unwrap()).is_none(), "passed on for tonic to refuse");
    }

    #[tokio::test]
    async fn a_body_shorter_than_a_prefix_reaches_the_handler_as_it_was() {
        let held = Held::new();
        let mut service = held.behind_budget(1);
        let frames = [Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"\0\0")))];
        let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
        let answer = spawn_call(&mut service, body);
        assert_eq!(held.received(1).await[0], b"\0\0");
        held.release.add_permits(1);
        assert!(refusal(&answer.await.unwrap()).is_none());
    }

    #[test]
    fn no_budget_for_zero() {
        assert!(budget_of_mib(0).is_none());
        assert_eq!(budget_of_mib(256).unwrap().total_bytes(), 256 * 1024 * 1024);
    }
}
