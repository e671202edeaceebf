"""The workflow's text rules against the shared fixtures (tests/fixtures/workflow/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents.python_agent.prompts import (
    MAX_ITEM_CHARS,
    MAX_ITEMS,
    CorpusFile,
    PromptTemplate,
    build_messages,
    data_summary,
    format_items,
    parse_analysis,
    render,
)
from cfexp.agents.python_agent.workflow import read_corpus
from cfexp.agents.spec import nonce_text

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "workflow"
DATA = REPO / "cfexp" / "data"


def _cases(name: str) -> list[dict[str, Any]]:
    cases = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert cases, f"{name} is empty"
    return cases


PARSE = _cases("parse_cases.json")
RENDER = _cases("render_cases.json")


@pytest.mark.parametrize("case", PARSE, ids=[c["description"][:40] for c in PARSE])
def test_parse_analysis(case: dict[str, Any]) -> None:
    parsed = parse_analysis(case["text"])
    assert parsed.findings == case["findings"]
    assert parsed.recommendations == case["recommendations"]


def _values(raw: dict[str, Any]) -> dict[str, str]:
    """Fixture values -> placeholder values (lists become '- item' lines)."""
    return {k: format_items(v) if isinstance(v, list) else v for k, v in raw.items()}


@pytest.mark.parametrize("case", RENDER, ids=[c["description"][:40] for c in RENDER])
def test_render_messages(case: dict[str, Any]) -> None:
    prefix = nonce_text(**case["nonce"]) if case["nonce"] else ""
    messages = build_messages(PromptTemplate(**case["prompt"]), _values(case["values"]), prefix)
    assert messages == case["expected_messages"]
    assert sum(len(m["content"]) for m in messages) == case["expected_prompt_chars"]


def test_data_summary_of_the_shipped_corpus_matches_the_fixture() -> None:
    expected = (FIXTURES / "data_summary.txt").read_text(encoding="utf-8")
    assert not expected.endswith("\n")
    assert data_summary(read_corpus(DATA / "corpus")) == expected


def test_shipped_corpus_shape() -> None:
    files = read_corpus(DATA / "corpus")
    assert 15 <= len(files) <= 30
    assert sum(f.size_bytes for f in files) < 60_000
    assert {f.kind for f in files} == {"csv", "json", "md"}
    # File names start with an ISO date, so the latest by name is the latest by date.
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        assert name[:10].count("-") == 2 and name[:4].isdigit(), f.path
    # ...and folders sort chronologically too (the summary's "Latest files").
    dates = [f.path.rsplit("/", 1)[-1][:10] for f in sorted(files, key=lambda f: f.path.encode())]
    assert dates == sorted(dates)


def test_shipped_prompts_stay_short() -> None:
    """Gemma 3 270M has a 512-token context: prompt + num_predict 128 must fit.

    Digits are one token each for Gemma, so characters are only a proxy; the
    token counts are in docs/agent-workflow.md, "Prompt size"
    (benchmarks/prompt_tokens.py). The report works from the findings and
    recommendations alone (at most MAX_ITEMS of MAX_ITEM_CHARS each), not the
    data summary.
    """
    prompts = json.loads((DATA / "prompts.json").read_text())
    personas = json.loads((DATA / "personas.json").read_text())
    summary = data_summary(read_corpus(DATA / "corpus"))
    assert set(prompts) == {"single_inference", "analysis", "report"}
    assert set(personas) == {"default", "DataCollector", "InsightAgent"}
    assert "{{data_summary}}" in prompts["analysis"]["user"]
    assert "{{data_summary}}" not in json.dumps(prompts["report"])
    longest = ["x" * MAX_ITEM_CHARS] * MAX_ITEMS
    limits = {"single_inference": 200, "analysis": 700, "report": 1000}
    for persona in personas.values():
        values = {
            "data_summary": summary,
            "persona_instructions": persona["instructions"],
            "findings": format_items(longest),
            "recommendations": format_items(longest),
        }
        for step, prompt in prompts.items():
            text = "".join(m["content"] for m in build_messages(PromptTemplate(**prompt), values))
            assert "{{" not in text, step
            assert len(text) <= limits[step], (step, len(text))


def _write(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_ingest_rules(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "b/2025-01-02_x.CSV": b"\n  h1,h2  \n\n 1,2 \n3,4\n",
            "a/2025-01-01_y.Json": b"{}",
            "2025-01-03_z.md": b"# z",
            "2025-01-04_only_header.csv": b"h\n",
            "2025-01-05_empty.csv": b"",
            "notes.txt": b"ignored",
            "noext": b"ignored",
            "c/.md": b"hidden, still .md",
        },
    )
    os.symlink(tmp_path / "2025-01-03_z.md", tmp_path / "link.md")  # not followed
    files = read_corpus(tmp_path)
    assert data_summary(files) == "\n".join(
        [
            "Files analyzed: 6 (3 CSV, 1 JSON, 2 Markdown), 46 bytes.",
            "Latest files: c/.md, b/2025-01-02_x.CSV, a/2025-01-01_y.Json",
            "Key metrics:",
            "- 2025-01-04_only_header.csv: h = (no rows)",
            "- 2025-01-05_empty.csv: (empty) = (no rows)",
            "- b/2025-01-02_x.CSV: h1,h2 = 1,2",
        ]
    )


def test_summary_of_an_empty_corpus() -> None:
    assert data_summary([]) == (
        "Files analyzed: 0 (0 CSV, 0 JSON, 0 Markdown), 0 bytes.\n"
        "Latest files: (none)\nKey metrics:\n- (no CSV files)"
    )


def test_summary_lists_at_most_eight_csv_files() -> None:
    files = [CorpusFile(f"{i:02d}.csv", 1, "csv", "h\nr") for i in range(10)]
    lines = data_summary(files).split("\n")
    assert lines[3:] == [f"- {i:02d}.csv: h = r" for i in range(8)]


def test_render_is_plain_replacement() -> None:
    assert render("{{a}}{{b}}{{a}}", {"a": "1", "b": "$0\\1"}) == "1$0\\11"
    assert format_items(["x"]) == "- x"
