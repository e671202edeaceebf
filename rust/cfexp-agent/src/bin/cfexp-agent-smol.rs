//! `cfexp-agent-smol`: hyper over smol, agents on a `smol::Executor`.

mod support;

use cfexp_agent::agent::Variant;
use cfexp_agent::rt::{default_threads, smol_rt};

fn main() -> std::process::ExitCode {
    let variant = Variant {
        runtime: "smol",
        rebuffer_min_bytes: None,
    };
    support::main(
        variant,
        "smol::Executor, hyper 1.x over smol's TcpStream",
        |job| smol_rt::run_job(job, default_threads()),
    )
}
