//! What every runtime binary shares: arguments, preparing the job (exit 2
//! when it cannot run), running it on the variant's runtime, exit status,
//! and printing the whole error chain to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use cfexp_agent::agent::{Job, Variant};
use cfexp_agent::cli::{Command, usage};

/// Runs the binary of `variant`; `run` builds the runtime and runs the job.
pub fn main(
    variant: Variant,
    note: &str,
    run: fn(Arc<Job>) -> cfexp_agent::Result<bool>,
) -> ExitCode {
    let name = format!("cfexp-agent-{}", variant.runtime);
    let command = match Command::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: error: {e}\n{}", usage(&name));
            return ExitCode::from(e.kind().exit_code());
        }
    };
    let (spec, out) = match command {
        Command::Version => {
            println!("{name} {} ({note})", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Help => {
            println!("{}", usage(&name));
            return ExitCode::SUCCESS;
        }
        Command::Run { spec, out } => (spec, out),
    };
    let job = match Job::prepare(&spec, &out, variant) {
        Ok(job) => Arc::new(job),
        Err(e) => {
            let code = e.kind().exit_code();
            let err =
                anyhow::Error::new(e).context(format!("cannot run <spec={}>", spec.display()));
            eprintln!("{name}: error: {err:?}");
            return ExitCode::from(code);
        }
    };
    match run(job) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // An internal failure once the job was accepted (records cannot
            // be written, the runtime cannot start, the corpus vanished):
            // records are incomplete and there is no `done`. Always 3, so 2
            // keeps meaning "nothing was sent".
            let err = anyhow::Error::new(e).context(format!(
                "{name} stopped while running <spec={}>; no done record",
                spec.display()
            ));
            eprintln!("{name}: error: {err:?}");
            ExitCode::from(3)
        }
    }
}
