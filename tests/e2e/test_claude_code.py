"""Claude Code itself, on a model that is not Claude, through Switchyard.

The route is ``claude -p`` -> Switchyard's /v1/messages (real server, real key) -> a scripted
OpenAI-compatible upstream. Claude Code is installed once from npm into a cache directory and
runs with a throwaway HOME and config dir, with telemetry, auto-updates and every other
non-essential request turned off, so the only traffic is to the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_clients import install_claude_code
from tests.fakes.scripted_openai import ScriptedOpenAI, Turn
from tests.harness import RunningServer, run_server

ALIAS = "local-coder"  # not a Claude model name
SECRET_LINE = "the launch code is 0451"
REASONING = "The user wants a greeting. A short friendly one will do."


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    return install_claude_code()


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return json.dumps(users[-1]["content"]) if users else ""


def script(body: dict[str, Any]) -> Turn:
    """What the "model" answers Claude Code, by the marker in the prompt."""
    last = body["messages"][-1]
    if last.get("role") == "tool":
        return Turn(text=f"The file reads: {last.get('content')}")
    prompt = _last_user_text(body)
    if "READ-NOTES" in prompt:
        path = prompt.split("READ-NOTES ")[1].split(" ")[0].rstrip('"')
        return Turn(tool_calls=[("Read", {"file_path": path})])
    if "THINK-FIRST" in prompt:
        return Turn(reasoning=REASONING, text="Hi from a thinking model.")
    return Turn(text="Hello from local coder via Switchyard.")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(script, models=["qwen-coder"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedOpenAI) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("claude-code-gw"),
        providers={"vllm": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": ALIAS, "provider": "vllm", "model": "qwen-coder"}],
    ) as running:
        yield running


def run_claude(claude_bin: Path, server: RunningServer, workdir: Path, prompt: str,
               *args: str) -> subprocess.CompletedProcess[str]:
    home = workdir.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": server.admin_key,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": ALIAS,  # background calls (titles, summaries) on the same alias
        "ANTHROPIC_SMALL_FAST_MODEL": ALIAS,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    }
    return subprocess.run([str(claude_bin), "-p", prompt, "--model", ALIAS, *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)


def workdir_for(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def stream_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def chats(upstream: ScriptedOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]


@pytest.mark.timeout(900)
def test_a_text_answer(claude_bin: Path, server: RunningServer, upstream: ScriptedOpenAI, tmp_path: Path) -> None:
    upstream.reset()
    out = ok(run_claude(claude_bin, server, workdir_for(tmp_path), "say hello"))
    assert "Hello from local coder via Switchyard." in out
    bodies = chats(upstream)
    assert bodies and all(b["model"] == "qwen-coder" for b in bodies)
    # Claude Code puts a system turn inside messages: it reaches the upstream in place
    assert any(m["role"] == "system" for b in bodies for m in b["messages"][1:])
    # Claude Code's metadata.user_id (device and session ids) never goes upstream as given
    assert all(str(b.get("user", "uid-")).startswith("uid-") for b in bodies)


@pytest.mark.timeout(900)
def test_stream_json_with_several_deltas(claude_bin: Path, server: RunningServer, tmp_path: Path) -> None:
    out = ok(run_claude(claude_bin, server, workdir_for(tmp_path), "say hello", "--output-format", "stream-json",
                        "--verbose", "--include-partial-messages"))
    lines = stream_lines(out)
    deltas = [line["event"]["delta"]["text"] for line in lines if line.get("type") == "stream_event"
              and line["event"].get("type") == "content_block_delta"
              and line["event"]["delta"].get("type") == "text_delta"]
    assert len(deltas) > 3 and "".join(deltas) == "Hello from local coder via Switchyard."
    result = [line for line in lines if line.get("type") == "result"]
    assert result and result[-1]["result"] == "Hello from local coder via Switchyard."


@pytest.mark.timeout(900)
def test_a_read_tool_round_trip(claude_bin: Path, server: RunningServer, upstream: ScriptedOpenAI,
                                tmp_path: Path) -> None:
    work = workdir_for(tmp_path)
    notes = work / "notes.txt"
    notes.write_text(SECRET_LINE + "\n")
    upstream.reset()
    out = ok(run_claude(claude_bin, server, work, f"READ-NOTES {notes} and tell me what it says",
                        "--allowedTools", "Read"))
    assert "The file reads:" in out and SECRET_LINE in out
    bodies = chats(upstream)
    tool_turns = [m for b in bodies for m in b["messages"] if m.get("role") == "tool"]
    assert tool_turns and SECRET_LINE in json.dumps(tool_turns)
    assert any(t["function"]["name"] == "Read" for b in bodies for t in b.get("tools") or ())


@pytest.mark.timeout(900)
def test_thinking_blocks_are_shown(claude_bin: Path, server: RunningServer, upstream: ScriptedOpenAI,
                                   tmp_path: Path) -> None:
    upstream.reset()
    out = ok(run_claude(claude_bin, server, workdir_for(tmp_path), "THINK-FIRST then greet me",
                        "--output-format", "stream-json", "--verbose"))
    blocks = [block for line in stream_lines(out) if line.get("type") == "assistant"
              for block in line["message"]["content"]]
    thinking = [b for b in blocks if b["type"] == "thinking"]
    assert thinking and thinking[0]["thinking"] == REASONING
    assert any(b["type"] == "text" and b["text"] == "Hi from a thinking model." for b in blocks)
    assert any(b.get("reasoning_effort") for b in chats(upstream))  # its thinking request, as the upstream takes it


@pytest.mark.timeout(900)
def test_two_sessions_show_apart_in_the_usage_report(claude_bin: Path, server: RunningServer,
                                                     tmp_path: Path) -> None:
    """Each ``claude -p`` run is one session: its X-Claude-Code-Session-Id lands on the usage rows,
    and ``switchyard usage --group-by session`` shows the two runs apart."""
    import csv
    import io

    from tests.cli.support import run_cli, wait_until

    runs = []
    for n in range(2):
        work = tmp_path / f"run{n}"
        work.mkdir()
        out = ok(run_claude(claude_bin, server, workdir_for(work), "say hello", "--output-format", "json"))
        runs.append(json.loads(out)["session_id"])
    assert len(set(runs)) == 2

    def report() -> dict[str, dict[str, str]] | None:
        out = run_cli("usage", "--group-by", "session", "--model", ALIAS, "--format", "csv",
                      "--data-dir", server.settings.data_dir, cwd=tmp_path)
        assert out.returncode == 0, out
        rows = {r["session"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
        return rows if set(runs) <= set(rows) else None

    rows = wait_until(report, timeout=10, what="both sessions in the usage report")
    for session in runs:
        assert int(rows[session]["requests"]) >= 1 and int(rows[session]["prompt_tokens"]) > 0
    table = run_cli("usage", "--group-by", "session", "--model", ALIAS, "--data-dir", server.settings.data_dir,
                    cwd=tmp_path)
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["SESSION", "REQUESTS"]
    assert {line.split()[0] for line in lines[1:-2]} >= set(runs)
