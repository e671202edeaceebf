"""Builds (once) llama.cpp's own ``llama-server`` for ``backend=llamaserver``.

The source is the llama.cpp tree vendored in the llama-cpp-python source
distribution cfexp pins (``vendor/llama.cpp``): the very commit the Python
bindings of ``backend=llamacpp`` run, so both backends run the same engine.
The sdist is fetched once with ``pip download`` into the cache folder
(``paths.cache_dir``, ``~/.cache/cfexp`` by default; ``CFEXP_CACHE_DIR``
overrides) and kept there, so later look-ups need no network.

Only the ``llama-server`` target is built, as a CPU build for this host's
instruction set (``GGML_NATIVE``), static (one self-contained file), with
network features (OpenSSL, the prebuilt web UI's download) off. The bindings'
shared libraries are not reused: their build options are pip's (not
necessarily this host's) and a binary linked to a venv's site-packages would
break when that venv is rebuilt; building ggml and llama as well costs a few
minutes once.

The result is cached under ``<cache_dir>/llama-server/<key>/``, ``key`` =
hash of the sdist's SHA-256, the build recipe and the CPU's flags; a
``stamp.json`` written last (with the binary's own SHA-256) marks a complete
entry. A build runs in a ``.partial`` folder that is renamed into place only
when it succeeded, under a file lock (concurrent jobs build once), so a
failed or interrupted build never leaves anything half-cached.

Command line (``make llama-server``)::

    python -m cfexp.backends.llama_server_build [--cache-dir DIR] [--jobs N]

prints the binary's path; exit 2 with one paragraph (the log's tail and what
to install) when the build fails.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cfexp.backends.model_files import sha256_of
from cfexp.childproc import kill_group
from cfexp.errors import BuildError

log = logging.getLogger(__name__)

PACKAGE = "llama-cpp-python"
TARGET = "llama-server"
# Where llama.cpp sits inside the sdist (below its top folder).
VENDORED = ("vendor", "llama.cpp")
# CMake options of the build. Part of the cache key: changing them rebuilds.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
    "-DGGML_NATIVE=ON",  # this host's instruction set
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_OPENSSL=OFF",  # loopback HTTP only; no TLS library needed
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",  # no npm
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI at build time
)
RECIPE_VERSION = 2  # 2: llama.cpp's commit in the binary's build info
# Measured: the CPU time of the first build on this project's 2-core machine
# (21.5-23.5 min in two builds, docs/benchmarks.md), in core-minutes, so the
# announced duration scales with the cores used.
BUILD_CORE_MINUTES = 23.0
# Free space the build needs (source ~0.3 GB, objects ~0.5 GB), with a margin.
MIN_FREE_BYTES = 2 * 1024**3
_INSTALL_HINT = (
    "install a C/C++ compiler and CMake (Debian/Ubuntu: `apt-get install build-essential cmake`; "
    "Fedora: `dnf install gcc-c++ cmake`), free some disk space, then run `make llama-server`; "
    "or point backend.binary at a llama-server you already have"
)


def default_cache_dir() -> Path:
    """cfexp's cache folder: ``CFEXP_CACHE_DIR``, else ``~/.cache/cfexp`` (as ``paths.cache_dir``)."""
    return Path(os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp")


def pinned_version() -> str:
    """The llama-cpp-python version installed (the project pins it in pyproject.toml)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise BuildError(
            f"{PACKAGE} is not installed, and llama-server is built from the llama.cpp source of its "
            "pinned version: run the project's set-up (`make setup`), or point backend.binary at a llama-server"
        ) from exc


def cpu_signature() -> str:
    """Machine and CPU flags: a GGML_NATIVE binary runs only where its flags exist."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    return f"{platform.machine()} {hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def recipe() -> str:
    return json.dumps({"version": RECIPE_VERSION, "target": TARGET, "cmake": list(CMAKE_OPTIONS)}, sort_keys=True)


def _verified_sha256(path: Path) -> str:
    """The file's SHA-256, remembered beside it (size, mtime) so it is hashed once."""
    stat = path.stat()
    memo = path.with_name(path.name + ".sha256")
    mark = f"{stat.st_size} {stat.st_mtime_ns}"
    if memo.exists():
        saved_mark, _, saved = memo.read_text().strip().rpartition(" ")
        if saved_mark == mark and len(saved) == 64:
            return saved
    digest = sha256_of(path)
    memo.write_text(f"{mark} {digest}\n")
    return digest


@dataclass(frozen=True)
class BuiltServer:
    """A cached llama-server and what its stamp says about it."""

    binary: Path
    stamp: dict[str, object]
    built_now: bool


class LlamaServerBuild:
    """The cache of llama-server builds under ``<cache_dir>/llama-server``.

    ``sdist``: the source distribution to build from; None = the pinned
    llama-cpp-python's, downloaded once into ``<root>/sources``. ``announce``
    receives the one message said before a build starts (default: logged).
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        sdist: Path | None = None,
        jobs: int | None = None,
        announce: Callable[[str], None] | None = None,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        self.root = (cache_dir or default_cache_dir()) / "llama-server"
        self._sdist = sdist
        self.jobs = jobs or os.cpu_count() or 1
        self._announce = announce or (lambda message: log.warning("%s", message))
        self._min_free_bytes = min_free_bytes

    # -- the source ---------------------------------------------------------

    def sdist(self) -> Path:
        """The sdist to build from, fetched with pip the first time."""
        if self._sdist is not None:
            if not self._sdist.is_file():
                raise BuildError(f"the llama.cpp source <sdist={self._sdist}> does not exist")
            return self._sdist
        version = pinned_version()
        sources = self.root / "sources"
        found = sorted(sources.glob(f"llama_cpp_python-{version}.tar.gz"))
        if found:
            return found[0]
        sources.mkdir(parents=True, exist_ok=True)
        partial = sources / f".download-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
            "--disable-pip-version-check", "--dest", str(partial), f"{PACKAGE}=={version}",
        ]
        log.info("fetching the llama.cpp source: %s", " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        files = sorted(partial.glob("*.tar.gz")) if partial.exists() else []
        if done.returncode != 0 or len(files) != 1:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise BuildError(
                f"could not fetch the source of <{PACKAGE}=={version}> from PyPI (pip exit {done.returncode}), "
                f"needed once to build llama-server. Check the network (or pip's index settings), or "
                f"point backend.binary at a llama-server you have. pip said:\n{tail}"
            )
        target = sources / files[0].name
        files[0].replace(target)  # atomic: a half-downloaded file never has the final name
        shutil.rmtree(partial, ignore_errors=True)
        return target

    # -- the cache ----------------------------------------------------------

    def key(self, source_sha256: str) -> str:
        text = f"{source_sha256}\n{recipe()}\n{cpu_signature()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cached(self, key: str) -> BuiltServer | None:
        """The complete cache entry for ``key``, or None (missing, partial or altered)."""
        folder = self.root / key
        binary, stamp_path = folder / TARGET, folder / "stamp.json"
        if not (binary.is_file() and stamp_path.is_file()):
            return None
        try:
            stamp = json.loads(stamp_path.read_text())
        except ValueError:
            return None
        if not isinstance(stamp, dict) or stamp.get("binary_sha256") != sha256_of(binary):
            return None
        return BuiltServer(binary=binary, stamp=stamp, built_now=False)

    def ensure(self) -> BuiltServer:
        """The llama-server binary, built first when the cache has none. Raises BuildError."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, across processes
            sdist = self.sdist()
            source_sha256 = _verified_sha256(sdist)
            key = self.key(source_sha256)
            found = self.cached(key)
            if found is not None:
                return found
            return self._build(sdist, source_sha256, key)

    # -- the build ----------------------------------------------------------

    def expected_minutes(self) -> float:
        return BUILD_CORE_MINUTES / max(1, min(self.jobs, os.cpu_count() or 1))

    def _preflight(self) -> tuple[str, str]:
        """cmake and a C++ compiler must exist, and the disk must have room."""
        cmake = shutil.which("cmake")
        compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
        missing = [name for name, path in (("cmake", cmake), ("a C++ compiler (c++)", compiler)) if path is None]
        if missing:
            raise BuildError(
                f"llama-server cannot be built: {' and '.join(missing)} not found on PATH. {_INSTALL_HINT}."
            )
        free = shutil.disk_usage(self.root).free
        if free < self._min_free_bytes:
            raise BuildError(
                f"llama-server cannot be built: only {free / 2**30:.1f} GiB free in <cache_dir={self.root.parent}> "
                f"and the build needs about {self._min_free_bytes / 2**30:.1f} GiB: free some space there, or "
                f"set CFEXP_CACHE_DIR (paths.cache_dir) to a disk with room. {_INSTALL_HINT}."
            )
        assert cmake is not None
        return cmake, str(compiler)

    def _build(self, sdist: Path, source_sha256: str, key: str) -> BuiltServer:
        cmake, compiler = self._preflight()
        version = sdist.name.removesuffix(".tar.gz")
        self._announce(
            f"building llama-server from the llama.cpp source in {sdist.name} (first use only): "
            f"this takes about {self.expected_minutes():.0f} minutes with {self.jobs} core(s) on an idle "
            f"machine, longer when its cores are busy; "
            f"the binary is cached in {self.root / key}"
        )
        staging = self.root / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build_log = staging / "build.log"
        started = time.monotonic()
        try:
            source_dir, commit = _extract_vendored(sdist, staging / "src")
            build_dir = staging / "build"
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            build_info = [f"-DLLAMA_BUILD_COMMIT={commit[:7]}"] if commit else []
            steps = [
                ("configure", [
                    cmake, "-S", str(source_dir), "-B", str(build_dir), *generator, *CMAKE_OPTIONS, *build_info,
                ]),
                ("compile", [cmake, "--build", str(build_dir), "--target", TARGET, "-j", str(self.jobs)]),
            ]
            for step, command in steps:
                _run_logged(step, command, build_log)
            produced = build_dir / "bin" / TARGET
            if not produced.is_file():
                raise _StepFailed("compile", 0, f"the build ended without producing bin/{TARGET}")
            out = staging / "out"
            out.mkdir()
            binary = out / TARGET
            shutil.copy2(produced, binary)
            seconds = time.monotonic() - started
            stamp: dict[str, object] = {
                "source": sdist.name,
                "source_sha256": source_sha256,
                "recipe": json.loads(recipe()),
                "cpu": cpu_signature(),
                "llama_cpp_commit": commit,
                "compiler": _compiler_version(compiler),
                "jobs": self.jobs,
                "build_seconds": round(seconds, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "binary_sha256": sha256_of(binary),
            }
            shutil.copy2(build_log, out / "build.log")
            (out / "stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
            final = self.root / key
            shutil.rmtree(final, ignore_errors=True)  # an altered or stamp-less entry
            out.replace(final)  # atomic: the entry appears whole or not at all
            log.info("llama-server built in %.0f s: %s", seconds, final / TARGET)
            return BuiltServer(binary=final / TARGET, stamp=stamp, built_now=True)
        except _StepFailed as failed:
            kept = self.root / "last-failed-build.log"
            if build_log.exists():
                shutil.copy2(build_log, kept)
            raise BuildError(_failure_paragraph(failed, build_log, kept, version)) from None
        except (OSError, tarfile.TarError) as exc:
            raise BuildError(
                f"llama-server could not be built from {sdist.name}: {exc}. {_INSTALL_HINT}."
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class _StepFailed(Exception):
    def __init__(self, step: str, code: int, detail: str = "") -> None:
        super().__init__(step)
        self.step, self.code, self.detail = step, code, detail


def _extract_vendored(sdist: Path, dest: Path) -> tuple[Path, str | None]:
    """Extract only ``<top>/vendor/llama.cpp`` of the sdist: (that folder, llama.cpp's commit).

    The sdist carries llama.cpp as a git submodule whose metadata lives in
    ``<top>/.git/modules/vendor/llama.cpp``, outside the extracted folder, so
    llama.cpp's CMake cannot find its commit; its ``HEAD`` is read here instead
    (None when absent) and passed as ``LLAMA_BUILD_COMMIT``.
    """
    head_name = "/".join((".git", "modules", *VENDORED, "HEAD"))
    commit = None
    with tarfile.open(sdist, "r:gz") as archive:
        members = []
        top = None
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) > len(VENDORED) and parts[1 : 1 + len(VENDORED)] == VENDORED:
                top = parts[0]
                members.append(member)
            elif "/".join(parts[1:]) == head_name and member.isfile():
                handle = archive.extractfile(member)
                text = handle.read().decode(errors="replace").strip() if handle else ""
                commit = text if re.fullmatch(r"[0-9a-f]{40}", text) else None
        if top is None:
            raise tarfile.TarError(f"{sdist.name} has no {'/'.join(VENDORED)} folder")
        archive.extractall(dest, members=members, filter="data")
    return dest.joinpath(top, *VENDORED), commit


def _run_logged(step: str, command: Sequence[str], build_log: Path) -> None:
    """Run one build step, its output appended to the log. Its own process group, so
    an interrupted build (Ctrl-C, SIGTERM) stops every compiler it started."""
    with build_log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait()
        except BaseException:
            kill_group(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if code != 0:
        raise _StepFailed(step, code)


def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (done.stdout.splitlines() or ["unknown"])[0]


def _failure_paragraph(failed: _StepFailed, build_log: Path, kept: Path, version: str) -> str:
    lines = build_log.read_text(errors="replace").splitlines() if build_log.exists() else []
    tail = "\n".join(lines[-15:])
    text = "\n".join(lines)
    if "No space left on device" in text:
        cause = "the disk is full (No space left on device): free some space in the cache folder or set CFEXP_CACHE_DIR"
    elif "CMAKE_CXX_COMPILER" in text or "CMAKE_C_COMPILER" in text or "No CMAKE_" in text:
        cause = "CMake found no working C/C++ compiler"
    else:
        cause = "see the log's last lines below"
    detail = f" ({failed.detail})" if failed.detail else ""
    return (
        f"llama-server could not be built from the llama.cpp source of {version}: the {failed.step} step "
        f"failed with exit {failed.code}{detail}; {cause}. Nothing was cached. {_INSTALL_HINT}. "
        f"The full log is {kept}; its last lines:\n{tail}"
    )


def ensure_llama_server(cache_dir: Path | None = None) -> Path:
    """The cached llama-server binary for this host, built on first use."""
    return LlamaServerBuild(cache_dir).ensure().binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cfexp.backends.llama_server_build",
        description="Build llama.cpp's llama-server once for backend=llamaserver (cached).",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $CFEXP_CACHE_DIR or ~/.cache/cfexp")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: every core)")
    parser.add_argument("--sdist", type=Path, default=None, help="build from this llama-cpp-python sdist instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build = LlamaServerBuild(
        args.cache_dir, sdist=args.sdist, jobs=args.jobs, announce=lambda m: print(f"cfexp: {m}", flush=True)
    )
    try:
        built = build.ensure()
    except BuildError as exc:
        print(f"cfexp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    how = f"built in {built.stamp.get('build_seconds')} s" if built.built_now else "cached"
    print(f"llama-server ({how}): {built.binary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
