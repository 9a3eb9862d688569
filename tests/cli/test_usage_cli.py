"""``switchyard usage``: reports from the hourly rollups, as a table and as CSV, run as a subprocess."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from switchyard.core.latency import RESOLUTION
from switchyard.core.usage import UsageRecord
from switchyard.runtime import open_runtime
from switchyard.settings import Settings
from switchyard.store.usage import format_usd, nanousd
from tests.cli.support import run_cli

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
H0 = NOW.replace(minute=0) - timedelta(hours=3)  # four hours of usage: H0 .. H0+3h


def seed(data_dir: Path) -> tuple[dict[str, str], list[UsageRecord]]:
    """Two keys and some usage, written through the store as the server writes it."""
    settings = Settings.model_validate({"data_dir": data_dir})

    async def body() -> tuple[dict[str, str], list[UsageRecord]]:
        rt = await open_runtime(settings)
        try:
            ids = {name: (await rt.keys.create(name)).key.id for name in ("alice", "bob")}
            records = []
            plan = [("alice", "chat", 0), ("alice", "chat", 0), ("alice", "big", 1), ("bob", "chat", 1),
                    ("bob", "big", 3), (None, "chat", 3), ("alice", "chat", 3)]
            for i, (who, model, hour) in enumerate(plan):
                records.append(UsageRecord(
                    H0 + timedelta(hours=hour, minutes=5 * i), f"r{i}", ids[who] if who else None, model, "fake",
                    "/v1/chat/completions", 100 * (i + 1), 10 * (i + 1), 5.0, 500 if i == 4 else 200, i == 6,
                    i == 6, cost_usd=0.000_123_457 * (i + 1) if model == "big" else 1e-7 * (i + 1),
                    cache_read_tokens=50 * i, cache_write_tokens=5 * (i % 2),
                    session_id={0: "sess-a", 1: "sess-a", 3: "sess-b"}.get(i)))
            await rt.usage.write(records[:3])
            await rt.usage.write(records[3:])
            return ids, records
        finally:
            await rt.aclose()

    return asyncio.run(body())


def _csv(stdout: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(stdout)))


def test_usage_table_and_csv(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ids, records = seed(data_dir)
    store = ("--data-dir", data_dir)

    # default: per key and model, CSV with every digit of the cost
    out = run_cli("usage", "--format", "csv", *store, cwd=tmp_path)
    assert out.returncode == 0, out
    rows = _csv(out.stdout)
    assert list(rows[0]) == ["key", "model", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
                             "cost_usd", "errors", "estimated", "cache_read_tokens", "cache_write_tokens",
                             "error_rate", "p50_ms", "p95_ms"]
    by = {(r["key"], r["model"]): r for r in rows}
    assert rows[0]["key"] == "(static/anonymous)"  # keyless first, then by key id and model
    assert set(by) == {("(static/anonymous)", "chat"), ("alice", "big"), ("alice", "chat"), ("bob", "big"),
                       ("bob", "chat")}
    alice_chat = [r for r in records if r.key_id == ids["alice"] and r.model == "chat"]
    alice_rates = {c: by[("alice", "chat")].pop(c) for c in ("error_rate", "p50_ms", "p95_ms")}
    assert alice_rates["error_rate"] == "0.000000"
    # every request took 5 ms: the percentiles are within the histogram's resolution of it
    assert all(5.0 / RESOLUTION <= float(alice_rates[c]) <= 5.0 for c in ("p50_ms", "p95_ms")), alice_rates
    assert by[("bob", "big")]["error_rate"] == "1.000000" and by[("bob", "big")]["p50_ms"] == ""
    assert by[("alice", "chat")] == {
        "key": "alice", "model": "chat", "requests": "3",
        "prompt_tokens": str(sum(r.prompt_tokens for r in alice_chat)),
        "completion_tokens": str(sum(r.completion_tokens for r in alice_chat)),
        "total_tokens": str(sum(r.prompt_tokens + r.completion_tokens for r in alice_chat)),
        "cost_usd": format_usd(sum(nanousd(r.cost_usd) for r in alice_chat)),
        "errors": "0", "estimated": "1",
        "cache_read_tokens": str(sum(r.cache_read_tokens for r in alice_chat)),
        "cache_write_tokens": str(sum(r.cache_write_tokens for r in alice_chat)),
    }
    assert by[("bob", "big")]["errors"] == "1" and by[("bob", "big")]["cost_usd"] == "0.000617285"
    assert sum(int(r["requests"]) for r in rows) == len(records)

    # the table: the same numbers, cost to the micro-dollar, and a totals row
    table = run_cli("usage", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["KEY", "MODEL", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_TOKENS",
                                "COST_USD", "ERRORS", "ESTIMATED", "CACHE_READ_TOKENS", "CACHE_WRITE_TOKENS",
                                "ERROR_RATE", "P50_MS", "P95_MS"], table
    body = {(line.split()[0], line.split()[1]): line.split()[2:-3] for line in lines[1:-2]}
    rates = {(line.split()[0], line.split()[1]): line.split()[-3:] for line in lines[1:-2]}
    assert rates[("bob", "big")] == ["100.0%", "-", "-"] and rates[("alice", "chat")][0] == "0.0%"
    assert all(5.0 / RESOLUTION - 0.5 <= float(v) <= 5.0 for v in rates[("alice", "chat")][1:]), rates
    assert body[("alice", "chat")] == [
        "3", by[("alice", "chat")]["prompt_tokens"], by[("alice", "chat")]["completion_tokens"],
        by[("alice", "chat")]["total_tokens"], "0.000001", "0", "1",  # 1e-7 + 2e-7 + 7e-7 USD, rounded
        by[("alice", "chat")]["cache_read_tokens"], by[("alice", "chat")]["cache_write_tokens"]]
    assert body[("bob", "big")][4] == "0.000617" and body[("alice", "big")][4] == "0.000370"  # 617.285, 370.371
    total_nanos = sum(nanousd(r.cost_usd) for r in records)
    assert lines[-1].split()[-3] == "14.3%"  # 1 error in 7 requests
    assert lines[-1].split()[:-3] == ["TOTAL", str(len(records)), str(sum(r.prompt_tokens for r in records)),
                                 str(sum(r.completion_tokens for r in records)),
                                 str(sum(r.prompt_tokens + r.completion_tokens for r in records)),
                                 f"{total_nanos / 1e9:.6f}", "1", "1", str(sum(r.cache_read_tokens for r in records)),
                                 str(sum(r.cache_write_tokens for r in records))], table

    # by hour and by day (UTC), filters
    hours = _csv(run_cli("usage", "--group-by", "hour", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert [(r["period"], r["requests"]) for r in hours] == [
        ((H0 + timedelta(hours=h)).isoformat(), n) for h, n in ((0, "2"), (1, "2"), (3, "3"))]
    hour_table = run_cli("usage", "--group-by", "hour", *store, cwd=tmp_path).stdout.splitlines()
    assert [line.split()[:3] for line in hour_table[1:-2]] == [
        [*(H0 + timedelta(hours=h)).strftime("%Y-%m-%d %H:00").split(), n] for h, n in ((0, "2"), (1, "2"), (3, "3"))]
    days = _csv(run_cli("usage", "--group-by", "day", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert sum(int(r["requests"]) for r in days) == len(records)
    assert {r["period"] for r in days} == {(H0 + timedelta(hours=h)).strftime("%Y-%m-%d") for h in (0, 1, 3)}

    bob = _csv(run_cli("usage", "--key", "bob", "--group-by", "model", "--format", "csv", *store,
                       cwd=tmp_path).stdout)
    assert [(r["model"], r["requests"]) for r in bob] == [("big", "1"), ("chat", "1")]
    by_id = run_cli("usage", "--key", ids["bob"], "--group-by", "model", "--format", "csv", *store, cwd=tmp_path)
    assert _csv(by_id.stdout) == bob
    big = _csv(run_cli("usage", "--model", "big", "--group-by", "key", "--format", "csv", *store,
                       cwd=tmp_path).stdout)
    assert sorted((r["key"], r["requests"]) for r in big) == [("alice", "1"), ("bob", "1")]

    # --since/--until select whole hours: from the hour of since, up to the hour holding until
    window = ("--since", (H0 + timedelta(hours=1, minutes=40)).isoformat(),
              "--until", (H0 + timedelta(hours=2)).isoformat())
    mid = _csv(run_cli("usage", *window, "--group-by", "hour", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert [(r["period"], r["requests"]) for r in mid] == [
        ((H0 + timedelta(hours=1)).isoformat(), "2")]
    unix = ("--since", str((H0 + timedelta(hours=1, minutes=40)).timestamp()),
            "--until", str(int((H0 + timedelta(hours=2)).timestamp())))  # the same window in Unix seconds
    assert _csv(run_cli("usage", *unix, "--group-by", "hour", "--format", "csv", *store, cwd=tmp_path).stdout) == mid
    recent = _csv(run_cli("usage", "--since", "1h", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert sum(int(r["requests"]) for r in recent) == 3  # the current hour (NOW is half past it)

    nothing = run_cli("usage", "--key", "nobody", *store, cwd=tmp_path)
    assert nothing.returncode == 0 and nothing.stdout.splitlines()[-1].split()[:2] == ["TOTAL", "0"], nothing

    for args, hint in ((("--group-by", "week"), "--group-by"), (("--group-by", "hour,day"), "--group-by"),
                       (("--since", "yesterday"), "--since"), (("--until", "soon"), "--until")):
        bad = run_cli("usage", *args, *store, cwd=tmp_path)
        assert bad.returncode == 2 and hint in bad.stderr and "Traceback" not in bad.stderr, bad


def test_usage_by_agent_session(tmp_path: Path) -> None:
    """--group-by session totals the raw rows per agent session (requests without one together)."""
    data_dir = tmp_path / "data"
    _, records = seed(data_dir)
    store = ("--data-dir", data_dir)
    out = run_cli("usage", "--group-by", "session", "--format", "csv", *store, cwd=tmp_path)
    assert out.returncode == 0, out
    rows = _csv(out.stdout)
    assert list(rows[0])[:2] == ["session", "requests"]
    by = {r["session"]: r for r in rows}
    assert {s: r["requests"] for s, r in by.items()} == {"(none)": "4", "sess-a": "2", "sess-b": "1"}
    sess_a = [r for r in records if r.session_id == "sess-a"]
    assert by["sess-a"]["cost_usd"] == format_usd(sum(nanousd(r.cost_usd) for r in sess_a))
    assert by["sess-a"]["prompt_tokens"] == str(sum(r.prompt_tokens for r in sess_a))
    assert by["sess-a"]["cache_read_tokens"] == str(sum(r.cache_read_tokens for r in sess_a))

    with_key = _csv(run_cli("usage", "--group-by", "key,session", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert sorted((r["key"], r["session"], r["requests"]) for r in with_key) == [
        ("(static/anonymous)", "(none)", "1"), ("alice", "(none)", "2"), ("alice", "sess-a", "2"),
        ("bob", "(none)", "1"), ("bob", "sess-b", "1")]
    table = run_cli("usage", "--group-by", "session", "--key", "alice", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["SESSION", "REQUESTS"]
    assert sorted(line.split()[:2] for line in lines[1:-2]) == [["(none)", "2"], ["sess-a", "2"]]
    assert lines[-1].split()[:2] == ["TOTAL", "4"], table


def test_usage_by_team_is_the_team_at_the_time(tmp_path: Path) -> None:
    """--group-by team: each request under the team its key had then (by name; '(none)' for none)."""
    data_dir = tmp_path / "data"
    settings = Settings.model_validate({"data_dir": data_dir})

    async def body() -> None:
        rt = await open_runtime(settings)
        try:
            red = await rt.teams.create("red")
            blue = await rt.teams.create("blue")
            key = (await rt.keys.create("carol")).key.id
            await rt.usage.write([
                UsageRecord(H0 + timedelta(minutes=i), f"t{i}", key, "chat", "fake", "/v1/chat/completions", 10, 1,
                            50.0, 200, False, False, team_id=team)
                for i, team in enumerate((red.id, red.id, blue.id, None))])
        finally:
            await rt.aclose()

    asyncio.run(body())
    store = ("--data-dir", data_dir)
    rows = _csv(run_cli("usage", "--group-by", "key,team", "--format", "csv", *store, cwd=tmp_path).stdout)
    assert (rows[0]["key"], rows[0]["team"], rows[0]["requests"]) == ("carol", "(none)", "1")  # no team first
    assert sorted((r["key"], r["team"], r["requests"]) for r in rows[1:]) == [("carol", "blue", "1"),
                                                                              ("carol", "red", "2")]
    table = run_cli("usage", "--group-by", "team", *store, cwd=tmp_path)
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["TEAM", "REQUESTS"]
    assert sorted(line.split()[:2] for line in lines[1:-2]) == [["(none)", "1"], ["blue", "1"], ["red", "2"]]
