"""A typed REST client for Agentplane (httpx). Errors come back as ApiError carrying the problem document."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson

from agentplane.urls import DEFAULT_URL, KEY_ENV, api_urls, redacted

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
PENDING_FIRST_LOOK = 3.0  # seconds: the first long-poll of a wait that reports why a task is pending
# Older names of the key variable, still read after AGENTPLANE_KEY (docs/decisions.md).
KEY_ALIASES = ("AGENTPLANE_AGENT_KEY",)


class ApiError(Exception):
    """A problem+json answer: ``status``, ``problem`` (the document), and a one-line message."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "request failed"
        super().__init__(f"{status}: {detail}")

    def lines(self) -> list[str]:
        """The message, then each field error the message does not already say (a 422's detail is its
        first error, "field: message")."""
        said = str(self)
        lines = [said]
        for error in self.problem.get("errors") or []:
            line = f"{error.get('field')}: {error.get('message')}"
            if line not in said:
                lines.append(f"  {line}")
        return lines


class Unreachable(Exception):
    """The server could not be reached (refused, unknown host, timed out): one line, no traceback."""

    def __init__(self, url: str, exc: httpx.TransportError) -> None:
        reason = str(exc) or type(exc).__name__
        super().__init__(f"cannot reach {url}: {reason}")


def server_url(url: str | None = None) -> str:
    """The REST base URL a command talks to: ``url`` (--url), else $AGENTPLANE_URL, else the default; an
    agent endpoint (ws://…/ws/agents) is accepted too. Of a comma-separated list, the first."""
    return api_urls(url or None)[0]


def api_key(key: str | None = None) -> str:
    """``key`` (--key), else $AGENTPLANE_KEY, else an older name of it; "" when none is set."""
    if key:
        return key
    for name in (KEY_ENV, *KEY_ALIASES):
        if value := os.environ.get(name, ""):
            return value
    return ""


class Client:
    def __init__(self, url: str = DEFAULT_URL, key: str = "", *, timeout: float = 30.0) -> None:
        self.url = server_url(url)
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(redacted(self.url), exc) from None
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:200]}
            raise ApiError(response.status_code, problem)
        return response.json() if response.content else None

    # Tasks
    def submit(
        self, type: str, capabilities: Sequence[str], payload: dict[str, Any] | None = None, **options: Any
    ) -> dict[str, Any]:
        body = {"type": type, "capabilities": list(capabilities), "payload": payload or {}, **options}
        return dict(self._call("POST", "/tasks", json=body))

    def submit_batch(self, tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self._call("POST", "/tasks:batch", json={"tasks": list(tasks)})["tasks"])

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/tasks/{task_id}"))

    def wait(
        self,
        task_id: str,
        timeout: float | None = None,
        *,
        on_pending: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Long-poll until the task is terminal (or ``timeout`` seconds pass); returns it either way.
        ``on_pending``: called with the task each time a poll finds it still pending (its ``waiting`` says
        why); the first poll is then short, so a task nobody can take is reported within seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first = True
        while True:
            longest = PENDING_FIRST_LOOK if first and on_pending is not None else 60.0
            first = False
            remaining = longest if deadline is None else max(0.0, min(longest, deadline - time.monotonic()))
            task = dict(
                self._call("GET", f"/tasks/{task_id}", params={"wait": remaining}, timeout=remaining + 30)
            )
            if task["status"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return task
            if task["status"] == "pending" and on_pending is not None:
                on_pending(task)

    def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/tasks/{task_id}/cancel"))

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        return dict(self._call("GET", "/tasks", params={k: v for k, v in filters.items() if v is not None}))

    def assignments(self, task_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/tasks/{task_id}/assignments")["items"])

    def events(self, task_id: str, last_event_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Server-sent events of the task until its terminal transition; each has id, event and data."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        try:
            yield from self._events(task_id, headers)
        except httpx.TransportError as exc:
            raise Unreachable(redacted(self.url), exc) from None

    def _events(self, task_id: str, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
        with self._http.stream(
            "GET", f"/api/v1/tasks/{task_id}/events", headers=headers, timeout=None
        ) as stream:
            if stream.status_code >= 400:
                stream.read()
                raise ApiError(stream.status_code, stream.json())
            event: dict[str, Any] = {}
            for line in stream.iter_lines():
                if not line:
                    if "data" in event:
                        yield event
                    event = {}
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    event[field] = orjson.loads(value) if field == "data" else value

    # Keys (admin)
    def create_key(
        self, name: str, scopes: Sequence[str] = ("client",), *, project: str | None = None
    ) -> dict[str, Any]:
        """A new key with its ``secret`` (shown once). Keys of one ``project`` share tasks and sessions."""
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if project is not None:
            body["project"] = project
        return dict(self._call("POST", "/keys", json=body))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/keys")["items"])

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/keys/{key_id}"))

    # Sessions and the registry
    def create_session(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/sessions", json=spec))

    def get_session(self, session_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/sessions/{session_id}"))

    def cancel_session(self, session_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/sessions/{session_id}/cancel"))

    def agents(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._call("GET", "/agents", params=filters)["items"])
