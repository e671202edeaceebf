"""Override strings -> Optuna search spaces, and the pieces around them (no jobs run)."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.cfexp_sweeper._errors import SweepError
from hydra_plugins.cfexp_sweeper._impl import quote
from hydra_plugins.cfexp_sweeper._objectives import (
    Constraint,
    MissingMetricError,
    Objective,
    evaluate,
    parse_constraint,
)
from hydra_plugins.cfexp_sweeper._space import (
    baseline_params,
    contains,
    distribution_for,
    format_value,
    parse_search_space,
)
from hydra_plugins.cfexp_sweeper._study import derive_study_name, describe_storage

# A composed config's int- and float-typed keys (intervals on int keys give ints).
CONFIG = OmegaConf.create({"gpu_layers": 80, "ctx": 512, "temperature": 0.8, "backend": {"name": "sim"}})


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ctx=512,1024,2048", CategoricalDistribution([512, 1024, 2048])),
        ("ctx=choice(512,1024)", CategoricalDistribution([512, 1024])),
        ("runtime=asyncio,uvloop", CategoricalDistribution(["asyncio", "uvloop"])),
        ("x=choice(1,2.5,a,true)", CategoricalDistribution([1, 2.5, "a", True])),
        ("+backend.settings.faults={fail_status:500},{}", CategoricalDistribution(["{fail_status:500}", "{}"])),
        ("gpu_layers=range(0,19,6)", IntDistribution(0, 18, step=6)),
        ("gpu_layers=range(0,20,6)", IntDistribution(0, 18, step=6)),  # stop excluded, as in Hydra
        ("gpu_layers=range(18,-1,-6)", IntDistribution(0, 18, step=6)),
        ("gpu_layers=shuffle(range(0,4))", IntDistribution(0, 3)),
        ("temperature=range(0.1,1.0,0.1)", FloatDistribution(0.1, 0.9, step=0.1)),
        ("gpu_layers=tag(log,range(1,33))", IntDistribution(1, 32, log=True)),
        ("temperature=interval(0.2,1.2)", FloatDistribution(0.2, 1.2)),
        ("temperature=tag(log,interval(0.01,1))", FloatDistribution(0.01, 1.0, log=True)),
        ("gpu_layers=interval(0,18)", IntDistribution(0, 18)),  # gpu_layers is an int in the config
        ("ctx=tag(log,interval(256,4096))", IntDistribution(256, 4096, log=True)),
        ("gpu_layers=interval(0.5,3.5)", IntDistribution(1, 3)),
        ("+new_key=interval(1,4)", FloatDistribution(1.0, 4.0)),  # unknown type: a float
    ],
)
def test_override_to_distribution(override: str, expected: object) -> None:
    parsed = OverridesParser.create().parse_override(override)
    assert distribution_for(parsed, CONFIG) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runtime=glob(*)", "list the options with choice"),
        ("ctx=tag(log,choice(512,1024))", "applies to interval"),
        ("gpu_layers=tag(log,range(1,10,2))", "needs step 1"),
        ("temperature=tag(log,range(0.1,1.0,0.1))", "cannot be log-scaled"),
        ("temperature=tag(log,interval(0,1))", "must start above 0"),
        ("gpu_layers=interval(1.2,1.8)", "holds none"),
        ("ctx=range(5,5)", "empty range"),
    ],
)
def test_unsearchable_overrides_are_refused(override: str, message: str) -> None:
    parsed = OverridesParser.create().parse_override(override)
    with pytest.raises(SweepError, match=message):
        distribution_for(parsed, CONFIG)


def test_fixed_overrides_pass_through_and_later_ones_win() -> None:
    space = parse_search_space(
        ["ctx=choice(512,1024)", "backend=sim", "temperature=0.5", "temperature=interval(0.2,1.2)", "ctx=2048"],
        CONFIG,
    )
    assert space.distributions == {"temperature": FloatDistribution(0.2, 1.2)}
    assert list(space.fixed.values()) == ["backend=sim", "ctx=2048"]
    assert space.job_overrides({"temperature": 0.7}) == ["backend=sim", "ctx=2048", "temperature=0.7"]


@pytest.mark.parametrize(
    "override",
    [
        "x=choice(1,2.5,abc,true,false)",
        "x=500,null",
        "x=choice('a b','c,d','null','1',\"it's\")",
        "+x={a:1,b:[1,2]},{}",
        "x=[1,2],[3]",
    ],
)
def test_every_choice_is_a_valid_override_value_again(override: str) -> None:
    """Round trip: choice -> job override -> the value Hydra would have given."""
    parser = OverridesParser.create()
    parsed = parser.parse_override(override)
    dist = distribution_for(parsed, None)
    assert isinstance(dist, CategoricalDistribution)
    key = parsed.get_key_element()
    for choice, original in zip(dist.choices, parsed.sweep_iterator(), strict=True):
        again = parser.parse_override(f"{key}={format_value(choice)}")
        assert again.value() == original


def test_grid_values_and_size() -> None:
    space = parse_search_space(["gpu_layers=range(0,19,6)", "ctx=512,1024", "temperature=range(0.2,0.7,0.25)"], CONFIG)
    assert space.grid() == {"gpu_layers": [0, 6, 12, 18], "ctx": [512, 1024], "temperature": [0.2, 0.45]}
    assert space.grid_size() == 16
    with pytest.raises(SweepError, match="continuous interval"):
        parse_search_space(["temperature=interval(0.2,1.2)"], CONFIG).grid()


def test_validation_rows_use_every_choice_and_both_ends() -> None:
    space = parse_search_space(["backend=sim", "ctx=512,1024,2048", "temperature=interval(0.2,1.2)"], CONFIG)
    rows = space.validation_rows()
    used = {o for row in rows for o in row}
    assert {"ctx=512", "ctx=1024", "ctx=2048", "temperature=0.2", "temperature=1.2"} <= used
    assert all(row[0] == "backend=sim" for row in rows)


def test_the_baseline_is_the_configs_own_values_when_they_are_in_the_space() -> None:
    config = OmegaConf.create(
        {**OmegaConf.to_container(CONFIG), "hydra": {"runtime": {"choices": {"runtime": "asyncio"}}}}  # type: ignore[dict-item]
    )
    space = parse_search_space(["gpu_layers=60,80", "temperature=interval(0.2,1.2)", "runtime=asyncio,uvloop"], config)
    assert baseline_params(space, config) == {"gpu_layers": 80, "temperature": 0.8, "runtime": "asyncio"}
    assert baseline_params(parse_search_space(["gpu_layers=0,6"], config), config) is None
    assert baseline_params(parse_search_space(["+extra=1,2"], config), config) is None


def test_contains() -> None:
    assert contains(IntDistribution(0, 18, step=6), 12) and not contains(IntDistribution(0, 18, step=6), 13)
    assert contains(FloatDistribution(0.1, 0.9, step=0.1), 0.3) and not contains(FloatDistribution(0.1, 0.9, step=0.1), 0.35)
    assert not contains(CategoricalDistribution([1, 2]), True)  # True == 1, but it is not the choice 1


@pytest.mark.parametrize("name", ["plain-name", "a b", "it's", "ends\\", "${not_an_interpolation}", "a,b=c"])
def test_study_names_survive_the_override_grammar(name: str) -> None:
    parsed = OverridesParser.create().parse_override(f"trial.study={quote(name)}")
    assert OmegaConf.create({"v": parsed.value()}).v == name


def test_the_derived_study_name_is_stable_and_ignores_where_results_go() -> None:
    objectives = [Objective("throughput_tok_s", "maximize")]
    one = parse_search_space(["backend=sim", "ctx=512,1024", "paths.root_dir=/tmp/a"], CONFIG)
    two = parse_search_space(["backend=sim", "ctx=choice(512,1024)", "paths.root_dir=/tmp/b"], CONFIG)
    other = parse_search_space(["backend=llamacpp", "ctx=512,1024"], CONFIG)
    name = derive_study_name(one, objectives, [])
    assert name.startswith("cfexp-ctx-") and name == derive_study_name(two, objectives, [])
    assert name != derive_study_name(other, objectives, [])
    assert name != derive_study_name(one, [Objective("ttft_ms", "minimize")], [])
    assert name != derive_study_name(one, objectives, [parse_constraint("agent_peak_rss_mb <= 60")])


@pytest.mark.parametrize(
    ("text", "constraint", "value_at_50"),
    [
        ("agent_peak_rss_mb <= 60", Constraint("agent_peak_rss_mb", "<=", 60.0), -10.0),
        ("ttft_ms<40", Constraint("ttft_ms", "<=", 40.0), 10.0),
        ("throughput_tok_s >= 1e2", Constraint("throughput_tok_s", ">=", 100.0), 50.0),
    ],
)
def test_constraints(text: str, constraint: Constraint, value_at_50: float) -> None:
    assert parse_constraint(text) == constraint
    assert constraint.value(50.0) == value_at_50  # <= 0: satisfied


def test_a_constraint_that_cannot_be_read_is_refused() -> None:
    with pytest.raises(SweepError, match="metric <= number"):
        parse_constraint("rss == 60")


def test_results_from_metrics() -> None:
    objectives = [Objective("throughput_tok_s", "maximize"), Objective("ttft_ms", "minimize")]
    ok = evaluate({"throughput_tok_s": 50.0, "ttft_ms": 12, "agent_peak_rss_mb": 70.0}, objectives,
                  [parse_constraint("agent_peak_rss_mb <= 60")])
    assert ok.values == [50.0, 12.0] and ok.constraints == [10.0] and not ok.failed
    assert evaluate(None, objectives, []).failed
    assert evaluate({"throughput_tok_s": float("nan"), "ttft_ms": 1.0}, objectives, []).failed
    with pytest.raises(MissingMetricError, match="ttft_ms.*It produces: e2e_ms, throughput_tok_s"):
        evaluate({"throughput_tok_s": 1.0, "e2e_ms": 2.0}, objectives, [])
    with pytest.raises(SweepError, match="needs a dict of metrics"):
        evaluate(3.0, objectives, [])


def test_passwords_never_show() -> None:
    assert describe_storage("postgresql://user:secret@db:5432/optuna") == "postgresql://user:***@db:5432/optuna"
    assert describe_storage("journal:/tmp/x.log") == "journal:/tmp/x.log"
