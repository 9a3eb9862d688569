"""``switchyard run``: a chat in the terminal with a model of a real ``switchyard serve`` (its
upstream a fake OpenAI server), found through the data dir's local admin token: piped stdin,
a one-shot prompt, errors, and a real terminal (tmux)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import SWITCHYARD, ServeProcess, clean_env, run_cli, serve, wait_until, write_config
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("run")
    config = write_config(root / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)
    with serve(root, root / "data", config=config) as running:
        yield running


def chat(server: ServeProcess, *args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHYARD, "run", *args, "--data-dir", str(server.data_dir)], input=stdin, cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=60, check=False)


def upstream_messages(fake: FakeOpenAI, marker: str) -> list[list[dict[str, object]]]:
    """The message lists of the chat requests the upstream got whose last message contains ``marker``."""
    bodies = [r.body for r in fake.requests if r.path == "/v1/chat/completions"]
    return [b["messages"] for b in bodies if marker in str(b["messages"][-1]["content"])]


def test_piped_lines_are_a_conversation(tmp_path: Path, server: ServeProcess, fake_openai: FakeOpenAI) -> None:
    tag = uuid.uuid4().hex[:8]
    result = chat(server, "chat", "--system", "Be brief.",
                  stdin=f"hello {tag}\n\n/clear-not-a-command-{tag} is text\nagain {tag}\n/bye\nnever {tag}\n",
                  cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [f"echo: hello {tag}", f"echo: /clear-not-a-command-{tag} is text",
                                          f"echo: again {tag}"]
    last = upstream_messages(fake_openai, f"again {tag}")
    assert last == [[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"hello {tag}"},
        {"role": "assistant", "content": f"echo: hello {tag}"},
        {"role": "user", "content": f"/clear-not-a-command-{tag} is text"},
        {"role": "assistant", "content": f"echo: /clear-not-a-command-{tag} is text"},
        {"role": "user", "content": f"again {tag}"},
    ]]
    assert upstream_messages(fake_openai, f"never {tag}") == []  # /bye ended it
    bodies = [r.body for r in fake_openai.requests if r.path == "/v1/chat/completions"
              and f"hello {tag}" in str(r.body["messages"])]
    assert all(b["stream"] is True for b in bodies)  # the answer streams


def test_clear_forgets_and_end_of_input_exits(tmp_path: Path, server: ServeProcess, fake_openai: FakeOpenAI) -> None:
    tag = uuid.uuid4().hex[:8]
    result = chat(server, "chat", stdin=f"first {tag}\n/clear\nsecond {tag}\n", cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [f"echo: first {tag}", f"echo: second {tag}"]
    assert "(conversation cleared)" in result.stderr
    assert upstream_messages(fake_openai, f"second {tag}") == [[{"role": "user", "content": f"second {tag}"}]]


def test_help(tmp_path: Path) -> None:
    result = run_cli("run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result
    assert "Usage: python -m switchyard run [OPTIONS] MODEL [PROMPT]..." in result.stdout


def test_a_prompt_argument_is_answered_once(tmp_path: Path, server: ServeProcess) -> None:
    result = run_cli("run", "chat", "What", "is", "up?", "--data-dir", server.data_dir, cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout == "echo: What is up?\n"


def test_errors_are_one_line(tmp_path: Path, server: ServeProcess) -> None:
    unknown = chat(server, "no-such-model", stdin="hi\n", cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == (
        "Error: POST /v1/chat/completions answered 404: The model 'no-such-model' does not exist or you do not "
        "have access to it.")

    down = run_cli("run", "chat", "hi", "--url", "http://127.0.0.1:9", "--api-key", "sk-x", cwd=tmp_path)
    assert down.returncode == 1 and "Error: switchyard is not running at http://127.0.0.1:9" in down.stderr

    no_key = run_cli("run", "chat", "hi", "--url", server.url, "--data-dir", tmp_path / "empty", cwd=tmp_path)
    assert no_key.returncode == 1
    assert "answered 401: no key was given, and no local admin token was found" in no_key.stderr


def test_a_stream_cut_midway_says_so(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = write_config(tmp_path / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY,
                          models=[{"alias": "flaky", "provider": "fake", "model": "fail-mid-stream"}])
    with serve(tmp_path, tmp_path / "data", config=config) as running:
        result = run_cli("run", "flaky", "hi", "--data-dir", running.data_dir, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: the answer stopped: ")
    assert "Traceback" not in result.stderr


class Terminal:
    """A real terminal: ``switchyard run`` in a tmux session of its own tmux server."""

    def __init__(self, cwd: Path, *args: str) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("these tests need tmux for a real terminal: apt-get install tmux (.ci/run installs it)",
                        pytrace=False)
        self.tmux = ["tmux", "-L", f"sy-run-{uuid.uuid4().hex[:8]}"]
        env = " ".join(f"{k}={v!r}" for k, v in clean_env().items() if k in ("PATH", "HOME", "PYTHONPATH", "LANG"))
        command = f"env -i {env} TERM=xterm {' '.join(SWITCHYARD)} run {' '.join(args)}"
        subprocess.run([*self.tmux, "new-session", "-d", "-x", "160", "-y", "40", "-c", str(cwd), command],
                       check=True)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p"], capture_output=True, text=True,
                              check=False).stdout

    def type(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", *keys], check=True)

    def wait_for(self, text: str, what: str, count: int = 1) -> None:
        wait_until(lambda: self.screen().count(text) >= count, timeout=30, what=what)

    def ended(self) -> bool:
        return subprocess.run([*self.tmux, "has-session"], capture_output=True, check=False).returncode != 0

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


def test_in_a_real_terminal(tmp_path: Path, server: ServeProcess, fake_openai: FakeOpenAI) -> None:
    tag = uuid.uuid4().hex[:8]
    term = Terminal(tmp_path, "chat", "--data-dir", str(server.data_dir))
    try:
        term.wait_for(">>>", "the prompt")  # capture-pane trims the space after it
        assert "chatting with chat at " + server.url in term.screen()
        term.type(f"hello {tag}", "Enter")
        term.wait_for(f"echo: hello {tag}", "the answer")
        term.type(f"and more {tag}", "Enter")
        term.wait_for(f"echo: and more {tag}", "the second answer")
        assert upstream_messages(fake_openai, f"and more {tag}")[0][:2] == [
            {"role": "user", "content": f"hello {tag}"}, {"role": "assistant", "content": f"echo: hello {tag}"}]
        term.type("/bye", "Enter")
        wait_until(term.ended, timeout=30, what="run to exit after /bye")
    finally:
        term.close()


def test_ctrl_c_stops_an_answer_and_ctrl_d_leaves(tmp_path: Path, server: ServeProcess) -> None:
    term = Terminal(tmp_path, "slow", "--data-dir", str(server.data_dir))  # 50 words, 0.2 s apart
    try:
        term.wait_for(">>>", "the prompt")
        term.type("take your time", "Enter")
        term.wait_for("tick3", "the answer to start")
        term.type("C-c")
        term.wait_for("(stopped)", "the answer to stop")
        term.wait_for(">>>", "the prompt again", count=2)
        assert "tick49" not in term.screen()
        term.type("C-c")  # at the prompt: a hint and a new prompt, not an exit
        term.wait_for("(/bye or Ctrl-D to leave)", "the hint")
        term.wait_for(">>>", "the prompt after the hint", count=3)
        assert not term.ended() and "Traceback" not in term.screen()
        term.type("C-d")
        wait_until(term.ended, timeout=30, what="run to exit at Ctrl-D")
    finally:
        term.close()
