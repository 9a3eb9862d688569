"""Which extra each engine needs, checked on a real server in a fresh interpreter where the
transformers extra's own packages (xgrammar, and triton, which it pulls in) cannot be imported:
the bundled models of the default local install still serve, structured output included, and a
transformers model says which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import switchyard
from tests.local.tiny_models import build_tiny_llama

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_THE_EXTRA = """
import json, sys
from pathlib import Path
sys.modules["xgrammar"] = None  # as if 'switchyard[transformers]' were not installed
sys.modules["triton"] = None
import openai
from tests.harness import run_server
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(switchyard.__file__).resolve().parents[1])  # this checkout's, when PYTHONPATH points at it
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), src])
    return subprocess.run([sys.executable, "-c", WITHOUT_THE_EXTRA + code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_the_bundled_models_serve_without_the_transformers_extra(tmp_path: Path) -> None:
    probe = """
from tests.local.bundled import minilm_dir, smollm2_gguf
schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
          "required": ["city"], "additionalProperties": False}
models = [{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 1024, "threads": 2},
          {"alias": "minilm", "engine": "sentence_transformers", "model": str(minilm_dir()), "device": "cpu"}]
with run_server(Path(sys.argv[1]), local_models=models) as server, \\
        openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=120) as client:
    out = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Name the capital of France as JSON."}], max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}, seed=3)
    emb = client.embeddings.create(model="minilm", input="hello")
    loaded = sorted(n.split(".")[0] for n in sys.modules if n.split(".")[0] in {"xgrammar", "triton"}
                    and sys.modules[n] is not None)
    print(json.dumps({"content": out.choices[0].message.content, "finish": out.choices[0].finish_reason,
                      "dims": len(emb.data[0].embedding), "loaded": loaded}))
"""
    result = _python(probe, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["finish"] == "stop"
    assert set(json.loads(got["content"])) == {"city"}
    assert got["dims"] == 384
    assert got["loaded"] == []


@pytest.mark.timeout(300)
def test_a_transformers_model_without_its_extra_is_a_503_naming_the_extra(tmp_path: Path) -> None:
    model_dir = build_tiny_llama(tmp_path / "tiny")
    probe = """
models = [{"alias": "tiny", "engine": "transformers", "model": sys.argv[2], "device": "cpu"}]
with run_server(Path(sys.argv[1]), local_models=models) as server, \\
        openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0) as client:
    try:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    except openai.APIStatusError as exc:
        print(json.dumps({"status": exc.status_code, "body": exc.body}))
    else:
        print(json.dumps({"status": 200}))
"""
    result = _python(probe, str(tmp_path / "data"), str(model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["status"] == 503
    assert got["body"]["code"] == "engine_unavailable"
    message = got["body"]["message"]
    assert "transformers engine is not installed" in message and "xgrammar" in message
    assert "pip install 'switchyard[transformers]'" in message
