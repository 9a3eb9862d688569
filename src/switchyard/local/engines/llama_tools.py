"""The GBNF grammar of a ``tool_calls`` constraint, for the llama.cpp engine.

Each tool's ``arguments`` rule comes from llama.cpp's own JSON-schema converter (the one
``response_format`` uses), all tools in one converter so that their shared rules are written
once; around them, the call format of :mod:`switchyard.local.tools`::

    root ::= call ("\\n" call){0,7}          (parallel calls; one call without)
           | text                            (auto: or plain text, which cannot start with "<")
    call ::= "<tool_call>\\n{\\"name\\": " ( "\\"f\\", \\"arguments\\": " args-0 | ... ) "}\\n</tool_call>"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from switchyard.local.tools import CALL_CLOSE, CALL_OPEN, CALL_SEP, MAX_PARALLEL_CALLS

__all__ = ["tool_calls_gbnf"]


def _literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def tool_calls_gbnf(spec: Mapping[str, Any]) -> str:
    """``spec``: ``{"tools": [{"name", "parameters"}], "parallel": bool, "text": bool}`` and
    optionally ``"max_calls"`` (parallel calls at most, default MAX_PARALLEL_CALLS). Raises
    what the converter raises for a schema it cannot turn into a grammar."""
    from llama_cpp import llama_grammar

    make: Any = llama_grammar.SchemaConverter  # (untyped)
    converter = make(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    branches = []
    for i, tool in enumerate(spec["tools"]):
        schema = json.loads(json.dumps(tool["parameters"]))  # a private copy: resolve_refs rewrites $refs
        schema = converter.resolve_refs(schema, f"tool{i}")
        rule = converter.visit(schema, f"tool-args-{i}")
        name = json.dumps(tool["name"], ensure_ascii=False)[1:-1]  # as it is written inside a JSON string
        head = _literal(name + '", "arguments": ')
        branches.append(f"{head} {rule}")
    # a JSON string holds no raw control character (this converter's `char` lets them in, and
    # json.loads refuses them)
    grammar = converter.format_grammar().replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
    open_ = _literal(f'{CALL_OPEN}\n{{"name": "')
    close = _literal(f"}}\n{CALL_CLOSE}")
    most = int(spec.get("max_calls", MAX_PARALLEL_CALLS)) if spec["parallel"] else 1
    calls = "tool-call" + (f" ({_literal(CALL_SEP)} tool-call){{0,{most - 1}}}" if most > 1 else "")
    root = f"root ::= {calls}" + (" | tool-text" if spec["text"] else "")
    rules = [root, f"tool-call ::= {open_} ({' | '.join(branches)}) {close}"]
    if spec["text"]:
        rules.append("tool-text ::= [^<] .*")
    return "\n".join([*rules, grammar])
