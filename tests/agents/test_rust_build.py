"""Building the Rust agents on first use: fingerprints, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.agents import rust_build
from cfexp.errors import BuildError


def test_missing_cargo_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rust_build.shutil, "which", lambda name: None)
    monkeypatch.setattr(rust_build.Path, "home", classmethod(lambda cls: tmp_path))
    with pytest.raises(BuildError, match="cargo is not installed.*rustup.*runtime=asyncio"):
        rust_build._cargo()


def test_an_unknown_runtime_is_refused_before_cargo_runs() -> None:
    with pytest.raises(BuildError, match="no Rust agent for <runtime=gevent>"):
        rust_build.ensure_built("gevent")


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
