"""Fake upstream servers on loopback speaking the real OpenAI and Ollama wire formats."""

from ._server import FakeServer, Headers, RecordedRequest
from .ollama_upstream import FakeOllama
from .openai_upstream import FakeOpenAI

__all__ = ["FakeOllama", "FakeOpenAI", "FakeServer", "Headers", "RecordedRequest"]
