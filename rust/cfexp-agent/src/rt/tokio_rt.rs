//! The tokio variants: `tokio` (multi-thread scheduler, `tokio::spawn`) and
//! `tokio_localset` (current-thread scheduler, `LocalSet` + `spawn_local`).
//! Same TCP and timer; a genuinely different scheduler.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::agent::{self, Job};
use crate::error::{Error, Kind, Result};
use crate::runtime::Runtime;

/// Which tokio scheduler spawns the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// `Builder::new_multi_thread`, tasks via `tokio::spawn`.
    MultiThread,
    /// `Builder::new_current_thread` + `LocalSet`, tasks via `spawn_local`.
    LocalSet,
}

/// tokio as the agent's runtime.
#[derive(Debug, Clone, Copy)]
pub struct TokioRuntime {
    scheduler: Scheduler,
}

impl TokioRuntime {
    fn spawn_raw<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.scheduler {
            Scheduler::MultiThread => tokio::spawn(future),
            Scheduler::LocalSet => tokio::task::spawn_local(future),
        }
    }
}

impl Runtime for TokioRuntime {
    type Io = TokioIo<TcpStream>;

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(stream))
    }

    fn spawn<F>(&self, future: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.spawn_raw(future);
        async move {
            match handle.await {
                Ok(out) => out,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("agent task did not finish: {e}"),
            }
        }
    }

    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.spawn_raw(future));
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn runtime_error(e: io::Error) -> Error {
    Error::with_source(Kind::Runtime, "cannot start the tokio runtime", e)
}

/// Runs `job` on tokio's multi-thread scheduler (one worker per core).
pub fn run_multi_thread(job: Arc<Job>) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let runtime = TokioRuntime {
        scheduler: Scheduler::MultiThread,
    };
    rt.block_on(agent::run(job, runtime))
}

/// Runs `job` on one thread: a current-thread runtime driving a `LocalSet`.
pub fn run_local_set(job: Arc<Job>) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let local = tokio::task::LocalSet::new();
    let runtime = TokioRuntime {
        scheduler: Scheduler::LocalSet,
    };
    local.block_on(&rt, agent::run(job, runtime))
}
