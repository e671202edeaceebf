"""One build step pyproject.toml cannot declare: ship conf/ and rust/ inside the package.

Hydra's config tree (conf/) and the Rust agents' crate (rust/) live at the
repository's top level, their one source of truth. A wheel (`pip install .`,
`pip wheel .`, `python -m build`) carries copies of both as cfexp/conf/ and
cfexp/rust/ (without rust/target/), where cfexp.locations finds them when no
checkout surrounds the package. An editable install copies nothing: cfexp
then uses the checkout's own folders. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Top-level folder -> its place in the built package.
SHIPPED = {"conf": "cfexp/conf", "rust": "cfexp/rust"}
# Build products and caches never shipped.
LEFT_OUT = shutil.ignore_patterns("target", "__pycache__", "*.pyc", ".*")


class BuildPyWithTopLevelFolders(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source, place in SHIPPED.items():
            target = Path(self.build_lib) / place
            shutil.rmtree(target, ignore_errors=True)  # no file left from an earlier build
            shutil.copytree(HERE / source, target, ignore=LEFT_OUT)


setup(cmdclass={"build_py": BuildPyWithTopLevelFolders})
