//! The one HTTP/1.1 client of every runtime variant: hyper 1.x's
//! connection-level API over the runtime's own TCP stream, with the
//! connection driver spawned on the runtime's own executor.
//!
//! Keep-alive: each agent keeps one connection ([`HyperConnection`]) across
//! its calls, one call at a time. A call reuses it if it is still open and
//! otherwise connects; only a call that read its body to the end hands it
//! back ([`HttpClient::keep`]), so a failed, timed-out or cut call's
//! connection is closed with its body. No pool and no hidden background
//! machinery beyond hyper's connection driver: every variant does exactly
//! the same network work.
//!
//! The one resend: llama-server announces keep-alive yet closes the
//! connection after every streamed reply, so a request can meet a kept
//! connection closed under it. When a reused connection fails before any
//! byte of the response arrived, the server never answered, and the request
//! is sent once more on a new connection (docs/fault-model.md, "Keep-alive
//! and the one resend"). Never after a response byte, never for a call that
//! opened its own connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use crate::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpResponse, PostRequest, WireClock,
};
use crate::runtime::Runtime;

/// Bytes read per `poll_read` while a response has not begun (the read that
/// tells whether it did goes through a buffer of this size).
const FIRST_READ_CHUNK: usize = 8 * 1024;

/// hyper's HTTP/1.1 client on runtime `R`.
#[derive(Debug, Clone)]
pub struct HyperClient<R> {
    runtime: R,
    user_agent: String,
}

impl<R: Runtime> HyperClient<R> {
    /// A client for runtime variant `variant` (named in `User-Agent`).
    pub fn new(runtime: R, variant: &str) -> Self {
        HyperClient {
            runtime,
            user_agent: format!("cfexp-agent/{} ({variant})", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The clock of the call the connection is serving; its IO reads it at the
/// request's first write and at the response's first byte.
type CallClock = Arc<Mutex<Option<Arc<WireClock>>>>;

/// One open HTTP/1.1 connection: hyper's request handle and the slot
/// through which its IO finds the current call's clock.
struct Kept {
    sender: SendRequest<Full<Bytes>>,
    clock: CallClock,
}

/// An agent's kept-alive connection, if it has one.
#[derive(Default)]
pub struct HyperConnection(Option<Kept>);

impl std::fmt::Debug for HyperConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HyperConnection(kept)"
        } else {
            "HyperConnection(none)"
        })
    }
}

/// A hyper response body; holds its connection while the body streams, so
/// dropping an unfinished body closes the connection.
pub struct HyperBody {
    body: Incoming,
    connection: Kept,
}

impl std::fmt::Debug for HyperBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HyperBody")
    }
}

impl BodyStream for HyperBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, HttpError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(e) => {
                    return Some(Err(HttpError::new(
                        HttpErrorKind::Transport,
                        "the response body broke off",
                        &e,
                    )));
                }
            }
        }
    }
}

impl<R: Runtime> HyperClient<R> {
    /// Opens a connection to the request's endpoint, its driver spawned.
    async fn connect(
        &self,
        request: &PostRequest,
        clock: &Arc<WireClock>,
    ) -> Result<Kept, HttpError> {
        let ep = &request.endpoint;
        let connect_err = |context: String, e: &(dyn std::error::Error + 'static)| {
            HttpError::new(HttpErrorKind::Connect, &context, e)
        };
        clock.connect_started();
        let io =
            self.runtime.connect(&ep.host, ep.port).await.map_err(|e| {
                connect_err(format!("cannot connect to <{}:{}>", ep.host, ep.port), &e)
            })?;
        clock.connect_finished();
        let call_clock: CallClock = Arc::new(Mutex::new(None));
        let io = SendStamp {
            io,
            clock: call_clock.clone(),
        };
        let (sender, connection) = http1::handshake(io).await.map_err(|e| {
            connect_err(format!("HTTP handshake with <{}> failed", ep.authority), &e)
        })?;
        // hyper needs the connection future polled while requests run (and,
        // between calls, to notice the server closing it); the runtime's own
        // executor does it. It ends once the request handle is dropped.
        self.runtime.spawn_detached(async move {
            let _ = connection.await;
        });
        Ok(Kept {
            sender,
            clock: call_clock,
        })
    }

    /// Sends `request` on `connection`, its IO set to this call's clock.
    async fn send(
        &self,
        mut connection: Kept,
        request: &PostRequest,
        clock: &Arc<WireClock>,
    ) -> Result<HttpResponse<HyperBody>, HttpError> {
        let ep = &request.endpoint;
        *lock(&connection.clock) = Some(clock.clone());
        let mut builder = http::Request::post(ep.path.as_str())
            .header(HOST, ep.authority.as_str())
            .header(USER_AGENT, self.user_agent.as_str())
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &request.headers {
            builder = builder.header(*name, value.as_str());
        }
        let req = builder.body(Full::new(request.body.clone())).map_err(|e| {
            HttpError::new(HttpErrorKind::Transport, "cannot build the request", &e)
        })?;
        let response = connection.sender.send_request(req).await.map_err(|e| {
            HttpError::new(
                HttpErrorKind::Transport,
                &format!("no response from <{}{}>", ep.authority, ep.path),
                &e,
            )
        })?;
        Ok(HttpResponse {
            status: response.status().as_u16(),
            body: HyperBody {
                body: response.into_body(),
                connection,
            },
        })
    }
}

impl<R: Runtime> HttpClient for HyperClient<R> {
    type Body = HyperBody;
    type Connection = HyperConnection;

    async fn post(
        &self,
        connection: &mut HyperConnection,
        request: &PostRequest,
        clock: &Arc<WireClock>,
    ) -> Result<HttpResponse<HyperBody>, HttpError> {
        if let Some(mut kept) = connection.0.take() {
            // Still open? The server may have closed it since the last call
            // (then hyper's driver has seen the end and `ready` fails).
            if kept.sender.ready().await.is_ok() {
                match self.send(kept, request, clock).await {
                    Ok(response) => return Ok(response),
                    Err(e) if clock.response_began() => return Err(e),
                    Err(e) => {
                        let ep = &request.endpoint;
                        eprintln!(
                            "cfexp-agent: warning: kept-alive connection to <{}> closed before \
                             any response ({}); sending the request once more on a new connection",
                            ep.authority, e.message
                        );
                        clock.resending();
                    }
                }
            }
        }
        let fresh = self.connect(request, clock).await?;
        self.send(fresh, request, clock).await
    }

    fn keep(&self, connection: &mut HyperConnection, body: HyperBody) {
        connection.0 = Some(body.connection);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves nothing half-written: an Option swap.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The connection's IO, reading the current call's clock the first time
/// hyper writes its request (just before the request's first byte leaves:
/// hyper writes nothing before the request; its head and a small body go out
/// in one vectored write), and noting the first byte of its response.
struct SendStamp<I> {
    io: I,
    /// The clock of the call being served; set by each call before it sends.
    clock: CallClock,
}

impl<I> SendStamp<I> {
    fn current(&self) -> Option<Arc<WireClock>> {
        lock(&self.clock).clone()
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for SendStamp<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(clock) = self.current().filter(|c| !c.response_began()) else {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        };
        // Until the response's first byte, read through a buffer of our own
        // to see how many bytes came (no `unsafe`); later reads go straight
        // through, so the stream's chunks are read as before.
        let mut tmp = [0u8; FIRST_READ_CHUNK];
        let n = buf.remaining().min(FIRST_READ_CHUNK);
        let mut inner = hyper::rt::ReadBuf::new(&mut tmp[..n]);
        match Pin::new(&mut self.io).poll_read(cx, inner.unfilled()) {
            Poll::Ready(Ok(())) => {
                let read = inner.filled();
                if !read.is_empty() {
                    clock.receiving();
                }
                buf.put_slice(read);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for SendStamp<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(clock) = self.current() {
            clock.sending();
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(clock) = self.current() {
            clock.sending();
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
