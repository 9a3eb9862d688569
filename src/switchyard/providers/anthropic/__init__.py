"""Anthropic's Messages API behind the gateway's OpenAI-compatible endpoints."""
