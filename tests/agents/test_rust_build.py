"""Building the Rust agents on first use: fingerprints, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cfexp.agents import rust_build
from cfexp.errors import BuildError
from tests.together import run_together


def test_missing_cargo_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rust_build.shutil, "which", lambda name: None)
    monkeypatch.setattr(rust_build.Path, "home", classmethod(lambda cls: tmp_path))
    with pytest.raises(BuildError, match="cargo is not installed.*rustup.*runtime=asyncio"):
        rust_build._cargo()


def test_an_unknown_runtime_is_refused_before_cargo_runs() -> None:
    with pytest.raises(BuildError, match="no Rust agent for <runtime=gevent>"):
        rust_build.ensure_built("gevent")


def test_an_install_without_the_rust_sources_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rust_build, "RUST_DIR", tmp_path / "rust")  # as in a wheel built without rust/
    with pytest.raises(BuildError, match=r"(?s)sources are not installed <rust_dir=.*pip wheel \.`.*runtime=asyncio"):
        rust_build.ensure_built("tokio")


def test_a_wheel_install_builds_into_the_cache_not_into_site_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rust_build, "is_installed_copy", lambda: True)
    monkeypatch.setenv("CFEXP_CACHE_DIR", str(tmp_path))
    assert rust_build.binary_path("tokio") == tmp_path / "rust-target" / "release" / "cfexp-agent-tokio"


def test_the_fingerprint_follows_the_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    crate = tmp_path / "rust"
    (crate / "agent" / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text("[workspace]\n")
    source = crate / "agent" / "src" / "lib.rs"
    source.write_text("pub fn a() {}\n")
    (crate / "target" / "release").mkdir(parents=True)
    (crate / "target" / "release" / "junk.o").write_text("build products do not count")
    monkeypatch.setattr(rust_build, "RUST_DIR", crate)
    first = rust_build._fingerprint()
    (crate / "target" / "release" / "junk.o").write_text("changed")
    assert rust_build._fingerprint() == first
    source.write_text("pub fn b() {}\n")
    assert rust_build._fingerprint() != first


def test_a_built_binary_reports_its_size_profile_and_rustc() -> None:
    command = rust_build.rust_agent_command("tokio")  # built by `make rust` (or now)
    assert command.argv_prefix == [str(rust_build.binary_path("tokio"))]
    assert int(command.build_info["rust_binary_bytes"]) > 100_000
    assert command.build_info["rust_profile"] == "release"
    assert command.build_info["rustc"].startswith("rustc ")


# Asks for the Rust agent of runtime argv[1] when released.
ASK_FOR_THE_AGENT = """
from cfexp.agents.rust_build import ensure_built
go()
print(ensure_built(sys.argv[1]))
"""


@pytest.mark.slow
def test_jobs_that_need_a_rust_agent_together_build_it_once() -> None:
    runtime = "smol"
    binary = rust_build.binary_path(runtime)
    stamp = binary.with_name(f".{binary.name}.fingerprint")
    stamp.unlink(missing_ok=True)  # as after a change of the sources: the next job builds
    results = run_together(ASK_FOR_THE_AGENT, [[runtime]] * 2, timeout=3600)
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.stderr[-2000:] for r in results)
    assert {r.stdout.strip() for r in results} == {str(binary)}
    assert sum("building the Rust agent for runtime=smol" in r.stderr for r in results) == 1  # cargo ran once
    assert stamp.read_text() == rust_build._fingerprint()
    assert binary.stat().st_size > 100_000


def test_a_sweep_hashes_the_sources_again_only_when_one_was_touched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    crate = tmp_path / "rust"
    (crate / "agent" / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text("[workspace]\n")
    source = crate / "agent" / "src" / "lib.rs"
    source.write_text("pub fn a() {}\n")
    old_ns = 1_000_000_000_000_000_000
    os.utime(source, ns=(old_ns, old_ns))
    os.utime(crate / "Cargo.toml", ns=(old_ns, old_ns))
    monkeypatch.setattr(rust_build, "RUST_DIR", crate)
    monkeypatch.setattr(rust_build, "_LAST_FINGERPRINT", None)
    first = rust_build._fingerprint()
    reads = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or b"")
    assert rust_build._fingerprint() == first and reads == []  # settled sources: a stat each, no read
    source.write_text("pub fn b() {}\n")  # same size, a new time
    monkeypatch.undo()
    monkeypatch.setattr(rust_build, "RUST_DIR", crate)
    assert rust_build._fingerprint() != first
