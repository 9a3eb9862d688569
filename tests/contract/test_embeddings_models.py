"""Embeddings and models through the official openai SDK, validated against OpenAI's spec."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from tests.contract.openapi import validate
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer


@pytest.mark.parametrize("alias", ["embed", "ollama-embed"])
def test_embeddings_sdk_default_base64_matches_float(client: openai.OpenAI, alias: str) -> None:
    as_b64 = client.embeddings.create(model=alias, input=["alpha", "beta"])  # the SDK asks for base64
    as_float = client.embeddings.create(model=alias, input=["alpha", "beta"], encoding_format="float")
    assert len(as_b64.data) == 2 and [d.index for d in as_b64.data] == [0, 1]
    for a, b in zip(as_b64.data, as_float.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    assert as_b64.data[0].embedding != as_b64.data[1].embedding
    assert as_b64.usage.prompt_tokens > 0


def test_embeddings_raw_shapes_match_spec(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        for body in (
            {"model": "embed", "input": "one string"},
            {"model": "embed", "input": ["a", "b", "c"]},
            {"model": "embed", "input": [1, 2, 3]},
            {"model": "embed", "input": [[1, 2], [3, 4]]},
        ):
            resp = http.post("/v1/embeddings", json=body)
            assert resp.status_code == 200, resp.text
            payload = resp.json()
            validate(payload, "CreateEmbeddingResponse")
            expected = 1 if isinstance(body["input"], str) or isinstance(body["input"][0], int) else len(body["input"])
            assert len(payload["data"]) == expected
        b64 = http.post("/v1/embeddings", json={"model": "embed", "input": "x", "encoding_format": "base64"}).json()
        flt = http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(flt["data"][0]["embedding"], rel=1e-6)


def test_token_array_input_reaches_openai_upstream_unchanged(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.embeddings.create(model="embed", input=[[5, 6, 7]], encoding_format="float")
    sent = fake_openai.last_request.body
    assert sent["input"] == [[5, 6, 7]] and sent["model"] == "text-embedding-3-small"


def test_ollama_rejects_token_arrays_with_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="ollama-embed", input=[[1, 2]])
    assert info.value.body["param"] == "input"  # type: ignore[index]


def test_models_list_and_retrieve_match_spec(client: openai.OpenAI, gateway: RunningServer) -> None:
    raw = client.models.with_raw_response.list()
    payload = raw.http_response.json()
    validate(payload, "ListModelsResponse")
    ids = [m["id"] for m in payload["data"]]
    assert "gpt-4o-mini" in ids and "llama" in ids and "disabled" not in ids
    one = client.models.with_raw_response.retrieve("llama")
    validate(one.http_response.json(), "Model")
    assert one.parse().owned_by == "ollama"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("disabled")
