"""The README's run command with no config: ``switchyard serve`` serves the bundled SmolLM2 and
all-MiniLM-L6-v2, offline, to the official openai SDK."""

from __future__ import annotations

from pathlib import Path

import openai

from tests.cli.support import KEY_RE, serve

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}


def test_serve_with_no_config_answers_from_the_bundled_models_offline(tmp_path: Path) -> None:
    with serve(tmp_path, tmp_path / "data", env={**OFFLINE, "HOME": str(tmp_path)}) as server:
        admin = KEY_RE.findall(server.stdout)[0]
        with openai.OpenAI(base_url=server.url + "/v1", api_key=admin, max_retries=0, timeout=120) as client:
            listed = {m.id for m in client.models.list()}
            assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= listed
            answer = client.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
            )
            text = answer.choices[0].message.content or ""
            assert "Paris" in text, text
            assert answer.choices[0].finish_reason == "stop"
            embedding = client.embeddings.create(model="all-minilm-l6-v2", input="The capital of France is Paris.")
            assert len(embedding.data[0].embedding) == 384
        with server.http(admin) as http:
            status = http.get("/v1/status").json()
        loaded = {m["id"]: m for m in status["models"] if m["state"] == "loaded"}
        assert set(loaded) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
        assert all(m["memory_bytes"] > 10_000_000 for m in loaded.values())
