"""Composing a sweep's jobs without composing the same defaults again for each.

Hydra composes every job of a sweep from scratch, twice (once to check the
whole batch before the first job, once when the job is launched): it reads
and merges every YAML file of the defaults list, ~0.1-0.3 s a job on 2 cores.
Yet the jobs of a grid sweep differ only in their overrides, and an override
of a plain value (``repetition=3``, ``temperature=0.6``), unlike one that
picks a config group (``backend=sim``), never changes which files are merged:
Hydra applies those overrides to the merged config afterwards
(``ConfigLoaderImpl._load_configuration_impl``).

:class:`ReusingConfigLoader` therefore composes the defaults once per distinct
set of group overrides and, for each job, applies that job's value overrides
to a copy, exactly as Hydra does, in the same order, with the same checks and
errors. The result equals Hydra's own composition
(``tests/sweeper/test_compose_reuse.py`` compares them), in a small fraction
of the time. The checked configs of the first jobs are kept for the launcher,
which then does not compose them again.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any, cast

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.defaults_list import create_defaults_list
from hydra.conf import ConfigSourceInfo
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# Checked job configs kept for the launcher: enough to start a sweep without composing
# again, few enough that a sweep of thousands of jobs does not hold them all in memory.
KEEP_CHECKED = 64


class _Base:
    """The merged defaults of one set of group overrides, before any value override."""

    def __init__(self, config: DictConfig, known_choices: dict[str, Any], sources: list[Any]) -> None:
        self.config = config
        self.known_choices = known_choices
        self.sources = sources


class ReusingConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, reusing one composition of the defaults for every job that shares them."""

    _bases: dict[tuple[str | None, tuple[str, ...]], _Base]
    _checked: dict[tuple[str, ...], DictConfig]

    @classmethod
    def adopt(cls, loader: Any) -> None:
        """Make Hydra's own loader instance this one (the launcher holds the same object)."""
        if type(loader) is ConfigLoaderImpl:
            loader.__class__ = cls
            adopted = cast(ReusingConfigLoader, loader)
            adopted._bases, adopted._checked = {}, {}

    def __getstate__(self) -> dict[str, Any]:
        # Launchers that run jobs elsewhere pickle the loader: the caches stay here.
        state = dict(self.__dict__)
        state["_bases"], state["_checked"] = {}, {}
        state.pop("_groups", None)
        return state

    def check_batch(self, master_config: DictConfig, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job of ``batch`` (Hydra's check before the first job); keep the first few."""
        for overrides in batch:
            config = self.load_sweep_config(master_config, list(overrides))
            if len(self._checked) < KEEP_CHECKED:
                self._checked[tuple(overrides)] = config

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        checked = self._checked.pop(tuple(sweep_overrides), None)
        if checked is not None:
            return checked
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
        assert isinstance(hydra_overrides, list)
        try:
            config = self._compose(master_config.hydra.job.config_name, hydra_overrides + sweep_overrides)
        except OmegaConfBaseException as exc:
            raise ConfigCompositionException().with_traceback(exc.__traceback__) from exc
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def _compose(self, config_name: str | None, overrides: list[str]) -> DictConfig:
        """What ``ConfigLoaderImpl._load_configuration_impl`` makes in RUN mode, from a shared base."""
        from hydra import __version__, version

        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        self.validate_sweep_overrides_legal(overrides=parsed, run_mode=RunMode.RUN, from_shell=True)
        group_lines = tuple(o.input_line or "" for o in parsed if not self._is_value_override(o))
        key = (config_name, group_lines)
        if key not in self._bases:
            self._bases[key] = self._base(config_name, parsed)
        base = self._bases[key]
        cfg = copy.deepcopy(base.config)
        # From here on, Hydra's own steps (config_loader_impl.py), on the copy.
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if self._is_value_override(o)], cfg)
        app_overrides = []
        for override in parsed:
            if override.is_hydra_override():
                cfg.hydra.overrides.hydra.append(override.input_line)
            else:
                cfg.hydra.overrides.task.append(override.input_line)
                app_overrides.append(override)
        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(base.known_choices)
            for env_key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[env_key] = os.environ[env_key]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = copy.deepcopy(base.sources)
        if "name" not in cfg.hydra.job:
            from hydra.core.utils import JobRuntime

            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
        )
        cfg.hydra.job.config_name = config_name
        return cfg

    def _is_value_override(self, override: Override) -> bool:
        """An override Hydra applies after merging the defaults (``Overrides.config_overrides``),
        except ``hydra.searchpath``, which changes where the defaults are read from."""
        if override.get_key_element() == "hydra.searchpath":
            return False
        if isinstance(override.value(), dict):
            return True
        return not self._group_repo().group_exists(override.key_or_group)

    def _group_repo(self) -> CachingConfigRepository:
        repo: CachingConfigRepository | None = getattr(self, "_groups", None)
        if repo is None:
            repo = CachingConfigRepository(self.repository)
            self._groups = repo
        return repo

    def _base(self, config_name: str | None, parsed: list[Override]) -> _Base:
        """Hydra's composition up to the value overrides (config_loader_impl.py, the same steps)."""
        self.ensure_main_config_source_available()
        groups = [o for o in parsed if not self._is_value_override(o)]
        repo = CachingConfigRepository(self.repository)
        self._process_config_searchpath(config_name, groups, repo)
        defaults_list = create_defaults_list(
            repo=repo, config_name=config_name, overrides_list=groups, prepend_hydra=True, skip_missing=False,
        )
        cfg = self._compose_config_from_defaults_list(defaults=defaults_list.defaults, repo=repo)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        sources = [ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider) for x in repo.get_sources()]
        return _Base(cfg, dict(defaults_list.overrides.known_choices), sources)

