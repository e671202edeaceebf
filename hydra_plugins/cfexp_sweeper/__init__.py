"""cfexp's Optuna sweeper for Hydra: ``hydra/sweeper=cfexp_optuna`` (docs/optuna.md).

``hydra_plugins`` itself is a namespace package (no ``__init__.py``), shared
with every other Hydra plugin installed. Hydra's discovery imports this
package's public modules: ``config`` (registers the config) and
``cfexp_sweeper`` (the sweeper class, a thin facade); the Optuna logic lives
in private modules (``_impl`` …), imported only when a sweep starts.
"""
