"""REST rate limits: a token bucket per API key on each replica, with the IETF ``RateLimit-*`` headers.

Each key may make ``rate`` requests a second on average and ``burst`` at once. A request over the limit gets
429 problem+json with ``Retry-After``; every answer to a known key carries

    RateLimit-Limit: <burst>   RateLimit-Remaining: <requests left now>   RateLimit-Reset: <s until full>

(the three fields of draft-ietf-httpapi-ratelimit-headers, as most clients and gateways read them).

It runs before authentication and stays off the database: the key is recognised by the digest of its bearer
token in the auth cache (app.security.KeyCache), which the auth dependency filled on the key's first request.
A token the cache does not know yet passes unlimited (that request authenticates and fills the cache), and an
invalid token never gets a bucket, so the table holds at most one small entry per live key. The operator's
``AGENTPLANE_ADMIN_KEY`` shares one bucket. Per replica: N replicas allow a key N times the rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem
from app.security import KeyCache

_ENV_ADMIN = "env-admin"
_MAX_BUCKETS = 100_000  # far above any real number of keys: a bound, not a policy


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one per request (or frame). No I/O, no lock: the
    one algorithm behind the REST limit (a bucket per key) and the agent frame limit (one per connection)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate  # tokens per second; 0 turns the limit off
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0.0 when there was one, else the seconds until one is due (none is taken)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class RateLimit:
    def __init__(
        self, app: ASGIApp, *, rate: float, burst: int, key_cache: KeyCache, admin_key: str | None
    ) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self.key_cache = key_cache
        self.admin_key = admin_key.encode() if admin_key else None
        self.buckets: dict[object, TokenBucket] = {}
        self._limit_header = (b"ratelimit-limit", str(burst).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key_of(scope) if scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
            return
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= _MAX_BUCKETS:
                self.buckets.clear()
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst)
        if bucket.take():
            await self._refuse(scope, receive, send, bucket.tokens)
            return
        headers = self._headers(bucket.tokens)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _key_of(self, scope: Scope) -> object | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                if scheme.lower() != b"bearer" or not token:
                    return None
                if self.admin_key is not None and hmac.compare_digest(token, self.admin_key):
                    return _ENV_ADMIN
                principal = self.key_cache.get(hashlib.sha256(token).hexdigest())
                return principal.key_id if principal is not None else None
        return None

    def _headers(self, tokens: float) -> list[tuple[bytes, bytes]]:
        reset = math.ceil((self.burst - tokens) / self.rate)
        return [
            self._limit_header,
            (b"ratelimit-remaining", str(int(tokens)).encode()),
            (b"ratelimit-reset", str(reset).encode()),
        ]

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, tokens: float) -> None:
        retry_after = max(1, math.ceil((1 - tokens) / self.rate))
        response = problem(
            429,
            "rate_limited",
            "Too many requests",
            f"this key may make {self.rate:g} requests a second (bursts of {self.burst}); "
            f"retry in {retry_after} s",
            scope.get("path"),
        )
        for name, value in self._headers(tokens):
            response.headers[name.decode()] = value.decode()
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)
