"""GET /admin/usage: usage totals from the rollups (hourly, and daily for whole days). Admin keys only.

Query parameters (all optional): ``key`` (a key id, or a key's name), ``model`` (an alias),
``since`` and ``until`` (ISO 8601, Unix seconds, or an age: ``30m``, ``24h``, ``7d``, ``2w``),
``group_by`` (``hour``, ``day`` (default), ``key``, ``team``, ``model`` or ``session``, or
several: ``day,key``). Rollups are hourly, so ``since``/``until`` select the hours that overlap
``[since, until)``. ``team`` is the key's team when each request was made (a key that moves team
leaves its past usage with the old one). ``session`` groups by the client's agent session
(Claude Code's ``X-Claude-Code-Session-Id``, Codex's ``session-id`` header) and totals the raw
usage rows still kept (the rollups do not keep sessions).

Answer: ``{"object": "list", "group_by": "day", "data": [{"period": "2025-03-01", "requests",
"prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens",
"cost_usd", "errors", "estimated", "error_rate", "p50_ms", "p95_ms"}, ...], "totals": {...}}``.
``prompt_tokens`` counts every input token; cache reads and writes are parts of it.
``error_rate`` is errors / requests; ``p50_ms`` and ``p95_ms`` are the latency percentiles of the
requests that succeeded, from the rollups' latency histogram (within 26 % from 1 ms
on, see ``core.latency``; null when none did, or for hours before the histogram was kept). Rows grouped
by key carry ``key_id`` (null: requests made without a key) and ``key_name``; by team,
``team_id`` (null: keys in no team) and ``team_name``; by model, ``model``; by session,
``session_id`` (null: requests that named none). Periods are UTC: days as ``YYYY-MM-DD``, hours
as ISO 8601 times. ``latency=false`` leaves ``p50_ms`` and ``p95_ms`` out (a chart that needs
none: the histogram is most of a query's work).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.latency import BUCKETS, percentile
from switchyard.core.ports import UsageStore
from switchyard.core.usage import parse_group_by
from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.http.auth import require_admin
from switchyard.http.query import query_time
from switchyard.http.state import services

__all__ = ["latency_fields", "usage", "usage_json", "usage_report"]

_COUNTS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens",
           "cache_write_tokens", "errors", "estimated")


def latency_fields(requests: int, errors: int, counts: Any) -> dict[str, Any]:
    """``error_rate``, and ``p50_ms`` and ``p95_ms`` (rounded to 0.1 ms) when there are ``counts``."""
    out: dict[str, Any] = {"error_rate": round(errors / requests, 6) if requests else None}
    if counts is not None:
        p50, p95 = percentile(counts, 0.5), percentile(counts, 0.95)
        out.update(p50_ms=None if p50 is None else round(p50, 1), p95_ms=None if p95 is None else round(p95, 1))
    return out


def usage_json(rows: list[dict[str, object]], dims: tuple[str, ...], names: dict[str, str],
               team_names: dict[str, str] | None = None, *, with_latency: bool = True) -> dict[str, Any]:
    """The response body for ``rows`` from ``UsageStore.query`` (totals are summed exactly, and
    their percentiles come from the merged histograms)."""
    data = []
    totals = dict.fromkeys(_COUNTS, 0)
    latency = [0] * BUCKETS
    nanos = 0
    for row in rows:
        item: dict[str, Any] = {}
        period = row.get("period")
        if isinstance(period, datetime):
            item["period"] = period.date().isoformat() if "day" in dims else period.isoformat()
        if "key" in dims:
            key_id = row["key_id"]
            item["key_id"] = key_id
            item["key_name"] = names.get(str(key_id)) if key_id is not None else None
        if "team" in dims:
            team_id = row["team_id"]
            item["team_id"] = team_id
            item["team_name"] = (team_names or {}).get(str(team_id)) if team_id is not None else None
        if "model" in dims:
            item["model"] = row["model"]
        if "session" in dims:
            item["session_id"] = row["session_id"]
        for count in _COUNTS:
            value = int(str(row[count]))
            item[count] = value
            totals[count] += value
        nanos += int(str(row["cost_nanousd"]))
        item["cost_usd"] = row["cost_usd"]
        counts: Any = row.get("latency_counts")
        if counts is not None:
            latency = [a + b for a, b in zip(latency, counts, strict=True)]
        item.update(latency_fields(item["requests"], item["errors"], counts))
        data.append(item)
    whole = latency_fields(totals["requests"], totals["errors"], latency if with_latency else None)
    return {"object": "list", "group_by": ",".join(dims), "data": data,
            "totals": {**totals, "cost_usd": nanos / 1e9, **whole}}


async def usage(request: Request) -> Response:
    await require_admin(request)
    return await usage_report(request)


async def usage_report(request: Request, only_key: str | None = None) -> Response:
    """The report for this request's query; ``only_key`` (a key id) pins it to one key, whatever
    the query says (the console's own-usage view for a key that is not an admin)."""
    svc = services(request)
    store: UsageStore | None = svc.usage
    if store is None:
        raise ServiceUnavailableError("Usage reports are not available on this server.")
    params = request.query_params
    try:
        dims = parse_group_by(params.get("group_by") or "day")
    except ValueError as exc:
        raise BadRequestError(f"Invalid group_by: {exc}", param="group_by") from None
    now = datetime.now(UTC)
    since = query_time(request, "since", now)
    until = query_time(request, "until", now)
    if since is not None and until is not None and until <= since:
        raise BadRequestError("until must be later than since", param="until")
    keys = await svc.keys.list(include_revoked=True)
    names = {k.id: k.name for k in keys}
    key_id = only_key or params.get("key") or None
    if only_key is None and key_id is not None and key_id not in names:
        by_name = [k.id for k in keys if k.name == key_id]
        if len(by_name) == 1:  # a key's name, when it names exactly one key
            key_id = by_name[0]
    model = params.get("model") or None
    latency = (params.get("latency") or "true").lower()
    if latency not in ("true", "false", "1", "0"):
        raise BadRequestError("latency must be true or false", param="latency")
    with_latency = latency in ("true", "1")
    rows = await store.query(key_id=key_id, model=model, since=since, until=until, group_by=dims,
                             latency=with_latency)
    if only_key is not None:
        names = {only_key: names[only_key]} if only_key in names else {}
    team_names: dict[str, str] = {}
    for row in rows if "team" in dims else ():
        team = svc.keys.cached_team(str(row["team_id"])) if row["team_id"] is not None else None
        if team is not None:
            team_names[team.id] = team.name
    body = usage_json(rows, dims, names, team_names, with_latency=with_latency)
    return Response(orjson.dumps(body), media_type="application/json")
