"""Files a job writes next to its MLflow run: records and generated texts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.jsonl"
TEXTS_DIR = "texts"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DOTS = re.compile(r"\.{2,}")
# Well under every file system's 255-byte limit, with room for a suffix (".md").
MAX_NAME_CHARS = 100


def safe_name(name: str) -> str:
    """The one way a name from config or data (agent, persona, model, runtime,
    trial, prompt id) becomes a file or artifact name.

    Only ``A-Z a-z 0-9 _ . -`` survive (no path separator, no control or
    non-ASCII character), runs of dots become one (no ``..``), leading and
    trailing dots and underscores go (no hidden file, no ``.``), an empty
    result is ``unnamed``, and a name longer than :data:`MAX_NAME_CHARS` is cut
    and ends with a hash of the whole, so two long names stay two files.
    """
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", name)).strip("._") or "unnamed"
    if len(cleaned) > MAX_NAME_CHARS:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_NAME_CHARS - 13].rstrip('._')}-{digest}"
    return cleaned


def write_records(job_dir: Path, records: Iterable[dict[str, Any]], derived_calls: list[dict[str, Any]]) -> Path:
    """records.jsonl: the agent's raw records, calls enriched with derived metrics."""
    by_position = iter(derived_calls)
    path = job_dir / RECORDS_FILE
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            row = next(by_position) if record.get("kind") == "call" else record
            out.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def write_texts(job_dir: Path, calls: Iterable[dict[str, Any]]) -> Path:
    """texts/<agent>_<index>_<step>.md: every generated text, readable as is."""
    folder = job_dir / TEXTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for call in calls:
        name = safe_name(f"{call.get('agent')}_{call.get('call_index')}_{call.get('step')}") + ".md"
        (folder / name).write_text(call.get("text") or "", encoding="utf-8")
    return folder
