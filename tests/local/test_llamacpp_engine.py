"""The llama.cpp engine on the real bundled SmolLM2-135M-Instruct (Q4_1 GGUF)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.local.engine import ChatEngine, Constraint, SamplingParams
from switchyard.local.engines import llamacpp
from switchyard.local.spec import LocalModelSpec
from tests.local.bundled import smollm2_gguf

GREEDY = SamplingParams(max_tokens=32, temperature=0.0)
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who loves to bake bread."}]


def spec(**kw: Any) -> LocalModelSpec:
    return LocalModelSpec(name="smol", engine="llamacpp", source=str(smollm2_gguf()), device="cpu", **kw)


@pytest.fixture(scope="module")
def engine() -> Iterator[ChatEngine]:
    eng = llamacpp.load(spec())
    yield eng
    eng.close()


@dataclass
class Run:
    """One job's callbacks, as the engine made them."""

    tokens: list[int] = field(default_factory=list)
    outcome: str | BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    done_calls: int = 0

    def on_token(self, token: int) -> None:
        assert not self.done.is_set(), "on_token after on_done"
        self.tokens.append(token)

    def on_done(self, outcome: str | BaseException) -> None:
        self.outcome = outcome
        self.done_calls += 1
        self.done.set()

    def wait(self) -> Run:
        assert self.done.wait(60), "the job never finished"
        return self


def generate(engine: ChatEngine, prompt: Sequence[int], params: SamplingParams = GREEDY,
             grammar: object | None = None) -> Run:
    run = Run()
    engine.submit(prompt, params, grammar, run.on_token, run.on_done)
    return run.wait()


def text(engine: ChatEngine, tokens: Sequence[int]) -> str:
    detok = engine.detokenizer()
    return "".join(detok.push(t) for t in tokens) + detok.flush()


def test_loads_with_the_models_own_context_and_a_real_footprint(engine: ChatEngine) -> None:
    assert isinstance(engine, ChatEngine)
    assert engine.context_length == 8192  # SmolLM2's training context, within the default cap
    file_size = smollm2_gguf().stat().st_size
    kv_cache = 8192 * 30 * 3 * (64 + 64) * 2  # tokens x layers x kv heads x (k + v dims) x f16
    # at least the weights plus the whole KV cache, even where the RSS growth says less
    assert 0.95 * file_size + kv_cache <= engine.footprint_bytes < 2 * (file_size + kv_cache)
    assert llamacpp.default_threads() >= 1


def test_greedy_answer_is_coherent_and_stops(engine: ChatEngine) -> None:
    run = generate(engine, engine.render_chat(FRANCE))
    assert run.outcome == "stop" and run.done_calls == 1
    answer = text(engine, run.tokens)
    assert "Paris" in answer
    assert "<|im_end|>" not in answer and 0 < len(run.tokens) < 32  # EOS is not reported


def test_max_tokens_gives_length(engine: ChatEngine) -> None:
    run = generate(engine, engine.render_chat(STORY), SamplingParams(max_tokens=3, temperature=0.0))
    assert run.outcome == "length" and len(run.tokens) == 3
    run = generate(engine, engine.render_chat(STORY), SamplingParams(max_tokens=0, temperature=0.0))
    assert run.outcome == "length" and run.tokens == []


def test_chat_template_takes_content_parts(engine: ChatEngine) -> None:
    parts: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}]
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello\nthere"}]
    tokens = engine.render_chat(parts)
    assert tokens == engine.render_chat(plain)
    assert text(engine, tokens) == "system\nBe brief.\nuser\nHello\nthere\nassistant\n"  # specials are silent
    assert tokens[0] == 1 and tokens.count(1) == 3  # <|im_start|> x 3, the generation prompt included
    with pytest.raises(BadRequestError) as err:
        engine.render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert err.value.param == "messages" and "image_url" in err.value.message


def test_same_seed_same_tokens_other_seed_other_tokens(engine: ChatEngine) -> None:
    prompt = engine.render_chat(STORY)

    def sample(seed: int) -> list[int]:
        run = generate(engine, prompt, SamplingParams(max_tokens=16, temperature=0.8, seed=seed))
        assert run.outcome == "length"
        return run.tokens

    first = sample(1)
    assert sample(1) == first
    assert sample(2) != first  # seeds 1 and 2 are known to diverge on this prompt


def test_top_p_zero_keeps_only_the_most_likely_token(engine: ChatEngine) -> None:
    prompt = engine.render_chat(STORY)
    greedy = generate(engine, prompt, SamplingParams(max_tokens=8, temperature=0.0)).tokens
    assert generate(engine, prompt, SamplingParams(max_tokens=8, temperature=1.5, top_p=0.0, seed=7)).tokens == greedy
    assert generate(engine, prompt, SamplingParams(max_tokens=8, temperature=1.5, top_p=1.0, seed=7)).tokens != greedy


def test_utf8_split_over_tokens_comes_out_whole(engine: ChatEngine) -> None:
    phrase = "日本語 🙂 café"
    tokens = engine.encode(phrase)
    detok = engine.detokenizer()
    pieces = [detok.push(t) for t in tokens]
    assert "" in pieces, "the phrase should have a character split over tokens"
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + detok.flush() == phrase
    # a character cut short stays held back, then becomes U+FFFD at the end
    detok = engine.detokenizer()
    assert detok.push(tokens[0]) == ""  # the first two bytes of 日
    assert detok.flush() == "\ufffd"


def test_cancel_stops_within_a_token(engine: ChatEngine) -> None:
    run = Run()
    five = threading.Event()
    after_cancel: list[int] = []
    cancelled = threading.Event()

    def on_token(token: int) -> None:
        run.on_token(token)
        if cancelled.is_set():
            after_cancel.append(token)
        if len(run.tokens) == 5:
            five.set()

    job = engine.submit(engine.render_chat(STORY), SamplingParams(max_tokens=200, temperature=0.0), None,
                        on_token, run.on_done)
    assert five.wait(30)
    cancelled.set()
    job.cancel()
    run.wait()
    assert run.outcome == "cancelled"
    assert len(after_cancel) <= 2 and len(run.tokens) < 10
    job.cancel()  # harmless after the end
    assert run.done_calls == 1


def test_a_job_cancelled_while_queued_never_runs(engine: ChatEngine) -> None:
    prompt = engine.render_chat(STORY)
    first = Run()
    engine.submit(prompt, SamplingParams(max_tokens=8, temperature=0.0), None, first.on_token, first.on_done)
    queued = Run()
    engine.submit(prompt, GREEDY, None, queued.on_token, queued.on_done).cancel()
    assert queued.wait().outcome == "cancelled" and queued.tokens == []
    assert first.wait().outcome == "length" and len(first.tokens) == 8


def test_concurrent_jobs_share_one_batch_and_each_gets_its_own_answer() -> None:
    """Four slots: four jobs decoded together, interleaved, each with its own answer. (Greedy output
    batched may differ from greedy output alone after a few tokens: a batch's logits are computed
    with other matrix kernels, so their last bits differ, and this small model has near ties.)"""
    eng = llamacpp.load(spec(context_length=512, parallel=4))
    try:
        prompts = [eng.render_chat([{"role": "user", "content": q}]) for q in (
            "What is the capital of France?", "Name three colours.", "Count to five.", "Say hello.")]
        alone = [generate(eng, p, GREEDY).tokens for p in prompts]
        order: list[int] = []
        runs = [Run() for _ in prompts]

        def on_token(i: int) -> Any:
            def take(token: int) -> None:
                order.append(i)
                runs[i].on_token(token)
            return take

        for i, prompt in enumerate(prompts):
            eng.submit(prompt, GREEDY, None, on_token(i), runs[i].on_done)
        for i, run in enumerate(runs):
            run.wait()
            assert run.outcome in ("stop", "length") and run.tokens[:1] == alone[i][:1]
        firsts = [order.index(i) for i in range(4)]
        assert max(firsts) < min(len(t) for t in alone)  # all started before any had finished: interleaved
        stats = eng.stats()  # type: ignore[attr-defined]
        assert stats["slots"] == 4 and stats["slots_busy"] == 0
    finally:
        eng.close()


def test_a_short_prompt_is_not_held_behind_a_huge_one() -> None:
    """Prompts are evaluated in chunks of batch_tokens, least left first: a short prompt that comes
    just after a huge one gets its first token long before the huge one does."""
    eng = llamacpp.load(spec(context_length=1024, parallel=2, batch_tokens=32))
    try:
        huge = eng.encode("The quick brown fox jumps over the lazy dog. " * 80)[:900]
        short = eng.render_chat(FRANCE)
        firsts: list[str] = []
        runs = {"huge": Run(), "short": Run()}

        def first(name: str) -> Any:
            def take(token: int) -> None:
                if not runs[name].tokens:
                    firsts.append(name)
                runs[name].on_token(token)
            return take

        params = SamplingParams(max_tokens=4, temperature=0.0)
        eng.submit(huge, params, None, first("huge"), runs["huge"].on_done)
        eng.submit(short, params, None, first("short"), runs["short"].on_done)
        assert runs["huge"].wait().outcome in ("stop", "length") and runs["short"].wait().outcome in ("stop", "length")
        assert firsts == ["short", "huge"]
        stats = eng.stats()  # type: ignore[attr-defined]
        assert stats["prefill_chunks"] >= 900 // 32  # the huge prompt went in chunks
    finally:
        eng.close()


def test_small_context_fills_and_overflows() -> None:
    template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}{{ eos_token }}assistant:{% endif %}")
    eng = llamacpp.load(spec(context_length=64, chat_template=template))
    try:
        n_ctx = eng.context_length
        assert n_ctx == 64
        # the spec's template replaces the model's own
        assert eng.render_chat([{"role": "user", "content": "Hi"}]) == eng.encode("user: Hi\n<|im_end|>assistant:")
        prompt = eng.encode("Once upon a time, " * 200)[: n_ctx - 10]
        run = generate(eng, prompt, SamplingParams(max_tokens=100, temperature=0.0))
        assert run.outcome == "length" and len(run.tokens) == 11  # the last token needs no room
        too_long = Run()
        with pytest.raises(BadRequestError) as error:
            eng.submit(prompt + prompt[:10], GREEDY, None, too_long.on_token, too_long.on_done)
        assert error.value.code == "context_length_exceeded" and too_long.tokens == []
        after = generate(eng, prompt[:20], SamplingParams(max_tokens=2, temperature=0.0))  # still serving
        assert after.outcome == "length" and len(after.tokens) == 2
    finally:
        eng.close()
    eng.close()  # twice is harmless
    with pytest.raises(ServiceUnavailableError):  # not a crash on freed memory
        eng.render_chat(FRANCE)
    with pytest.raises(ServiceUnavailableError):
        eng.submit([1, 2], GREEDY, None, Run().on_token, Run().on_done)


# -- structured output -------------------------------------------------------------------------

NAMES = ["id", "name", "ok", "tags", "city", "size", "color", "meta", "count", "kind"]


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    names = rng.sample(NAMES, rng.randint(1, 3))
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {n: random_value(rng, depth) for n in names},
        "required": [n for n in names if rng.random() < 0.7],
    }
    if rng.random() < 0.5:
        schema["additionalProperties"] = False
    return schema


def random_value(rng: random.Random, depth: int) -> dict[str, Any]:
    kinds = ["integer", "boolean", "enum", "string", "array"] + (["object"] if depth < 1 else [])
    kind = rng.choice(kinds)
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", "small", "large"], rng.randint(1, 3))}
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 8)}
    if kind == "array":
        item = rng.choice([{"type": "integer"}, {"type": "boolean"}, {"type": "string", "maxLength": 4}])
        return {"type": "array", "items": item, "maxItems": rng.randint(1, 3)}
    if kind == "object":
        return random_schema(rng, depth + 1)
    return {"type": kind}


def test_random_json_schemas_give_valid_json(engine: ChatEngine) -> None:
    rng = random.Random(20240611)
    schemas = [random_schema(rng) for _ in range(20)]
    prompt = engine.render_chat([{"role": "user", "content": "Reply with a JSON object."}])
    for schema in schemas:
        run = generate(engine, prompt, SamplingParams(max_tokens=160, temperature=0.0),
                       engine.compile(Constraint("json_schema", schema)))
        output = text(engine, run.tokens)
        assert run.outcome == "stop", (schema, output)
        jsonschema.validate(json.loads(output), schema)


def test_json_object_gives_an_object(engine: ChatEngine) -> None:
    grammar = engine.compile(Constraint("json_object"))
    prompt = engine.render_chat([{"role": "user", "content": "Give the city and country of Paris as a JSON object."}])
    run = generate(engine, prompt, SamplingParams(max_tokens=100, temperature=0.0), grammar)
    assert run.outcome == "stop"
    assert isinstance(json.loads(text(engine, run.tokens)), dict)
    # the grammar holds no state between jobs
    again = generate(engine, prompt, SamplingParams(max_tokens=100, temperature=0.0), grammar)
    assert again.tokens == run.tokens


@pytest.mark.parametrize("schema", [
    {"type": "nonsense"},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
    {"enum": []},  # converts to "root ::= " which llama.cpp refuses to parse
    {"type": "string", "pattern": "^[a-"},
    None,
])
def test_bad_schema_is_a_bad_request(engine: ChatEngine, schema: Mapping[str, Any] | None) -> None:
    with pytest.raises(BadRequestError) as err:
        engine.compile(Constraint("json_schema", schema))
    assert err.value.param == "response_format" and err.value.code == "invalid_json_schema"
    assert err.value.message


def test_a_crashed_scheduler_fails_its_requests_and_the_model_reloads_on_the_next() -> None:
    """A scheduler that dies (here: a callback raising SystemExit, which the step does not catch)
    fails every request it held, says so, and the model manager loads the model again for the
    next request instead of serving from a dead engine."""
    import asyncio

    from switchyard.local.manager import ManagedModel, ModelManager

    async def body() -> None:
        manager = ModelManager([ManagedModel(spec=spec(context_length=256, parallel=2))], 4 << 30)
        try:
            async with manager.lease("smol") as first:
                assert isinstance(first, ChatEngine)
                prompt = first.render_chat(FRANCE)
                bystander = Run()
                first.submit(prompt, SamplingParams(max_tokens=200, temperature=0.0), None, bystander.on_token,
                             bystander.on_done)

                def explode(token: int) -> None:
                    raise SystemExit("a bug in a callback")

                crashed = Run()
                first.submit(prompt, GREEDY, None, explode, crashed.on_done)
                await asyncio.to_thread(crashed.wait)
                await asyncio.to_thread(bystander.wait)
            assert isinstance(crashed.outcome, SystemExit) and isinstance(bystander.outcome, SystemExit)
            assert first.failed is not None  # type: ignore[attr-defined]
            with pytest.raises(ServiceUnavailableError):
                first.submit(prompt, GREEDY, None, Run().on_token, Run().on_done)
            async with manager.lease("smol") as second:
                assert second is not first
                run = Run()
                second.submit(prompt, GREEDY, None, run.on_token, run.on_done)  # type: ignore[union-attr]
                await asyncio.to_thread(run.wait)
                assert run.outcome == "stop" and run.tokens
            assert next(m for m in manager.status()["models"] if m["id"] == "smol")["loads"] == 2
        finally:
            await manager.aclose()

    asyncio.run(body())
