//! `cfexp-agent-tokio_localset`: tokio's current-thread scheduler with a
//! `LocalSet`; agents are `spawn_local` tasks on one thread.

mod support;

use cfexp_agent::agent::Variant;
use cfexp_agent::rt::tokio_rt;

fn main() -> std::process::ExitCode {
    let variant = Variant {
        runtime: "tokio_localset",
        rebuffer_min_bytes: None,
    };
    support::main(
        variant,
        "tokio current-thread scheduler + LocalSet, hyper 1.x",
        tokio_rt::run_local_set,
    )
}
