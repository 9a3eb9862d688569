"""Log lines carrying request ids: JSON when stderr is not a terminal (a service manager, a
pipe, a file), readable text in a terminal; ``log_json`` forces either. No keys or prompts are
ever passed to a logger.

Progress bars (tqdm, drawn by huggingface_hub, transformers and sentence-transformers while a
local model loads) would land in the middle of the log lines: they are turned off unless the
logs are text in a terminal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import orjson

__all__ = ["AccessLog", "JsonFormatter", "TextFormatter", "configure_logging", "json_logs"]

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


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL   logger  message  key=value ...``: one readable line per record (local
    time; the fields the message does not already show come after it)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        message = record.getMessage()
        extras = " ".join(f"{key}={value}" for key, value in record.__dict__.items()
                          if key not in _STANDARD and not key.startswith("_") and value is not None
                          and str(value) not in message)  # what the message says already is not repeated
        line = f"{stamp} {record.levelname:<7} {record.name}  {message}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def json_logs(setting: bool | None = None) -> bool:
    """JSON lines or text: the setting when given, else JSON unless stderr is a terminal."""
    return setting if setting is not None else not _stderr_is_terminal()


def _quiet_progress_bars() -> None:
    """No tqdm bars from the model libraries, in this process and the ones it starts."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:  # already imported: it read the variable then
        hub.disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Root logging to stderr: JSON lines or text (``json=None``: JSON unless stderr is a terminal)."""
    json = json_logs(json)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    if json or not _stderr_is_terminal():
        _quiet_progress_bars()
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
    the logging machinery, which shows in the gateway's added latency. With ``worker``, every
    line names the worker process that served it (its pid). The ``switchyard.access``
    logger's level still decides whether lines are written. Plain-text logs go through that
    logger as usual.
    """

    def __init__(self, json: bool | None = None, delay: float = 0.05, *, worker: bool = False) -> None:
        self._json = json_logs(json)
        self._delay = delay
        self._worker = os.getpid() if worker else None  # with --workers N: which one served
        self._logger = logging.getLogger("switchyard.access")
        self._pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        if self._worker is not None:
            fields["worker"] = self._worker
        if not self._json:
            shown = ("method", "path", "status", "duration_ms")
            self._logger.info("%s %s %s %.1f ms", *(fields.get(k) for k in shown[:3]),
                              fields.get("duration_ms") or 0.0,
                              extra={k: v for k, v in fields.items() if k not in shown})
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
