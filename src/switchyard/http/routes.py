"""The route table. Public routes (no key): /health and /ready. Everything else needs a key."""

from __future__ import annotations

from starlette.routing import Route

from switchyard.http import admin, chat, embeddings, health, models

__all__ = ["PUBLIC_PATHS", "routes"]

PUBLIC_PATHS = frozenset({"/health", "/ready"})


def routes() -> list[Route]:
    return [
        Route("/health", health.health, methods=["GET"]),
        Route("/ready", health.ready, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/completions", chat.completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/admin/keys", admin.list_keys, methods=["GET"]),
        Route("/admin/keys", admin.create_key, methods=["POST"]),
        Route("/admin/keys/{key_id}", admin.get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}/revoke", admin.revoke_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", admin.rotate_key, methods=["POST"]),
        Route("/admin/upstreams", admin.upstreams, methods=["GET"]),
        Route("/admin/status", admin.status, methods=["GET"]),
    ]
