//! The one HTTP/1.1 client of every runtime variant: hyper 1.x's
//! connection-level API over the runtime's own TCP stream, with the
//! connection driver spawned on the runtime's own executor.
//!
//! Every call opens a fresh connection (the contract's per-call timeout is
//! "connect + whole stream"), so no connection pool or hidden background
//! machinery exists, and every variant does exactly the same network work.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use crate::http::{BodyStream, HttpClient, HttpError, HttpErrorKind, HttpResponse, PostRequest};
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

    async fn post(&self, request: &PostRequest) -> Result<HttpResponse<HyperBody>, HttpError> {
        let ep = &request.endpoint;
        let connect_err = |context: String, e: &(dyn std::error::Error + 'static)| {
            HttpError::new(HttpErrorKind::Connect, &context, e)
        };
        let io =
            self.runtime.connect(&ep.host, ep.port).await.map_err(|e| {
                connect_err(format!("cannot connect to <{}:{}>", ep.host, ep.port), &e)
            })?;
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
