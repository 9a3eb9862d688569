"""Refresh ``openai_schemas.json`` from OpenAI's official OpenAPI spec (a maintainer's tool).

The contract tests validate against ``openai_schemas.json``, a verbatim subset of the
``components.schemas`` of OpenAI's published spec (https://github.com/openai/openai-openapi,
MIT licensed: ``openai-openapi.LICENSE`` beside it).  The tests never read the full spec; run
this by hand when OpenAI publishes a new one, then rerun ``pytest tests/contract``::

    .venv/bin/python tests/contract/extract_schemas.py path/to/openai-openapi.yaml

It keeps the schemas named in :data:`ROOTS`, every ``Response...Event``, and everything they
reference, transitively.  Add a root here when a test starts validating a new schema.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "openai_schemas.json"
REF = re.compile(r"^#/components/schemas/(.+)$")

ROOTS = (
    # Chat Completions, Completions, Embeddings, Models, errors
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "DeleteModelResponse",
    "ErrorResponse",
    # Responses API: request, response, stream events, input and output items
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "InputParam",
    "InputItem",
    "Item",
    "ItemResource",
    "OutputItem",
)
EVENT = re.compile(r"^Response\w*Event$")


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and (match := REF.match(ref)):
            found.add(match.group(1))
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def closure(schemas: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The named schemas and every schema they reference, in the spec's order."""
    missing = [name for name in roots if name not in schemas]
    if missing:
        raise SystemExit(f"not in the spec: {', '.join(missing)}")
    keep: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for ref in _refs(schemas[name]):
            if ref not in schemas:
                raise SystemExit(f"{name} references a missing schema {ref}")
            todo.append(ref)
    return {name: body for name, body in schemas.items() if name in keep}


def extract(spec_path: Path) -> dict[str, Any]:
    raw = spec_path.read_bytes()
    spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec = json.loads(json.dumps(spec, default=str))  # YAML-only values (dates) as JSON has them
    schemas: dict[str, Any] = spec["components"]["schemas"]
    roots = [*ROOTS, *sorted(n for n in schemas if EVENT.match(n) and n not in ROOTS)]
    info = spec.get("info", {})
    return {
        "source": {
            "title": info.get("title"),
            "version": info.get("version"),
            "openapi": spec.get("openapi"),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "extracted": dt.date.today().isoformat(),
            "url": "https://github.com/openai/openai-openapi",
            "license": "MIT (openai-openapi.LICENSE)",
        },
        "openapi": spec.get("openapi"),
        "components": {"schemas": closure(schemas, roots)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="OpenAI's openai-openapi.yaml")
    parser.add_argument("-o", "--out", type=Path, default=OUT, help=f"default: {OUT.name} beside this script")
    args = parser.parse_args(argv)
    doc = extract(args.spec)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    count = len(doc["components"]["schemas"])
    print(f"{args.out}: {count} schemas from {doc['source']['title']} {doc['source']['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
