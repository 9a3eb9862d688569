"""aider, the first seed's client, editing a file through Switchyard.

The route is aider -> Switchyard (real server, real key) -> a fake OpenAI-compatible upstream
that answers with an edit in aider's "whole file" format. aider is installed once into a
cached virtual environment of its own (its pinned dependencies must not meet ours).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agent_clients import install_aider
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server

NEW_SOURCE = 'def greet():\n    return "hello from switchyard"\n'


@pytest.fixture(scope="session")
def aider_bin() -> Path:
    return install_aider()


def run_aider(aider_bin: Path, project: Path, server: RunningServer, model: str, message: str,
              timeout: float) -> subprocess.CompletedProcess[str]:
    """aider, non-interactive, editing greet.py in ``project`` through the server (whole-file edits)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(project.parent),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "AIDER_ANALYTICS": "false",
    }
    return subprocess.run(
        [str(aider_bin), "--model", f"openai/{model}", "--openai-api-base", server.v1,
         "--openai-api-key", server.admin_key, "--message", message,
         "--edit-format", "whole", "--yes-always", "--no-git", "--no-check-update", "--no-show-model-warnings",
         "--no-analytics", "--no-pretty", "--no-fancy-input", "--map-tokens", "0", "--no-show-release-notes",
         "greet.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def whole_file_edit(body: dict[str, Any]) -> str:
    return f"greet.py\n```python\n{NEW_SOURCE}```\n"


@pytest.mark.timeout(900)
def test_aider_applies_an_edit_through_switchyard(tmp_path: Path, aider_bin: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    target = project / "greet.py"
    target.write_text('def greet():\n    return "hi"\n')
    with FakeOpenAI(responder=whole_file_edit, models=["coder-upstream"]) as upstream, run_server(
        tmp_path / "data",
        providers={"vllm": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "coder", "provider": "vllm", "model": "coder-upstream"}],
    ) as server:
        result = run_aider(aider_bin, project, server, "coder", "make greet say hello from switchyard", 300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert target.read_text() == NEW_SOURCE, result.stdout[-3000:]
        chats = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
        assert chats and all(r.body["model"] == "coder-upstream" for r in chats)
        rows = server.usage_rows(wait_for=len(chats))
        assert any(r["model"] == "coder" and r["status"] == 200 for r in rows)


@pytest.mark.timeout(900)
def test_aider_round_trip_against_the_bundled_local_model(tmp_path: Path, aider_bin: Path) -> None:
    """aider -> Switchyard -> SmolLM2 in-process. A 135M model edits poorly; the round trip is
    what is checked: aider gets answers and exits cleanly, and the usage is recorded."""
    from tests.local.bundled import smollm2_gguf

    project = tmp_path / "project"
    project.mkdir()
    (project / "greet.py").write_text('def greet():\n    return "hi"\n')
    with run_server(
        tmp_path / "data",
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()),
                       "context_length": 8192, "max_tokens": 256, "default_temperature": 0.2}],
    ) as server:
        result = run_aider(aider_bin, project, server, "smol", "make greet return hello", 600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        rows = server.usage_rows(wait_for=1)
        local = [r for r in rows if r["model"] == "smol"]
        assert local and all(r["status"] == 200 and r["provider"] == "local" for r in local), rows
        assert all(r["prompt_tokens"] > 100 and r["completion_tokens"] > 0 for r in local)
