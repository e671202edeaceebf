//! `cfexp-agent-smol_1kb`: the smol variant with each response body
//! re-buffered into pieces of at least 1024 bytes before parsing (the
//! original study's variant).

mod support;

use cfexp_agent::agent::Variant;
use cfexp_agent::rt::{default_threads, smol_rt};

fn main() -> std::process::ExitCode {
    let variant = Variant {
        runtime: "smol_1kb",
        rebuffer_min_bytes: Some(1024),
    };
    support::main(
        variant,
        "smol::Executor, hyper 1.x over smol's TcpStream, body re-buffered to >= 1024-byte pieces",
        |job| smol_rt::run_job(job, default_threads()),
    )
}
