//! The one HTTP/1.1 client of every runtime variant: hyper 1.x's
//! connection-level API over the runtime's own TCP stream, with the
//! connection driver spawned on the runtime's own executor.
//!
//! Every call opens a fresh connection (the contract's per-call timeout is
//! "connect + whole stream"), so no connection pool or hidden background
//! machinery exists, and every variant does exactly the same network work.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
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

/// A hyper response body; keeps the request handle (and so the connection)
/// alive while the body streams.
pub struct HyperBody {
    body: Incoming,
    _sender: SendRequest<Full<Bytes>>,
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

impl<R: Runtime> HttpClient for HyperClient<R> {
    type Body = HyperBody;

    async fn post(
        &self,
        request: &PostRequest,
        clock: &Arc<WireClock>,
    ) -> Result<HttpResponse<HyperBody>, HttpError> {
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
        let io = SendStamp {
            io,
            clock: Some(clock.clone()),
        };
        let (mut sender, connection) = http1::handshake(io).await.map_err(|e| {
            connect_err(format!("HTTP handshake with <{}> failed", ep.authority), &e)
        })?;
        // hyper needs the connection future polled while requests run; the
        // runtime's own executor does it.
        self.runtime.spawn_detached(async move {
            let _ = connection.await;
        });
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
        let response = sender.send_request(req).await.map_err(|e| {
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
                _sender: sender,
            },
        })
    }
}

/// The connection's IO, reading the clock the first time hyper writes to it:
/// just before the request's first byte leaves (hyper writes nothing before
/// the request; its head and a small body go out in one vectored write).
struct SendStamp<I> {
    io: I,
    /// Taken at the first write; later writes cost nothing.
    clock: Option<Arc<WireClock>>,
}

impl<I> SendStamp<I> {
    fn stamp(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.sending();
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for SendStamp<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for SendStamp<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stamp();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stamp();
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
