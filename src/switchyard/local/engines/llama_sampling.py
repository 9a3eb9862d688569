"""One llama.cpp sampler chain per sequence: the grammar (structured output), then temperature,
nucleus (top-p) and a seeded draw, in the order the transformers engine (and the OpenAI API)
apply them; greedy at temperature 0. Each chain holds its own grammar state and random
generator, so sequences decoded in one batch never disturb each other."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from switchyard.local.engine import SamplingParams

__all__ = ["CompiledGrammar", "make_sampler"]

_SEED_SPACE = 0xFFFFFFFF  # llama.cpp seeds are uint32, and 0xFFFFFFFF itself means "pick one at random"


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A GBNF grammar checked by llama.cpp; each job gets a fresh sampler made from it.
    ``free_after_text``: once the first token does not start with ``<``, the grammar allows
    any text (tool calls under ``auto``): the scheduler then drops it, as checking every token
    of the vocabulary against it would cost more than half the speed for nothing."""

    gbnf: str
    free_after_text: bool = False


def make_sampler(lib: Any, vocab: Any, params: SamplingParams, grammar: CompiledGrammar | None) -> Any:
    """A new sampler chain (free it with ``lib.llama_sampler_free``)."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if grammar is not None:
        rule = lib.llama_sampler_init_grammar(vocab, grammar.gbnf.encode("utf-8"), b"root")
        if not rule:  # compile() checked it; this would be a llama.cpp regression
            lib.llama_sampler_free(chain)
            raise RuntimeError("llama.cpp could not parse a grammar it accepted before")
        lib.llama_sampler_chain_add(chain, rule)
    if params.temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    seed = secrets.randbelow(_SEED_SPACE) if params.seed is None else params.seed % _SEED_SPACE
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(float(params.temperature)))
    if params.top_p < 1:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(max(float(params.top_p), 0.0), 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain
