"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` value, parsed and written.

Pure and dependency-free, so the server checks a client's `traceparent` and the SDK reads the one on an
`assign` frame whether or not OpenTelemetry is installed (agentplane.tracing is the optional part).

Parsing follows the spec's rules for a receiver: lowercase hex only; version `ff` is invalid; version `00`
is exactly 55 characters; a later version may carry more fields after a `-`, and its first four are read as
version 00's; an all-zero trace id or parent id is invalid. Spaces and tabs around the value (HTTP's OWS) are
allowed. `tracestate` is not carried (it is optional for a participant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
MAX_LENGTH = 512  # a later version may add fields; nothing legitimate comes near this
SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int  # 128 bits
    span_id: int  # 64 bits: the parent's span, from the receiver's point of view
    flags: int = SAMPLED

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def header(self) -> str:
        """As version 00, the only version a sender writes."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"


def problem(value: str) -> str | None:
    """Why ``value`` is not a valid `traceparent` (a message for the client), or None when it is."""
    text = value.strip(" \t")
    if len(text) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    match = _FIELDS.match(text)
    if match is None:
        return "expected 'version-traceid-parentid-flags': 2, 32, 16 and 2 lowercase hex digits (W3C)"
    version, trace_id, span_id, _ = match.groups()
    if version == "ff":
        return "version ff is invalid"
    if version == "00" and len(text) != 55:
        return "a version 00 traceparent is exactly 55 characters"
    if len(text) > 55 and text[55] != "-":  # a later version's extra fields follow a dash
        return "unexpected characters after the flags"
    if int(trace_id, 16) == 0:
        return "the trace id must not be all zeros"
    if int(span_id, 16) == 0:
        return "the parent id must not be all zeros"
    return None


def parse(value: str | None) -> TraceParent | None:
    """The value as a TraceParent, or None when it is missing or invalid (the spec: ignore it)."""
    if not value or problem(value) is not None:
        return None
    _, trace_id, span_id, flags = _FIELDS.match(value.strip(" \t")).groups()  # type: ignore[union-attr]
    # Only the sampled bit is defined for version 00; the others are not passed on.
    return TraceParent(int(trace_id, 16), int(span_id, 16), int(flags, 16) & SAMPLED)


def trace_id_of(value: str | None) -> str | None:
    """The trace id (32 hex digits) of a stored `traceparent`, or None."""
    parsed = parse(value)
    return parsed.trace_id_hex if parsed is not None else None
