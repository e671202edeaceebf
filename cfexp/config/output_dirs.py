"""Output folders that are one command's own: never shared by two commands.

Hydra names a run's folder ``outputs/<date>/<HH-MM-SS>`` and a sweep's
``multirun/<date>/<HH-MM-SS>``: two commands started in the same second would
share one, write into each other's job folders and link their jobs to the
wrong sweep. cfexp's defaults (``conf/config.yaml``) wrap those names in the
resolver ``${cfexp.unique_dir:<name>}``, which *creates* the folder, exclusively
(``mkdir`` fails when the folder exists, atomically, also between hosts on a
shared file system), and takes the next free name ``<name>_2``, ``<name>_3``,
… when another command got there first. A collision is impossible, not only
unlikely.

The resolver is cached (``use_cache``): every later read of the key in the
command's config gives the same folder, and Hydra copies that cache into each
job's config (``load_sweep_config``), which travels with the job to other
processes (``hydra/launcher=submitit_local``, Ray): jobs find their sweep
folder from the config and never claim a folder of their own.

A folder given explicitly (``hydra.sweep.dir=multirun/t``) is used as given,
so resuming into it works; :class:`FolderClaim` (held by the callback for the
command's lifetime) then refuses a second command that runs in the same
folder at the same time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from cfexp.filelock import FileLock

log = logging.getLogger(__name__)

RESOLVER = "cfexp.unique_dir"
# In each command's output folder, held by the command while it runs.
CLAIM_FILE = ".cfexp-command.lock"
# Give up after this many taken names (something else is wrong then).
_MAX_TRIES = 10_000


def claim_unique_dir(base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, …: the first folder this call creates.

    When the parent cannot be created (an unwritable place), ``base`` is
    returned unchanged: the callback's writability check then reports it with
    the key to change, before any job.
    """
    path = Path(base)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return base
    for attempt in range(1, _MAX_TRIES + 1):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}_{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError:
            return base
        return base if attempt == 1 else str(candidate)
    return base


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, claim_unique_dir, use_cache=True)


class FolderClaim:
    """A command's hold on its output folder, so no other command runs in it at the same time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = FileLock(folder / CLAIM_FILE, "output folder")

    def take(self, what: str) -> bool:
        """Hold the folder; False when another running command holds it."""
        return self._lock.try_acquire(holder=what)

    def holder(self) -> str:
        return self._lock.holder()

    def release(self) -> None:
        self._lock.release()
