//! The crate's one error type.
//!
//! ```text
//! Error
//! ├── Kind::Usage   bad command line, or --out cannot be created     → exit 2
//! ├── Kind::Spec    the spec file is missing, not JSON, or invalid  → exit 2
//! ├── Kind::Data    data_dir (prompts, personas, corpus) unusable    → exit 2
//! ├── Kind::Output  the records file cannot be written                → exit 3
//! └── Kind::Runtime the async runtime could not start                → exit 3
//! ```
//!
//! The exit statuses are those of errors before the job starts; any error
//! once it runs (after `Job::prepare`) exits 3.
//!
//! Failed LLM calls are not errors: they are `call` records
//! (`records::CallRecord`) with an `error_kind`.

use std::fmt;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely; decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command-line arguments.
    Usage,
    /// The spec is missing, not JSON, or fails validation.
    Spec,
    /// A file under `data_dir` is missing or malformed.
    Data,
    /// The records file cannot be created or written.
    Output,
    /// The async runtime or the HTTP client could not be set up.
    Runtime,
}

impl Kind {
    /// The exit status for this kind of failure before the job starts: 2
    /// for everything that means "this invocation cannot run" (bad spec,
    /// bad data_dir, bad arguments: nothing was sent), 3 otherwise. Any
    /// failure once the job runs exits 3 (records incomplete, no `done`),
    /// as the Python agent does.
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage | Kind::Spec | Kind::Data => 2,
            Kind::Output | Kind::Runtime => 3,
        }
    }
}

/// An error with a [`Kind`], a message that shows the offending value, and
/// the underlying cause, if any.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error without an underlying cause.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error caused by `source`.
    pub fn with_source(
        kind: Kind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
