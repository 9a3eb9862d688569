"""The admin API's JSON merge patch (RFC 7396, with its own examples) and body validation."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.errors import BadRequestError
from switchyard.protocol.admin import BudgetSpec, KeySettings, TeamSpec, merge_patch, validate

# RFC 7396, Appendix A: (target, patch, result)
RFC_EXAMPLES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_follows_rfc_7396(target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # the target is not changed in place


def test_merge_patch_without_merging_replaces_each_field_whole() -> None:
    current = {"name": "a", "limits": {"rpm": 10, "tpm": 1000}, "budget": {"amount_usd": 5, "period": "daily"}}
    patch = {"limits": {"tpm": 500}, "budget": None}
    assert merge_patch(current, patch, merge=False) == {"name": "a", "limits": {"tpm": 500}}
    assert merge_patch(current, patch) == {"name": "a", "limits": {"rpm": 10, "tpm": 500}}


def test_validate_names_the_first_bad_field() -> None:
    assert validate(BudgetSpec, {"amount_usd": 5}).period == "monthly"
    for model, body, param in [
        (TeamSpec, {"name": "ok", "limits": {"rpm": 0}}, "limits.rpm"),
        (TeamSpec, {"name": " padded"}, "name"),
        (KeySettings, {"name": "k", "colour": "red"}, "colour"),
        (BudgetSpec, {"amount_usd": float("inf")}, "amount_usd"),
    ]:
        with pytest.raises(BadRequestError) as err:
            validate(model, body)
        assert err.value.param == param, (body, err.value.message)
    with pytest.raises(BadRequestError) as not_an_object:
        validate(TeamSpec, ["name"])
    assert not_an_object.value.param is None and "JSON object" in not_an_object.value.message
