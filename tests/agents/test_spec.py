"""The agent contract's input: spec validation, the nonce salt and its text."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cfexp.agents.spec import SCHEMA_VERSION, AgentSpec, Spec, nonce_text
from cfexp.errors import ConfigError
from cfexp.vocab import Api, Runtime, Scenario

GOOD: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "run_id": "run-1",
    "scenario": "multi_agent",
    "data_dir": "/data",
    "num_predict": 128,
    "call_timeout_s": 30,
    "cache_nonce": "3f9a0c71d2be",
    "agents": [
        {
            "name": f"agent_{i}",
            "persona": "DataCollector",
            "base_url": "http://127.0.0.1:11434",
            "api": "ollama",
            "model": "gemma3:270m",
            "options": {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8, "seed": None},
            "instance": i,
            "api_key": "sk-secret",
        }
        for i in range(2)
    ],
}


def test_good_spec_round_trips_with_its_vocabularies() -> None:
    spec = Spec.from_dict(GOOD)
    assert spec.call_timeout_s == 30.0 and len(spec.agents) == 2
    assert spec.scenario is Scenario.multi_agent and spec.agents[0].api is Api.ollama
    assert spec.cache_nonce == "3f9a0c71d2be"
    assert spec.agents[0].options == {"num_gpu": 80, "num_ctx": 512, "temperature": 0.8}
    again = Spec.from_dict(spec.to_dict())
    assert again == spec
    assert "sk-secret" not in repr(spec)


def test_spec_write_and_load(tmp_path: Path) -> None:
    spec = Spec.from_dict({**GOOD, "runtime": "uvloop"})
    path = tmp_path / "spec.json"
    spec.write(path)
    assert json.loads(path.read_text())["scenario"] == "multi_agent"
    loaded = Spec.load(path)
    assert loaded == spec and loaded.runtime is Runtime.uvloop


def _bad(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    node: Any = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schema_version", 1, "schema_version=1"),
        ("scenario", "chat", "scenario=chat"),
        ("num_predict", 0, "num_predict=0"),
        ("num_predict", True, "num_predict=True"),
        ("call_timeout_s", -1, "call_timeout_s=-1"),
        ("run_id", KeyError, "missing field <spec.run_id>"),
        ("cache_nonce", KeyError, "missing field <spec.cache_nonce>"),
        ("cache_nonce", "", "cache_nonce=''"),
        ("cache_nonce", "3f9a-0c", "cache_nonce='3f9a-0c'"),
        ("cache_nonce", "é1", "ASCII alphanumeric"),
        ("cache_nonce", "٣٤", "ASCII alphanumeric"),  # Arabic-Indic digits: isalnum(), not ASCII
        ("cache_nonce", True, "cache_nonce=True"),
        ("defeat_prompt_cache", True, "unknown field(s) in <spec>: defeat_prompt_cache"),
        ("agents", [], "<agents>"),
        ("extra", 1, "unknown field(s) in <spec>: extra"),
        ("runtime", "trio", "runtime='trio'"),
        ("runtime", "tokio", "runtime='tokio'"),
        ("agents.0.api", "grpc", "agents[0].api=grpc"),
        ("agents.0.base_url", "http://x/", "trailing slash"),
        ("agents.0.options", {"num_gpus": 1}, "agents[0].options.num_gpus"),
        ("agents.0.options", {"top_k": "40"}, "must be a number"),
        ("agents.1.name", "agent_0", "unique"),
        ("agents.0.api_key", 5, "agents[0].api_key> must be a string"),
    ],
)
def test_bad_spec_names_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Spec.from_dict(_bad(path, value))
    assert message in str(info.value)


def test_no_nonce_is_null() -> None:
    assert Spec.from_dict({**GOOD, "cache_nonce": None}).cache_nonce is None


def test_single_scenarios_take_one_agent() -> None:
    with pytest.raises(ConfigError, match="exactly one agent"):
        Spec.from_dict(_bad("scenario", "single_agent"))


def test_spec_load_reports_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Spec.load(path)


def test_agent_spec_repr_hides_the_key() -> None:
    agent = AgentSpec("a", "default", "http://x", Api.openai, "m", None, 0, api_key="sk-xyz")
    assert "sk-xyz" not in repr(agent)


def test_nonce_text_is_one_line_naming_a_hash_agent_and_call() -> None:
    """The measured form (docs/benchmarks.md), 12 hex digits of a hash of salt, agent and call
    first; the Rust agent's unit test pins the same texts."""
    assert nonce_text("3f9a0c71d2be", "agent_1", 2) == "Request 13ef6640b063-1-2.\n"
    assert nonce_text("a1b2", "agent_3", 1) == "Request ff7c5915105b-3-1.\n"
    assert nonce_text("a1b2", "solo", 0) == "Request 600504612fac-solo-0.\n"
    assert nonce_text("ab", "solo", 0) != nonce_text("ab", "agent_solo", 1)


def test_nonces_are_unique_across_salts_agents_and_calls() -> None:
    """No two calls share a nonce, so none shares a prompt's first tokens with another."""
    salts = ["3f9a0c71d2be", "3f9a0c71d2bf", "a", "A", "a1"]
    texts = [nonce_text(s, f"agent_{a}", i) for s in salts for a in (0, 1, 11) for i in (0, 1, 11)]
    assert len(set(texts)) == len(texts)
    # Only the word is the same in every nonce; the hex digits after it differ at
    # once — also between the calls and the agents of one process (one salt),
    # which a prefix cache sees one after another — but for the 1 in 16 that
    # share a first digit by chance.
    def shared(first: str, second: str) -> int:
        return next(i for i, (x, y) in enumerate(zip(first, second, strict=False)) if x != y) - len("Request ")

    one_process = [nonce_text("3f9a0c71d2be", f"agent_{a}", i) for a in range(4) for i in range(4)]
    pairs = [(x, y) for x in one_process for y in one_process if x < y]
    assert max(shared(x, y) for x, y in pairs) <= 2
    assert sum(shared(x, y) > 0 for x, y in pairs) <= len(pairs) // 4
    assert shared(nonce_text("3f9a0c71d2be", "agent_0", 0), nonce_text("3f9a0c71d2be", "agent_0", 1)) == 0
