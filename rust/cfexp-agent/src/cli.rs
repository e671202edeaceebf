//! The command line, in two steps: raw arguments, then a validated
//! [`Command`]. Shared by every runtime binary.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Kind, Result};

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the spec, writing records to `out`.
    Run {
        /// `--spec`
        spec: PathBuf,
        /// `--out`
        out: PathBuf,
    },
    /// Print the version and runtime notes.
    Version,
    /// Print usage.
    Help,
}

/// Usage text for binary `name`.
pub fn usage(name: &str) -> String {
    format!("usage: {name} --spec SPEC.json --out RECORDS.jsonl\n       {name} --version")
}

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self> {
        let mut spec = None;
        let mut out = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let flag = arg.to_string_lossy().into_owned();
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(OsString::from(v))),
                _ => (flag.clone(), None),
            };
            let slot = match name.as_str() {
                "--spec" => &mut spec,
                "--out" => &mut out,
                "--version" | "-V" => return Ok(Command::Version),
                "--help" | "-h" => return Ok(Command::Help),
                _ => {
                    return Err(Error::new(
                        Kind::Usage,
                        format!("unknown argument <{flag}>"),
                    ));
                }
            };
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| Error::new(Kind::Usage, format!("<{name}> needs a path")))?;
            *slot = Some(PathBuf::from(value));
        }
        match (spec, out) {
            (Some(spec), Some(out)) => Ok(Command::Run { spec, out }),
            _ => Err(Error::new(
                Kind::Usage,
                "both --spec and --out are required",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command> {
        Command::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_flags() {
        assert_eq!(
            parse(&["--spec", "a.json", "--out=b.jsonl"]).unwrap(),
            Command::Run {
                spec: "a.json".into(),
                out: "b.jsonl".into()
            }
        );
        assert_eq!(parse(&["--version"]).unwrap(), Command::Version);
        assert_eq!(parse(&["--spec", "a"]).unwrap_err().kind(), Kind::Usage);
        assert_eq!(parse(&["--spec"]).unwrap_err().kind(), Kind::Usage);
        assert_eq!(parse(&["--bogus"]).unwrap_err().kind(), Kind::Usage);
    }
}
