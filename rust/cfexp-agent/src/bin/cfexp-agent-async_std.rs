//! `cfexp-agent-async_std`: LEGACY. async-std is discontinued upstream
//! (RUSTSEC-2025-0052); kept only to compare with the original study.
//! hyper over async-std's TcpStream, agents via `async_std::task::spawn`.

mod support;

use cfexp_agent::agent::Variant;
use cfexp_agent::rt::async_std_rt;

fn main() -> std::process::ExitCode {
    let variant = Variant {
        runtime: "async_std",
        rebuffer_min_bytes: None,
    };
    support::main(
        variant,
        "LEGACY: async-std is discontinued upstream (RUSTSEC-2025-0052); \
         async-std global executor, hyper 1.x over async-std's TcpStream",
        async_std_rt::run_job,
    )
}
