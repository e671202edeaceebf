"""A real install: cfexp's wheel in a fresh virtual environment, run from outside the checkout.

The wheel is built from a copy of the checkout's files (what git tracks or
would add: no build products), installed with ``--no-deps`` into a new venv
that has no system site-packages. The dependencies (mlflow, hydra, …) are not
downloaded again: a ``.pth`` file lists this interpreter's site-packages as
plain path entries. Folders named in a ``.pth`` file get no ``.pth``
processing of their own, so the editable install's finder there (which maps
``cfexp`` to a checkout) never runs: ``cfexp`` is imported from the wheel, as
the tests assert. Every command runs in a temporary folder, without
PYTHONPATH, so nothing of the checkout is in reach.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run

from tests.app.test_e2e_sim import leftover_processes, runs_of

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
FAST_SIM = ("backend=sim", "backend.settings.time_scale=0.02", "scenario=single_inference", "num_predict=4")


@dataclass(frozen=True)
class Install:
    venv: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A command of the venv, in ``cwd``, with no PYTHONPATH and no tracking URI from outside."""
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
        clean["PATH"] = os.pathsep.join([str(self.venv / "bin"), clean.get("PATH", "")])
        return subprocess.run(
            argv, cwd=cwd, env=clean | (env or {}), capture_output=True, text=True, timeout=timeout, check=False
        )


def _copy_sources(target: Path) -> None:
    """The checkout's files as git sees them (tracked, or new and not ignored): no build products."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a deleted, not yet committed file is still listed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "source", root / "dist", root / "venv"
    _copy_sources(source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", str(source), "--no-deps", "-w", str(dist)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # With --verbose pip shows the build backend's output, setuptools' deprecation warnings among it.
    output = built.stdout + built.stderr
    assert "Deprecat" not in output and "BuildBackendWarning" not in output, output[-5000:]
    (wheel,) = dist.glob("cfexp-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    (purelib,) = venv.glob("lib/python3*/site-packages")
    # The dependencies, already installed for this interpreter: plain path entries, after the venv's own.
    (purelib / "_cfexp_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
         "--no-compile", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return Install(venv, wheel)


# What the installed package finds, asked inside the venv.
PROBE = """
import json
import cfexp
from cfexp.__main__ import CONF_DIR
from cfexp.agents import rust_build
from cfexp.app.provenance import code_version
from cfexp.backends.model_files import expected_sha256
from cfexp.childproc import LAUNCHER_SOURCE
from cfexp.data import DATA_DIR
import hydra_plugins.cfexp_basic_sweeper, hydra_plugins.cfexp_sweeper
print(json.dumps({
    "cfexp": cfexp.__file__, "version": cfexp.__version__, "code_version": code_version(),
    "conf": CONF_DIR, "data": str(DATA_DIR), "launcher": str(LAUNCHER_SOURCE),
    "rust": str(rust_build.RUST_DIR), "rust_target": str(rust_build.target_dir()),
    "sweepers": [hydra_plugins.cfexp_basic_sweeper.__file__, hydra_plugins.cfexp_sweeper.__file__],
    "model_file": expected_sha256()[0],
}))
"""


def test_the_installed_package_finds_its_files_inside_itself(install: Install, tmp_path: Path) -> None:
    done = install.run([str(install.python), "-c", PROBE], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    package = Path(found["cfexp"]).parent
    assert package.is_relative_to(install.venv), f"cfexp imported from {package}, not from the wheel"
    assert found["version"] == VERSION and found["code_version"] == f"cfexp-{VERSION}"
    assert Path(found["conf"]) == package / "conf" and (package / "conf" / "config.yaml").is_file()
    assert Path(found["data"]) == package / "data" and (package / "data" / "prompts.json").is_file()
    assert any((package / "data" / "corpus").rglob("*.md"))
    assert Path(found["launcher"]) == package / "launcher.c" and (package / "launcher.c").is_file()
    assert Path(found["rust"]) == package / "rust" and (package / "rust" / "Cargo.lock").is_file()
    assert not (package / "rust" / "target").exists()  # sources only, never build products
    assert not Path(found["rust_target"]).is_relative_to(install.venv)  # cargo builds into the cache
    assert all(Path(p).is_relative_to(install.venv) for p in found["sweepers"])
    assert found["model_file"].endswith(".gguf")  # the embedded model's package, found from the venv


def test_cfexp_version_prints_the_installed_version(install: Install, tmp_path: Path) -> None:
    done = install.run([str(install.venv / "bin" / "cfexp"), "--version"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cfexp {VERSION}"


def test_a_simulator_job_runs_from_a_folder_outside_the_checkout(install: Install, tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # cfexp-launch is compiled here from the wheel's launcher.c
    done = install.run(
        [str(install.python), "-m", "cfexp", *FAST_SIM, f"paths.root_dir={tmp_path}"],
        cwd=tmp_path, env={"CFEXP_CACHE_DIR": str(cache)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (run,) = runs_of(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["backend"] == "sim" and run.data.tags["code_version"] == f"cfexp-{VERSION}"
    assert run.data.metrics["calls_failed"] == 0 and run.data.metrics["agent_peak_rss_mb"] > 1
    assert list((cache / "bin").glob("cfexp-launch-*"))
    assert list(tmp_path.glob("outputs/*/*/.hydra/config.yaml"))  # Hydra's folder in the current one
    assert leftover_processes(tmp_path) == []


def _has_cargo() -> bool:
    return bool(shutil.which("cargo")) or (Path.home() / ".cargo" / "bin" / "cargo").exists()


def test_a_rust_runtime_from_the_wheel_builds_from_the_shipped_sources_or_says_why_not(
    install: Install, tmp_path: Path
) -> None:
    """With cargo, the tokio agent is built from the wheel's rust/ into the cache (the user's own,
    so only the first run pays the build) and the job finishes; without cargo, the job fails
    with the message that says what to do."""
    done = install.run(
        [str(install.python), "-m", "cfexp", *FAST_SIM, "runtime=tokio", f"paths.root_dir={tmp_path}"],
        cwd=tmp_path, timeout=3600,
    )
    (run,) = runs_of(tmp_path)
    if _has_cargo():
        assert done.returncode == 0, done.stderr[-3000:]
        assert run.info.status == "FINISHED" and run.data.tags["language"] == "rust"
        assert run.data.metrics["calls_failed"] == 0
        cache = Path(os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp")
        assert (cache / "rust-target" / "release" / "cfexp-agent-tokio").is_file()
    else:
        _assert_fails_saying_cargo_is_missing(done, run)
    assert leftover_processes(tmp_path) == []


def test_a_rust_runtime_from_the_wheel_without_cargo_fails_saying_what_to_do(
    install: Install, tmp_path: Path
) -> None:
    # A home of its own (no ~/.cargo), an empty cache (no agent built before) and no cargo on PATH.
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "cargo").exists()]
    done = install.run(
        [str(install.python), "-m", "cfexp", *FAST_SIM, "runtime=tokio", f"paths.root_dir={tmp_path}"],
        cwd=tmp_path,
        env={"HOME": str(tmp_path / "home"), "CFEXP_CACHE_DIR": str(tmp_path / "cache"), "PATH": os.pathsep.join(path)},
    )
    (run,) = runs_of(tmp_path)
    _assert_fails_saying_cargo_is_missing(done, run)
    assert leftover_processes(tmp_path) == []


def _assert_fails_saying_cargo_is_missing(done: subprocess.CompletedProcess[str], run: Run) -> None:
    assert done.returncode == 1, done.stderr[-3000:]
    assert run.info.status == "FAILED"
    assert "cargo is not installed" in done.stderr and "runtime=asyncio" in done.stderr
    assert "Traceback" not in done.stderr
