"""The README's run command with no config: ``switchyard serve`` serves the bundled SmolLM2 and
all-MiniLM-L6-v2, offline, to the official openai SDK."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.cli.support import KEY_RE, run_cli, serve

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


def test_the_bundled_models_are_listed_with_their_true_capabilities(tmp_path: Path) -> None:
    """/v1/models before and after loading: the chat model's context (its GGUF's, as configured)
    and no embeddings; the embedding model's max_seq_length, no chat and no streaming. The loads go
    through ``switchyard models load`` with no key: the local admin token."""
    chat = {"context_length": 8192, "embeddings": False, "chat": True, "streaming": True,
            "response_format": ["text", "json_object", "json_schema"]}
    embed = {"context_length": 256, "embeddings": True, "chat": False, "streaming": False, "response_format": ["text"]}

    def listed(client: openai.OpenAI) -> dict[str, dict[str, object]]:
        return {m.id: (m.model_extra or {})["capabilities"] for m in client.models.list()}

    with serve(tmp_path, tmp_path / "data", env={**OFFLINE, "HOME": str(tmp_path)}) as server:
        admin = KEY_RE.findall(server.stdout)[0]
        with openai.OpenAI(base_url=server.url + "/v1", api_key=admin, max_retries=0, timeout=120) as client:
            before = listed(client)
            for model, expected in (("smollm2-135m-instruct", chat), ("all-minilm-l6-v2", embed)):
                assert {k: before[model][k] for k in expected} == expected, before[model]
                loaded = run_cli("models", "load", model, "--data-dir", server.data_dir, cwd=tmp_path, env=OFFLINE)
                assert loaded.returncode == 0, loaded
            assert listed(client) == before  # the loaded engines agree with what the files said

            with pytest.raises(openai.BadRequestError) as no_embed:
                client.embeddings.create(model="smollm2-135m-instruct", input="hello")
            assert no_embed.value.code == "unsupported_model"
            with pytest.raises(openai.BadRequestError) as no_chat:
                client.chat.completions.create(model="all-minilm-l6-v2", messages=[{"role": "user", "content": "hi"}])
            assert no_chat.value.code == "unsupported_model" and "embeddings only" in no_chat.value.message
