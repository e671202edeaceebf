"""The one way a name from config or data becomes a file or artifact name (docs/security.md).

Ground floor: the job's artifacts, the report's output folder and anything else
that turns a user-given or generated name into a path go through
:func:`safe_name`.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DOTS = re.compile(r"\.{2,}")
# Well under every file system's 255-byte limit, with room for a suffix (".md").
MAX_NAME_CHARS = 100


def safe_name(name: str) -> str:
    """The one way a name from config or data (agent, persona, model, runtime,
    trial, prompt id) becomes a file or artifact name.

    Only ``A-Z a-z 0-9 _ . -`` survive (no path separator, no control or
    non-ASCII character), runs of dots become one (no ``..``), leading and
    trailing dots and underscores go (no hidden file, no ``.``), an empty
    result is ``unnamed``, and a name longer than :data:`MAX_NAME_CHARS` is cut
    and ends with a hash of the whole, so two long names stay two files.
    """
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", name)).strip("._") or "unnamed"
    if len(cleaned) > MAX_NAME_CHARS:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_NAME_CHARS - 13].rstrip('._')}-{digest}"
    return cleaned
