//! `data_dir`'s prompt and persona files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Kind, Result};

/// One step's prompt templates.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PromptTemplate {
    /// System message template, if the step has one.
    pub system: Option<String>,
    /// User message template.
    pub user: String,
}

/// One persona.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Persona {
    /// Who the agent is (descriptive; no placeholder uses it).
    pub role: String,
    /// Substituted for `{{persona_instructions}}`.
    pub instructions: String,
}

/// The workflow steps, as named in `prompts.json` and in `call` records.
pub const STEPS: [&str; 3] = ["single_inference", "analysis", "report"];

/// Everything the workflows read from `data_dir`, loaded before `ready`.
#[derive(Debug, Clone)]
pub struct Data {
    /// `prompts.json`.
    pub prompts: BTreeMap<String, PromptTemplate>,
    /// `personas.json`.
    pub personas: BTreeMap<String, Persona>,
    /// `data_dir/corpus`.
    pub corpus_dir: PathBuf,
}

impl Data {
    /// Loads and checks `data_dir`'s prompt and persona files.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let prompts: BTreeMap<String, PromptTemplate> = read_json(&data_dir.join("prompts.json"))?;
        for step in STEPS {
            if !prompts.contains_key(step) {
                return Err(Error::new(
                    Kind::Data,
                    format!(
                        "<data_dir={}> prompts.json has no <step={step}> entry",
                        data_dir.display()
                    ),
                ));
            }
        }
        let personas = read_json(&data_dir.join("personas.json"))?;
        Ok(Data {
            prompts,
            personas,
            corpus_dir: data_dir.join("corpus"),
        })
    }

    /// The templates of `step` (checked to exist by [`Data::load`]).
    pub fn prompt(&self, step: &str) -> &PromptTemplate {
        &self.prompts[step]
    }

    /// The persona named `name`.
    pub fn persona(&self, name: &str) -> Result<&Persona> {
        self.personas.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.personas.keys().map(String::as_str).collect();
            Error::new(
                Kind::Spec,
                format!(
                    "<persona={name}> is not in personas.json; known personas: {}",
                    known.join(", ")
                ),
            )
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::with_source(
            Kind::Data,
            format!("cannot read <path={}>", path.display()),
            e,
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::with_source(
            Kind::Data,
            format!("<path={}> is not in the documented format", path.display()),
            e,
        )
    })
}
