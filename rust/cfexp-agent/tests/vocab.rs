//! The closed vocabularies the Rust agent shares with the Python side are
//! the ones `cfexp/vocab.py` (and `ErrorKind` in `cfexp/agents/records.py`)
//! declare: the same words, in the same order. Read from the Python sources
//! themselves, so a word added there and not here fails here.

mod common;

use cfexp_agent::spec::{Api, PYTHON_RUNTIMES, Scenario};
use cfexp_agent::stream::FailureKind;
use cfexp_agent::workflow::data::STEPS;

/// The values of `class <name>(StrEnum)` in a Python file, in order.
fn enum_values(file: &str, name: &str) -> Vec<String> {
    let path = common::repo_root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let header = format!("class {name}(StrEnum):");
    let body = text
        .split_once(&header)
        .unwrap_or_else(|| panic!("no {header} in {}", path.display()))
        .1;
    let mut values = Vec::new();
    for line in body.lines().skip(1) {
        if !(line.is_empty() || line.starts_with(' ')) {
            break; // the class ended
        }
        let member = (line.trim().split_once(" = \""))
            .filter(|(ident, _)| ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if let Some((_, rest)) = member {
            values.push(rest.split('"').next().unwrap().to_owned());
        }
    }
    assert!(!values.is_empty(), "{name} has no members in {file}");
    values
}

fn python_tuple(file: &str, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(common::repo_root().join(file)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} = (")))
        .unwrap_or_else(|| panic!("no {name} in {file}"));
    line.split(['(', ')', ',', ' '])
        .filter_map(|w| w.strip_prefix("Runtime."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn scenarios_apis_and_steps_match_cfexp_vocab() {
    let scenarios: Vec<&str> = Scenario::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(scenarios, enum_values("cfexp/vocab.py", "Scenario"));
    let apis: Vec<&str> = Api::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(apis, enum_values("cfexp/vocab.py", "Api"));
    assert_eq!(STEPS.to_vec(), enum_values("cfexp/vocab.py", "Step"));
}

#[test]
fn runtimes_match_cfexp_vocab() {
    let all = enum_values("cfexp/vocab.py", "Runtime");
    let python = python_tuple("cfexp/vocab.py", "PYTHON_RUNTIMES");
    assert_eq!(PYTHON_RUNTIMES.to_vec(), python);
    // Every other runtime is a Rust variant: a feature and a binary of this crate.
    let manifest =
        std::fs::read_to_string(common::repo_root().join("rust/cfexp-agent/Cargo.toml")).unwrap();
    let rust: Vec<&String> = all.iter().filter(|r| !python.contains(r)).collect();
    assert!(!rust.is_empty());
    for runtime in rust {
        assert!(
            manifest.contains(&format!("\n{runtime} = [")),
            "no feature {runtime}"
        );
        assert!(
            manifest.contains(&format!("name = \"cfexp-agent-{runtime}\"")),
            "no binary cfexp-agent-{runtime}"
        );
    }
}

#[test]
fn error_kinds_match_the_python_records() {
    let kinds: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, enum_values("cfexp/agents/records.py", "ErrorKind"));
}
