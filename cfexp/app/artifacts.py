"""Files a job writes next to its MLflow run: records, generated texts, its servers' logs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from cfexp.agents.records import Record
from cfexp.backends.base import ServerInstance
from cfexp.filenames import safe_name
from cfexp.metrics.calls import MeasuredCall

RECORDS_FILE = "records.jsonl"
TEXTS_DIR = "texts"
def write_records(folder: Path, records: Iterable[Record], calls: Sequence[MeasuredCall]) -> Path:
    """records.jsonl: the agent's records, each call with its derived metrics beside its raw fields."""
    derived = {id(call.record): call.metrics for call in calls}
    path = folder / RECORDS_FILE
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            row = record.to_dict()
            metrics = derived.get(id(record))
            if metrics is not None:
                row.update(metrics.as_dict())
            out.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def write_texts(folder: Path, calls: Iterable[MeasuredCall]) -> Path:
    """texts/<agent>_<index>_<step>.md: every generated text, readable as is."""
    texts = folder / TEXTS_DIR
    texts.mkdir(parents=True, exist_ok=True)
    for call in calls:
        record = call.record
        name = safe_name(f"{record.agent}_{record.call_index}_{record.step}") + ".md"
        (texts / name).write_text(record.text, encoding="utf-8")
    return texts


SERVER_LOGS_DIR = "server_logs"


def server_log_offsets(instances: Iterable[ServerInstance]) -> dict[int, int]:
    """Where each managed instance's log ends now: the job's part starts there."""
    return {
        i.index: i.process.log_path.stat().st_size
        for i in instances
        if i.process is not None and i.process.log_path.exists()
    }


def copy_server_logs(instances: Iterable[ServerInstance], offsets: dict[int, int], job_dir: Path) -> None:
    """server_logs/server<i>.log: what each managed instance logged during this job.

    Instances kept across a sweep's jobs write one log; each job keeps its own
    part of it, so a server's error line stays with the run it failed.
    """
    folder = job_dir / SERVER_LOGS_DIR
    for instance in instances:
        if instance.process is None or not instance.process.log_path.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        with instance.process.log_path.open("rb") as log:
            log.seek(offsets.get(instance.index, 0))
            (folder / f"server{instance.index}.log").write_bytes(log.read())
