"""OpenAI shapes: lenient request models that keep unknown fields for pass-through, and stream chunks."""

from switchyard.protocol.openai.chunks import DONE, ChunkWriter, sse_chunk
from switchyard.protocol.openai.requests import (
    parse_chat_request,
    parse_completion_request,
    parse_embedding_request,
)

__all__ = [
    "DONE",
    "ChunkWriter",
    "parse_chat_request",
    "parse_completion_request",
    "parse_embedding_request",
    "sse_chunk",
]
