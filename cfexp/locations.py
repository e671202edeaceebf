"""Where cfexp's own files are: in a source checkout, or inside an installed wheel.

``conf/`` (Hydra's config tree) and ``rust/`` (the Rust agents' crate) live at
the repository's top level, their one source of truth. A wheel
(``pip install .``) carries copies of both inside the package, as
``cfexp/conf/`` and ``cfexp/rust/`` (``setup.py`` copies them at build time).
cfexp running from a checkout (an editable install, ``make setup``) uses the
checkout's folders; installed from a wheel, the package's copies.
``cfexp/data/`` and ``cfexp/launcher.c`` are inside the package in both cases.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The source checkout this cfexp is imported from, or None (an installed wheel)."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "conf" / "config.yaml").is_file():
        return root
    return None


def _shipped(name: str) -> Path:
    """The checkout's top-level folder ``name``, else the wheel's copy inside the package."""
    root = checkout_root()
    return root / name if root is not None else PACKAGE_DIR / name


def conf_dir() -> Path:
    """Hydra's primary config folder (holding ``config.yaml``)."""
    return _shipped("conf")


def rust_dir() -> Path:
    """The Rust agents' crate (``Cargo.toml`` at its top); may be missing from a stripped install."""
    return _shipped("rust")


def is_installed_copy() -> bool:
    """True when cfexp runs from an installed wheel, not from a checkout."""
    return checkout_root() is None


def cache_dir() -> Path:
    """Where cfexp keeps what it can rebuild: ``$CFEXP_CACHE_DIR``, else ``~/.cache/cfexp``."""
    return Path(os.environ.get("CFEXP_CACHE_DIR") or Path.home() / ".cache" / "cfexp")
