"""Tiny random models built on the fly, for tests of the local engines (no downloads).

``build_tiny_llama(dir)`` writes a Hugging Face model directory: a 2-layer Llama with random
(seeded) weights, and a byte-level BPE tokenizer trained on a few KB of text that includes
multibyte UTF-8 (é, ü, 日本語, emoji), so that some characters are split over several tokens.
The tokenizer has ChatML special tokens and a ChatML chat template; its EOS is <|endoftext|>,
and the generation config lists both <|endoftext|> and <|im_end|> as EOS ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHATML_TEMPLATE", "EOS_TOKEN", "IM_END", "IM_START", "build_tiny_llama", "training_text"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EOS_TOKEN = "<|endoftext|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A gateway routes every request to a provider and records the usage.",
    'JSON looks like {"name": "value", "count": 12, "ok": true, "items": [1, 2, 3]}.',
    "Café, naïve, crème brûlée and über are words with accents; Müller wohnt in Zürich.",
    "日本語のテキストも少し含まれています。東京は日本の首都です。",
    "Emoji travel well: 🚀 rockets, 🎉 parties, 👍 thumbs and 🌍 the world.",
    "Numbers such as 0, 1, 42, 1999 and 3.14 appear in text, as do dates like 2024-05-01.",
    "def add(a, b):\n    return a + b\n",
    "Large language models predict the next token from the previous ones.",
    "Streaming responses are sent as server-sent events, one chunk at a time.",
]


def training_text() -> str:
    """The few KB of text the tokenizer is trained on."""
    return "\n".join(_SENTENCES * 6)


def _train_tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_SENTENCES * 6, trainer=trainer)
    return tokenizer


def build_tiny_llama(dir: Path) -> Path:
    """Write a tiny random Llama chat model (safetensors + tokenizer) into ``dir``; returns ``dir``."""
    import torch
    import transformers

    hf: Any = transformers  # some of its constructors are untyped
    dir.mkdir(parents=True, exist_ok=True)
    tokenizer = hf.PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(dir)

    eos_id: int = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    im_end_id: int = tokenizer.convert_tokens_to_ids(IM_END)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = hf.GenerationConfig(eos_token_id=[eos_id, im_end_id], pad_token_id=eos_id)
    model.save_pretrained(dir, safe_serialization=True)
    return dir
