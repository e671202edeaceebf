"""The stream parsers against the golden fixtures shared with the Rust agent.

Each fixture's body is fed chunk by chunk; the "arrival time" of chunk i is
i, so ``content_chunk_indices`` checks which chunk completed each content
piece (what becomes ``chunk_times_ns`` in a call record).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents.python_agent.stream import Failure, StreamSummary, new_parser
from cfexp.agents.records import SERVER_COUNTERS, SERVER_MILLISECONDS, ErrorKind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "streams"
FILES = sorted(FIXTURES.glob("*.json"))


def chunks_of(fixture: dict[str, Any]) -> list[bytes]:
    if "chunks_base64" in fixture:
        return [base64.b64decode(c) for c in fixture["chunks_base64"]]
    return [c.encode("utf-8") for c in fixture["chunks"]]


def parse(api: str, chunks: list[bytes]) -> dict[str, Any]:
    """What the call loop does, with chunk indices as the clock."""
    parser, summary = new_parser(api), StreamSummary()
    now = 0
    for index, chunk in enumerate(chunks):
        now = index
        for event in parser.feed(chunk):
            summary.add(event, now)
        if parser.stopped:
            break
    for event in parser.finish():
        summary.add(event, now)
    success, kind, _ = summary.outcome()
    counters = summary.counters
    return {
        "success": success,
        "error_kind": kind.value if kind else None,
        "text": summary.text,
        "content_chunks": len(summary.chunk_times_ns),
        "content_chunk_indices": summary.chunk_times_ns,
        "finish_reason": counters.get("finish_reason"),
        **{name: counters.get(name) for name in (*SERVER_COUNTERS, *SERVER_MILLISECONDS)},
    }


def test_fixture_folder_is_not_empty() -> None:
    assert len(FILES) >= 20, f"golden stream fixtures missing in {FIXTURES}"


def test_fixtures_cover_both_apis_and_every_stream_error_kind() -> None:
    fixtures = [json.loads(p.read_text()) for p in FILES]
    for api in ("ollama", "openai"):
        kinds = {f["expected"]["error_kind"] for f in fixtures if f["api"] == api}
        assert kinds >= {
            None, "stream_error", "incomplete_stream", "empty_response", "malformed_stream"
        }, api  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_stream_fixture(path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    expected = fixture["expected"]
    got = parse(fixture["api"], chunks_of(fixture))
    # Every server counter is listed in every fixture, so none is checked by omission.
    assert set(expected) == set(got), "fixture must list exactly the compared fields"
    assert got == expected, fixture["description"]
    # Counters are ints, millisecond readings floats (a JSON 600 is recorded as 600.0).
    assert all(type(got[name]) in (int, type(None)) for name in SERVER_COUNTERS)
    assert all(type(got[name]) in (float, type(None)) for name in SERVER_MILLISECONDS)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_byte_by_byte_feeding_gives_the_same_result(path: Path) -> None:
    """Chunk boundaries change timings only, never what is parsed."""
    fixture = json.loads(path.read_text(encoding="utf-8"))
    body = b"".join(chunks_of(fixture))
    got = parse(fixture["api"], [body[i : i + 1] for i in range(len(body))])
    expected = {k: v for k, v in fixture["expected"].items() if k != "content_chunk_indices"}
    got.pop("content_chunk_indices")
    assert got == expected


def test_str_chunks_are_accepted() -> None:
    parser = new_parser("ollama")
    events = parser.feed('{"message":{"content":"x"},"done":true,"eval_count":1}\n')
    assert [type(e).__name__ for e in events] == ["Content", "Counters", "End"]
    assert parser.stopped and parser.feed("more") == [] and parser.finish() == []


def test_nan_is_not_json() -> None:
    """Python's json accepts NaN; RFC 8259 (and serde_json) do not: malformed."""
    parser = new_parser("ollama")
    events = parser.feed('{"message":{"content":"x"},"done":false,"x":NaN}\n')
    assert isinstance(events[0], Failure)
    assert events == [Failure(ErrorKind.MALFORMED_STREAM, events[0].message)]
