"""Deterministic content generation shared by the fake upstreams."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from typing import Any

_WORD = re.compile(r"\s*\S+")


def split_words(text: str) -> list[str]:
    """Split into word chunks that keep their leading whitespace: ``"a b"`` -> ``["a", " b"]``.

    ``"".join(split_words(t)) == t`` always holds.
    """
    words = _WORD.findall(text)
    rest = text[sum(map(len, words)) :]
    if rest:
        if words:
            words[-1] += rest
        else:
            words.append(rest)
    return words


def content_text(content: Any) -> str:
    """Text of an OpenAI/Ollama message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") if isinstance(part, dict) else str(part)
            for part in content
            if not isinstance(part, dict) or part.get("type", "text") == "text"
        )
    return ""


def count_words(messages: Any) -> int:
    """Whitespace-separated words across all message contents (at least 1)."""
    total = 0
    for msg in messages if isinstance(messages, list) else []:
        if isinstance(msg, dict):
            total += len(content_text(msg.get("content")).split())
    return max(total, 1)


def last_text(messages: Any, role: str = "user") -> str:
    for msg in reversed(messages if isinstance(messages, list) else []):
        if isinstance(msg, dict) and msg.get("role") == role:
            return content_text(msg.get("content"))
    return ""


def apply_stop(text: str, stop: Any) -> str:
    """Cut *text* at the first stop sequence (a string or a list of strings)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str) and s]
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


def apply_limit(words: list[str], limit: Any) -> tuple[list[str], bool]:
    """Keep at most *limit* word chunks; returns (words, truncated)."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(words):
        return words[:limit], True
    return words, False


# --------------------------------------------------------------------------- JSON
def instance_for(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that validates against *schema* (enough for pydantic-generated schemas:
    objects, arrays, enums, const, anyOf/oneOf/allOf, ``$ref`` into ``$defs``)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        return instance_for(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = schema[key]
            if depth > 6:  # recursive models: take the null branch when there is one
                options = sorted(options, key=lambda s: not (isinstance(s, dict) and s.get("type") == "null"))
            else:
                options = sorted(options, key=lambda s: isinstance(s, dict) and s.get("type") == "null")
            return instance_for(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = instance_for(part, root, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
            else:
                return value
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        if depth > 8:
            props = {k: v for k, v in props.items() if k in schema.get("required", [])}
        return {name: instance_for(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1) if depth <= 8 else int(schema.get("minItems", 0))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [instance_for(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $refs are supported, got {ref!r}")
    node = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _number(schema: dict[str, Any], kind: str) -> int | float:
    value: float = 1 if kind == "integer" else 1.5
    step = 1 if kind == "integer" else 0.5
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + step)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - step)
    return math.ceil(value) if kind == "integer" else float(value)


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    value = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00Z",
        "email": "user@example.com",
        "uri": "https://example.com/",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }.get(fmt or "", "text")
    min_len = int(schema.get("minLength", 0))
    if len(value) < min_len:
        value += "x" * (min_len - len(value))
    if "maxLength" in schema:
        value = value[: int(schema["maxLength"])]
    return value


# ---------------------------------------------------------------------- embeddings
def embedding(key: str, dims: int) -> list[float]:
    """A deterministic unit vector of *dims* float32-representable floats for *key*."""
    dims = max(int(dims), 1)
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{key}".encode()).digest()
        counter += 1
    ints = struct.unpack(f"<{dims}I", raw[: dims * 4])
    vec = [i / 0xFFFFFFFF * 2.0 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # Round-trip through float32 so the float and base64 encodings carry the same numbers.
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vec))))
