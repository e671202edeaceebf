"""cfexp.redact: which keys are secrets, and how they are masked."""

from __future__ import annotations

import pytest

from cfexp.redact import is_secret_key, redact_override, redact_overrides, redact_tree, scrub, secret_values


@pytest.mark.parametrize("key", ["backend.api_key", "+backend.api_key", "hub.token", "db.password", "api_key"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["num_predict", "max_tokens", "backend.url", "output_tokens"])
def test_other_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_overrides_are_masked_but_interpolations_and_nulls_kept() -> None:
    assert redact_override("backend.api_key=sk-1") == "backend.api_key=***"
    assert redact_override("backend.api_key=${oc.env:KEY}") == "backend.api_key=${oc.env:KEY}"
    assert redact_override("backend.api_key=null") == "backend.api_key=null"
    assert redact_overrides(["ctx=512", "x.token=t0k"]) == ["ctx=512", "x.token=***"]
    assert secret_values(["ctx=512", "x.token=t0k", "y.password=${oc.env:P}"]) == ["t0k"]


def test_a_config_tree_is_masked_at_any_depth() -> None:
    tree = {"backend": {"api_key": "sk-1", "url": "u"}, "a": [{"token": "t"}, "b.password=p"], "k": None}
    assert redact_tree(tree) == {"backend": {"api_key": "***", "url": "u"}, "a": [{"token": "***"}, "b.password=***"], "k": None}


def test_scrub_masks_every_occurrence() -> None:
    assert scrub("key sk-1 and sk-1 again", ["sk-1"]) == "key *** and *** again"
