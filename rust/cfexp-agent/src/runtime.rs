//! What a runtime variant supplies: TCP connections (adapted to hyper's IO
//! traits), a spawner and a timer. Everything else — HTTP, workflows,
//! records — is written once on top of it.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// An async runtime, as the agent uses it.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream, usable by hyper.
    type Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static;

    /// Connects to `host:port` (with `TCP_NODELAY`, as Python's asyncio does).
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = std::io::Result<Self::Io>> + Send;

    /// Runs `future` as a new task; the returned future is its result.
    fn spawn<F>(&self, future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Runs `future` as a new task nobody waits for (a connection driver).
    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// Runs `work` with a deadline: `Some(output)` if it finished first, `None`
/// if `timer` fired first (then `work` is dropped, i.e. cancelled).
pub async fn with_timeout<W, T>(work: W, timer: T) -> Option<W::Output>
where
    W: Future,
    T: Future<Output = ()>,
{
    let mut work = pin!(work);
    let mut timer = pin!(timer);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
