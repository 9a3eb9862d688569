"""Codex CLI (npm ``@openai/codex``) driving Switchyard's Responses API.

Against the Anthropic and Gemini fakes too: they call the first tool offered (Codex's
``exec_command``) with their ``tool_arguments``, then answer ``tool said: <output>``.

The route is ``codex exec`` -> Switchyard (real server, real key, ``wire_api = "responses"``) ->
a fake OpenAI-compatible upstream whose chat answers are scripted: a text turn, a call to Codex's
``exec_command`` tool, and a ``custom`` ``apply_patch`` call with a real patch. Codex is
installed once, with npm, into a cache directory (never globally); its native binary ships in
the npm package.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.agent_clients import install_codex
from tests.fakes import FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.scripted_openai import ScriptedOpenAI, Turn
from tests.harness import RunningServer, run_server
from tests.local.bundled import smollm2_gguf

Plan = Callable[[dict[str, Any]], "tuple[str, Any] | None"]


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    return install_codex()


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m.get("role") == "tool"]


def run_codex(codex_bin: Path, tmp: Path, server: RunningServer, model: str, prompt: str,
              work: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    """``codex exec`` in ``work``, configured through a fresh CODEX_HOME to use the server."""
    home = tmp / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "switchyard"\n{extra}\n'
        "[model_providers.switchyard]\n"
        'name = "Switchyard"\n'
        f'base_url = "{server.v1}"\n'
        'env_key = "SWITCHYARD_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "CODEX_HOME": str(home),
           "SWITCHYARD_API_KEY": server.admin_key}
    return subprocess.run(
        [str(codex_bin), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
         "--color", "never", "-C", str(work), prompt],
        env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def codex_session(tmp: Path, codex_bin: Path, plan: Plan, prompt: str, *, alias: str = "coder",
                  extra: str = "") -> tuple[subprocess.CompletedProcess[str], FakeOpenAI, Path, RunningServer]:
    work = tmp / "work"
    work.mkdir()
    (work / "greet.py").write_text('def greet():\n    return "hi"\n')
    with FakeOpenAI(models=["coder-upstream"], planner=plan) as upstream, run_server(
        tmp / "data",
        providers={"vllm": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": alias, "provider": "vllm", "model": "coder-upstream"}],
    ) as server:
        result = run_codex(codex_bin, tmp, server, alias, prompt, work, extra)
        return result, upstream, work, server


def _show(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout[-3000:] + "\n---\n" + result.stderr[-4000:]


@pytest.mark.timeout(900)
def test_codex_exec_prints_the_models_text(tmp_path: Path, codex_bin: Path) -> None:
    result, upstream, _, server = codex_session(tmp_path, codex_bin, lambda body: ("text", "hi from switchyard"),
                                                "say hi")
    assert result.returncode == 0, _show(result)
    assert "hi from switchyard" in result.stdout, _show(result)
    chats = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert chats and all(r.body["model"] == "coder-upstream" and r.body["stream"] is True for r in chats)
    names = {t["function"]["name"] for t in chats[0].body["tools"]}
    assert "exec_command" in names  # Codex's shell tool, a plain function
    assert any("__" in name for name in names)  # its namespace tools, one function per member
    # its session header is on every usage row: one session for the one run
    sessions = {row["session_id"] for row in server.usage_rows(wait_for=len(chats))}
    assert len(sessions) == 1 and None not in sessions, sessions


@pytest.mark.timeout(900)
def test_codex_runs_a_command_and_its_output_reaches_the_upstream(tmp_path: Path, codex_bin: Path) -> None:
    def plan(body: dict[str, Any]) -> tuple[str, Any]:
        if not tool_messages(body):
            return "tool", ("exec_command", json.dumps({"cmd": "echo sy-marker-$((100+23))"}))
        return "text", "the command ran"

    result, upstream, _, _ = codex_session(tmp_path, codex_bin, plan, "run the marker command")
    assert result.returncode == 0, _show(result)
    assert "the command ran" in result.stdout, _show(result)
    chats = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2, _show(result)
    first_call = [m for m in chats[1]["messages"] if m.get("tool_calls")]
    assert first_call and first_call[0]["tool_calls"][0]["function"]["name"] == "exec_command"
    outputs = tool_messages(chats[1])
    assert outputs and outputs[0]["tool_call_id"] == first_call[0]["tool_calls"][0]["id"]
    assert "sy-marker-123" in str(outputs[0]["content"]), outputs  # computed by the shell, not echoed


PATCH = """*** Begin Patch
*** Update File: greet.py
@@
 def greet():
-    return "hi"
+    return "hello from switchyard"
*** End Patch
"""


@pytest.mark.timeout(900)
def test_codex_applies_a_patch_through_the_custom_apply_patch_tool(tmp_path: Path, codex_bin: Path) -> None:
    def plan(body: dict[str, Any]) -> tuple[str, Any]:
        if not tool_messages(body):
            return "tool", ("apply_patch", json.dumps({"input": PATCH}))
        return "text", "patched"

    # Codex offers its freeform apply_patch tool to the models it knows: the alias is named after one
    result, upstream, work, _ = codex_session(tmp_path, codex_bin, plan, "make greet say hello", alias="gpt-5.5")
    assert result.returncode == 0, _show(result)
    assert (work / "greet.py").read_text() == 'def greet():\n    return "hello from switchyard"\n', _show(result)
    chats = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    tool = next(t["function"] for t in chats[0]["tools"] if t["function"]["name"] == "apply_patch")
    assert tool["parameters"]["required"] == ["input"] and "Begin Patch" in tool["description"]
    assert len(chats) == 2 and tool_messages(chats[1]), _show(result)


@pytest.mark.timeout(900)
def test_codex_compacts_a_long_session_through_switchyard(tmp_path: Path, codex_bin: Path) -> None:
    """Past its token limit, Codex (with a provider that is not OpenAI) compacts through
    /v1/responses itself: a summary turn, then a fresh window that carries the summary."""
    def plan(body: dict[str, Any]) -> tuple[str, Any]:
        said = json.dumps(body["messages"])
        if "CONTEXT CHECKPOINT COMPACTION" in str(body["messages"][-1].get("content")):
            return "text", "SUMMARY-sy-77: ran the marker command once"
        if "SUMMARY-sy-77" in said:
            return "text", "finished after compaction"
        if not tool_messages(body):
            return "tool", ("exec_command", json.dumps({"cmd": "echo step-one"}))
        return "text", "unexpected: no compaction"

    result, upstream, _, _ = codex_session(
        tmp_path, codex_bin, plan, "run the steps", alias="gpt-5.5",
        extra="model_auto_compact_token_limit = 4000\n")
    assert result.returncode == 0, _show(result)
    assert "finished after compaction" in result.stdout, _show(result)
    chats = [json.dumps(r.body["messages"]) for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert any("CONTEXT CHECKPOINT COMPACTION" in c for c in chats)
    assert "SUMMARY-sy-77" in chats[-1]


MARKER_COMMAND = {"cmd": "echo sy-marker-$((100+23))"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_codex_runs_a_command_on_anthropic_and_gemini_models(tmp_path: Path, codex_bin: Path, kind: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    key = "sk-ant-upstream-0123456789" if kind == "anthropic" else "gemini-upstream-key"
    fake: FakeAnthropic | FakeGemini
    if kind == "anthropic":
        fake = FakeAnthropic(api_key=key, tool_arguments=MARKER_COMMAND)
    else:
        fake = FakeGemini(api_key=key, tool_arguments=MARKER_COMMAND)
    model = "claude-sonnet-4-5" if kind == "anthropic" else "gemini-2.5-flash"
    with fake, run_server(
        tmp_path / "data",
        providers={"up": {"type": kind, "base_url": fake.base_url, "api_key": key, "cooldown_failures": 0}},
        models=[{"alias": "coder", "provider": "up", "model": model}],
    ) as server:
        result = run_codex(codex_bin, tmp_path, server, "coder", "run the marker command", work)
        rows = server.usage_rows(wait_for=2)
    assert result.returncode == 0, _show(result)
    assert "tool said:" in result.stdout and "sy-marker-123" in result.stdout, _show(result)
    assert [r["status"] for r in rows if r["model"] == "coder"] == [200, 200]


@pytest.mark.timeout(900)
def test_codex_keeps_the_models_reasoning_across_turns_while_the_gateway_stores_nothing(
        tmp_path: Path, codex_bin: Path) -> None:
    """A reasoning model (``reasoning_content``, as vLLM sends it): Codex asks for
    ``reasoning.encrypted_content`` with ``store: false``, gets its reasoning sealed, and sends it
    back with the tool's output; the upstream sees its reasoning again on the assistant turn."""
    thought = "The user wants the marker; running echo is the safe way."

    def script(body: dict[str, Any]) -> Turn:
        if not tool_messages(body):
            return Turn(reasoning=thought, tool_calls=[("exec_command", {"cmd": "echo sy-reason-$((40+2))"})])
        return Turn(text="done with the marker")

    work = tmp_path / "work"
    work.mkdir()
    with ScriptedOpenAI(script, models=["coder-upstream"]) as upstream, run_server(
        tmp_path / "data", providers={"vllm": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "coder", "provider": "vllm", "model": "coder-upstream"}],
    ) as server:
        result = run_codex(codex_bin, tmp_path, server, "coder", "run the marker command", work)
    assert result.returncode == 0, _show(result)
    assert "done with the marker" in result.stdout, _show(result)
    chats = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2, _show(result)
    turn = [m for m in chats[1]["messages"] if m.get("tool_calls")]
    assert turn and turn[0]["reasoning_content"] == thought
    assert "sy-reason-42" in json.dumps(tool_messages(chats[1]))
    with sqlite3.connect(tmp_path / "data" / "switchyard.db") as db:
        assert db.execute("SELECT count(*) FROM responses").fetchone() == (0,)


# What fits Codex into the bundled SmolLM2's 8,192-token context: its own base instructions
# (about 4,400 tokens) replaced by a short file, and its subagent, goal and image tools (about
# 3,800 tokens of schemas) switched off. What is left (the developer message, exec_command,
# write_stdin, request_user_input) is about 1,900 tokens.
LOCAL_CODEX_CONFIG = """model_instructions_file = "{instructions}"

[agents]
enabled = false

[features]
goals = false
view_image = false
"""


@pytest.mark.timeout(900)
def test_codex_exec_on_the_bundled_local_model(tmp_path: Path, codex_bin: Path) -> None:
    """Codex against SmolLM2 run in-process (llama.cpp), through Switchyard's Responses API: its
    tools are rendered into the model's prompt (the usage row counts them), and the model's text
    turn comes back to Codex's stdout."""
    instructions = tmp_path / "instructions.md"
    instructions.write_text("You are a coding agent in a terminal. Answer briefly.\n")
    work = tmp_path / "work"
    work.mkdir()
    with run_server(
        tmp_path / "data",
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 8192,
                       "threads": 2, "default_temperature": 0}],
        memory_budget="1GiB",
    ) as server:
        result = run_codex(codex_bin, tmp_path, server, "smol", "say hi", work,
                           LOCAL_CODEX_CONFIG.format(instructions=instructions))
        rows = server.usage_rows(wait_for=1)
    assert result.returncode == 0, _show(result)
    assert result.stdout.strip() and "ERROR" not in result.stderr, _show(result)
    [row] = rows
    assert (row["endpoint"], row["model"], row["status"], row["streamed"], row["estimated"]) == (
        "responses", "smol", 200, 1, 0), row
    assert 1000 < row["prompt_tokens"] < 8192 and row["completion_tokens"] > 0, row


# Codex's metadata for the local alias (a catalog entry of its own, so that it does not fall back
# to a large model's): SmolLM2's context, one tool call a turn; and its request_user_input tool off
# (exec mode refuses it, and the small model picked it when offered).
LOCAL_CATALOG = {"models": [{
    "slug": "smol", "display_name": "smol", "description": "SmolLM2 on Switchyard",
    "base_instructions": "You are a coding agent.", "shell_type": "shell_command", "visibility": "list",
    "supported_in_api": True, "priority": 1, "context_window": 8192, "max_context_window": 8192,
    "supports_parallel_tool_calls": False, "apply_patch_tool_type": "freeform", "supported_reasoning_levels": [],
    "default_reasoning_level": None, "truncation_policy": {"mode": "tokens", "limit": 2000},
    "input_modalities": ["text"], "experimental_supported_tools": [], "supports_reasoning_summaries": False,
    "support_verbosity": False,
}]}

LOCAL_TOOL_INSTRUCTIONS = """You are a coding agent in a terminal. Make exactly one tool call: run \
`echo sy-marker-$((100+23))` with the exec_command tool, like this:
<tool_call>
{"name": "exec_command", "arguments": {"cmd": "echo sy-marker-$((100+23))"}}
</tool_call>
Then stop. When the tool's output comes back, reply with that output in plain text.
"""


LOCAL_TOOL_PROMPT = """Run echo sy-marker-$((100+23)) with exec_command:
<tool_call>
{"name": "exec_command", "arguments": {"cmd": "echo sy-marker-$((100+23))"}}
</tool_call>"""


def rollout_items(codex_home: Path) -> list[dict[str, Any]]:
    """The items of Codex's own record of the session (what it sent and got back)."""
    items = []
    for path in sorted((codex_home / "sessions").rglob("rollout-*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") == "response_item":
                items.append(entry["payload"])
    return items


def local_codex_tools_session(tmp_path: Path, codex_bin: Path, instructions: str, prompt: str
                              ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], Path]:
    """``codex exec`` on SmolLM2 with its tools, greedy, ``max_tool_calls: 1`` and a ``max_tokens``
    default (Codex sends none); in ``work``, which holds greet.py."""
    (tmp_path / "instructions.md").write_text(instructions)
    (tmp_path / "catalog.json").write_text(json.dumps(LOCAL_CATALOG))
    work = tmp_path / "work"
    work.mkdir()
    (work / "greet.py").write_text('def greet():\n    return "hi"\n')
    extra = (f'model_catalog_json = "{tmp_path / "catalog.json"}"\n'
             + LOCAL_CODEX_CONFIG.format(instructions=tmp_path / "instructions.md")
             + "[tools.experimental_request_user_input]\nenabled = false\n")
    with run_server(
        tmp_path / "data",
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 8192,
                       "threads": 2, "default_temperature": 0, "max_tokens": 200, "max_tool_calls": 1}],
        memory_budget="1GiB",
    ) as server:
        result = run_codex(codex_bin, tmp_path, server, "smol", prompt, work, extra)
        rows = server.usage_rows(wait_for=2)
    return result, rows, work


@pytest.mark.timeout(900)
def test_codex_runs_the_local_models_command_and_sends_its_output_back(tmp_path: Path, codex_bin: Path) -> None:
    """SmolLM2, told by its instructions which command to run, calls Codex's ``exec_command``
    (under ``tool_choice: auto``, greedy); Codex runs it and sends the output back, and the
    model's second turn is prompted with it. The model is configured with ``max_tool_calls: 1``
    (Codex allows parallel calls on every request, and SmolLM2 repeats its call) and a
    ``max_tokens`` default (Codex sends none). What the 135M model writes after the output is not
    asserted: it runs to that default, and Codex then reports an incomplete response."""
    result, rows, _ = local_codex_tools_session(tmp_path, codex_bin, LOCAL_TOOL_INSTRUCTIONS, LOCAL_TOOL_PROMPT)
    items = rollout_items(tmp_path / "codex-home")
    [call] = [i for i in items if i.get("type") == "function_call"]  # one call, as the model is configured
    assert call["name"] == "exec_command" and json.loads(call["arguments"]) == MARKER_COMMAND, _show(result)
    [output] = [i for i in items if i.get("type") == "function_call_output"]
    assert output["call_id"] == call["call_id"] and "sy-marker-123" in output["output"], output  # the shell's
    first, second = rows
    assert [(r["endpoint"], r["model"], r["status"]) for r in rows] == [("responses", "smol", 200)] * 2, rows
    # the second turn's prompt is the first's plus the call and its output
    assert first["completion_tokens"] < 60 and second["prompt_tokens"] > first["prompt_tokens"] + 60, rows


NEW_FILE_PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from switchyard\n*** End Patch\n"
LOCAL_PATCH_CALL = ('<tool_call>\n' + json.dumps({"name": "apply_patch", "arguments": {"input": NEW_FILE_PATCH}})
                    + '\n</tool_call>')


@pytest.mark.timeout(900)
def test_codex_applies_the_local_models_patch(tmp_path: Path, codex_bin: Path) -> None:
    """SmolLM2, shown the patch to apply, calls Codex's freeform ``apply_patch`` (a one-string
    function to the model, a ``custom_tool_call`` to Codex), and the file it adds is on disk. (An
    ``Update File`` patch is beyond the 135M model: it copied the header and left the hunk empty.
    Its text after Codex's "Success" runs to the ``max_tokens`` default, as above.)"""
    instructions = "You are a coding agent in a terminal. Make exactly one tool call, then stop.\n"
    result, rows, work = local_codex_tools_session(
        tmp_path, codex_bin, instructions, f"Apply this patch with apply_patch:\n{LOCAL_PATCH_CALL}")
    items = rollout_items(tmp_path / "codex-home")
    [call] = [i for i in items if i.get("type") == "custom_tool_call"]
    assert call["name"] == "apply_patch" and call["input"] == NEW_FILE_PATCH, _show(result)
    assert (work / "hello.txt").read_text() == "hello from switchyard\n", _show(result)
    assert [(r["endpoint"], r["status"]) for r in rows] == [("responses", 200)] * 2, rows
