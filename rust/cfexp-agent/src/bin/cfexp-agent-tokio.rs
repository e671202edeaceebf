//! `cfexp-agent-tokio`: tokio's multi-thread scheduler.

mod support;

use cfexp_agent::agent::Variant;
use cfexp_agent::rt::tokio_rt;

fn main() -> std::process::ExitCode {
    let variant = Variant {
        runtime: "tokio",
        rebuffer_min_bytes: None,
    };
    support::main(
        variant,
        "tokio multi-thread scheduler, hyper 1.x",
        tokio_rt::run_multi_thread,
    )
}
