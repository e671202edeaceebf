//! The HTTP abstraction the workflows are written against: send a POST with
//! a JSON body and headers, get the status and a stream of body chunks.
//!
//! One implementation, [`crate::hyper_client::HyperClient`], serves every
//! runtime; tests may plug in their own.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

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

/// A response body, read chunk by chunk as the network delivers it.
pub trait BodyStream: Send {
    /// The next chunk; `None` at the end of the body.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, HttpError>>> + Send;
}

/// An HTTP client able to stream a POST's response.
pub trait HttpClient: Send + Sync + 'static {
    /// Its response body.
    type Body: BodyStream;

    /// Sends `request`; resolves when the response head has arrived.
    fn post(
        &self,
        request: &PostRequest,
    ) -> impl Future<Output = Result<HttpResponse<Self::Body>, HttpError>> + Send;
}
