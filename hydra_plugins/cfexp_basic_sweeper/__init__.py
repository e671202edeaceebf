"""cfexp's grid sweeper for Hydra: ``hydra/sweeper=cfexp_basic`` (the default in conf/config.yaml).

Hydra's BasicSweeper (the Cartesian product of ``-m`` overrides), with the
jobs run in a chosen, seeded order (``hydra.sweeper.order``: grid, shuffled,
blocked) and the sweep announced before its first job (docs/methodology.md,
"Run order"). Hydra's discovery imports this package's public modules:
``config`` (registers the config) and ``cfexp_basic_sweeper`` (the class, a
thin facade); the ordering, the announcement and the tracking live in private
modules, imported only when a sweep starts.
"""
