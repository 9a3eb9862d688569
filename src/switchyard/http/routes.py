"""The route table. Public routes (no key): /health and /ready. Everything else needs a key."""

from __future__ import annotations

from starlette.routing import Route

from switchyard.http import admin, admin_models, audit, chat, credentials, embeddings, health, messages, models, teams
from switchyard.http import usage as usage_api

__all__ = ["PUBLIC_PATHS", "routes"]

# The credential decrypt routes take x-internal-secret, not a key; app.py adds them only when it is set.
PUBLIC_PATHS = frozenset({"/health", "/ready", *credentials.INTERNAL_DECRYPT_PATHS})


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
        Route("/v1/messages", messages.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        Route("/admin/keys", admin.list_keys, methods=["GET"]),
        Route("/admin/keys", admin.create_key, methods=["POST"]),
        Route("/admin/keys/{key_id}", admin.get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}", admin.update_key, methods=["PATCH"]),
        Route("/admin/keys/{key_id}/revoke", admin.revoke_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", admin.rotate_key, methods=["POST"]),
        Route("/admin/teams", teams.list_teams, methods=["GET"]),
        Route("/admin/teams", teams.create_team, methods=["POST"]),
        Route("/admin/teams/{team_id}", teams.get_team, methods=["GET"]),
        Route("/admin/teams/{team_id}", teams.update_team, methods=["PATCH"]),
        Route("/admin/teams/{team_id}", teams.delete_team, methods=["DELETE"]),
        Route("/admin/audit", audit.list_audit, methods=["GET"]),
        Route("/admin/upstreams", admin.upstreams, methods=["GET"]),
        Route("/admin/status", admin.status, methods=["GET"]),
        Route("/admin/usage", usage_api.usage, methods=["GET"]),
        Route("/admin/models", admin_models.list_models, methods=["GET"]),
        Route("/admin/models", admin_models.create_model, methods=["POST"]),
        Route("/admin/models/{model_id:path}", admin_models.get_model, methods=["GET"]),
        Route("/admin/models/{model_id:path}", admin_models.update_model, methods=["PUT", "PATCH"]),
        Route("/admin/models/{model_id:path}", admin_models.delete_model, methods=["DELETE"]),
        Route("/admin/credentials", credentials.list_credentials, methods=["GET"]),
        Route("/admin/credentials", credentials.create_credential, methods=["POST"]),
        Route("/admin/credentials/{credential_id}", credentials.get_credential, methods=["GET"]),
        Route("/admin/credentials/{credential_id}", credentials.delete_credential, methods=["DELETE"]),
        Route("/admin/credentials/{credential_id}/check", credentials.check_credential, methods=["POST"]),
        Route("/admin/credentials/{credential_id}/activate", credentials.activate_credential, methods=["POST"]),
        Route("/admin/credentials/{credential_id}/deactivate", credentials.deactivate_credential, methods=["POST"]),
    ]
