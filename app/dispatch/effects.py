"""What follows a committed change: metrics, wake-ups, the fleet's capacity count. Never before the commit."""

from __future__ import annotations

from dataclasses import dataclass

from app import tracing
from app.gateway.hooks import FleetListener
from app.metrics import Metrics
from app.signals import Signals
from app.tasks.lifecycle import Outcome
from app.tasks.states import TERMINAL


@dataclass
class Effects:
    metrics: Metrics
    signals: Signals
    fleet: FleetListener

    def after_commit(self, outcome: Outcome, *, model: str | None = None, reason: str = "result") -> None:
        if not outcome.finished:
            return
        if tracing.SERVER is not None:
            tracing.SERVER.finished(outcome.finished, reason)  # each attempt's end, as a span
        metrics = self.metrics
        for item in outcome.finished:
            self.signals.task_changed(item.task_id)
            if item.status == "superseded":
                continue
            if item.status in TERMINAL:
                metrics.tasks_finished.labels(item.task_type, item.status).inc()
            if item.retried:
                metrics.task_retries.labels(item.task_type, reason).inc()
            if model is not None and item.executed:
                metrics.task_execution_duration.labels(model, item.task_type).observe(item.duration_s)
            if model is not None and (item.input_tokens or item.output_tokens or item.cost):
                metrics.tokens.labels(model, "input").inc(item.input_tokens)
                metrics.tokens.labels(model, "output").inc(item.output_tokens)
                metrics.cost.labels(model).inc(item.cost)
        self.fleet.assignments_ended(outcome.finished)
        self.signals.capacity_freed()
        if any(item.status == "pending" for item in outcome.finished):
            self.signals.work_available()  # requeued
        if any(item.in_session for item in outcome.finished):
            self.signals.sessions.set()
