"""Validate JSON payloads against the schemas of OpenAI's official OpenAPI spec.

The schemas come from ``openai_schemas.json`` beside this module: a verbatim subset of the
``components.schemas`` of OpenAI's published spec (MIT licensed, ``openai-openapi.LICENSE``),
namely the schemas the tests use plus the Responses API, with everything they reference.
``extract_schemas.py`` writes it from the full spec; the tests read nothing outside the repo.

The spec says ``openapi: 3.1.0`` (JSON Schema 2020-12) but still uses the OpenAPI 3.0
keyword ``nullable: true`` in many places (e.g. the stream chunk's ``usage`` and
``finish_reason``).  JSON Schema ignores unknown keywords, so those fields would reject
``null``; :func:`load_spec` rewrites them into real 2020-12 constructs, once per process.
``discriminator``, ``x-*`` and ``format`` are annotations and are left alone (formats are
not asserted).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = ["SCHEMAS_PATH", "iter_errors", "load_spec", "schema", "validate", "validator_for"]

SCHEMAS_PATH = Path(__file__).resolve().parent / "openai_schemas.json"
SPEC_URI = "urn:openai:openapi"


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


@functools.cache
def load_spec() -> dict[str, Any]:
    """The bundled schemas (``nullable``-fixed), with the spec's version under ``source``."""
    with SCHEMAS_PATH.open(encoding="utf-8") as fh:
        spec: dict[str, Any] = json.load(fh)
    spec["components"] = _fix_nullable(spec["components"])
    return spec


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(load_spec()))


def schema(schema_name: str) -> dict[str, Any]:
    """The raw (``nullable``-fixed) ``#/components/schemas/<schema_name>``."""
    schemas = load_spec()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in {SCHEMAS_PATH.name} (see extract_schemas.py's ROOTS)")
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
