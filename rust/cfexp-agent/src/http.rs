//! The HTTP abstraction the workflows are written against: send a POST with
//! a JSON body and headers, get the status and a stream of body chunks.
//!
//! One implementation, [`crate::hyper_client::HyperClient`], serves every
//! runtime; tests may plug in their own.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use crate::clock::monotonic_ns;
use crate::spec::Endpoint;

/// One POST request.
#[derive(Debug, Clone)]
pub struct PostRequest {
    /// Where to send it.
    pub endpoint: Endpoint,
    /// Extra headers (`Host` comes from the endpoint).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Bytes,
}

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct HttpResponse<B> {
    /// The status code.
    pub status: u16,
    /// The body, chunk by chunk.
    pub body: B,
}

/// Where an HTTP exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The connection could not be made.
    Connect,
    /// The connection broke after it was made (request or response).
    Transport,
}

/// A failed HTTP exchange, with the whole cause chain in its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// Where it failed.
    pub kind: HttpErrorKind,
    /// What failed, and why.
    pub message: String,
}

impl HttpError {
    /// An error of `kind` described by `context` and `source`'s chain.
    pub fn new(
        kind: HttpErrorKind,
        context: &str,
        source: &(dyn std::error::Error + 'static),
    ) -> Self {
        let mut message = format!("{context}: {source}");
        let mut cause = source.source();
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        HttpError { kind, message }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

/// The clock readings of one exchange's connection, taken by the HTTP client
/// as they happen: connect begun, connection established (both only when the
/// call opens a connection, not when it reuses its agent's kept-alive one),
/// request's first byte about to be written (docs/metrics.md, "Where the
/// client's clock starts"). Shared, because the first write happens in the
/// connection's own task, and kept by the caller, so a timed-out exchange
/// still leaves them. It also notes whether any byte of the response arrived:
/// a request is resent only if none did.
#[derive(Debug, Default)]
pub struct WireClock {
    // 0 = not read (CLOCK_MONOTONIC is never 0 on a running system).
    connect_start_ns: AtomicU64,
    connect_end_ns: AtomicU64,
    send_ns: AtomicU64,
    response_began: AtomicBool,
}

impl WireClock {
    /// Reads the clock as the connect begins.
    pub fn connect_started(&self) {
        self.connect_start_ns
            .store(monotonic_ns(), Ordering::Relaxed);
    }

    /// Reads the clock as the connection is established.
    pub fn connect_finished(&self) {
        self.connect_end_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// Reads the clock as the request's first byte is about to be written;
    /// later writes keep the first reading.
    pub fn sending(&self) {
        let _ =
            self.send_ns
                .compare_exchange(0, monotonic_ns(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Notes that a byte of the response arrived.
    pub fn receiving(&self) {
        self.response_began.store(true, Ordering::Relaxed);
    }

    /// Whether any byte of the response arrived.
    pub fn response_began(&self) -> bool {
        self.response_began.load(Ordering::Relaxed)
    }

    /// Forgets the send reading, for a request about to be sent once more
    /// (on a new connection, whose connect readings replace any earlier).
    pub fn resending(&self) {
        self.send_ns.store(0, Ordering::Relaxed);
    }

    /// When the connect began, if this exchange connected.
    pub fn connect_start_ns(&self) -> Option<u64> {
        nonzero(&self.connect_start_ns)
    }

    /// When the connection was established, if it was.
    pub fn connect_end_ns(&self) -> Option<u64> {
        nonzero(&self.connect_end_ns)
    }

    /// When the request began to be written, if it did.
    pub fn send_ns(&self) -> Option<u64> {
        nonzero(&self.send_ns)
    }
}

fn nonzero(reading: &AtomicU64) -> Option<u64> {
    Some(reading.load(Ordering::Relaxed)).filter(|&ns| ns != 0)
}

/// A response body, read chunk by chunk as the network delivers it.
pub trait BodyStream: Send {
    /// The next chunk; `None` at the end of the body.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, HttpError>>> + Send;
}

/// An HTTP client able to stream a POST's response.
pub trait HttpClient: Send + Sync + 'static {
    /// Its response body.
    type Body: BodyStream;

    /// One agent's connection, kept between its calls (empty at first, and
    /// whenever the last call did not end cleanly).
    type Connection: Default + Send;

    /// Sends `request` over `connection`'s kept-alive connection if it is
    /// still open, else over a new one; resolves when the response head has
    /// arrived. Reads the connection's clock readings into `clock` as they
    /// happen. The connection travels with the body: it is kept for the
    /// next call only if the body is handed back through [`Self::keep`].
    fn post(
        &self,
        connection: &mut Self::Connection,
        request: &PostRequest,
        clock: &Arc<WireClock>,
    ) -> impl Future<Output = Result<HttpResponse<Self::Body>, HttpError>> + Send;

    /// Keeps the connection of `body`, read to its end by a successful
    /// call, for the agent's next call.
    fn keep(&self, connection: &mut Self::Connection, body: Self::Body);
}
