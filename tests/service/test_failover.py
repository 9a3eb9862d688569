"""The order deployments are tried in, and when the next one is tried."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from switchyard.core.keys import Principal
from switchyard.errors import (
    BadRequestError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from switchyard.service.failover import Plan, order
from switchyard.service.routing import RoutingTable
from switchyard.settings import Settings

PROVIDERS = {name: {"type": "openai", "base_url": f"http://{name}:1/v1"} for name in ("a", "b", "c")}


def table(*models: dict[str, object]) -> RoutingTable:
    return RoutingTable(Settings.model_validate({"providers": PROVIDERS, "models": list(models)}))


def test_weighted_order_follows_the_weights() -> None:
    route = table({"alias": "m", "deployments": [{"provider": "a", "weight": 8}, {"provider": "b", "weight": 2}]}
                  ).route("m")
    rng = random.Random(7)
    firsts = Counter(order(route, {}, rng)[0].deployment for _ in range(5000))
    assert 0.77 < firsts["a/m"] / 5000 < 0.83
    assert all(len(order(route, {}, rng)) == 2 for _ in range(10))  # every deployment, once


def test_least_busy_and_ordered() -> None:
    t = table({"alias": "lb", "routing": "least_busy", "deployments": [{"provider": "a"}, {"provider": "b"}]},
              {"alias": "ord", "routing": "ordered", "deployments": [{"provider": "c"}, {"provider": "a"}]})
    lb = t.route("lb")
    busy = {lb.deployments[0].breaker: 3}
    assert [d.deployment for d in order(lb, busy, random.Random(1))] == ["b/lb", "a/lb"]
    assert [d.deployment for d in order(t.route("ord"), {}, random.Random(1))] == ["c/ord", "a/ord"]


def test_same_upstream_twice_gets_distinct_names() -> None:
    route = table({"alias": "m", "deployments": [{"provider": "a", "model": "x"}, {"provider": "a", "model": "x"}]}
                  ).route("m")
    assert [d.deployment for d in route.deployments] == ["a/x", "a/x#1"]


def plan_for(t: RoutingTable, alias: str, principal: Principal | None = None) -> Plan:
    return Plan(t.route(alias), principal or Principal(key_id="k", name="k", is_admin=True), t.route,
                lambda r: list(r.deployments))


def test_plan_tries_deployments_then_fallbacks_once() -> None:
    t = table({"alias": "m", "routing": "ordered", "deployments": [{"provider": "a"}, {"provider": "b"}],
               "fallbacks": ["f1", "f2"]},
              {"alias": "f1", "provider": "c", "fallbacks": ["m"]},
              {"alias": "f2", "provider": "a", "model": "other"})
    plan = plan_for(t, "m")
    tried = []
    for route, target in plan:
        tried.append((route.alias, target.deployment))
        assert plan.failed(route, UpstreamConnectionError("refused"))
    assert tried == [("m", "a/m"), ("m", "b/m"), ("f1", "c"), ("f2", "a")]


def test_plan_skips_fallbacks_the_key_may_not_use() -> None:
    t = table({"alias": "m", "provider": "a", "fallbacks": ["secret", "open"]},
              {"alias": "secret", "provider": "b"}, {"alias": "open", "provider": "c"})
    scoped = Principal(key_id="k", name="k", is_admin=False, allowed_models=("m", "open"))
    plan = plan_for(t, "m", scoped)
    tried = []
    for route, _ in plan:
        tried.append(route.alias)
        plan.failed(route, UpstreamTimeoutError("slow"))
    assert tried == ["m", "open"]


@pytest.mark.parametrize(
    ("error", "goes_on"),
    [
        (UpstreamConnectionError("refused"), True),
        (UpstreamTimeoutError("slow"), True),
        (UpstreamRateLimitError("429"), True),
        (ServiceUnavailableError("overloaded"), True),
        (BadRequestError("bad", param="x"), False),
        (BadRequestError("long", param="messages", code="context_length_exceeded"), False),
    ],
)
def test_which_errors_try_the_next_deployment(error: Exception, goes_on: bool) -> None:
    t = table({"alias": "m", "provider": "a"})
    plan = plan_for(t, "m")
    route, _ = next(iter(plan))
    assert plan.failed(route, error) is goes_on  # type: ignore[arg-type]


def test_context_errors_switch_to_the_context_fallbacks() -> None:
    t = table({"alias": "m", "routing": "ordered", "deployments": [{"provider": "a"}, {"provider": "b"}],
               "fallbacks": ["f"], "context_window_fallbacks": ["big"]},
              {"alias": "f", "provider": "c"}, {"alias": "big", "provider": "c", "model": "big"})
    plan = plan_for(t, "m")
    tried = []
    for route, target in plan:
        tried.append(target.deployment)
        code = "context_length_exceeded" if route.alias == "m" else None
        plan.failed(route, BadRequestError("too long", param="messages", code=code))
    assert tried == ["a/m", "c"]  # b/m and the ordinary fallback f are not tried
    assert t.route("big").primary.upstream_model == "big"
