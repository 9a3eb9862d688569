"""Validate JSON payloads against OpenAI's official OpenAPI spec.

The spec lives outside the repository, in ``../shared/specs/openai-openapi.yaml``
(CI clones the repo with ``shared/`` beside it; ``SWITCHYARD_OPENAI_SPEC`` overrides
the location).  It is ~3 MB of YAML, so it is parsed once per process with libyaml
and cached as JSON under the system temp dir, keyed by the spec's path, mtime and
size, which makes later test sessions start fast.

The document says ``openapi: 3.1.0`` (JSON Schema 2020-12) but still uses the
OpenAPI 3.0 keyword ``nullable: true`` in ~110 places (e.g. the stream chunk's
``usage`` and ``finish_reason``).  JSON Schema ignores unknown keywords, so those
fields would reject ``null``; :func:`load_spec` rewrites them into real
2020-12 constructs.  ``discriminator``, ``x-*`` and ``format`` are annotations
and are left alone (formats are not asserted).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "iter_errors", "load_spec", "schema", "validate", "validator_for"]

SPEC_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "openai-openapi.yaml"
SPEC_URI = "urn:openai:openapi"
_TRANSFORM_VERSION = "1"  # bump when _fix_nullable changes, to invalidate old caches


def _spec_path() -> Path:
    override = os.environ.get("SWITCHYARD_OPENAI_SPEC")
    return Path(override) if override else SPEC_PATH


def _fix_nullable(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable: true`` into JSON Schema 2020-12."""
    if isinstance(node, list):
        return [_fix_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _fix_nullable(value) for key, value in node.items()}
    nullable = out.get("nullable")
    if not isinstance(nullable, bool):  # a property *named* "nullable" is a dict: leave it
        return out
    del out["nullable"]
    if not nullable:
        return out
    combinators = {"$ref", "allOf", "anyOf", "oneOf", "not", "const"}
    if isinstance(out.get("type"), str) and not combinators & out.keys():
        out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    keep = {k: out.pop(k) for k in ("description", "title", "deprecated", "default") if k in out}
    return {"anyOf": [out, {"type": "null"}], **keep}


def _parse_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as fh:
        data = yaml.load(fh, Loader=loader)
    # Round-trip through JSON so YAML-only values (int keys such as response codes,
    # dates) look exactly like what the JSON cache gives back.
    return json.loads(json.dumps(data, default=str))


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed (and ``nullable``-fixed) spec, cached per process and on disk."""
    path = _spec_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"OpenAI OpenAPI spec not found at {path}; expected the repo to be cloned with "
            "shared/ beside it (or set SWITCHYARD_OPENAI_SPEC)"
        ) from None
    key = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{_TRANSFORM_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    cache = Path(tempfile.gettempdir()) / f"switchyard-openai-openapi-{digest}.json"
    try:
        with cache.open("rb") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        pass
    spec = _parse_yaml(path)
    spec["components"] = _fix_nullable(spec.get("components", {}))
    try:
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(spec, fh, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache)
    except OSError:  # a read-only temp dir only costs speed
        pass
    return spec


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(load_spec()))


def schema(schema_name: str) -> dict[str, Any]:
    """The raw (``nullable``-fixed) ``#/components/schemas/<schema_name>``."""
    schemas = load_spec()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in the OpenAI spec")
    return schemas[schema_name]


@functools.cache
def validator_for(schema_name: str) -> jsonschema.protocols.Validator:
    schema(schema_name)  # fail fast with a KeyError on typos
    ref = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"{SPEC_URI}#/components/schemas/{schema_name}",
    }
    return jsonschema.Draft202012Validator(ref, registry=_registry())


def iter_errors(instance: Any, schema_name: str) -> list[jsonschema.ValidationError]:
    return list(validator_for(schema_name).iter_errors(instance))


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless *instance* matches the named schema."""
    errors = iter_errors(instance, schema_name)
    if not errors:
        return
    best = best_match(errors)
    assert best is not None
    lines = [f"{schema_name}: {best.json_path}: {best.message}"]
    for sub in sorted(best.context or [], key=lambda e: len(e.absolute_path))[:4]:
        lines.append(f"  (branch) {sub.json_path}: {sub.message}")
    if len(errors) > 1:
        lines.append(f"  ... and {len(errors) - 1} more error(s):")
        lines.extend(f"  {e.json_path}: {e.message[:200]}" for e in errors if e is not best)
    raise jsonschema.ValidationError(
        "\n".join(lines), path=best.absolute_path, schema_path=best.absolute_schema_path
    ) from best
