//! hyper's IO traits for any `futures-io` stream — smol's and async-std's
//! `TcpStream` — so hyper runs on them without any tokio IO type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};

/// Bytes read per `poll_read` at most.
const READ_CHUNK: usize = 8 * 1024;

/// A `futures-io` stream usable as hyper's connection IO.
#[derive(Debug)]
pub struct FuturesIo<T>(T);

impl<T> FuturesIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        FuturesIo(inner)
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for FuturesIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Read into an initialised buffer and copy (no `unsafe`): `futures-io`
        // wants `&mut [u8]`, hyper offers uninitialised memory. LLM streams
        // are small, so the copy costs nothing measurable.
        let mut tmp = [0u8; READ_CHUNK];
        let n = buf.remaining().min(READ_CHUNK);
        match Pin::new(&mut self.0).poll_read(cx, &mut tmp[..n]) {
            Poll::Ready(Ok(read)) => {
                buf.put_slice(&tmp[..read]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for FuturesIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
