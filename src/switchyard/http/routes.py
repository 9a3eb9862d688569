"""The route table. Public routes (no key): /, /health and /ready, and the web console's page, assets and
sign-in (/ui, loaded on its first request). Everything else needs a key (or a console session)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.http import chat, embeddings, health, messages, models, responses

__all__ = ["PUBLIC_PATHS", "routes"]

# The credential decrypt routes take x-internal-secret, not a key; app.py adds them only when it is set.
INTERNAL_DECRYPT_PATHS = ("/internal/credentials/{credential_id}/decrypt", "/api/api-keys/{credential_id}/decrypt")
UI_PUBLIC_PATHS = ("/ui", "/ui/", "/ui/static/{name}", "/ui/api/session")
PUBLIC_PATHS = frozenset({"/", "/health", "/ready", *UI_PUBLIC_PATHS, *INTERNAL_DECRYPT_PATHS})


def _admin(name: str) -> Callable[[Request], Awaitable[Response]]:
    """An admin handler ``module:function`` under switchyard.http, imported on its first request:
    a server that is never administered over HTTP does not hold that code in memory."""
    module, _, attr = name.partition(":")

    async def endpoint(request: Request) -> Response:
        handler: Callable[[Request], Awaitable[Response]] = getattr(import_module(f"switchyard.http.{module}"), attr)
        return await handler(request)

    endpoint.__name__ = endpoint.__qualname__ = attr
    return endpoint


def routes() -> list[Route]:
    """Matched in order: the inference routes, which take nearly every request, come first (the
    busiest first: each route passed over costs a match)."""
    return [
        Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/responses", responses.create_response, methods=["POST"]),
        Route("/v1/messages", messages.messages, methods=["POST"]),
        Route("/v1/completions", chat.completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/responses/input_tokens", responses.input_tokens, methods=["POST"]),
        Route("/v1/responses/compact", responses.compact_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel_response, methods=["POST"]),
        Route("/health", health.health, methods=["GET"]),
        Route("/", health.index, methods=["GET"]),
        Route("/ready", health.ready, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}/load", _admin("local_models:load_model"), methods=["POST"]),
        Route("/v1/models/{model_id:path}/unload", _admin("local_models:unload_model"), methods=["POST"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/v1/status", _admin("local_models:status"), methods=["GET"]),
        Route("/v1/inference", _admin("local_models:inference"), methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        Route("/ui", _admin("ui.pages:index"), methods=["GET"]),
        Route("/ui/", _admin("ui.pages:index"), methods=["GET"]),
        Route("/ui/static/{name}", _admin("ui.pages:asset"), methods=["GET"]),
        Route("/ui/api/session", _admin("ui.api:sign_in"), methods=["POST"]),
        Route("/ui/api/session", _admin("ui.api:session_info"), methods=["GET"]),
        Route("/ui/api/session", _admin("ui.api:sign_out"), methods=["DELETE"]),
        Route("/ui/api/me", _admin("ui.api:me"), methods=["GET"]),
        Route("/ui/api/me/usage", _admin("ui.api:my_usage"), methods=["GET"]),
        Route("/admin/keys", _admin("keys:list_keys"), methods=["GET"]),
        Route("/admin/keys", _admin("keys:create_key"), methods=["POST"]),
        Route("/admin/keys/{key_id}", _admin("keys:get_key"), methods=["GET"]),
        Route("/admin/keys/{key_id}", _admin("keys:revoke_key"), methods=["DELETE"]),
        Route("/admin/keys/{key_id}", _admin("keys:update_key"), methods=["PATCH"]),
        Route("/admin/keys/{key_id}/revoke", _admin("keys:revoke_key"), methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", _admin("keys:rotate_key"), methods=["POST"]),
        Route("/admin/teams", _admin("teams:list_teams"), methods=["GET"]),
        Route("/admin/teams", _admin("teams:create_team"), methods=["POST"]),
        Route("/admin/teams/{team_id}", _admin("teams:get_team"), methods=["GET"]),
        Route("/admin/teams/{team_id}", _admin("teams:update_team"), methods=["PATCH"]),
        Route("/admin/teams/{team_id}", _admin("teams:delete_team"), methods=["DELETE"]),
        Route("/admin/audit", _admin("audit:list_audit"), methods=["GET"]),
        Route("/admin/upstreams", _admin("status:upstreams"), methods=["GET"]),
        Route("/admin/status", _admin("status:status"), methods=["GET"]),
        Route("/admin/usage", _admin("usage:usage"), methods=["GET"]),
        Route("/admin/models", _admin("admin_models:list_models"), methods=["GET"]),
        Route("/admin/models", _admin("admin_models:create_model"), methods=["POST"]),
        Route("/admin/models/{model_id:path}", _admin("admin_models:get_model"), methods=["GET"]),
        Route("/admin/models/{model_id:path}", _admin("admin_models:update_model"), methods=["PUT", "PATCH"]),
        Route("/admin/models/{model_id:path}", _admin("admin_models:delete_model"), methods=["DELETE"]),
        Route("/admin/credentials", _admin("credentials:list_credentials"), methods=["GET"]),
        Route("/admin/credentials", _admin("credentials:create_credential"), methods=["POST"]),
        Route("/admin/credentials/{credential_id}", _admin("credentials:get_credential"), methods=["GET"]),
        Route("/admin/credentials/{credential_id}", _admin("credentials:delete_credential"), methods=["DELETE"]),
        Route("/admin/credentials/{credential_id}/check", _admin("credentials:check_credential"), methods=["POST"]),
        Route("/admin/credentials/{credential_id}/activate", _admin("credentials:activate_credential"),
              methods=["POST"]),
        Route("/admin/credentials/{credential_id}/deactivate", _admin("credentials:deactivate_credential"),
              methods=["POST"]),
    ]
