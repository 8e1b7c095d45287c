"""One error hierarchy, rendered as RFC 9457 problem+json by one set of handlers.

The WebSocket's error-frame codes and close codes are part of the wire protocol (agentplane.protocol, shared
with the SDK); they are re-exported here, where the server has always imported them."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from agentplane.protocol import CloseCode as CloseCode
from agentplane.protocol import WsErrorCode as WsErrorCode
from app.db.outage import OUTAGES, RETRY_AFTER_SECONDS, is_outage

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemField(BaseModel):
    field: str = Field(
        description="Dotted path of the input: `tasks.3.timeout`, `query.type`, `path.agent_id`."
    )
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error response has this shape (the OpenAPI document says so)."""

    type: str = Field(description="`/problems/<code>`, e.g. `/problems/invalid_input`.")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemField] | None = Field(default=None, description="Each invalid input (422 only).")


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra


class InvalidInput(AppError):
    status, code, title = 422, "invalid_input", "Invalid input"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class TaskConflict(Conflict):
    code = "task_conflict"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class NotReady(AppError):
    status, code, title = 503, "not_ready", "Not ready"


class Unavailable(AppError):
    """The database is unreachable: the server's condition, not the client's; retry after a moment."""

    status, code, title = 503, "unavailable", "Service unavailable"


def problem(
    status: int, code: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        head, rest = parts[0], parts[1:]
        return ".".join([head, *rest]) if head != "body" else ".".join(rest) or "body"
    return ".".join(parts)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": _field_path(err["loc"]), "message": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        response = problem(
            exc.status, exc.code, exc.title, exc.detail, request.url.path, errors=exc.errors, **exc.extra
        )
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem(422, "invalid_input", "Invalid input", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        response = problem(
            exc.status_code,
            code,
            titles.get(exc.status_code, "HTTP error"),
            str(exc.detail),
            request.url.path,
        )
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # Starlette names only the first route whose path matched; the document knows them all.
            from app.openapi import allowed_methods

            methods = allowed_methods(request.app, request.url.path)
            if methods:
                response.headers["Allow"] = ", ".join(methods)
        return response

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        logger.info("integrity error on %s: %s", request.url.path, exc.orig.__class__.__name__)
        return problem(
            409, "conflict", "Conflict", "the request conflicts with existing data", request.url.path
        )


def outage_problem(instance: str | None) -> JSONResponse:
    response = problem(
        503,
        Unavailable.code,
        Unavailable.title,
        "the database is unreachable; retry shortly",
        instance,
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ErrorBoundary:
    """The last handler of every HTTP request: an exception no handler claimed becomes a problem response.

    Starlette's own last resort (ServerErrorMiddleware) answers 500 and then re-raises, so uvicorn logs a
    second traceback and drops the keep-alive connection. Here the exception ends: a database outage is
    503 with `Retry-After` and one log line per outage (``OUTAGES``), anything else 500 with one traceback,
    and the client keeps its connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            path = scope.get("path")
            if is_outage(exc):
                OUTAGES.failed(exc)
                response = outage_problem(path)
            else:
                logger.exception("unhandled error on %s %s", scope.get("method"), path)
                response = problem(
                    500,
                    "internal_error",
                    "Internal error",
                    "an unexpected error occurred; it has been logged",
                    path,
                )
            # RuntimeError: the response had already started (a stream failed midway), nothing can be said
            # any more; uvicorn closes the connection when the app returns without completing it.
            with contextlib.suppress(RuntimeError):
                await response(scope, receive, send)


def problem_bytes(status: int, code: str, title: str, detail: str, instance: str | None) -> bytes:
    """A problem body for code below the application (ASGI middleware, the HTTP protocol)."""
    body = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    return orjson.dumps(body)


class AgentRejected(Exception):
    """Registration refused; the gateway closes the socket with ``close_code`` and ``reason``."""

    def __init__(self, close_code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
