//! The smol variants (`smol`, `smol_1kb`): hyper over smol's own TCP stream
//! (async-net/async-io), tasks on an explicit `smol::Executor` run by one
//! thread per core (the process's main thread included), timers from
//! async-io. No tokio runtime exists in these binaries.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use smol::Executor;
use smol::net::TcpStream;

use super::futures_io::FuturesIo;
use crate::agent::{self, Job};
use crate::error::{Error, Kind, Result};
use crate::runtime::Runtime;

/// smol as the agent's runtime.
#[derive(Debug, Clone)]
pub struct SmolRuntime {
    executor: Arc<Executor<'static>>,
}

impl Runtime for SmolRuntime {
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
        self.executor.spawn(future)
    }

    fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.executor.spawn(future).detach();
    }

    async fn sleep(&self, duration: Duration) {
        smol::Timer::after(duration).await;
    }
}

/// Runs `job` on a `smol::Executor` driven by `threads` threads.
pub fn run_job(job: Arc<Job>, threads: usize) -> Result<bool> {
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    std::thread::scope(|scope| {
        for i in 1..threads.max(1) {
            let (executor, stopped) = (executor.clone(), stopped.clone());
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn_scoped(scope, move || smol::block_on(executor.run(stopped.recv())))
                .map_err(|e| {
                    Error::with_source(Kind::Runtime, "cannot start a smol executor thread", e)
                })?;
        }
        let runtime = SmolRuntime {
            executor: executor.clone(),
        };
        let out = smol::block_on(executor.run(agent::run(job, runtime)));
        drop(stop); // lets the other executor threads return
        out
    })
}
