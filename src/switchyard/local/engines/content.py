"""OpenAI message content as the text a chat template expects (shared by the engines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from switchyard.errors import BadRequestError

__all__ = ["text_content"]


def text_content(content: object) -> str:
    """A string, a list of text parts (joined with newlines), or None (empty). Any other part
    (an image, audio) is a 400 naming its type: local models read text only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise BadRequestError(f"Content parts of type {kind!r} are not supported by this model.",
                                      param="messages")
        return "\n".join(texts)
    raise BadRequestError("Message content must be a string or a list of content parts.", param="messages")
