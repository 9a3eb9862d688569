"""OpenAI request shapes: lenient wire models that keep unknown fields for pass-through."""

from switchyard.protocol.openai.requests import (
    parse_chat_request,
    parse_completion_request,
    parse_embedding_request,
)

__all__ = ["parse_chat_request", "parse_completion_request", "parse_embedding_request"]
