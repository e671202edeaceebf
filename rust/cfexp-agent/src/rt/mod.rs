//! The runtime variants, one feature each. Each module supplies a
//! [`crate::runtime::Runtime`] (its own TCP stream, spawner, timer) and a
//! `run_job` that builds the runtime and runs [`crate::agent::run`] on it.
//!
//! | feature | module | scheduler | TCP + timer |
//! |---|---|---|---|
//! | `tokio` | [`tokio_rt`] | multi-thread, or current-thread + `LocalSet` | tokio |
//! | `smol` | [`smol_rt`] | `smol::Executor` on N threads | async-io (smol's reactor) |
//! | `async_std` | [`async_std_rt`] | async-std's global executor | async-std (legacy) |

#[cfg(any(feature = "smol", feature = "async_std"))]
pub mod futures_io;

#[cfg(feature = "async_std")]
pub mod async_std_rt;
#[cfg(feature = "smol")]
pub mod smol_rt;
#[cfg(feature = "tokio")]
pub mod tokio_rt;

/// Threads for a multi-threaded executor: one per core, as tokio's default.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
