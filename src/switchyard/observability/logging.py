"""JSON log lines carrying request ids. No keys or prompts are ever passed to a logger."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["AccessLog", "JsonFormatter", "configure_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "color_message",  # uvicorn's ANSI twin of msg
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "info", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if json else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the edge middleware logs requests


class AccessLog:
    """One line per request, for the edge middleware.

    With JSON logs a line is one ``orjson.dumps`` into a buffer that is written at most
    ``delay`` seconds later (and at shutdown): about a tenth of the cost of a LogRecord through
    the logging machinery, which shows in the gateway's added latency. The ``switchyard.access``
    logger's level still decides whether lines are written. Plain-text logs go through that
    logger as usual.
    """

    def __init__(self, json: bool = True, delay: float = 0.05) -> None:
        self._json = json
        self._delay = delay
        self._logger = logging.getLogger("switchyard.access")
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        if not self._json:
            self._logger.info("request", extra=fields)
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        self._pending.append(orjson.dumps(
            {"ts": stamp, "level": "info", "logger": "switchyard.access", "msg": "request", **fields}, default=str
        ))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            sys.stderr.write(b"\n".join(lines).decode() + "\n")
            sys.stderr.flush()
