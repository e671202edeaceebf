"""API keys never leave the process: not in params, tags, artifacts, logs or files.

End to end, a literal key given on the command line is looked for in every
byte cfexp leaves behind: the console, every file under the output folders
(Hydra's own, job logs, agent and server logs, records) and the MLflow store
itself (the SQLite file and its artifacts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cfexp.redact import mask_in_logs, secret_values_in
from tests.app.test_e2e_sim import FAST_SIM, client_for, run_cfexp, runs_of

SECRET = "sk-cfexp-test-5f1d0c9a"


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("-m", "scenario=single_inference", "temperature=0.6,0.8"),  # a sweep: Hydra logs each job's overrides
        ("scenario=multi_agent",),  # a single run with solo phases (one agent spec each)
    ],
    ids=["sweep", "multi_agent"],
)
def test_a_literal_api_key_is_nowhere_on_disk_or_in_the_output(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_cfexp(
        tmp_path, *args, *FAST_SIM, "num_predict=4", "backend.api=openai", f"backend.api_key={SECRET}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    assert _files_holding(tmp_path, SECRET) == []

    client = client_for(tmp_path)
    jobs = [r for r in runs_of(tmp_path) if r.data.tags.get("cfexp.sweep") != "parent"]
    assert jobs and all(r.info.status == "FINISHED" for r in jobs)
    for run in jobs:
        assert run.data.params["backend.api_key"] == "***"
        assert SECRET not in json.dumps([run.data.params, run.data.tags, run.info.run_name])
        spec = client.download_artifacts(run.info.run_id, "agent_spec.redacted.json", str(tmp_path / "dl"))
        assert {a["api_key"] for a in json.loads(Path(spec).read_text())["agents"]} == {"***"}


def test_log_records_are_masked_whatever_logger_or_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    mask_in_logs(["sk-unit-1234abcd", "x"])  # too short to mask in free text: ignored
    logging.getLogger("hydra._internal.core_plugins.basic_launcher").info(
        "#0 : backend.api_key=%s temperature=0.6", "sk-unit-1234abcd"
    )
    logging.getLogger("anything").warning("Bearer sk-unit-1234abcd failed")
    logging.getLogger("anything").warning("x marks the spot")
    assert "sk-unit-1234abcd" not in caplog.text
    assert "backend.api_key=*** temperature=0.6" in caplog.text and "Bearer *** failed" in caplog.text
    assert "x marks the spot" in caplog.text


def test_secret_values_are_found_in_a_resolved_config() -> None:
    config = {
        "backend": {"api_key": "sk-a", "url": "http://h"},
        "hub": {"token": "tok-b", "password": None},
        "overrides": ["backend.api_key=sk-c", "ctx=512", "x.token=${oc.env:T}"],
    }
    assert sorted(secret_values_in(config)) == ["sk-a", "sk-c", "tok-b"]
