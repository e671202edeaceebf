"""`cfexp report` user mistakes: one paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.cli import main
from tests.report.conftest import EXPERIMENT


def _run(store: str, out: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--experiment", EXPERIMENT, "--tracking-uri", store, "--out", str(out), *args])
    return int(exited.value.code or 0)


@pytest.mark.parametrize("args, message", [
    (["--baseline", "gpu_layers"], "<baseline=gpu_layers> is not key=value[,key=value] (cannot read 'gpu_layers')"),
    (["--baseline", "options_mode=nope"], "<baseline=options_mode=nope>: no selected run has options_mode=nope; the "
                                          "runs have options_mode = configured, server_defaults"),
    (["--baseline", "gpu=80"], "<baseline=gpu=80>: the selected runs have no param 'gpu'"),
    (["--success-metric", "throughput"], "<success-metric=throughput> is not a metric of the catalogue "
                                         "(docs/metrics.md), and no selected run logged it. Pass one these runs log, "
                                         "e.g. ttft_ms, e2e_ms, throughput_tok_s"),
    (["--success-metric", "tpot_ms"], "<success-metric=tpot_ms> is a metric of the catalogue (docs/metrics.md), but "
                                      "no selected run logged it"),
    (["--success-metric", "output_tokens"], "<success-metric=output_tokens> has no better direction in the catalogue "
                                            "(docs/metrics.md): say which is better with --higher-is-better or "
                                            "--lower-is-better"),
    (["--alpha", "5"], "<alpha=5.0> must be between 0 and 1"),
    (["--sweep", "nope"], "<sweep=nope> is not a sweep (parent run) of the experiment; its sweeps, latest first: "),
], ids=["baseline-syntax", "baseline-value", "baseline-key", "unknown-metric", "metric-not-logged",
        "metric-without-direction", "alpha", "unknown-sweep"])
def test_a_mistake_is_one_paragraph_and_exit_2(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _run(store, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cfexp: {message}") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written, not even an empty folder


def test_an_output_folder_that_cannot_be_written(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "a-file.txt"  # below a regular file: no one can create it, root included
    blocked.write_text("not a folder\n")
    for out in (blocked / "report", Path("/sys")):  # /sys: an existing folder not even root can write in
        assert _run(store, out) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cfexp: cannot write the report into <out={out}>: ") and err.count("\n") == 1
        assert "No report was written. Give --out a folder you can write" in err


def test_a_neutral_metric_with_a_direction_given_is_a_report(store: str, tmp_path: Path) -> None:
    assert _run(store, tmp_path / "out", "--success-metric", "output_tokens", "--lower-is-better") == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "on `output_tokens` (lower is better)" in text
