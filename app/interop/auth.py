"""The door to /mcp and /a2a: the Host allow-list (DNS rebinding), then an API key with the client scope.

A request that passes carries its key's principal in the ASGI scope (``principal_of``), so the MCP tools and
the A2A handler act with the caller's identity and ownership rules (app.ownership), in-process. For the MCP
SDK the scope also gets its ``AuthenticatedUser``: the SDK binds a session to the credential that opened it.

Refusals are problem+json. A missing or bad key gets 401 with ``WWW-Authenticate: Bearer`` naming the
protected-resource metadata (RFC 9728) that ``resource_metadata`` serves; a key without the client scope gets
403 ``insufficient_scope``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.errors import PROBLEM_JSON, problem_bytes
from app.security import KeyCache, Principal, authenticate, bearer_token, known_principal
from app.security import Scope as KeyScope

if TYPE_CHECKING:
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings

PRINCIPAL = "agentplane.principal"
METADATA_PATH = "/.well-known/oauth-protected-resource"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_ANY_ADDRESS = {"0.0.0.0", "::", ""}


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Hosts (and the browser origins on them) that may reach the interop endpoints."""
    from mcp.server.transport_security import TransportSecuritySettings  # the MCP SDK: loaded on first use

    hosts = list(settings.interop_allowed_hosts)
    if not hosts:
        names = list(_LOOPBACK)
        if settings.host not in _ANY_ADDRESS and settings.host not in names:
            names.append(f"[{settings.host}]" if ":" in settings.host else settings.host)
        hosts = [host for name in names for host in (name, f"{name}:*")]
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def principal_of(scope: Scope) -> Principal:
    principal: Principal = scope[PRINCIPAL]
    return principal


def resource_url(request: Request, path: str) -> str:
    return str(request.base_url).rstrip("/") + path


def _problem(status: int, code: str, title: str, detail: str, path: str, challenge: str) -> Response:
    body = problem_bytes(status, code, title, detail, path)
    headers = {"www-authenticate": challenge}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class KeyGuard:
    """ASGI wrapper: the Host check, then the key; ``app`` sees only admitted requests."""

    def __init__(self, app: ASGIApp, *, settings: Settings, key_cache: KeyCache, state: Any) -> None:
        self.app = app
        self.settings = settings
        self.key_cache = key_cache
        self.state = state  # the FastAPI app's state: its sessionmaker exists only once the lifespan runs
        self._hosts: TransportSecurityMiddleware | None = None  # the MCP SDK's check, built on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._hosts is None:
            from mcp.server.transport_security import TransportSecurityMiddleware

            self._hosts = TransportSecurityMiddleware(transport_security(self.settings))
        request = Request(scope, receive)
        refused = await self._hosts.validate_request(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        principal = await self._principal(Headers(scope=scope).get("authorization"))
        path = scope.get("path", "")
        if principal is None:
            metadata = resource_url(request, METADATA_PATH + path)
            challenge = f'Bearer error="invalid_token", resource_metadata="{metadata}"'
            detail = "an API key with the client scope is required: send `Authorization: Bearer <key>`"
            response = _problem(401, "unauthorized", "Unauthorized", detail, path, challenge)
            await response(scope, receive, send)
            return
        if not principal.has_any(KeyScope.CLIENT):
            challenge = 'Bearer error="insufficient_scope", scope="client"'
            detail = "this key lacks the client scope that /mcp and /a2a need"
            response = _problem(403, "forbidden", "Forbidden", detail, path, challenge)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        scope["user"] = _mcp_user(principal)
        await self.app(scope, receive, send)

    async def _principal(self, authorization: str | None) -> Principal | None:
        secret = bearer_token(authorization)
        if secret is None:
            return None
        admin_key = self.settings.admin_key.get_secret_value() if self.settings.admin_key else None
        principal = known_principal(secret, admin_key=admin_key, cache=self.key_cache)
        if principal is None:
            maker: async_sessionmaker[AsyncSession] = self.state.sessionmaker
            async with maker() as session:
                principal = await authenticate(session, secret, admin_key=admin_key, cache=self.key_cache)
        return principal


def _mcp_user(principal: Principal) -> AuthenticatedUser:
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    # What the MCP SDK compares to keep a session to the key that opened it; never the secret itself.
    key = str(principal.key_id) if principal.key_id is not None else principal.name
    token = AccessToken(token=key, client_id=key, scopes=sorted(principal.scopes), subject=principal.project)
    return AuthenticatedUser(token)


async def resource_metadata(request: Request) -> JSONResponse:
    """RFC 9728 metadata for /mcp or /a2a/jsonrpc (the path after the well-known prefix names which)."""
    resource = request.path_params.get("resource", "mcp")
    base = resource_url(request, "")
    body = {
        "resource": f"{base}/{resource}",
        # MCP clients insist on one; keys come from an admin (POST /api/v1/keys), not from an OAuth flow.
        "authorization_servers": [base],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [KeyScope.CLIENT.value],
        "resource_name": "Agentplane",
    }
    return JSONResponse(body)
