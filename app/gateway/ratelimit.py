"""The frame rate limit of one agent connection: a token bucket, checked once per frame without I/O."""

from __future__ import annotations

import time

from app.gateway.protocol import Accept, Pong, Reject, Result

# Frames that answer the server: refusing them would cost the agent its work (a result never acknowledged, a
# pong missed), so past the limit the reader waits for a token instead, and the agent is slowed by TCP.
PATIENT = (Result, Accept, Reject, Pong)


class FrameBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate  # tokens per second; 0 turns the limit off
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0.0 when the frame may pass now, else the seconds until one is due (none taken)."""
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
