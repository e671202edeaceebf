//! The legacy `async_std` variant: hyper over async-std's own TCP stream,
//! tasks via `async_std::task::spawn` on its global executor, its timer.
//! async-std is discontinued upstream (RUSTSEC-2025-0052); the variant is
//! kept only to compare with the original study. No tokio runtime exists in
//! this binary.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_std::net::TcpStream;

use super::futures_io::FuturesIo;
use crate::agent::{self, Job};
use crate::error::Result;
use crate::runtime::Runtime;

/// async-std as the agent's runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    type Io = FuturesIo<TcpStream>;

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(FuturesIo::new(stream))
    }

    fn spawn<F>(&self, future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        async_std::task::spawn(future)
    }

    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(async_std::task::spawn(future));
    }

    async fn sleep(&self, duration: Duration) {
        async_std::task::sleep(duration).await;
    }
}

/// Runs `job` on async-std's global executor.
pub fn run_job(job: Arc<Job>) -> Result<bool> {
    async_std::task::block_on(agent::run(job, AsyncStdRuntime))
}
