"""``python -m cfexp.agents.python_agent``: see :mod:`cfexp.agents.python_agent.main`."""

import sys

# Start-up to `ready` is a measured number. httpx's __init__ imports its
# optional command-line client (click, rich, pygments) whenever those happen
# to be installed: ~35 ms for nothing here. A None entry makes that import
# fail, and httpx falls back to a stub for its CLI entry point. Done only in
# this entry module, so library users of httpx are unaffected.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None is how Python marks a module unimportable

from cfexp.agents.python_agent.main import main  # noqa: E402

raise SystemExit(main())
