"""Builds (once) and locates the Rust agent binary for a runtime.

``runtime=tokio`` needs the binary ``cfexp-agent-tokio``, built with cargo on
first use (release profile). In a checkout the crate is the top-level
``rust/`` and cargo builds into its ``target/`` (as ``make rust`` does);
installed from a wheel, the crate is the copy inside the package
(:mod:`cfexp.locations`) and cargo builds into ``<cache>/rust-target``
(``CFEXP_CACHE_DIR``, else ``~/.cache/cfexp``): site-packages is no place for
build products. The binary is rebuilt only when the crate's sources change: a
fingerprint of every source file is kept beside the binary,
so a sweep does not even start cargo for each job. Jobs and commands that
start together serialize on a file lock (:class:`cfexp.filelock.FileLock`):
one builds, the others wait (saying so if it takes long), then use its binary. What the run records about the binary — size, profile, rustc —
comes back in the command's ``build_info``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from cfexp.agents.runner import AgentCommand
from cfexp.errors import BuildError
from cfexp.filelock import FileLock
from cfexp.locations import is_installed_copy, rust_dir
from cfexp.vocab import RUST_RUNTIMES

log = logging.getLogger(__name__)

RUST_DIR = rust_dir()
# One binary (and cargo feature) per Rust runtime of cfexp/vocab.py.
RUNTIMES = tuple(r.value for r in RUST_RUNTIMES)
PROFILE = "release"


def binary_name(runtime: str) -> str:
    return f"cfexp-agent-{runtime}"


def target_dir() -> Path:
    """Cargo's build folder: the crate's ``target/`` in a checkout, a cache folder for a wheel install."""
    if not is_installed_copy():
        return RUST_DIR / "target"
    return Path(os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp") / "rust-target"


def binary_path(runtime: str) -> Path:
    return target_dir() / PROFILE / binary_name(runtime)


def _check_sources() -> None:
    """A BuildError saying what to do when this install carries no Rust sources."""
    if not (RUST_DIR / "Cargo.toml").is_file():
        raise BuildError(
            f"the Rust agents' sources are not installed <rust_dir={RUST_DIR}>. A Rust runtime "
            "(runtime=tokio, tokio_localset, smol, smol_1kb, async_std) builds its agent from them with "
            "cargo on first use, and this cfexp was installed without them. Install cfexp from its source "
            "folder or from a wheel built by `pip wheel .` (both ship rust/ inside the package), or run "
            "from a checkout (`make setup`); or choose a Python runtime (runtime=asyncio or uvloop)"
        )


def _cargo() -> str:
    found = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(found).exists():
        raise BuildError(
            "cargo is not installed, and the Rust agents are built with it: install Rust "
            "with rustup (https://rustup.rs), or use a Python runtime (runtime=asyncio)"
        )
    return found


def _sources() -> list[Path]:
    """Cargo.toml, Cargo.lock and every file in the crate's folders, build products (target/) left out."""
    paths = [path for path in (RUST_DIR / "Cargo.toml", RUST_DIR / "Cargo.lock") if path.exists()]
    found = []
    # os.walk, pruned: pathlib's "**" glob took ~30 ms per job here, most of it in target/.
    for folder, subfolders, files in os.walk(RUST_DIR):
        subfolders[:] = [name for name in subfolders if name != "target"]
        if Path(folder) != RUST_DIR:  # the top folder's own files are the two above
            found += [Path(folder) / name for name in files]
    return paths + sorted(found)


# The last fingerprint computed in this process, by the sources' (name, size, mtime) it was
# made from; kept only when every source was older than _RACY_S then (see _fingerprint).
_LAST_FINGERPRINT: tuple[tuple[tuple[str, int, int], ...], str] | None = None
_RACY_S = 2.0


def _fingerprint() -> str:
    """Hash of everything that changes the binaries.

    Every job of a sweep asks; the sources are read and hashed again only when
    one of them was touched (its size or modification time changed) since the
    last time: a stat of each file instead of reading all of them, per job. A
    file changed within the file system's timestamp granularity of the last
    hash could keep its time, so (as git does) the hash is reused only when
    every source was older than a couple of seconds when it was made.
    """
    global _LAST_FINGERPRINT
    paths = _sources()
    signature = tuple((str(path), (info := path.stat()).st_size, info.st_mtime_ns) for path in paths)
    if _LAST_FINGERPRINT is not None and _LAST_FINGERPRINT[0] == signature:
        return _LAST_FINGERPRINT[1]
    hashed_at_ns = time.time_ns()
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(RUST_DIR)).encode())
        digest.update(path.read_bytes())
    fingerprint = digest.hexdigest()
    settled = all(mtime_ns < hashed_at_ns - _RACY_S * 1e9 for _, _, mtime_ns in signature)
    _LAST_FINGERPRINT = (signature, fingerprint) if settled else None
    return fingerprint


@functools.cache
def rustc_version() -> str:
    try:
        rustc = shutil.which("rustc") or str(Path.home() / ".cargo" / "bin" / "rustc")
        return subprocess.run([rustc, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ensure_built(runtime: str) -> Path:
    """The binary for ``runtime``, built if missing or stale. Raises BuildError."""
    if runtime not in RUNTIMES:
        raise BuildError(f"no Rust agent for <runtime={runtime}>: choose one of {', '.join(RUNTIMES)}")
    _check_sources()
    binary = binary_path(runtime)
    stamp = binary.with_name(f".{binary.name}.fingerprint")
    lock = FileLock(
        binary.parent / ".cfexp-build.lock", "Rust build lock",
        reason="another cfexp process is building a Rust agent; this one uses the result",
    )
    with lock:  # one build at a time, across processes; the others wait, then find it built
        fingerprint = _fingerprint()
        if binary.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            return binary
        command = [
            _cargo(), "build", "--release", "--locked", "--target-dir", str(target_dir()),
            "--features", runtime, "--bin", binary.name,
        ]
        log.info(
            "building the Rust agent for runtime=%s (once per code change: about 1-3 minutes on 2 cores the "
            "first time, when cargo compiles its crates; seconds after): %s", runtime, " ".join(command),
        )
        done = subprocess.run(
            command, cwd=RUST_DIR, capture_output=True, text=True, check=False, env={**os.environ, "CARGO_TERM_COLOR": "never"}
        )
        if done.returncode != 0 or not binary.exists():
            tail = "\n".join(done.stderr.splitlines()[-20:])
            raise BuildError(
                f"cargo could not build <runtime={runtime}> (exit {done.returncode}). "
                f"Run `{' '.join(command)}` in {RUST_DIR} to see why. Last lines:\n{tail}"
            )
        stamp.write_text(fingerprint)
        return binary


def rust_agent_command(runtime: str) -> AgentCommand:
    binary = ensure_built(runtime)
    return AgentCommand(
        argv_prefix=[str(binary)],
        language="rust",
        runtime=runtime,
        build_info={
            "rust_binary_bytes": str(binary.stat().st_size),
            "rust_profile": PROFILE,
            "rustc": rustc_version(),
        },
    )
