//! Parsing the analysis text into findings and recommendations
//! (docs/agent-workflow.md, "Parsing the analysis").

/// Most items kept per list (small on purpose: the report prompt must fit
/// a 512-token context; docs/agent-workflow.md, "Prompt size").
pub const MAX_ITEMS: usize = 3;
/// Most characters (code points) kept per item.
pub const MAX_ITEM_CHARS: usize = 120;

/// What the analysis call produced for the report call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Bullets under a findings heading.
    pub findings: Vec<String>,
    /// Bullets under a recommendations heading.
    pub recommendations: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Findings,
    Recommendations,
}

/// Parses an analysis text.
pub fn parse_analysis(text: &str) -> Analysis {
    let mut out = Analysis::default();
    let mut section = Section::None;
    for raw in text.split('\n') {
        let line = raw.trim_ascii();
        if is_heading(line) {
            let lower = line.to_ascii_lowercase();
            section = if lower.contains("finding") {
                Section::Findings
            } else if lower.contains("recommend") {
                Section::Recommendations
            } else {
                Section::None
            };
            continue;
        }
        let Some(rest) = bullet_text(line) else {
            continue;
        };
        let list = match section {
            Section::Findings => &mut out.findings,
            Section::Recommendations => &mut out.recommendations,
            Section::None => continue,
        };
        let item = unbold(rest.trim_ascii());
        if !item.is_empty() && list.len() < MAX_ITEMS {
            list.push(item.chars().take(MAX_ITEM_CHARS).collect());
        }
    }
    out
}

fn is_heading(line: &str) -> bool {
    line.starts_with('#') || is_bold(line)
}

/// `**…**` with at least the four asterisks.
fn is_bold(text: &str) -> bool {
    text.len() >= 4 && text.starts_with("**") && text.ends_with("**")
}

/// The text after a bullet marker, if `line` is a bullet.
fn bullet_text(line: &str) -> Option<&str> {
    for marker in ["- ", "* ", "• "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return Some(rest);
        }
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let after = &line[digits..];
    after
        .strip_prefix(". ")
        .or_else(|| after.strip_prefix(") "))
}

/// A bullet's text without the `**` around all of it.
fn unbold(text: &str) -> &str {
    if is_bold(text) {
        text[2..text.len() - 2].trim_ascii()
    } else {
        text
    }
}

/// The list as the report prompt shows it: `- {item}` lines, or
/// `- (none found)`.
pub fn format_items(items: &[String]) -> String {
    if items.is_empty() {
        return "- (none found)".to_owned();
    }
    items
        .iter()
        .map(|item| format!("- {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bullets_under_headings() {
        let text = "# Executive Summary\n- ignored\n## Key Findings\n- **Latency** is high\n* two\n12) three\n1. fourth, over the limit\n\
                    **Recommendations**\n• use a cache\n  3. tune ctx  \n### Other\n- ignored too\n";
        let a = parse_analysis(text);
        assert_eq!(a.findings, ["**Latency** is high", "two", "three"]);
        assert_eq!(a.recommendations, ["use a cache", "tune ctx"]);
    }

    #[test]
    fn bold_bullets_and_short_bold_lines() {
        let a = parse_analysis(
            "**Findings**\n- ** bold all **\n- **\n- \n***\n- still findings\n**x** \n- after bold heading",
        );
        assert_eq!(a.findings, ["bold all", "**", "still findings"]);
    }

    #[test]
    fn caps_count_and_length() {
        let long = "x".repeat(300);
        let text = format!(
            "# Findings\n{}",
            (0..8).map(|_| format!("- {long}\n")).collect::<String>()
        );
        let a = parse_analysis(&text);
        assert_eq!(a.findings.len(), MAX_ITEMS);
        assert_eq!(a.findings[0].chars().count(), MAX_ITEM_CHARS);
    }

    #[test]
    fn formats_lists() {
        assert_eq!(format_items(&[]), "- (none found)");
        assert_eq!(format_items(&["a".into(), "b".into()]), "- a\n- b");
    }
}
