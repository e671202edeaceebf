"""Where cfexp finds its own files from a checkout (tests/test_wheel.py: from an installed wheel)."""

from __future__ import annotations

from pathlib import Path

from cfexp import locations

REPO = Path(__file__).resolve().parents[1]


def test_a_checkout_uses_its_top_level_conf_and_rust() -> None:
    assert locations.checkout_root() == REPO
    assert locations.conf_dir() == REPO / "conf"
    assert locations.rust_dir() == REPO / "rust"
    assert not locations.is_installed_copy()
