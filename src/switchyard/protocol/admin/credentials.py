"""Provider credentials in admin bodies: the key arrives once, and is never shown again."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["CreateCredential"]


class CreateCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    provider: str
    api_key: SecretStr
    base_url: str | None = None
    check: bool = True
