"""The chaos soak's clients: what each request is drawn to do, how it is sent, and how its answer is judged.

A :class:`Plan` is drawn from a seeded generator: the endpoint (chat, a chat stream, embeddings),
the key, the fault the upstream is asked for (:mod:`tests.fakes.chaotic_upstream`) and whether
the client leaves early:

``wait``        the fault is ``hang`` or ``slow``; the client leaves while the gateway waits for the
                upstream (after the upstream has the request): the usage row must say 499
``mid-stream``  a ``trickle`` stream; the client leaves after a few events: the row must say 499
``any``         whatever the fault, the client leaves at a random moment once the upstream has the
                request (or the first bytes came): the row may say 499 or what was answered

(A client starved of CPU may leave so late that the answer could have come first: the checks in
``tests/e2e/chaos.py`` hold such a one to no status, by the times the upstream and the client noted.)
The client only ever leaves once the gateway has the whole request (the upstream saw it, or bytes
of the answer came back), so every request reaches accounting and must leave exactly one row.
Every byte a client receives (status line aside: headers and body) is kept for the secret scan.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fakes.chaotic_upstream import FAULTS, STREAM_ONLY, marker

__all__ = ["Client", "Outcome", "Plan", "draw", "judge"]

FILLER = "one two three four five six seven eight nine ten eleven twelve"  # a trickle lasts ~15 chunks
_FAULTY = [f for f in FAULTS if f != "none"]
_NOT_STREAM = [f for f in _FAULTY if f not in STREAM_ONLY]


@dataclass(frozen=True)
class Plan:
    request_id: str
    endpoint: str  # "chat", "stream" or "embeddings"
    key: int  # index into the client keys
    fault: str
    leave: str | None  # None, "wait", "mid-stream" or "any"
    leave_after: float  # seconds after the upstream has the request ("wait", "any")
    leave_events: int  # events read before leaving ("mid-stream", "any" on a stream)

    @property
    def path(self) -> str:
        return "/v1/embeddings" if self.endpoint == "embeddings" else "/v1/chat/completions"

    def body(self) -> dict[str, Any]:
        text = f"{marker(self.request_id, self.fault)} {FILLER}"
        if self.endpoint == "embeddings":
            return {"model": "embed", "input": [text]}
        body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": text}]}
        if self.endpoint == "stream":
            body["stream"] = True
        return body


def draw(rng: random.Random, request_id: str, keys: int, fault_rate: float, leave_rate: float) -> Plan:
    endpoint = rng.choices(["chat", "stream", "embeddings"], weights=[45, 35, 20])[0]
    fault = "none"
    if rng.random() < fault_rate:
        fault = rng.choice(_FAULTY if endpoint == "stream" else _NOT_STREAM)
    leave: str | None = None
    if rng.random() < leave_rate:
        leave = rng.choice(["wait", "mid-stream", "any"] if endpoint == "stream" else ["wait", "any"])
        if leave == "wait":
            fault = rng.choice(["hang", "slow"])
        elif leave == "mid-stream":
            fault = "trickle"
    return Plan(request_id, endpoint, rng.randrange(keys), fault, leave, rng.uniform(0.0, 0.2), rng.randint(1, 4))


@dataclass
class Outcome:
    plan: Plan
    status: int | None = None
    received: bytearray = field(default_factory=bytearray)  # response headers and body, as they came
    left: bool = False  # the client hung up on purpose before the answer ended
    transport_error: str | None = None
    seconds: float = 0.0
    left_at: float | None = None  # time.monotonic() once the client had hung up
    verdict: str = ""  # see judge()
    problem: str | None = None  # why the verdict is a failure

    @property
    def events(self) -> list[str]:
        """The data of the SSE events received (complete ones)."""
        text = bytes(self.received[self._body_start:]).decode("utf-8", "replace")
        out = []
        for block in text.split("\n\n")[:-1]:
            data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
            if data:
                out.append("\n".join(data))
        return out

    _body_start: int = 0


class Client:
    """Sends plans to the gateway; ``seen(request_id)`` says whether the upstream has had the request."""

    def __init__(self, base_url: str, keys: list[str], seen: Callable[[str], bool], timeout: float) -> None:
        self.base_url = base_url
        self.keys = keys
        self.seen = seen
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(timeout),
                                       limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, plan: Plan) -> Outcome:
        out = Outcome(plan)
        started = time.monotonic()
        # a client that will leave gets a connection of its own, closed when it goes
        http = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(self.timeout)) if plan.leave \
            else self._http
        exchange = asyncio.ensure_future(self._exchange(http, plan, out))
        try:
            if plan.leave in ("wait", "any"):
                while not exchange.done() and not self.seen(plan.request_id) and not out.received:
                    if time.monotonic() - started > self.timeout:
                        break
                    await asyncio.sleep(0.005)
                if not exchange.done():
                    await asyncio.sleep(plan.leave_after)
                if not exchange.done() and exchange.cancel():
                    out.left = True
            try:
                await asyncio.wait_for(asyncio.shield(exchange), max(0.0, self.timeout - (time.monotonic() - started)))
            except TimeoutError:
                exchange.cancel()
                out.transport_error = "timeout"
            except asyncio.CancelledError:
                if not out.left:
                    raise
            except httpx.HTTPError as exc:
                out.transport_error = f"{type(exc).__name__}: {exc}"
        finally:
            if http is not self._http:
                await http.aclose()
            if out.left:  # the connection is closed by now, surely (a starved client closes it late)
                out.left_at = time.monotonic()
        out.seconds = time.monotonic() - started
        return out

    async def _exchange(self, http: httpx.AsyncClient, plan: Plan, out: Outcome) -> None:
        headers = {"Authorization": f"Bearer {self.keys[plan.key]}", "X-Request-Id": plan.request_id}
        async with http.stream("POST", plan.path, json=plan.body(), headers=headers) as resp:
            out.status = resp.status_code
            for name, value in resp.headers.raw:
                out.received += name + b": " + value + b"\r\n"
            out.received += b"\r\n"
            out._body_start = len(out.received)
            events = 0
            async for chunk in resp.aiter_raw():
                out.received += chunk
                events += chunk.count(b"\n\n")
                if plan.leave in ("mid-stream", "any") and plan.endpoint == "stream" and resp.status_code == 200 \
                        and events >= plan.leave_events:
                    out.left = True
                    return  # leaving the block closes the connection mid-stream


def _openai_error(obj: Any) -> bool:
    err = obj.get("error") if isinstance(obj, dict) else None
    return (isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
            and "param" in err and "code" in err)


def judge(out: Outcome, timeout: float) -> None:
    """Set ``out.verdict``: ``left``, ``ok``, ``http-error`` or ``stream-error`` (answers in the
    right shape), or ``hang``, ``dropped`` or ``malformed``, with ``out.problem`` saying why."""
    body = bytes(out.received[out._body_start:])
    if out.transport_error == "timeout" or out.seconds > timeout:
        out.verdict, out.problem = "hang", f"no answer within {timeout} s"
    elif out.left:
        out.verdict = "left"
    elif out.transport_error is not None:
        out.verdict, out.problem = "dropped", out.transport_error
    elif out.status is None:
        out.verdict, out.problem = "dropped", "no status"
    elif out.status >= 400:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        ok = _openai_error(parsed) and out.status < 600 and b"content-type: application/json" in out.received.lower()
        out.verdict, out.problem = ("http-error", None) if ok else ("malformed", f"{out.status}: {body[:200]!r}")
        if ok and out.status == 500:
            out.verdict, out.problem = "malformed", f"500 from the gateway itself: {body[:200]!r}"
    elif out.status != 200:
        out.verdict, out.problem = "malformed", f"status {out.status}"
    elif out.plan.endpoint == "stream":
        events = out.events
        last = events[-1] if events else ""
        try:
            final = json.loads(last) if last and last != "[DONE]" else None
        except ValueError:
            final = None
        if last == "[DONE]":
            out.verdict = "ok"
        elif _openai_error(final):
            out.verdict = "stream-error"
        else:
            out.verdict, out.problem = "malformed", f"stream ended without [DONE] or an error event: {last[:200]!r}"
    else:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        want = "data" if out.plan.endpoint == "embeddings" else "choices"
        if isinstance(parsed, dict) and isinstance(parsed.get(want), list) and parsed[want]:
            out.verdict = "ok"
        else:
            out.verdict, out.problem = "malformed", f"200 without {want}: {body[:200]!r}"
