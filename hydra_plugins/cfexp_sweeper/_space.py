"""The search space: Hydra override strings -> Optuna distributions, and back.

| override                          | distribution                                        |
|-----------------------------------|-----------------------------------------------------|
| ``k=a,b,c`` / ``k=choice(a,b,c)`` | ``CategoricalDistribution([a, b, c])``              |
| ``k=range(0,19,6)``               | ``IntDistribution(0, 18, step=6)`` (Hydra's values) |
| ``k=range(0.1,1.0,0.1)``          | ``FloatDistribution(0.1, 0.9, step=0.1)``           |
| ``k=interval(0.2,1.2)``           | ``FloatDistribution(0.2, 1.2)``; on a key whose     |
|                                   | config value is an int: ``IntDistribution``         |
| ``k=tag(log,interval(1e-3,1))``   | the same with ``log=True`` (also ``range`` step 1)  |
| ``k=v`` (no sweep)                | a fixed override passed to every job                |

A range covers exactly the values Hydra's ``range`` gives (stop excluded).
Each categorical choice is stored so that it is a valid override value again:
numbers, booleans, null and plain words as themselves, dicts and lists as
override text (``{x:1}``), other strings quoted (``'a b'``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial

from hydra_plugins.cfexp_sweeper._errors import SweepError

_ABSENT = object()


@dataclass(frozen=True)
class SearchSpace:
    """Searched keys (override key -> distribution) and fixed overrides (key -> override)."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]

    def job_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one job: the fixed ones, then the trial's parameters."""
        return [*self.fixed.values(), *(f"{name}={format_value(value)}" for name, value in params.items())]

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every key, for the grid sampler (discrete spaces only)."""
        values = {name: grid_values(name, dist) for name, dist in self.distributions.items()}
        return values

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def contains(self, params: Mapping[str, Any]) -> bool:
        return set(params) == set(self.distributions) and all(
            contains(dist, params[name]) for name, dist in self.distributions.items()
        )

    def validation_rows(self) -> list[list[str]]:
        """A few jobs' overrides that together use every choice and both ends of every range.

        Composing these checks the whole space against the config schema before
        any trial runs.
        """
        candidates = {name: _candidates(dist) for name, dist in self.distributions.items()}
        rows = max((len(values) for values in candidates.values()), default=0)
        return [
            self.job_overrides({name: values[row % len(values)] for name, values in candidates.items()})
            for row in range(rows)
        ]


def parse_search_space(overrides: Sequence[str], config: DictConfig | None = None) -> SearchSpace:
    """Parse overrides (config ``params`` first, then the command line: later ones win)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise SweepError(f"cannot parse the search space: {exc}") from exc
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            distributions[key] = distribution_for(override, config)
            fixed.pop(key, None)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            distributions.pop(key, None)
    return SearchSpace(distributions, fixed)


def distribution_for(override: Override, config: DictConfig | None = None) -> BaseDistribution:
    """One sweep override -> its Optuna distribution (see the module docstring)."""
    key = override.get_key_element()
    value = override.value()
    tags: set[str] = getattr(value, "tags", set()) or set()
    log = "log" in tags
    if isinstance(value, Glob):
        raise SweepError(f"<{key}=glob(...)> cannot be searched: list the options with choice(...)")
    if isinstance(value, ChoiceSweep):
        if log:
            raise SweepError(f"<{key}>: tag(log, ...) applies to interval(...) or range(...), not to choices")
        return CategoricalDistribution([_choice(v) for v in override.sweep_iterator()])
    if isinstance(value, RangeSweep):
        numbers = [n if isinstance(n, int) else float(cast(float, n)) for n in override.sweep_iterator()]
        if not numbers:
            raise SweepError(f"<{override.input_line or key}> is an empty range")
        step = abs(value.step) if value.step else 1
        low, high = min(numbers), max(numbers)
        if all(isinstance(n, int) for n in numbers) and float(step).is_integer():
            if log and step != 1:
                raise SweepError(f"<{key}>: a log-scaled range needs step 1, got step {step}")
            return IntDistribution(int(low), int(high), log=log, step=1 if log else int(step))
        if log:
            raise SweepError(f"<{key}>: a float range cannot be log-scaled; use tag(log, interval(...))")
        # Hydra adds the step repeatedly (0.30000000000000004): snap the top to the grid.
        top = round(float(low) + (len(numbers) - 1) * float(step), 12)
        return FloatDistribution(float(low), top, step=float(step))
    if isinstance(value, IntervalSweep):
        start, end = float(cast(float, value.start)), float(cast(float, value.end))
        if start > end:
            raise SweepError(f"<{key}>: interval({start}, {end}) is empty")
        if log and start <= 0:
            raise SweepError(f"<{key}>: a log-scaled interval must start above 0, got {start}")
        if _is_int_key(config, key):
            low, high = math.ceil(start), math.floor(end)
            if low > high:
                raise SweepError(f"<{key}> takes whole numbers and interval({start}, {end}) holds none")
            return IntDistribution(low, high, log=log)
        return FloatDistribution(start, end, log=log)
    raise SweepError(f"<{override.input_line or key}>: this kind of sweep cannot be searched")


def _choice(value: Any) -> Any:
    """A choice as Optuna stores it: a plain value, or override text for anything else.

    Numbers, booleans, None and plain words stay themselves (readable in the
    dashboard); a dict or list becomes its override text, a string that would
    not read back as itself unquoted (``'a b'``, ``'c,d'``, ``'null'``) is quoted.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        try:
            again = OverridesParser.create().parse_override(f"k={value}").value()
        except HydraException:
            again = None
        return value if isinstance(again, str) and again == value else quote(value)
    return Transformer.encode(value)


def quote(text: str) -> str:
    """``text`` as a quoted Hydra override value (quotes, trailing backslashes, ``${`` escaped)."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return "'" + escaped.replace("${", "\\${") + "'"


def _is_int_key(config: DictConfig | None, key: str) -> bool:
    """Whether the composed config holds a whole number at ``key`` (an int-typed option)."""
    if config is None:
        return False
    try:
        value = OmegaConf.select(config, key.lstrip("+~"), default=_ABSENT)
    except Exception:  # an interpolation that needs Hydra's runtime: not a plain int
        return False
    return isinstance(value, int) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """A parameter value as an override value (choices are already encoded by Hydra)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    """Ask ``trial`` for a value of ``name`` through Optuna's public suggest API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one the distribution can give."""
    if isinstance(dist, CategoricalDistribution):
        return any(type(value) is type(choice) and value == choice for choice in dist.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution):
        return isinstance(value, int) and dist.low <= value <= dist.high and (value - dist.low) % dist.step == 0
    if isinstance(dist, FloatDistribution):
        if not dist.low <= value <= dist.high:
            return False
        if dist.step is None:
            return True
        steps = (value - dist.low) / dist.step
        return abs(steps - round(steps)) < 1e-9
    return False


def grid_values(name: str, dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = round((dist.high - dist.low) / dist.step) + 1
        return [round(dist.low + i * dist.step, 12) for i in range(count)]
    raise SweepError(
        f"sampler=grid needs discrete values, but <{name}> is a continuous interval: "
        "use choice(...) or range(...) for it, or another sampler"
    )


def _candidates(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        return [dist.low, dist.high] if dist.high != dist.low else [dist.low]
    raise TypeError(f"unsupported distribution {dist!r}")


def baseline_params(space: SearchSpace, config: DictConfig) -> dict[str, Any] | None:
    """The composed config's own values of the searched keys, when all lie in the space.

    A config group's value is its selected option (``hydra.runtime.choices``).
    None when a key is new (``+key``), holds a node rather than a value, or its
    value is outside the space.
    """
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    params: dict[str, Any] = {}
    for name, dist in space.distributions.items():
        if name.startswith(("+", "~")):
            return None
        if name in choices:
            value = choices[name]
        else:
            try:
                value = OmegaConf.select(config, name, default=_ABSENT)
            except Exception:
                return None
        if value is _ABSENT or OmegaConf.is_config(value) or not contains(dist, value):
            return None
        params[name] = value
    return params
