"""A chat template that renders ``tools`` itself (in the Hermes format, as Qwen2.5's does) is given
them, and the history as it is (calls with their arguments as objects, results as ``tool``
turns): the bundled SmolLM2 served with such a template (``chat_template`` in its config)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.harness import RunningServer, run_server
from tests.local.bundled import smollm2_gguf
from tests.local.test_local_tools import ASK, TOOLS, _valid_calls

TEMPLATE = """{% if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}

{% endif %}You may call functions. Their signatures are within <tools></tools> XML tags:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Return each call within <tool_call></tool_call> XML tags.<|im_end|>
{% endif %}{% for message in messages %}{% if message['role'] == 'system' and tools %}
{% elif message['role'] == 'assistant' and message['tool_calls'] %}<|im_start|>assistant
{% for call in message['tool_calls'] %}<tool_call>
{"name": "{{ call['function']['name'] }}", "arguments": {{ call['function']['arguments'] | tojson }}}
</tool_call>
{% endfor %}<|im_end|>
{% elif message['role'] == 'tool' %}<|im_start|>user
<tool_response>
{{ message['content'] }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("local-tools-native"),
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 2048,
                       "threads": 2, "chat_template": TEMPLATE}],
        memory_budget="1GiB",
    ) as running:
        yield running


def test_the_template_renders_the_tools_and_the_history(server: RunningServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=120) as client:
        def create(**kwargs: Any) -> Any:
            return client.chat.completions.create(model="smol", temperature=0, max_tokens=120, **kwargs)

        first = create(messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
        assert first.choices[0].finish_reason == "tool_calls"
        calls = [c.model_dump() for c in first.choices[0].message.tool_calls or []]
        assert _valid_calls(calls)
        plain = create(messages=ASK)
        described = create(messages=ASK, tools=TOOLS, tool_choice="auto")
        assert first.usage and plain.usage and described.usage
        # the template's own words and the tools' JSON are in the prompt
        tools_tokens = described.usage.prompt_tokens - plain.usage.prompt_tokens
        assert tools_tokens > len(json.dumps(TOOLS)) // 6, tools_tokens
        history = [*ASK, {"role": "assistant", "content": None, "tool_calls": calls[:1]},
                   {"role": "tool", "tool_call_id": calls[0]["id"], "content": "Sunny and 23 degrees."}]
        second = create(messages=history, tools=TOOLS, tool_choice="none")
        assert second.choices[0].message.content and not second.choices[0].message.tool_calls
        # tool_choice none: no tools for the template, but the call and the result are rendered
        assert second.usage and second.usage.prompt_tokens > plain.usage.prompt_tokens + 20
        # exactly the template's own rendering of the tools (not the fallback's system message)
        from switchyard.local.engines import llamacpp
        from switchyard.local.spec import LocalModelSpec

        engine = llamacpp.load(LocalModelSpec(name="native", engine="llamacpp", source=str(smollm2_gguf()),
                                              device="cpu", context_length=512, chat_template=TEMPLATE))
        try:
            assert engine.native_tools
            assert len(engine.render_chat(ASK, TOOLS)) == described.usage.prompt_tokens
        finally:
            engine.close()
