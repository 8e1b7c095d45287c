"""Server addresses as users give them: one URL, a list, or `AGENTPLANE_URL` with a comma-separated list.

Each entry is either an http(s):// base URL (``http://host:8080``, the REST API's root; the agent endpoint
is derived from it, ``ws://host:8080/ws/agents``) or a ws(s):// URL, which is the agent endpoint as is. The
order is the failover order. No server dependency: the SDK and every CLI command use this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit, urlunsplit

URL_ENV = "AGENTPLANE_URL"
KEY_ENV = "AGENTPLANE_KEY"
DEFAULT_URL = "http://127.0.0.1:8080"
AGENT_PATH = "/ws/agents"

_WS_OF = {"http": "ws", "https": "wss"}
_HTTP_OF = {"ws": "http", "wss": "https"}


class ServerUrlError(ValueError):
    """A server URL that is not http(s):// or ws(s):// with a host."""


def split_urls(urls: str | Sequence[str] | None, *, env: bool = True) -> list[str]:
    """The entries of ``urls`` (a list, or one string that may be comma-separated), else of
    ``$AGENTPLANE_URL`` when ``env``, else ``DEFAULT_URL``; each checked, blanks dropped, order kept."""
    if urls is None or urls == "" or (not isinstance(urls, str) and not urls):
        urls = os.environ.get(URL_ENV, "") if env else ""
        if not urls.strip():
            urls = DEFAULT_URL
    raw = urls.split(",") if isinstance(urls, str) else [part for url in urls for part in url.split(",")]
    entries = [entry.strip() for entry in raw if entry.strip()]
    if not entries:
        raise ServerUrlError("no server URL given")
    for entry in entries:
        _check(entry)
    return entries


def agent_urls(urls: str | Sequence[str] | None = None, *, env: bool = True) -> list[str]:
    """The agent endpoints (ws:// or wss://) to try, in order."""
    return [agent_url(entry) for entry in split_urls(urls, env=env)]


def api_urls(urls: str | Sequence[str] | None = None, *, env: bool = True) -> list[str]:
    """The REST base URLs (http:// or https://, no trailing slash) to try, in order."""
    return [api_url(entry) for entry in split_urls(urls, env=env)]


def agent_url(url: str) -> str:
    """``http://h:8080`` -> ``ws://h:8080/ws/agents`` (a path prefix is kept: ``https://h/ap`` ->
    ``wss://h/ap/ws/agents``); a ws(s):// URL is returned as given."""
    parts = _check(url)
    if parts.scheme in _HTTP_OF:  # ws:// or wss://: the endpoint itself
        return url
    path = parts.path.rstrip("/")
    if not path.endswith(AGENT_PATH):
        path += AGENT_PATH
    return urlunsplit((_WS_OF[parts.scheme], parts.netloc, path, parts.query, ""))


def api_url(url: str) -> str:
    """``ws://h:8080/ws/agents`` -> ``http://h:8080``; an http(s):// URL loses only its trailing slash."""
    parts = _check(url)
    if parts.scheme in _WS_OF:  # http:// or https://: the base itself
        return url.rstrip("/")
    path = parts.path.rstrip("/").removesuffix(AGENT_PATH)
    return urlunsplit((_HTTP_OF[parts.scheme], parts.netloc, path, "", ""))


def redacted(url: str) -> str:
    """``url`` fit for a log line or an error message: no user:password, no query (a `?token=` key)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    if parts.netloc != netloc:
        netloc = f"***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def _check(url: str) -> SplitResult:
    parts = urlsplit(url)
    shown = redacted(url)
    if parts.scheme not in _WS_OF and parts.scheme not in _HTTP_OF:
        raise ServerUrlError(f"server URL {shown!r}: expected http://, https://, ws:// or wss://")
    if not parts.hostname:
        raise ServerUrlError(f"server URL {shown!r}: no host")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ServerUrlError(f"server URL {shown!r}: {exc}") from exc
    return parts
