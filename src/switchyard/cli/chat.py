"""``switchyard run MODEL [PROMPT]``: chat with a model of a running server in the terminal.

Over HTTP (``POST /v1/chat/completions`` with ``stream: true``), with the server and key found
as ``switchyard status`` finds them. The answer is printed as it streams. In a terminal each
line typed is a message and the conversation is kept until ``/bye`` or Ctrl-D; piped, each
line of stdin is one message. With PROMPT, that one message is answered and the command exits.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from switchyard.cli.server_client import NETWORK_ERRORS, ServerClient, connect, server_options

__all__ = ["run"]

Message = dict[str, str]

_HELP = """commands:
  /bye       leave (Ctrl-D too)
  /clear     forget the conversation so far
  /?         this help
Ctrl-C stops an answer that is being written."""


class _Failed(Exception):
    """A request that could not be answered, with its one-line reason."""


def _events(resp: Any) -> Iterator[str]:
    """The ``data`` payloads of a server-sent event stream (one per event; multi-line data joined)."""
    data: list[str] = []
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _stream(client: ServerClient, model: str, messages: list[Message]) -> Iterator[str]:
    """The answer's text pieces, as they arrive."""
    body = json.dumps({"model": model, "messages": messages, "stream": True}).encode()
    request = urllib.request.Request(client.url + "/v1/chat/completions", data=body,  # noqa: S310 - http(s) only
                                     headers={**client.headers(True), "Accept": "text/event-stream"}, method="POST")
    try:
        resp = client.target.opener.open(request, timeout=client.timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            payload: object = json.loads(raw)
        except ValueError:
            payload = None
        raise _Failed(client.explain("POST", "/v1/chat/completions", exc.code, payload)) from None
    except NETWORK_ERRORS as exc:
        raise _Failed(client.unreachable(exc).message) from None
    with resp:
        try:
            for data in _events(resp):
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    error = chunk["error"]
                    raise _Failed(f"the answer stopped: {error.get('message') if isinstance(error, dict) else error}")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        except NETWORK_ERRORS as exc:
            raise _Failed(f"the answer stopped: {client.unreachable(exc).message}") from None
        except ValueError:
            raise _Failed("the server sent an event that is not JSON") from None
    raise _Failed("the answer stopped before it was complete")


def _answer(client: ServerClient, model: str, messages: list[Message]) -> str:
    """Stream one answer to stdout; the whole text (raises _Failed, or KeyboardInterrupt on Ctrl-C)."""
    parts: list[str] = []
    try:
        for text in _stream(client, model, messages):
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    finally:
        if parts:  # end the line an answer started, even a cut one
            sys.stdout.write("\n")
            sys.stdout.flush()
    if not parts:
        sys.stdout.write("\n")
        sys.stdout.flush()
    return "".join(parts)


def _next_line(interactive: bool) -> str | None:
    """The next line typed or piped (None at the end of input)."""
    if interactive:
        while True:
            try:
                return input(">>> ")
            except EOFError:
                return None
            except KeyboardInterrupt:  # as at a shell prompt: a fresh line, not an exit
                click.echo("\n(/bye or Ctrl-D to leave)", err=True)
    raw = sys.stdin.readline()
    return None if raw == "" else raw.rstrip("\n")


def _conversation(client: ServerClient, model: str, messages: list[Message]) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()

        click.echo(f"chatting with {model} at {client.url} (/? for help, /bye or Ctrl-D to leave)", err=True)
    failures = 0
    while True:
        line = _next_line(interactive)
        if line is None:
            if interactive:
                click.echo("", err=True)
            return 1 if failures else 0
        text = line.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return 1 if failures else 0
        if text == "/clear":
            messages[:] = [m for m in messages if m["role"] == "system"]
            click.echo("(conversation cleared)", err=True)
            continue
        if text in ("/?", "/help"):
            click.echo(_HELP, err=True)
            continue
        messages.append({"role": "user", "content": line})
        try:
            reply = _answer(client, model, messages)
        except _Failed as exc:
            messages.pop()
            failures += 1
            click.echo(f"Error: {exc}", err=True)
            if not interactive:
                return 1
            continue
        except KeyboardInterrupt:
            messages.pop()  # the cut answer is not part of the conversation
            click.echo("\n(stopped)", err=True)
            if not interactive:
                return 130
            continue
        messages.append({"role": "assistant", "content": reply})
        if interactive:
            click.echo("")


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--system", default=None, help="A system message that starts the conversation.")
@server_options(timeout=600.0, with_json=False)
def run(model: str, prompt: tuple[str, ...], system: str | None, url: str | None, api_key: str | None,
        config_file: Path | None, data_dir: Path | None, timeout: float, insecure: bool) -> None:
    """Chat with MODEL on a running server; with PROMPT, answer it and exit.

    In a terminal, each line you type is a message, and the conversation is kept until /bye
    or Ctrl-D (/? lists the commands). With stdin piped, each line is a message. The answer
    streams to stdout as it is written.

    The server: the one running from the data dir, else --url. The key: --api-key or
    SWITCHYARD_ADMIN_KEY, else the local admin token that server left in its data dir.

    Exit status: 0 answered; 1 a request failed (the reason is on stderr).
    """
    client = connect(url, api_key, config_file, data_dir, timeout, insecure)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    if prompt:
        messages.append({"role": "user", "content": " ".join(prompt)})
        try:
            _answer(client, model, messages)
        except _Failed as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        return
    raise SystemExit(_conversation(client, model, messages))
