"""cfexp-launch, compiled on first use: once, however many processes need it at that moment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.together import run_together

# Asks for the launcher when released (CFEXP_CACHE_DIR is the test's own, empty).
ASK_FOR_THE_LAUNCHER = """
from cfexp.childproc import launcher_path
go()
print(launcher_path())
"""


def test_processes_that_need_the_launcher_together_compile_it_once(tmp_path: Path) -> None:
    results = run_together(ASK_FOR_THE_LAUNCHER, [[]] * 4, env={"CFEXP_CACHE_DIR": str(tmp_path)})
    assert [r.returncode for r in results] == [0] * 4, "\n".join(r.stderr[-2000:] for r in results)
    (path,) = {r.stdout.strip() for r in results}
    launcher = Path(path)
    assert launcher.parent == tmp_path / "bin" and launcher.name.startswith("cfexp-launch-")
    assert sum("compiling cfexp-launch" in r.stderr for r in results) == 1
    assert sorted(p.name for p in launcher.parent.iterdir()) == sorted([launcher.name, f"{launcher.name}.lock"])
    # It works: it runs a program and reports the program's exit and rusage.
    result = tmp_path / "rusage.json"
    done = subprocess.run([str(launcher), str(result), "true"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(result.read_text())["exit_code"] == 0
