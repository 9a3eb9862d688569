"""The transformers engine on a tiny random Llama: finish reasons, continuous batching, sampling,
grammar-constrained JSON, and the incremental detokenizer."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.local.engine import ChatEngine, Constraint, SamplingParams
from switchyard.local.engines.transformers import TransformersEngine, generate_blocking, load
from switchyard.local.spec import LocalModelSpec
from tests.local.tiny_models import EOS_TOKEN, IM_END, build_tiny_llama

GREEDY = SamplingParams(max_tokens=24, temperature=0)
PROMPTS = ["hello", "Tell me about the quick brown fox and the lazy dog", "日本語", "🚀",
           "JSON looks like this", "a", "Müller wohnt in Zürich, über café", "numbers 1 2 3 4 5 6 7 8 9"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _spec(source: Path, **kwargs: Any) -> LocalModelSpec:
    return LocalModelSpec(name="tiny", engine="transformers", source=str(source), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[TransformersEngine]:
    eng = load(_spec(tiny_dir, threads=1))
    yield eng
    eng.close()


class Collector:
    """on_token/on_done for one job, checking the callback contract as it goes."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.reasons: list[str | BaseException] = []
        self.done = threading.Event()
        self.first_token = threading.Event()
        self.job: Any = None
        self.cancel_after = cancel_after
        self.violations: list[str] = []

    def on_token(self, token: int) -> None:
        if self.done.is_set():
            self.violations.append("on_token after on_done")
        self.tokens.append(token)
        self.first_token.set()
        if self.cancel_after is not None and len(self.tokens) == self.cancel_after:
            self.job.cancel()

    def on_done(self, reason: str | BaseException) -> None:
        self.reasons.append(reason)
        self.done.set()

    def submit(self, eng: ChatEngine, prompt: list[int], params: SamplingParams, grammar: object = None) -> Collector:
        self.job = eng.submit(prompt, params, grammar, self.on_token, self.on_done)
        return self

    def wait(self) -> tuple[list[int], str | BaseException]:
        assert self.done.wait(30), "the job never finished"
        assert len(self.reasons) == 1 and not self.violations, (self.reasons, self.violations)
        return self.tokens, self.reasons[0]


def _chat(eng: ChatEngine, text: str) -> list[int]:
    return eng.render_chat([{"role": "user", "content": text}])


# ---- loading, templates, tokenizing ----

def test_load_reports_context_footprint_and_renders_chatml(engine: TransformersEngine, tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert isinstance(engine, ChatEngine)
    assert engine.context_length == 1024  # max_position_embeddings of the tiny config
    weights = (tiny_dir / "model.safetensors").stat().st_size
    assert 0.9 * weights < engine.footprint_bytes < 1.2 * weights
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    ids = engine.render_chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}])
    assert tokenizer.decode(ids) == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nfirst\nsecond<|im_end|>\n<|im_start|>assistant\n"
    )
    assert engine.encode("café 日本") == tokenizer.encode("café 日本", add_special_tokens=False)  # no BOS in ChatML
    with pytest.raises(BadRequestError) as info:
        engine.render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert info.value.param == "messages"


def test_spec_overrides_template_and_context(tiny_dir: Path) -> None:
    eng = load(_spec(tiny_dir, context_length=40, chat_template="{% for m in messages %}[{{ m['content'] }}]"
                     "{% endfor %}{% if add_generation_prompt %}>{% endif %}"))
    try:
        assert eng.context_length == 40
        assert eng.render_chat([{"role": "user", "content": "hi"}]) == eng.encode("[hi]>")
        prompt = eng.encode("the quick brown fox jumps over the lazy dog")
        tokens, reason = generate_blocking(eng, prompt, SamplingParams(max_tokens=100, temperature=0))
        assert reason == "length" and len(prompt) + len(tokens) == 40  # the context, not max_tokens, ended it
        with pytest.raises(BadRequestError) as info:
            eng.submit(prompt * 4, GREEDY, None, lambda t: None, lambda r: None)
        assert info.value.code == "context_length_exceeded"
    finally:
        eng.close()
    with pytest.raises(ServiceUnavailableError):
        eng.submit(prompt, GREEDY, None, lambda t: None, lambda r: None)


def test_submit_rejects_bad_requests(engine: TransformersEngine) -> None:
    with pytest.raises(BadRequestError):
        engine.submit([], GREEDY, None, lambda t: None, lambda r: None)
    with pytest.raises(BadRequestError) as info:
        engine.submit([5, 6], SamplingParams(max_tokens=0), None, lambda t: None, lambda r: None)
    assert info.value.param == "max_tokens"
    with pytest.raises(BadRequestError):
        engine.submit([5, 6], GREEDY, object(), lambda t: None, lambda r: None)


# ---- finish reasons ----

def test_length_finish(engine: TransformersEngine) -> None:
    params = SamplingParams(max_tokens=7, temperature=0)
    tokens, reason = Collector().submit(engine, _chat(engine, "hello"), params).wait()
    assert reason == "length" and len(tokens) == 7


def _model_that_ends_with(tiny_dir: Path, out: Path, eos_token: str, like_token: int) -> Path:
    """A copy of the tiny model whose EOS logit is 1.5 x the logit of ``like_token``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(tiny_dir)
    weight = model.get_output_embeddings().weight
    weight.data[tokenizer.convert_tokens_to_ids(eos_token)] = 1.5 * weight.data[like_token]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("eos_token", [EOS_TOKEN, IM_END])  # the tokenizer's EOS; generation_config's other EOS
def test_eos_finishes_with_stop(engine: TransformersEngine, tiny_dir: Path, tmp_path: Path, eos_token: str) -> None:
    prompt = _chat(engine, "hello")
    original, _ = generate_blocking(engine, prompt, GREEDY)
    # Where the original model picks original[4], the changed one ranks EOS higher (it may do so earlier).
    eng = load(_spec(_model_that_ends_with(tiny_dir, tmp_path / "eos", eos_token, original[4])))
    try:
        tokens, reason = generate_blocking(eng, prompt, GREEDY)
    finally:
        eng.close()
    assert reason == "stop"
    assert len(tokens) <= 4 and tokens == original[:len(tokens)]  # EOS itself is not reported


def test_cancel_from_callback_and_from_another_thread(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "hello")
    params = SamplingParams(max_tokens=500, temperature=0)
    tokens, reason = Collector(cancel_after=3).submit(engine, prompt, params).wait()
    assert reason == "cancelled" and len(tokens) == 3
    collector = Collector().submit(engine, prompt, params)
    assert collector.first_token.wait(30)
    collector.job.cancel()
    seen = len(collector.tokens)
    tokens, reason = collector.wait()
    assert reason == "cancelled" and len(tokens) <= seen + 1
    collector.job.cancel()  # after the end: harmless, no second on_done
    assert collector.reasons == ["cancelled"]


def test_cancelled_rows_leave_the_rest_of_the_batch_intact(engine: TransformersEngine) -> None:
    prompts = [_chat(engine, text) for text in PROMPTS[:5]]
    solo = [generate_blocking(engine, p, GREEDY) for p in prompts]
    cancel_after = [None, 3, None, 7, None]
    collectors = [Collector(cancel_after=n).submit(engine, p, GREEDY)
                  for p, n in zip(prompts, cancel_after, strict=True)]
    for index, (collector, n) in enumerate(zip(collectors, cancel_after, strict=True)):
        if n is None:
            assert collector.wait() == solo[index]
        else:
            assert collector.wait() == (solo[index][0][:n], "cancelled")


def test_callback_exception_fails_only_its_job(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "hello")
    boom = RuntimeError("client went away")

    class Failing(Collector):
        def on_token(self, token: int) -> None:
            super().on_token(token)
            if len(self.tokens) == 2:
                raise boom

    failing = Failing().submit(engine, prompt, SamplingParams(max_tokens=50, temperature=0))
    healthy = Collector().submit(engine, prompt, SamplingParams(max_tokens=20, temperature=0))
    tokens, reason = failing.wait()
    assert reason is boom and len(tokens) == 2
    assert healthy.wait() == (generate_blocking(engine, prompt, SamplingParams(max_tokens=20, temperature=0))[0],
                              "length")


# ---- continuous batching ----

def test_eight_concurrent_greedy_jobs_match_solo_runs(engine: TransformersEngine) -> None:
    prompts = [_chat(engine, text) for text in PROMPTS]
    solo = [generate_blocking(engine, p, GREEDY) for p in prompts]
    collectors = [Collector().submit(engine, p, GREEDY) for p in prompts]
    assert [c.wait() for c in collectors] == solo


def test_jobs_joining_a_running_batch(engine: TransformersEngine) -> None:
    long_params = SamplingParams(max_tokens=60, temperature=0)
    first = _chat(engine, "hello")
    later = [_chat(engine, PROMPTS[1] * 3), _chat(engine, "a")]  # longer and shorter than the running batch
    solo_first = generate_blocking(engine, first, long_params)
    solo_later = [generate_blocking(engine, p, GREEDY) for p in later]
    joined: list[Collector] = []
    running_at_join: list[int] = []

    class Running(Collector):
        def on_token(self, token: int) -> None:
            super().on_token(token)
            if len(self.tokens) == 10:  # on the scheduler thread: they join at the next step boundary
                joined.extend(Joining().submit(engine, p, GREEDY) for p in later)

    class Joining(Collector):
        def on_token(self, token: int) -> None:
            if not self.tokens:
                running_at_join.append(len(running.tokens))
            super().on_token(token)

    running = Running().submit(engine, first, long_params)
    assert running.wait() == solo_first
    assert [c.wait() for c in joined] == solo_later
    assert running_at_join == [10, 10]  # both prefilled before the running job's next token


def test_jobs_beyond_max_batch_wait_in_fifo_order(tiny_dir: Path) -> None:
    eng = load(_spec(tiny_dir, max_batch=2))
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    class Logged(Collector):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def on_token(self, token: int) -> None:
            with lock:
                if not self.tokens:
                    events.append(("start", self.index))
            super().on_token(token)

        def on_done(self, reason: str | BaseException) -> None:
            with lock:
                events.append(("done", self.index))
            super().on_done(reason)

    try:
        prompt = _chat(eng, "hello")
        collectors = [Logged(i).submit(eng, prompt, SamplingParams(max_tokens=12 - i, temperature=0))
                      for i in range(4)]
        collectors[3].job.cancel()  # still waiting: ends at once, with no token
        results = [c.wait() for c in collectors]
    finally:
        eng.close()
    assert results[3] == ([], "cancelled")
    assert [r for _, r in results[:3]] == ["length"] * 3
    running = 0
    for kind, index in events:
        running += 1 if kind == "start" else -1 if index != 3 else 0
        assert running <= 2
    starts = [index for kind, index in events if kind == "start"]
    assert starts == [0, 1, 2]
    first_done = min(events.index(("done", 0)), events.index(("done", 1)))
    assert events.index(("start", 2)) > first_done  # job 2 waited for a free row


# ---- sampling ----

def test_seeded_sampling_is_reproducible(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "hello")
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=42)
    first = generate_blocking(engine, prompt, params)
    assert generate_blocking(engine, prompt, params) == first
    other_seed = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=43)
    assert generate_blocking(engine, prompt, other_seed) != first
    # the row's own generator: the same tokens also when other jobs share the batch
    others = [Collector().submit(engine, _chat(engine, t), SamplingParams(max_tokens=20, temperature=1.0))
              for t in PROMPTS[:4]]
    assert Collector().submit(engine, prompt, params).wait() == first
    for collector in others:
        collector.wait()


def test_tiny_top_p_is_greedy(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "hello")
    greedy = generate_blocking(engine, prompt, GREEDY)
    nucleus = generate_blocking(engine, prompt, SamplingParams(max_tokens=24, temperature=1.0, top_p=1e-9))
    assert nucleus == greedy
    unseeded = {tuple(generate_blocking(engine, prompt, SamplingParams(max_tokens=8, temperature=5.0))[0])
                for _ in range(3)}
    assert len(unseeded) > 1  # no seed: a fresh random one each time


# ---- grammar-constrained decoding ----

def _random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for index in range(rng.randint(1, 4)):
        kinds = ["integer", "bounded_integer", "boolean", "enum", "string", "array"] + (["object"] if depth < 2 else [])
        kind = rng.choice(kinds)
        if kind == "integer":
            prop: dict[str, Any] = {"type": "integer"}
        elif kind == "bounded_integer":
            prop = {"type": "integer", "minimum": -5, "maximum": rng.randint(0, 500)}
        elif kind == "boolean":
            prop = {"type": "boolean"}
        elif kind == "enum":
            prop = {"enum": rng.sample(["red", "green", "blue", "日本", "über", 7, None], rng.randint(1, 4))}
        elif kind == "string":
            prop = {"type": "string", "maxLength": rng.randint(0, 8)}
        elif kind == "array":
            item = rng.choice([{"type": "integer"}, {"type": "boolean"}, {"type": "string", "maxLength": 4}])
            prop = {"type": "array", "items": item, "maxItems": rng.randint(0, 3)}
        else:
            prop = _random_schema(rng, depth + 1)
        properties[f"p{index}_{kind}"] = prop
    names = list(properties)
    return {"type": "object", "properties": properties, "required": rng.sample(names, rng.randint(0, len(names))),
            "additionalProperties": False}


def _text(engine: TransformersEngine, tokens: list[int]) -> str:
    detok = engine.detokenizer()
    return "".join(detok.push(t) for t in tokens) + detok.flush()


def test_random_json_schemas_give_valid_documents(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "Answer in JSON.")
    schemas = [_random_schema(random.Random(seed)) for seed in range(20)]
    grammars = [engine.compile(Constraint("json_schema", schema)) for schema in schemas]
    collectors = [Collector().submit(engine, prompt, SamplingParams(max_tokens=400, temperature=1.0, seed=seed), g)
                  for seed, g in enumerate(grammars)]
    for schema, collector in zip(schemas, collectors, strict=True):
        tokens, reason = collector.wait()
        text = _text(engine, tokens)
        assert reason == "stop", (schema, text)
        jsonschema.validate(json.loads(text), schema)


def test_json_object_mode_gives_an_object(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "Answer in JSON.")
    grammar = engine.compile(Constraint("json_object"))
    collectors = [Collector().submit(engine, prompt, SamplingParams(max_tokens=300, temperature=1.0, seed=s), grammar)
                  for s in range(6)]
    finished = 0
    for collector in collectors:
        tokens, reason = collector.wait()
        text = _text(engine, tokens)
        assert text.startswith("{")
        if reason == "stop":
            finished += 1
            assert isinstance(json.loads(text), dict)
    assert finished >= 1


def test_unconstrained_and_constrained_rows_share_a_batch(engine: TransformersEngine) -> None:
    prompt = _chat(engine, "hello")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    free = Collector().submit(engine, prompt, GREEDY)
    constrained = Collector().submit(engine, prompt, GREEDY, engine.compile(Constraint("json_schema", schema)))
    tokens, reason = constrained.wait()
    assert reason == "stop" and json.loads(_text(engine, tokens)) in ({"ok": True}, {"ok": False})
    assert free.wait() == generate_blocking(engine, prompt, GREEDY)


@pytest.mark.parametrize(("schema", "fragment"), [
    ({"type": "object", "properties": {"a": {"type": "nonsense"}}}, "nonsense"),
    ({"type": "object", "properties": {"a": 5}}, "5"),
    (["not", "an", "object"], "list"),
    ("string", "str"),
])
def test_bad_schema_is_a_bad_request(engine: TransformersEngine, schema: Any, fragment: str) -> None:
    with pytest.raises(BadRequestError) as info:
        engine.compile(Constraint("json_schema", schema))
    assert info.value.param == "response_format" and info.value.code == "invalid_json_schema"
    assert fragment in info.value.message and "/project/" not in info.value.message


# ---- detokenizer ----

def test_detokenizer_never_breaks_a_character(engine: TransformersEngine, tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    text = "Grüße aus 日本語, naïve 🚀🎉 über 東京 👍 café 🦀!"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some character really is split over tokens
    ids.insert(5, tokenizer.convert_tokens_to_ids(IM_END))  # special tokens are skipped
    detok = engine.detokenizer()
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_detokenizer_flushes_an_incomplete_character(engine: TransformersEngine, tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tokenizer.encode("ok 🦀", add_special_tokens=False)  # 🦀 is not in the training text: 4 byte tokens
    detok = engine.detokenizer()
    pushed = "".join(detok.push(i) for i in ids[:-1])
    flushed = detok.flush()
    assert pushed.startswith("ok") and "\ufffd" not in pushed
    assert flushed.endswith("\ufffd") and pushed + flushed == tokenizer.decode(ids[:-1])
    assert detok.flush() == ""

