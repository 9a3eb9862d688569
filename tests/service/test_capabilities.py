"""The capability contract: advertised capabilities, config overrides, and the per-request check."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import orjson
import pytest

from switchyard.core.capabilities import DEFAULTS, DROPPABLE, Capabilities, defaults_for, validate_drop
from switchyard.core.contract import enforce, enforce_embeddings
from switchyard.errors import BadRequestError
from switchyard.http.errors import error_response
from tests.contract.openapi import validate

OPENAI = defaults_for("openai")
OLLAMA = defaults_for("ollama")
ANTHROPIC = defaults_for("anthropic")
GEMINI = defaults_for("gemini")
BARE = OPENAI.merged({
    "tools": False, "response_format": ["text"], "vision": False, "logprobs": False, "n": 1, "streaming": False,
})

HELLO = [{"role": "user", "content": "hello"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
FUNCTION = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HELLO, **extra}


def with_image(text: str = "what is this?") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": text}, IMAGE]},
    ]


# --- advertised capabilities ------------------------------------------------------------------

ADVERTISED = {
    "openai": {
        "tools": True, "tool_choice": ["auto", "none", "required", "function"], "parallel_tool_calls": True,
        "response_format": ["text", "json_object", "json_schema"], "vision": True, "logprobs": True, "n": 128,
        "context_length": None, "streaming": True, "embeddings": True, "chat": True, "max_stop": 4,
    },
    "ollama": {
        "tools": True, "tool_choice": ["auto", "none"], "parallel_tool_calls": False,
        "response_format": ["text", "json_object", "json_schema"], "vision": True, "logprobs": False, "n": 1,
        "context_length": None, "streaming": True, "embeddings": True, "chat": True, "max_stop": 4,
    },
    "anthropic": {
        "tools": True, "tool_choice": ["auto", "none", "required", "function"], "parallel_tool_calls": True,
        "response_format": ["text"], "vision": True, "logprobs": False, "n": 1,
        "context_length": None, "streaming": True, "embeddings": False, "chat": True, "max_stop": 4,
    },
    "gemini": {
        "tools": True, "tool_choice": ["auto", "none", "required", "function"], "parallel_tool_calls": False,
        "response_format": ["text", "json_object", "json_schema"], "vision": True, "logprobs": False, "n": 8,
        "context_length": None, "streaming": True, "embeddings": True, "chat": True, "max_stop": 4,
    },
}
ADVERTISED["azure"] = ADVERTISED["openai"]


@pytest.mark.parametrize("provider_type", sorted(ADVERTISED))
def test_each_provider_type_advertises_its_capabilities(provider_type: str) -> None:
    advertised = defaults_for(provider_type).as_json()
    assert advertised == ADVERTISED[provider_type]
    assert list(advertised) == list(ADVERTISED["openai"])  # stable key order for /v1/models
    assert orjson.loads(orjson.dumps(advertised)) == advertised  # plain JSON
    assert DEFAULTS[provider_type] is defaults_for(provider_type)


def test_unknown_provider_type_gets_the_openai_defaults() -> None:
    assert defaults_for("vllm-fork") == OPENAI
    assert set(DEFAULTS) == {"openai", "azure", "ollama", "anthropic", "gemini", "local"}


def test_defaults_are_read_only() -> None:
    with pytest.raises(TypeError):
        DEFAULTS["openai"] = OLLAMA  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        OPENAI.vision = False  # type: ignore[misc]
    listed = OPENAI.as_json()
    listed["tool_choice"].append("bogus")
    assert OPENAI.as_json()["tool_choice"] == ["auto", "none", "required", "function"]


# --- config overrides -------------------------------------------------------------------------

def test_merged_applies_yaml_overrides_and_leaves_the_original() -> None:
    caps = OLLAMA.merged({"vision": False, "context_length": 8192, "tool_choice": ["auto", "none"]})
    assert (caps.vision, caps.context_length, caps.tool_choice) == (False, 8192, frozenset({"auto", "none"}))
    assert caps.tools and caps.json_schema  # untouched
    assert OLLAMA.vision and OLLAMA.context_length is None


def test_merged_accepts_the_advertised_spellings() -> None:
    caps = OPENAI.merged({"n": 4, "response_format": ["text", "json_object"]})
    assert (caps.max_n, caps.json_object, caps.json_schema) == (4, True, False)
    assert caps.as_json()["response_format"] == ["text", "json_object"]
    assert OPENAI.merged({"max_n": 2}).max_n == 2
    assert OPENAI.merged({"context_length": 4096}).merged({"context_length": None}).context_length is None


def test_turning_tools_off_clears_tool_choice_and_parallel() -> None:
    caps = OPENAI.merged({"tools": False})
    assert caps.as_json()["tool_choice"] == ["none"]
    assert caps.parallel_tool_calls is False
    assert OPENAI.merged({"tools": False, "tool_choice": []}).tool_choice == frozenset()
    back = caps.merged({"tools": True})
    assert back.tool_choice == frozenset({"auto", "none"})


@pytest.mark.parametrize(("overrides", "key"), [
    ({"vision": "yes"}, "capabilities.vision"),
    ({"tools": 1}, "capabilities.tools"),
    ({"n": 0}, "capabilities.n"),
    ({"max_n": True}, "capabilities.max_n"),
    ({"n": "4"}, "capabilities.n"),
    ({"context_length": -1}, "capabilities.context_length"),
    ({"context_length": "8k"}, "capabilities.context_length"),
    ({"tool_choice": "auto"}, "capabilities.tool_choice"),
    ({"tool_choice": ["auto", "forced"]}, "capabilities.tool_choice"),
    ({"tool_choice": ["none", "required"]}, "capabilities.tool_choice"),  # tools need 'auto'
    ({"tools": False, "tool_choice": ["auto"]}, "capabilities.tool_choice"),
    ({"tools": False, "parallel_tool_calls": True}, "capabilities.parallel_tool_calls"),
    ({"response_format": "json_object"}, "capabilities.response_format"),
    ({"response_format": ["text", "xml"]}, "capabilities.response_format"),
    ({"response_format": ["text"], "json_object": True}, "capabilities.json_object"),
    ({"n": 2, "max_n": 3}, "capabilities.max_n"),
    ({"visoin": False}, "capabilities.visoin"),
    ({"max_context": 100}, "capabilities.max_context"),
])
def test_merged_rejects_bad_overrides_naming_the_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        OPENAI.merged(overrides)


def test_merged_rejects_a_non_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        OPENAI.merged(["vision"])  # type: ignore[arg-type]


def test_capabilities_cannot_be_built_incoherent() -> None:
    with pytest.raises(ValueError, match="tool_choice"):
        dataclasses.replace(OPENAI, tool_choice=frozenset({"required"}))
    with pytest.raises(ValueError, match="tool_choice"):
        dataclasses.replace(OPENAI, tool_choice={"auto"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="streaming"):
        dataclasses.replace(OPENAI, streaming=None)  # type: ignore[arg-type]


# --- refusals ---------------------------------------------------------------------------------

REFUSED = [
    # (id, body, caps, drop, param)
    ("tools", chat(tools=[TOOL]), BARE, (), "tools"),
    ("legacy functions", chat(functions=[FUNCTION]), BARE, (), "functions"),
    ("tool_choice required on ollama", chat(tools=[TOOL], tool_choice="required"), OLLAMA, (), "tool_choice"),
    ("named tool on ollama", chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "x"}}),
     OLLAMA, (), "tool_choice"),
    ("allowed_tools on ollama", chat(tools=[TOOL], tool_choice={"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}), OLLAMA, (),
     "tool_choice"),
    ("forced legacy function_call on ollama", chat(functions=[FUNCTION], function_call={"name": "get_weather"}),
     OLLAMA, (), "function_call"),
    ("tool_choice auto without tool support", chat(tool_choice="auto"), BARE, (), "tool_choice"),
    ("parallel false on ollama", chat(tools=[TOOL], parallel_tool_calls=False), OLLAMA, (), "parallel_tool_calls"),
    ("parallel false on gemini", chat(tools=[TOOL], parallel_tool_calls=False), GEMINI, (), "parallel_tool_calls"),
    ("json_object on anthropic", chat(response_format={"type": "json_object"}), ANTHROPIC, (), "response_format"),
    ("json_schema on anthropic", chat(response_format=SCHEMA_FORMAT), ANTHROPIC, (), "response_format"),
    ("json_schema only off", chat(response_format=SCHEMA_FORMAT), OPENAI.merged({"json_schema": False}), (),
     "response_format"),
    ("logprobs on ollama", chat(logprobs=True), OLLAMA, (), "logprobs"),
    ("legacy integer logprobs", {"model": "m", "prompt": "hi", "logprobs": 0}, ANTHROPIC, (), "logprobs"),
    ("top_logprobs on gemini", chat(top_logprobs=3), GEMINI, (), "top_logprobs"),
    ("logprobs before top_logprobs", chat(logprobs=True, top_logprobs=3), OLLAMA, (), "logprobs"),
    ("n on ollama", chat(n=2), OLLAMA, (), "n"),
    ("n over gemini's 8", chat(n=9), GEMINI, (), "n"),
    ("legacy best_of", {"model": "m", "prompt": "hi", "best_of": 3}, OLLAMA, (), "best_of"),
    ("image in the second message", chat(messages=with_image()), OPENAI.merged({"vision": False}), (),
     "messages[1].content"),
    ("stream", chat(stream=True), BARE, (), "stream"),
    # a drop entry for something else does not help
    ("drop of another param", chat(logprobs=True), OLLAMA, ("n", "response_format"), "logprobs"),
    ("tool_choice drop keeps tools", chat(tools=[TOOL]), BARE, ("tool_choice",), "tools"),
    ("top_logprobs drop keeps logprobs", chat(logprobs=True, top_logprobs=2), OLLAMA, ("top_logprobs",), "logprobs"),
    ("stream is never dropped", chat(stream=True), BARE, tuple(sorted(DROPPABLE)), "stream"),
]


@pytest.mark.parametrize(("body", "caps", "drop", "param"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_unhonourable_parameters_are_refused_by_name(body: dict[str, Any], caps: Capabilities,
                                                    drop: tuple[str, ...], param: str) -> None:
    before = copy.deepcopy(body)
    with pytest.raises(BadRequestError) as info:
        enforce(body, caps, drop)
    exc = info.value
    assert type(exc) is BadRequestError
    assert (exc.status_code, exc.param, exc.code) == (400, param, "unsupported_parameter")
    assert param.split("[")[0] in exc.message or "image" in exc.message
    assert body == before
    response = error_response(exc)
    assert response.status_code == 400
    payload = orjson.loads(bytes(response.body))
    validate(payload, "ErrorResponse")
    assert payload == {"error": {"message": exc.message, "type": "invalid_request_error", "param": param,
                                 "code": "unsupported_parameter"}}


def test_refusal_messages_say_what_the_model_lacks() -> None:
    cases = [
        (chat(logprobs=True), OLLAMA, "This model does not support 'logprobs'."),
        (chat(n=3), OLLAMA, "This model supports at most n=1; got n=3."),
        (chat(tools=[TOOL], tool_choice="required"), OLLAMA,
         "This model does not support 'tool_choice' mode 'required' (supported: auto, none)."),
        (chat(response_format={"type": "json_object"}), ANTHROPIC,
         "This model does not support 'response_format' of type 'json_object'."),
        (chat(messages=with_image()), BARE, "This model does not support image inputs (vision)."),
    ]
    for body, caps, message in cases:
        with pytest.raises(BadRequestError) as info:
            enforce(body, caps)
        assert info.value.message == message


# --- what passes untouched --------------------------------------------------------------------

ALLOWED = [
    ("plain chat on the barest model", chat(), BARE),
    ("tools on openai", chat(tools=[TOOL], tool_choice="required", parallel_tool_calls=False), OPENAI),
    ("tool_choice none on ollama", chat(tools=[TOOL], tool_choice="none"), OLLAMA),
    ("tool_choice auto on ollama", chat(tools=[TOOL], tool_choice="auto"), OLLAMA),
    ("named tool on anthropic", chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "x"}}),
     ANTHROPIC),
    ("parallel true is the default behaviour", chat(tools=[TOOL], parallel_tool_calls=True), OLLAMA),
    ("parallel false without tools has nothing to limit", chat(parallel_tool_calls=False), OLLAMA),
    ("tool_choice none without tool support", chat(tool_choice="none"), BARE),
    ("empty tools list", chat(tools=[]), BARE),
    ("legacy function_call auto on ollama", chat(functions=[FUNCTION], function_call="auto"), OLLAMA),
    ("json_schema on ollama", chat(response_format=SCHEMA_FORMAT), OLLAMA),
    ("text format on anthropic", chat(response_format={"type": "text"}), ANTHROPIC),
    ("logprobs false", chat(logprobs=False), OLLAMA),
    ("top_logprobs 0", chat(top_logprobs=0), OLLAMA),
    ("logprobs on openai", chat(logprobs=True, top_logprobs=5), OPENAI),
    ("n=1 on ollama", chat(n=1), OLLAMA),
    ("n=8 on gemini", chat(n=8), GEMINI),
    ("image on a vision model", chat(messages=with_image()), OLLAMA),
    ("stream", chat(stream=True, stream_options={"include_usage": True}), ANTHROPIC),
    ("unknown fields", chat(seed=3, keep_alive="5m", user="u", metadata={"a": "b"}), BARE),
]


@pytest.mark.parametrize(("body", "caps"), [r[1:] for r in ALLOWED], ids=[r[0] for r in ALLOWED])
def test_honourable_requests_pass_unchanged(body: dict[str, Any], caps: Capabilities) -> None:
    before = copy.deepcopy(body)
    out = enforce(body, caps, tuple(sorted(DROPPABLE)), prompt_tokens=10)
    assert out == before and out is not body
    assert all(out[k] is body[k] for k in body)  # no copies of what was not changed
    assert body == before


# --- dropping ---------------------------------------------------------------------------------

DROPPED = [
    # (id, body, caps, drop, expected)
    ("logprobs with top_logprobs", chat(logprobs=True, top_logprobs=3, temperature=0.2), OLLAMA, ("logprobs",),
     chat(temperature=0.2)),
    ("only top_logprobs", chat(top_logprobs=3), GEMINI, ("top_logprobs",), chat()),
    ("n", chat(n=4, seed=1), ANTHROPIC, ("n",), chat(seed=1)),
    ("best_of", {"model": "m", "prompt": "hi", "best_of": 2}, OLLAMA, ("best_of",), {"model": "m", "prompt": "hi"}),
    ("response_format", chat(response_format=SCHEMA_FORMAT), ANTHROPIC, ("response_format",), chat()),
    ("tools and everything steering them",
     chat(tools=[TOOL], tool_choice="required", parallel_tool_calls=False), BARE, ("tools",), chat()),
    ("legacy functions", chat(functions=[FUNCTION], function_call={"name": "get_weather"}), BARE, ("functions",),
     chat()),
    ("tools drop covers a forced choice", chat(tools=[TOOL], tool_choice="required"), OLLAMA, ("tools",),
     chat(tools=[TOOL])),
    ("tool_choice alone", chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
     OLLAMA, ("tool_choice",), chat(tools=[TOOL])),
    ("parallel_tool_calls", chat(tools=[TOOL], parallel_tool_calls=False), GEMINI, ("parallel_tool_calls",),
     chat(tools=[TOOL])),
    ("several at once", chat(n=2, logprobs=True, response_format={"type": "json_object"}), ANTHROPIC,
     ("n", "logprobs", "response_format"), chat()),
    ("honourable params stay despite drop", chat(n=2, logprobs=True, tools=[TOOL]), OPENAI,
     tuple(sorted(DROPPABLE)), chat(n=2, logprobs=True, tools=[TOOL])),
    ("unknown drop names are ignored at request time", chat(n=2), OLLAMA, ("n", "bogus"), chat()),
]


@pytest.mark.parametrize(("body", "caps", "drop", "expected"), [r[1:] for r in DROPPED], ids=[r[0] for r in DROPPED])
def test_configured_drops_remove_only_what_cannot_be_honoured(body: dict[str, Any], caps: Capabilities,
                                                              drop: tuple[str, ...], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    out = enforce(body, caps, drop)
    assert out == expected
    assert body == before  # the client's body is never mutated
    assert all(out[k] is body[k] for k in out)  # kept values are the very same objects
    enforce(out, caps)  # what is sent is honourable as it is


@pytest.mark.parametrize("entry", ["vision", "images"])
def test_dropping_images_keeps_the_text(entry: str) -> None:
    untouched = {"role": "assistant", "content": [{"type": "text", "text": "earlier"}]}
    body = chat(messages=[
        *with_image("describe"),
        untouched,
        {"role": "user", "content": [IMAGE, IMAGE]},
    ], temperature=0)
    before = copy.deepcopy(body)
    out = enforce(body, BARE, (entry,))
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "describe"}]},
        untouched,
        {"role": "user", "content": ""},
    ]
    assert body == before
    assert out["messages"] is not body["messages"]
    assert out["messages"][0] is body["messages"][0] and out["messages"][2] is body["messages"][2]
    assert out["messages"][1]["content"][0] is body["messages"][1]["content"][0]
    assert out["temperature"] is body["temperature"]
    validate(out, "CreateChatCompletionRequest")
    enforce(out, BARE)


def test_messages_are_not_copied_when_there_are_no_images() -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    out = enforce(body, BARE, ("vision",))
    assert out["messages"] is body["messages"]


# --- context length ---------------------------------------------------------------------------

SMALL = OPENAI.merged({"context_length": 8192})


def test_context_length_exceeded_by_the_messages() -> None:
    with pytest.raises(BadRequestError) as info:
        enforce(chat(), SMALL, prompt_tokens=9000)
    exc = info.value
    assert (exc.status_code, exc.param, exc.code) == (400, "messages", "context_length_exceeded")
    assert exc.message == ("This model's maximum context length is 8192 tokens. However, your messages resulted in "
                           "9000 tokens. Please reduce the length of the messages.")
    validate(exc.to_dict(), "ErrorResponse")


def test_context_length_exceeded_with_the_completion_counts_max_completion_tokens_first() -> None:
    with pytest.raises(BadRequestError) as info:
        enforce(chat(max_completion_tokens=4000, max_tokens=10), SMALL, prompt_tokens=4200)
    assert info.value.message == (
        "This model's maximum context length is 8192 tokens. However, you requested 8200 tokens "
        "(4200 in the messages, 4000 in the completion). Please reduce the length of the messages or completion."
    )
    assert (info.value.param, info.value.code) == ("messages", "context_length_exceeded")
    with pytest.raises(BadRequestError, match="8292 tokens"):
        enforce(chat(max_tokens=4092), SMALL, prompt_tokens=4200)
    with pytest.raises(BadRequestError, match="your messages resulted in 9000 tokens"):
        enforce(chat(max_tokens=100), SMALL, prompt_tokens=9000)  # the messages alone are too long


def test_legacy_completion_context_names_the_prompt() -> None:
    with pytest.raises(BadRequestError) as info:
        enforce({"model": "m", "prompt": "x", "max_tokens": 100}, SMALL, prompt_tokens=8100)
    assert info.value.param == "prompt"
    assert "(8100 in the prompt, 100 in the completion)" in info.value.message


def test_context_length_boundary_and_when_unknown() -> None:
    assert enforce(chat(max_tokens=192), SMALL, prompt_tokens=8000) == chat(max_tokens=192)  # exactly the limit
    assert enforce(chat(max_tokens=10**6), SMALL) == chat(max_tokens=10**6)  # prompt not counted: no check
    assert enforce(chat(), OPENAI, prompt_tokens=10**7) == chat()  # limit unknown: no check


def test_context_length_is_never_dropped() -> None:
    with pytest.raises(BadRequestError) as info:
        enforce(chat(n=2), SMALL, tuple(sorted(DROPPABLE)), prompt_tokens=8193)
    assert info.value.code == "context_length_exceeded"


# --- drop lists and embeddings ----------------------------------------------------------------

def test_validate_drop_normalises_known_names() -> None:
    assert validate_drop(["logprobs", "n", "logprobs", "images"]) == ("logprobs", "n", "images")
    assert validate_drop([]) == ()
    assert {"tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "n",
            "vision", "images"} <= DROPPABLE


@pytest.mark.parametrize(("names", "match"), [
    (["logprob"], "unknown parameter 'logprob'"),
    (["n", "temperature"], "unknown parameter 'temperature'"),
    (["stream"], "'stream' cannot be dropped"),
    (["messages"], "'messages' cannot be dropped"),
    ("logprobs", "not a single string"),
    ([3], "entries must be parameter names"),
])
def test_validate_drop_rejects_what_cannot_be_dropped(names: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_drop(names)


def test_embeddings_only_where_supported() -> None:
    enforce_embeddings(OPENAI)
    enforce_embeddings(OLLAMA)
    with pytest.raises(BadRequestError) as info:
        enforce_embeddings(ANTHROPIC)
    exc = info.value
    assert (exc.status_code, exc.param) == (400, "model")
    assert "embeddings" in exc.message
    validate(exc.to_dict(), "ErrorResponse")


def test_an_embedding_only_model_refuses_chat() -> None:
    embed_only = OLLAMA.merged({"chat": False})
    assert embed_only.as_json()["chat"] is False and not embed_only.unrestricted
    assert embed_only.intersect(OPENAI).chat is False and OPENAI.intersect(OPENAI).chat is True
    enforce_embeddings(embed_only)
    with pytest.raises(BadRequestError) as info:
        enforce(chat(), embed_only, ("tools", "vision"))  # never dropped
    exc = info.value
    assert (exc.status_code, exc.param, exc.code) == (400, "model", "unsupported_model")
    assert "embeddings only" in exc.message
    with pytest.raises(ValueError, match=r"capabilities\.chat must be true or false"):
        OPENAI.merged({"chat": "no"})


def test_odd_shapes_are_left_to_request_validation() -> None:
    # enforce never crashes on shapes the request validator would refuse; it judges only what it knows
    odd = chat(messages="hi", tool_choice=3, response_format="json", n="2", logprobs=None, top_logprobs=None)
    assert enforce(odd, BARE) == odd
    mixed = chat(messages=[{"role": "user", "content": "plain"}, "junk", {"role": "user", "content": [1, IMAGE]}])
    with pytest.raises(BadRequestError) as info:
        enforce(mixed, BARE)
    assert info.value.param == "messages[2].content"
