"""``cfexp ui``: MLflow's UI opens on a study's runs table, and stops with its whole process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cfexp.backends.net import port_free
from cfexp.cli import runs_page
from cfexp.tracking.tags import VIEW_TAG
from tests.app.test_e2e_sim import FAST_SIM, run_cfexp
from tests.app.test_kills import cmdline
from tests.chromium import Browser

REPO = Path(__file__).resolve().parent.parent
# MLflow's UI starts in 10-40 s on 2 busy cores; the page then fetches and renders its runs.
START_S = 180
PAGE_S = 90


def test_the_runs_page_asks_for_the_machine_learning_workflow_and_cfexps_view() -> None:
    with_view = {"experiment_id": "3", "name": "tr115", "tags": [{"key": VIEW_TAG, "value": "{}"}]}
    assert runs_page("http://127.0.0.1:5000", with_view) == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=cfexp"
    )
    made_elsewhere = {"experiment_id": "4", "name": "other"}
    assert runs_page("http://127.0.0.1:5000", made_elsewhere).endswith("/4/runs?workflowType=machine_learning")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Ui:
    """``cfexp ui`` as a user starts it, in a session of its own (no signal of the test's reaches it)."""

    def __init__(self, mlruns: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cfexp.cli", "ui", "--mlruns", str(mlruns), "--port", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def links(self) -> dict[str, str]:
        """Each experiment's runs page, as ``cfexp ui`` prints them once the UI answers."""
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(line.startswith("MLflow UI: ") for line in self.lines):
                time.sleep(0.5)  # the links follow that line at once
                listed = [line.strip().split(": ", 1) for line in self.lines if ": http://127.0.0.1:" in line]
                return {name: url for name, url in listed}
            time.sleep(0.2)
        raise AssertionError("cfexp ui never said the UI was up; its output:\n" + "\n".join(self.lines[-40:]))

    def tree(self) -> list[psutil.Process]:
        """cfexp ui and every process under it."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Signal cfexp ui alone (not its group, as `kill PID` does); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self._reader.join(timeout=5)
            assert self.process.stdout is not None
            self.process.stdout.close()

    def kill_leftovers(self) -> None:
        """After a failed test only: nothing of it may outlive the test run."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.stop(signal.SIGKILL)


# The runs table's rows, top to bottom: [run name, ttft_ms] (ag-grid keeps a row's cells in several containers).
ROWS = """[...document.querySelectorAll('.ag-row')].reduce((rows, row) => {
    const i = Number(row.getAttribute('row-index'));
    const name = row.querySelector('[col-id="attributes.`Run Name`"]');
    const ttft = row.querySelector('[col-id="metrics.`ttft_ms`"]');
    rows[i] = rows[i] || ['', ''];
    if (name) rows[i][0] = (name.querySelector('a') || name).innerText.trim();  // not the colour label
    if (ttft) rows[i][1] = ttft.innerText.trim();
    return rows;
}, []).filter(Boolean)"""


def _rows(browser: Browser) -> list[list[str]]:
    return list(browser.evaluate(ROWS))


@pytest.fixture
def ui_factory() -> Iterator[list[Ui]]:
    started: list[Ui] = []
    yield started
    for ui in started:
        ui.kill_leftovers()


@pytest.mark.slow
def test_sigterm_stops_cfexp_ui_and_every_process_of_the_mlflow_server(
    tmp_path: Path, ui_factory: list[Ui]
) -> None:
    """SIGTERM to `cfexp ui` alone: MLflow's server (its CLI, uvicorn, its job runner) stops too, the port is free."""
    ui = Ui(tmp_path / "mlruns", _free_port())
    ui_factory.append(ui)
    ui.links()
    tree = ui.tree()
    names = " ".join(cmdline(p) for p in tree)
    assert "uvicorn" in names and "mlflow" in names, names  # the server really is below cfexp ui
    assert not port_free("127.0.0.1", ui.port)

    assert ui.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [cmdline(p) for p in alive]
    assert port_free("127.0.0.1", ui.port)


@pytest.mark.slow
def test_the_ui_opens_on_the_runs_table_with_the_sweep_its_jobs_and_key_metrics(
    tmp_path: Path, ui_factory: list[Ui]
) -> None:
    """A real browser on the link `cfexp ui` prints: the runs table (never the GenAI overview),
    the sweep's parent run, its two jobs under it, and the key metrics as columns."""
    sweep = run_cfexp(
        tmp_path, "-m", *FAST_SIM, "scenario=single_inference", "num_predict=4", "temperature=0.6,0.8"
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    ui = Ui(tmp_path / "mlruns", _free_port())
    ui_factory.append(ui)
    link = ui.links()["cfexp"]

    with Browser(tmp_path / "chromium-profile") as browser:
        browser.open(link)
        browser.wait_for("document.title.startsWith('Runs') && document.body.innerText.includes('sweep multirun')",
                         PAGE_S)
        text = browser.text()
        assert "No data available" not in text and not browser.evaluate("document.title.startsWith('Overview')")
        for metric in ("ttft_ms", "e2e_ms", "throughput_tok_s"):
            assert browser.evaluate(f"!!document.querySelector('.ag-header-cell[col-id=\"metrics.`{metric}`\"]')"), (
                f"no {metric} column; the page shows:\n{text[:3000]}"
            )
        parent = "sweep multirun: temperature=0.6,0.8 | backend=sim"
        rows = _rows(browser)
        assert len(rows) == 1 and rows[0][0].startswith(parent), rows  # the jobs are nested under it, folded

        # Unfold the parent: its two jobs appear under it, each with its metrics.
        browser.evaluate("document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]').click()")
        browser.wait_for(f"({ROWS}).length === 3", PAGE_S)
        rows = _rows(browser)
        assert rows[0][0].startswith(parent) and rows[0][1] == "-", rows  # the parent has no metrics of its own
        assert sorted(name for name, _ in rows[1:]) == ["temperature=0.6", "temperature=0.8"], rows
        assert all(float(ttft) > 0 for _, ttft in rows[1:]), rows
        shot = browser.screenshot(tmp_path / "mlflow-ui-runs.png")
    assert shot.stat().st_size > 10_000
    assert ui.stop(signal.SIGTERM) == 128 + signal.SIGTERM
