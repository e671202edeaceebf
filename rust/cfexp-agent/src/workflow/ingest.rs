//! Ingesting the corpus and building the data summary, to the byte as in
//! docs/agent-workflow.md ("Ingest and the data summary").

use std::path::{Path, PathBuf};

use crate::error::{Error, Kind, Result};
use crate::records::FilesByType;

/// The corpus as ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// Ingested files, relative to `corpus/`, `/`-separated, byte-sorted.
    pub files: Vec<CorpusFile>,
    /// Sum of the files' sizes.
    pub bytes: u64,
    /// Files per type.
    pub files_by_type: FilesByType,
}

/// One ingested file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusFile {
    /// Relative path with `/` separators.
    pub path: String,
    /// `csv`, `json` or `md`.
    pub kind: FileType,
    /// The key-metrics line of a CSV file (`{header} = {first row}`).
    pub metric: Option<String>,
}

/// The types of file the ingest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// `.csv`
    Csv,
    /// `.json`
    Json,
    /// `.md`
    Md,
}

impl FileType {
    /// The type of a file named `name`: its ASCII-lower-cased name ends
    /// with `.csv`, `.json` or `.md`.
    fn of(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(FileType::Csv)
        } else if lower.ends_with(".json") {
            Some(FileType::Json)
        } else if lower.ends_with(".md") {
            Some(FileType::Md)
        } else {
            None
        }
    }
}

/// Most CSV files the summary lists under "Key metrics".
const MAX_METRIC_FILES: usize = 8;
/// Paths listed as "Latest files".
const LATEST_FILES: usize = 3;

/// Reads every corpus file below `corpus_dir` in full (the ingest is real
/// work, the same in every language).
pub fn ingest(corpus_dir: &Path) -> Result<Corpus> {
    let mut found: Vec<(String, PathBuf, FileType)> = Vec::new();
    walk(corpus_dir, "", &mut found)?;
    found.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut corpus = Corpus {
        files: Vec::with_capacity(found.len()),
        bytes: 0,
        files_by_type: FilesByType::default(),
    };
    let mut csv_seen = 0;
    for (path, full, kind) in found {
        let content = std::fs::read(&full).map_err(|e| {
            Error::with_source(
                Kind::Data,
                format!("cannot read <path={}>", full.display()),
                e,
            )
        })?;
        corpus.bytes += content.len() as u64;
        match kind {
            FileType::Csv => corpus.files_by_type.csv += 1,
            FileType::Json => corpus.files_by_type.json += 1,
            FileType::Md => corpus.files_by_type.md += 1,
        }
        let metric = if kind == FileType::Csv && csv_seen < MAX_METRIC_FILES {
            csv_seen += 1;
            Some(csv_head(&String::from_utf8_lossy(&content)))
        } else {
            None
        };
        corpus.files.push(CorpusFile { path, kind, metric });
    }
    Ok(corpus)
}

/// Regular files below `dir` as (`a/b.csv`, full path, type); symbolic
/// links are not followed.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf, FileType)>) -> Result<()> {
    let list_err = |e| {
        Error::with_source(
            Kind::Data,
            format!("cannot list <dir={}>", dir.display()),
            e,
        )
    };
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let file_type = entry.file_type().map_err(list_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if file_type.is_dir() {
            walk(&entry.path(), &format!("{rel}/"), out)?;
        } else if file_type.is_file()
            && let Some(kind) = FileType::of(&name)
        {
            out.push((rel, entry.path(), kind));
        }
    }
    Ok(())
}

/// `{header} = {first row}` from the first two non-blank lines of a CSV
/// text (each stripped of ASCII white space).
pub fn csv_head(text: &str) -> String {
    let mut lines = text
        .split('\n')
        .map(str::trim_ascii)
        .filter(|l| !l.is_empty());
    let header = lines.next().unwrap_or("(empty)");
    let row = lines.next().unwrap_or("(no rows)");
    format!("{header} = {row}")
}

/// The data summary: the documented lines joined with `\n`.
pub fn summary(corpus: &Corpus) -> String {
    let paths: Vec<&str> = corpus.files.iter().map(|f| f.path.as_str()).collect();
    let or_none = |list: Vec<&str>| {
        if list.is_empty() {
            "(none)".to_owned()
        } else {
            list.join(", ")
        }
    };
    let latest = or_none(paths.iter().rev().take(LATEST_FILES).copied().collect());
    let fbt = &corpus.files_by_type;
    let mut lines = vec![
        format!(
            "Files analyzed: {} ({} CSV, {} JSON, {} Markdown), {} bytes.",
            paths.len(),
            fbt.csv,
            fbt.json,
            fbt.md,
            corpus.bytes
        ),
        format!("Latest files: {latest}"),
        "Key metrics:".to_owned(),
    ];
    let metrics: Vec<String> = corpus
        .files
        .iter()
        .filter_map(|f| f.metric.as_ref().map(|m| format!("- {}: {m}", f.path)))
        .collect();
    if metrics.is_empty() {
        lines.push("- (no CSV files)".to_owned());
    }
    lines.extend(metrics);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_head_lines() {
        assert_eq!(csv_head(" a,b \r\n\n1,2\r\n3,4\n"), "a,b = 1,2");
        assert_eq!(csv_head("a,b\n"), "a,b = (no rows)");
        assert_eq!(csv_head("a,b"), "a,b = (no rows)");
        assert_eq!(csv_head(" \n"), "(empty) = (no rows)");
    }

    #[test]
    fn summary_of_nothing() {
        let corpus = Corpus {
            files: vec![],
            bytes: 0,
            files_by_type: FilesByType::default(),
        };
        assert_eq!(
            summary(&corpus),
            "Files analyzed: 0 (0 CSV, 0 JSON, 0 Markdown), 0 bytes.\nLatest files: (none)\n\
             Key metrics:\n- (no CSV files)"
        );
    }

    #[test]
    fn summary_of_a_small_corpus() {
        let dir = std::env::temp_dir().join(format!("cfexp-ingest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("2025-01-01_a.csv"), "x,y\n1,2\n").unwrap();
        std::fs::write(dir.join("2025-01-02_b.JSON"), "{}").unwrap();
        std::fs::write(dir.join("sub/2025-01-03_c.md"), "# c\n").unwrap();
        std::fs::write(dir.join("ignored.txt"), "nope").unwrap();
        let corpus = ingest(&dir).unwrap();
        assert_eq!(corpus.bytes, 8 + 2 + 4);
        assert_eq!(
            summary(&corpus),
            "Files analyzed: 3 (1 CSV, 1 JSON, 1 Markdown), 14 bytes.\n\
             Latest files: sub/2025-01-03_c.md, 2025-01-02_b.JSON, 2025-01-01_a.csv\n\
             Key metrics:\n\
             - 2025-01-01_a.csv: x,y = 1,2"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
