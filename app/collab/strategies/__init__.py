"""Pure collaboration strategies: `validate(spec)` and `step(spec, state, finished) -> Decision`.

The session runner looks a strategy up here by name; see base.py for the contract every strategy keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from app.collab.strategies import chain, consensus, map_reduce
from app.collab.strategies.base import (
    Decision,
    FinishedSubtask,
    SessionSpec,
    SpecError,
    Strategy,
    SubtaskSpec,
)

STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {"map_reduce": map_reduce, "consensus": consensus, "chain": chain}
)


def get_strategy(name: str) -> Strategy:
    """The strategy called `name`; SpecError (a 422 upstream) for a name nobody implements."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise SpecError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}") from None


__all__ = [
    "STRATEGIES",
    "Decision",
    "FinishedSubtask",
    "SessionSpec",
    "SpecError",
    "Strategy",
    "SubtaskSpec",
    "get_strategy",
]
