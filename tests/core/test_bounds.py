"""The door's pure check: what no model can honour, named by field (core/bounds.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from switchyard.core.bounds import Bounds, check_bounds, non_finite_path
from switchyard.core.capabilities import defaults_for
from switchyard.errors import BadRequestError

OPENAI = defaults_for("openai")
HELLO = [{"role": "user", "content": "hi"}]
SMALL = Bounds(max_tokens=100, max_tools=2, max_messages=3)


def refusal(body: dict[str, Any], caps: Any = OPENAI, bounds: Bounds = SMALL) -> tuple[str | None, str | None]:
    with pytest.raises(BadRequestError) as info:
        check_bounds(body, caps, bounds)
    assert info.value.status_code == 400
    return info.value.param, info.value.code


@pytest.mark.parametrize(("body", "expected"), [
    ({"max_tokens": 101}, ("max_tokens", "invalid_value")),
    ({"max_completion_tokens": 101.0}, ("max_completion_tokens", "invalid_value")),
    ({"max_output_tokens": 10**12}, ("max_output_tokens", "invalid_value")),
    ({"stop": ["a", "b", "c", "d", "e"]}, ("stop", "invalid_value")),
    ({"tools": [{}] * 3}, ("tools", "invalid_value")),
    ({"functions": [{}] * 3}, ("functions", "invalid_value")),
    ({"messages": HELLO * 4}, ("messages", "invalid_value")),
])
def test_each_bound_is_refused_by_name(body: dict[str, Any], expected: tuple[str, str]) -> None:
    assert refusal({"model": "m", **body}) == expected


def test_a_known_context_length_replaces_the_ceiling() -> None:
    caps = OPENAI.merged({"context_length": 1000})
    check_bounds({"max_tokens": 1000}, caps, SMALL)  # the ceiling (100) is for unknown contexts only
    assert refusal({"max_tokens": 1001}, caps) == ("max_tokens", "context_length_exceeded")


def test_what_is_within_the_bounds_passes_untouched() -> None:
    body = {"model": "m", "messages": HELLO * 3, "tools": [{}] * 2, "stop": ["a", "b", "c", "d"],
            "max_tokens": 100, "max_completion_tokens": True, "stop_extra": "x"}
    before = copy.deepcopy(body)
    check_bounds(body, OPENAI, SMALL)
    check_bounds({"stop": "one string", "max_tokens": "many"}, OPENAI, SMALL)  # the wire validation's job
    assert body == before
    check_bounds({"stop": list("abcdef")}, OPENAI.merged({"max_stop": 6}), SMALL)


def test_non_finite_numbers_are_found_with_their_path() -> None:
    inf, nan = float("inf"), float("nan")
    assert non_finite_path({"temperature": inf}) == "temperature"
    assert non_finite_path({"messages": [{"content": "x"}, {"x": [1.5, nan]}]}) == "messages[1].x[1]"
    assert non_finite_path([-inf]) == "[0]"
    assert non_finite_path(inf) == "body"
    assert non_finite_path({"a": [1, 2.5, "NaN", None, {"b": 1e308}]}) is None
