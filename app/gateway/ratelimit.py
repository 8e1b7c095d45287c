"""The frame rate limit of one agent connection: a token bucket (app.ratelimit) checked once per frame."""

from __future__ import annotations

from app.gateway.protocol import Accept, Pong, Reject, Result
from app.ratelimit import TokenBucket

# Frames that answer the server: refusing them would cost the agent its work (a result never acknowledged, a
# pong missed), so past the limit the reader waits for a token instead, and the agent is slowed by TCP.
PATIENT = (Result, Accept, Reject, Pong)

__all__ = ["PATIENT", "TokenBucket"]
