"""The workflow's text functions: pure, byte-for-byte as docs/agent-workflow.md says.

- the data summary built from the ingested corpus,
- rendering a prompt template (``{{name}}`` placeholders), the nonce (its
  text is :func:`cfexp.agents.spec.nonce_text`) put in front,
- parsing the analysis reply into findings and recommendations.

The Rust agent implements the same rules; tests/fixtures/workflow/ holds the
shared expected outputs. Everything here is ASCII-defined on purpose (ASCII
white space, ASCII lower-casing, digits 0-9) so the two languages cannot
disagree on Unicode corner cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cfexp.agents.python_agent.stream import ASCII_WS

FILE_TYPES = ("csv", "json", "md")
# Small on purpose: the report prompt must fit Gemma 3 270M's 512-token context
# (docs/agent-workflow.md, "Prompt size").
MAX_ITEMS = 3
MAX_ITEM_CHARS = 120
_LATEST_FILES = 3
_MAX_CSV_FILES = 8

# Placeholder names: lower-case ASCII letters and underscores between {{ }}.
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
# A bullet: "- ", "* ", "• " or digits then "." or ")" then a space.
_BULLET = re.compile(r"(?:[-*\u2022] |[0-9]+[.)] )(.*)")


@dataclass(frozen=True)
class PromptTemplate:
    """One step of prompts.json: an optional system message and a user message."""

    system: str | None
    user: str


@dataclass(frozen=True)
class CorpusFile:
    """One ingested file; ``text`` is kept for CSV files only (the summary needs it)."""

    path: str
    size_bytes: int
    kind: str
    text: str | None = None


@dataclass(frozen=True)
class Analysis:
    findings: list[str]
    recommendations: list[str]


# --------------------------------------------------------------- data summary


def sort_paths(paths: list[str]) -> list[str]:
    """Byte order of the UTF-8 encoding (what Rust's ``str`` ordering gives)."""
    return sorted(paths, key=lambda p: p.encode("utf-8"))


def csv_head(text: str) -> str:
    """``{header} = {first row}`` from the first two non-blank lines of a CSV."""
    lines = [s for s in (line.strip(ASCII_WS) for line in text.split("\n")) if s]
    header = lines[0] if lines else "(empty)"
    row = lines[1] if len(lines) > 1 else "(no rows)"
    return f"{header} = {row}"


def data_summary(files: list[CorpusFile]) -> str:
    """The summary every agent puts in its prompts (no trailing newline)."""
    by_path = {f.path: f for f in files}
    paths = sort_paths(list(by_path))
    counts = {kind: sum(1 for f in files if f.kind == kind) for kind in FILE_TYPES}
    total = sum(f.size_bytes for f in files)
    latest = list(reversed(paths[-_LATEST_FILES:]))
    csv_paths = [p for p in paths if by_path[p].kind == "csv"][:_MAX_CSV_FILES]
    metrics = [f"- {p}: {csv_head(by_path[p].text or '')}" for p in csv_paths]
    lines = [
        f"Files analyzed: {len(paths)} ({counts['csv']} CSV, {counts['json']} JSON, "
        f"{counts['md']} Markdown), {total} bytes.",
        f"Latest files: {', '.join(latest) or '(none)'}",
        "Key metrics:",
        *(metrics or ["- (no CSV files)"]),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ rendering


def render(template: str, values: dict[str, str]) -> str:
    """Replace each ``{{name}}`` found in ``template`` by ``values[name]``.

    One pass over the template: inserted values are never scanned again (an
    analysis that contains ``{{findings}}`` stays literal), and a name without
    a value is left as it is.
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def build_messages(
    prompt: PromptTemplate, values: dict[str, str], prefix: str = ""
) -> list[dict[str, str]]:
    """Chat messages for one call; ``prefix`` (the nonce or "") starts the first one."""
    messages = []
    if prompt.system is not None:
        messages.append({"role": "system", "content": render(prompt.system, values)})
    messages.append({"role": "user", "content": render(prompt.user, values)})
    messages[0]["content"] = prefix + messages[0]["content"]
    return messages


def format_items(items: list[str]) -> str:
    """``{{findings}}`` / ``{{recommendations}}``: one ``- item`` line each."""
    return "\n".join(f"- {item}" for item in items) if items else "- (none found)"


# -------------------------------------------------------------------- parsing


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only (str.lower and Rust's to_lowercase differ beyond ASCII)."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _is_heading(line: str) -> bool:
    return line.startswith("#") or (
        len(line) >= 4 and line.startswith("**") and line.endswith("**")
    )


def _unbold(text: str) -> str:
    if len(text) >= 4 and text.startswith("**") and text.endswith("**"):
        return text[2:-2].strip(ASCII_WS)
    return text


def parse_analysis(text: str) -> Analysis:
    """Findings and recommendations from the analysis reply (see docs/agent-workflow.md)."""
    lists: dict[str, list[str]] = {"findings": [], "recommendations": []}
    section: str | None = None
    for raw in text.split("\n"):
        line = raw.strip(ASCII_WS)
        if _is_heading(line):
            lowered = ascii_lower(line)
            if "finding" in lowered:
                section = "findings"
            elif "recommend" in lowered:
                section = "recommendations"
            else:
                section = None
            continue
        bullet = _BULLET.fullmatch(line)
        if bullet is None or section is None:
            continue
        item = _unbold(bullet.group(1).strip(ASCII_WS))
        if item and len(lists[section]) < MAX_ITEMS:
            lists[section].append(item[:MAX_ITEM_CHARS])
    return Analysis(findings=lists["findings"], recommendations=lists["recommendations"])
