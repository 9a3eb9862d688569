"""The openai SDK client of a module's local-model server (each module defines its ``server``)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.harness import RunningServer


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=120) as sdk:
        yield sdk
