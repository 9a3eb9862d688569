"""Which extra each engine needs, checked on real servers in fresh interpreters where packages
cannot be imported: without the transformers extra (xgrammar, and the triton it pulls in) and
without torch, transformers and sentence-transformers at all, the bundled models of the default
local install still serve, structured output included, with the same embeddings as
sentence-transformers gives; a model on an engine whose extra is missing is a 503 naming it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import switchyard
from tests.local.bundled import minilm_dir
from tests.local.tiny_models import build_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
# What only the transformers and sentence-transformers extras install.
BLOCKED = ["xgrammar", "triton", "torch", "transformers", "sentence_transformers", "scipy", "sklearn"]

WITHOUT = """
import json, sys
from pathlib import Path
BLOCKED = sys.argv.pop(1).split(",")
for name in BLOCKED:
    sys.modules[name] = None  # as if their extras were not installed
import openai
from tests.harness import run_server
"""


def _python(code: str, *args: str, blocked: list[str] = BLOCKED) -> subprocess.CompletedProcess[str]:
    src = str(Path(switchyard.__file__).resolve().parents[1])  # this checkout's, when PYTHONPATH points at it
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), src])
    return subprocess.run([sys.executable, "-c", WITHOUT + code, ",".join(blocked), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def _sentence_transformers_vector(text: str) -> list[float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    vector: list[float] = model.encode([text], convert_to_numpy=True)[0].tolist()
    return vector


@pytest.mark.timeout(300)
def test_the_bundled_models_serve_without_torch_or_the_transformers_extra(tmp_path: Path) -> None:
    probe = """
schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
          "required": ["city"], "additionalProperties": False}
with run_server(Path(sys.argv[1]), bundled_models="on") as server, \\
        openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=120) as client:
    out = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Name the capital of France as JSON."}],
        max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        seed=3)
    emb = client.embeddings.create(model="all-minilm-l6-v2", input="The capital of France is Paris.")
    with server.http(server.admin_key) as http:
        engines = {m["id"]: m["engine"] for m in http.get("/v1/status").json()["models"]}
    loaded = sorted(n.split(".")[0] for n in sys.modules if n.split(".")[0] in BLOCKED and sys.modules[n] is not None)
    print(json.dumps({"content": out.choices[0].message.content, "finish": out.choices[0].finish_reason,
                      "vector": emb.data[0].embedding, "tokens": emb.usage.prompt_tokens, "engines": engines,
                      "loaded": loaded}))
"""
    result = _python(probe, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["engines"] == {"smollm2-135m-instruct": "llamacpp", "all-minilm-l6-v2": "bert"}
    assert got["finish"] == "stop"
    assert set(json.loads(got["content"])) == {"city"}
    assert got["tokens"] == 9  # [CLS] the capital of france is paris . [SEP]
    expected = _sentence_transformers_vector("The capital of France is Paris.")
    assert len(got["vector"]) == 384
    assert max(abs(a - b) for a, b in zip(got["vector"], expected, strict=True)) <= 1e-5
    assert sum(a * b for a, b in zip(got["vector"], expected, strict=True)) >= 0.99999
    assert math.hypot(*got["vector"]) == pytest.approx(1.0, abs=1e-5)
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
    result = _python(probe, str(tmp_path / "data"), str(model_dir), blocked=["xgrammar", "triton"])
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["status"] == 503
    assert got["body"]["code"] == "engine_unavailable"
    message = got["body"]["message"]
    assert "transformers engine is not installed" in message and "xgrammar" in message
    assert "pip install 'switchyard[transformers]'" in message


@pytest.mark.timeout(300)
def test_a_sentence_transformers_model_without_its_extra_is_a_503_naming_the_extra(tmp_path: Path) -> None:
    probe = """
models = [{"alias": "st", "engine": "sentence_transformers", "model": sys.argv[2], "device": "cpu"}]
with run_server(Path(sys.argv[1]), local_models=models) as server, \\
        openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0) as client:
    try:
        client.embeddings.create(model="st", input="hello")
    except openai.APIStatusError as exc:
        print(json.dumps({"status": exc.status_code, "body": exc.body}))
    else:
        print(json.dumps({"status": 200}))
"""
    result = _python(probe, str(tmp_path / "data"), str(minilm_dir()))
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["status"] == 503
    assert got["body"]["code"] == "engine_unavailable"
    message = got["body"]["message"]
    assert "sentence_transformers engine is not installed" in message and "sentence_transformers is missing" in message
    assert "pip install 'switchyard[sentence-transformers]'" in message
