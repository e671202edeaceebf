"""Building llama-server once: the cache, its stamp, and builds that fail.

A fake llama-cpp-python sdist (a tiny CMake project whose target is called
llama-server) goes through the real code path — extraction of
``vendor/llama.cpp``, cmake configure and build, stamp, atomic rename — in
seconds. The real binary, built by ``make llama-server``, is checked at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cfexp.backends import llama_server_build
from cfexp.backends.llama_server_build import LlamaServerBuild, main
from cfexp.backends.model_files import sha256_of
from cfexp.errors import BuildError

CMAKE = """cmake_minimum_required(VERSION 3.13)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-server main.c)
add_executable(other other.c)
file(WRITE ${CMAKE_BINARY_DIR}/bin/commit.txt "${LLAMA_BUILD_COMMIT}")
"""
COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
MAIN = '#include <stdio.h>\nint main(void) { puts("%s"); return 0; }\n'


def make_sdist(path: Path, text: str = "fake llama-server", main_c: str | None = None) -> Path:
    """A .tar.gz laid out like llama-cpp-python's sdist, with a fake llama.cpp inside."""
    files = {
        "fake_llama_cpp_python-1.0/PKG-INFO": "Name: fake\n",
        "fake_llama_cpp_python-1.0/vendor/llama.cpp/CMakeLists.txt": CMAKE,
        "fake_llama_cpp_python-1.0/vendor/llama.cpp/main.c": main_c if main_c is not None else MAIN % text,
        # Not a target the server needs: building it would fail.
        "fake_llama_cpp_python-1.0/vendor/llama.cpp/other.c": "this does not compile\n",
        # The submodule's git metadata, outside vendor/llama.cpp as in the real sdist.
        "fake_llama_cpp_python-1.0/.git/modules/vendor/llama.cpp/HEAD": COMMIT + "\n",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def builder(tmp_path: Path, sdist: Path, said: list[str] | None = None, **kwargs: object) -> LlamaServerBuild:
    announce = said.append if said is not None else None
    return LlamaServerBuild(tmp_path / "cache", sdist=sdist, jobs=2, announce=announce, **kwargs)  # type: ignore[arg-type]


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".partial" in p.name)


def test_the_first_use_builds_announces_and_stamps_later_ones_reuse(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "fake.tar.gz")
    said: list[str] = []
    first = builder(tmp_path, sdist, said).ensure()
    assert first.built_now
    assert subprocess.run([first.binary], capture_output=True, text=True).stdout == "fake llama-server\n"
    (message,) = said
    assert "building llama-server" in message and "minutes" in message and str(first.binary.parent) in message
    stamp = json.loads((first.binary.parent / "stamp.json").read_text())
    assert stamp["source_sha256"] == sha256_of(sdist)
    assert stamp["binary_sha256"] == sha256_of(first.binary)
    assert stamp["recipe"]["target"] == "llama-server" and "-DGGML_NATIVE=ON" in stamp["recipe"]["cmake"]
    # llama.cpp's commit, from the submodule's HEAD, reaches its CMake (for the build info).
    assert stamp["llama_cpp_commit"] == COMMIT
    assert "-DLLAMA_BUILD_COMMIT=0c1e570" in (first.binary.parent / "build.log").read_text()
    assert (first.binary.parent / "build.log").read_text().count("$ ") == 2  # configure, compile
    # Only the server's target was built (the other one does not even compile).
    said.clear()
    again = builder(tmp_path, sdist, said).ensure()
    assert not again.built_now and again.binary == first.binary and said == []
    assert leftovers(tmp_path / "cache" / "llama-server") == []


def test_the_cache_is_keyed_by_the_sources_hash(tmp_path: Path) -> None:
    one = builder(tmp_path, make_sdist(tmp_path / "a.tar.gz", "one")).ensure()
    two = builder(tmp_path, make_sdist(tmp_path / "b.tar.gz", "two")).ensure()
    assert two.built_now and one.binary.parent != two.binary.parent
    assert subprocess.run([two.binary], capture_output=True, text=True).stdout == "two\n"
    assert subprocess.run([one.binary], capture_output=True, text=True).stdout == "one\n"


def test_an_altered_binary_is_rebuilt(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "fake.tar.gz")
    first = builder(tmp_path, sdist).ensure()
    first.binary.write_bytes(b"#!/bin/sh\necho tampered\n")
    again = builder(tmp_path, sdist).ensure()
    assert again.built_now
    assert subprocess.run([again.binary], capture_output=True, text=True).stdout == "fake llama-server\n"


def test_a_failed_build_says_why_in_one_paragraph_and_caches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sdist = make_sdist(tmp_path / "broken.tar.gz", main_c="int main(void) { return missing_symbol_xyz; }\n")
    with pytest.raises(BuildError) as caught:
        builder(tmp_path, sdist).ensure()
    message = str(caught.value)
    assert "the compile step failed" in message and "Nothing was cached" in message
    assert "missing_symbol_xyz" in message  # the log's tail, with the compiler's error
    assert "apt-get install build-essential cmake" in message and "backend.binary" in message
    root = tmp_path / "cache" / "llama-server"
    entries = [p.name for p in root.iterdir() if p.is_dir()]
    assert entries == []  # no entry, no partial folder
    assert "missing_symbol_xyz" in (root / "last-failed-build.log").read_text()
    # The command behind `make llama-server`: exit 2, the same paragraph.
    assert main(["--cache-dir", str(tmp_path / "cache"), "--sdist", str(sdist)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cfexp: llama-server could not be built") and "missing_symbol_xyz" in err


def test_a_missing_compiler_is_named_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_cmake = tmp_path / "bin"
    only_cmake.mkdir()
    real_cmake = subprocess.run(["which", "cmake"], capture_output=True, text=True).stdout.strip()
    (only_cmake / "cmake").symlink_to(real_cmake)
    monkeypatch.setenv("PATH", str(only_cmake))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(BuildError, match=r"a C\+\+ compiler \(c\+\+\) not found on PATH.*build-essential"):
        builder(tmp_path, make_sdist(tmp_path / "fake.tar.gz")).ensure()


def test_too_little_disk_is_refused_before_building(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"GiB free in <cache_dir=.*CFEXP_CACHE_DIR"):
        builder(tmp_path, make_sdist(tmp_path / "fake.tar.gz"), min_free_bytes=1 << 60).ensure()
    assert leftovers(tmp_path / "cache" / "llama-server") == []


def test_an_interrupted_build_leaves_nothing_half_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(step: str, command: list[str], build_log: Path) -> None:
        assert (build_log.parent / "src").is_dir()  # the source was extracted into the partial folder
        raise KeyboardInterrupt

    monkeypatch.setattr(llama_server_build, "_run_logged", interrupted)
    with pytest.raises(KeyboardInterrupt):
        builder(tmp_path, make_sdist(tmp_path / "fake.tar.gz")).ensure()
    root = tmp_path / "cache" / "llama-server"
    assert [p.name for p in root.iterdir() if p.is_dir()] == []


def test_an_sdist_without_llama_cpp_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as archive:
        info = tarfile.TarInfo("x-1.0/README")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(BuildError, match="has no vendor/llama.cpp folder"):
        builder(tmp_path, empty).ensure()


def test_the_expected_duration_scales_with_the_cores() -> None:
    one = LlamaServerBuild(Path("/nonexistent"), jobs=1).expected_minutes()
    assert one == llama_server_build.BUILD_CORE_MINUTES
    if (os.cpu_count() or 1) >= 2:
        assert LlamaServerBuild(Path("/nonexistent"), jobs=2).expected_minutes() == one / 2


@pytest.mark.slow
@pytest.mark.llamacpp
def test_the_real_llama_server_is_built_and_cached_after_make() -> None:
    """`make test` runs `make llama-server` first: the binary is in the user's cache."""
    built = LlamaServerBuild().ensure()
    assert not built.built_now, "make llama-server should have built it"
    version = subprocess.run([built.binary, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    stamp = built.stamp
    commit = str(stamp["llama_cpp_commit"])
    assert f"commit {commit[:7]}" in version.stdout + version.stderr  # the vendored llama.cpp's
    assert stamp["source"] == f"llama_cpp_python-{llama_server_build.pinned_version()}.tar.gz"
