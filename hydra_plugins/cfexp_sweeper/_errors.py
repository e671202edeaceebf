"""The one error the sweeper raises on purpose.

It is a :class:`cfexp.errors.CfexpError` (cfexp's hierarchy) and a Hydra
``CompactHydraException``, so Hydra prints its message alone — no traceback —
and the command exits with status 1.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException

from cfexp.errors import CfexpError


class SweepError(CfexpError, CompactHydraException):
    """The sweep cannot start or cannot go on; the message says what to change."""
