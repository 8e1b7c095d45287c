"""Claims pending tasks, routes them to local agents, leases them and sends `assign` after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import tracing
from app.background import BackgroundService
from app.config import Settings
from app.db import raw
from app.db.outage import report_failure
from app.db.session import engine_of
from app.dispatch.effects import Effects
from app.dispatch.fleet import Fleet
from app.gateway.hub import Hub
from app.gateway.protocol import Assign
from app.routing.batch import FitCache, route_batch
from app.routing.policy import policy_from_settings
from app.routing.strategies import Candidate, TaskRequirements, model_for_attempt, pick
from app.tasks import lifecycle, recovery

logger = logging.getLogger(__name__)

MAX_BATCH = 256
SLOW_TIMER = 1.0  # seconds: the longest between claims, whatever wakes the dispatcher
JOIN_DEBOUNCE = 0.05  # seconds: agents joining trigger at most one claim this often
# ... and less often in a large fleet: the claim names every local agent (tasks may be pinned to agents), so
# during a reconnect storm of 10,000 agents a claim per 50 ms spent 5 % of the server's CPU encoding ids.
JOIN_DEBOUNCE_PER_AGENT = 50e-6  # 10,000 agents: a claim per 0.5 s while they join


MAX_STUCK = 10_000  # set-aside tasks remembered at most (the claim sends them as a parameter)
STUCK_WINDOW = 64  # tasks claimed at once while some are set aside
STUCK_ROUNDS = 16  # rounds in a row that only set tasks aside, before waiting for the next wake-up


class Round(NamedTuple):
    leased: int
    full: bool  # the claim hit its limit: go again at once
    # More may be waiting: the claim was full, a claimed task found no agent with room, or an agent with no
    # room was left out of the claim (tasks only it can take were not looked for): freed capacity is worth a
    # claim.
    backlog: bool
    waiting: bool = True  # tasks this replica could take may still be pending (not all claimed were leased)
    stuck: int = 0  # claimed tasks newly set aside: no agent here can take them now (claim again at once)


class Dispatcher(BackgroundService):
    name = "dispatcher"

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: Hub,
        fleet: Fleet,
        effects: Effects,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.engine = engine_of(sessionmaker)
        self.held = raw.HeldConnection(self.engine)  # one round at a time
        self.hub = hub
        self.fleet = fleet
        self.effects = effects
        self.policy = policy_from_settings(settings)
        self.last_agent_id: str | None = None
        self.fits = FitCache()  # routing the next task of a kind reuses the fits of the last
        self._background: set[asyncio.Task[None]] = set()
        # Placement at submit (place()) is fair only while no older task this replica could take is waiting:
        # true when the last round drained the queue and no work was announced since it began.
        self._queue_clear = False
        self._seen = -1
        # Claimed tasks no agent here could take (a version, a type, a cost cap, every fitting agent full):
        # left out of the claims until the fleet changes (a join, a freed slot), so that a task nobody here
        # can serve does not fill every claim ahead of lower-priority work that can run.
        self._stuck: set[uuid.UUID] = set()
        self._stuck_at = -1  # fleet.changes when the stuck set was last right
        self._idle = asyncio.Event()  # set between rounds
        self._idle.set()

    async def stop(self) -> None:
        await super().stop()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.held.release()

    async def run(self) -> None:
        signals = self.effects.signals
        loop = asyncio.get_running_loop()
        seen = -1  # signals.work_seq when the last claim began
        joins_seen = 0  # signals.join_seq when the last claim began
        backlog = True  # more tasks may be waiting than the last round leased
        last = loop.time()  # when the last claim began
        while True:
            since = loop.time() - last
            wait = SLOW_TIMER - since
            debounce = max(JOIN_DEBOUNCE, len(self.fleet.agents) * JOIN_DEBOUNCE_PER_AGENT)
            if signals.join_seq != joins_seen:
                wait = min(wait, debounce - since)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.work.wait(), max(0.0, wait))
            signals.work.clear()
            # Freed capacity alone is no reason to query, only work known to be waiting. Work can become
            # claimable without a signal (a backoff or a refusal's cool-down ends, another replica lets go of
            # a row it claimed), so a claim is due every SLOW_TIMER seconds whatever else wakes us. Agents
            # joining are answered by one claim per debounce, however many joined.
            since = loop.time() - last
            due = since >= SLOW_TIMER
            joined = signals.join_seq != joins_seen and since >= debounce
            if not (due or backlog or joined or signals.work_seq != seen):
                continue
            joins_seen = signals.join_seq
            self._idle.clear()
            self._queue_clear = False
            try:
                stuck_rounds = 0
                while True:
                    seen, last = signals.work_seq, loop.time()
                    round_ = await self.dispatch_once()
                    backlog = round_.backlog
                    stuck_rounds = stuck_rounds + 1 if round_.stuck and not round_.leased else 0
                    if round_.leased and round_.full:
                        continue
                    if not round_.stuck or stuck_rounds >= STUCK_ROUNDS:
                        break
                self._seen, self._queue_clear = seen, not round_.waiting
            except Exception as exc:  # an outage is logged once, not every round
                report_failure(logger, exc, "dispatch round failed")
                backlog = True
                await asyncio.sleep(0.5)
            finally:
                self._idle.set()

    def _requirements(self, task: lifecycle.Claimed | Mapping[str, Any]) -> TaskRequirements:
        """What routing needs of a claimed task, or of a new task's row (placement at submit)."""
        field: Callable[[str], Any] = (
            task.__getitem__ if isinstance(task, Mapping) else functools.partial(getattr, task)
        )
        estimated, agent_ids = field("estimated_tokens"), field("agent_ids")
        # A new row has no attempt yet; a claimed one may have spent some on its first model.
        attempts = 0 if isinstance(task, Mapping) else task.attempt
        min_versions = field("min_versions")
        return TaskRequirements(
            required_capabilities=frozenset(field("required_capabilities")),
            model=model_for_attempt(
                field("model"), field("fallback_models"), attempts, self.settings.fallback_after
            ),
            task_type=field("type"),
            min_versions=tuple(sorted(min_versions.items())) if min_versions else (),
            max_cost=field("max_cost"),
            estimated_tokens=estimated if estimated is not None else self.settings.default_estimated_tokens,
            agent_ids=frozenset(agent_ids) if agent_ids else None,
            strategy=field("strategy"),
        )

    def _open_candidates(self) -> list[Candidate]:
        # A socket that is closing stays in the fleet until its cleanup runs; it must not be offered work.
        return [c for c in self.fleet.candidates() if self.hub.is_open(c.agent_id)]

    # ------------------------------------------------------------------ placement at submit (tasks.intake)

    async def place(self, rows: Sequence[dict[str, Any]]) -> None:
        """Choose local agents for new tasks before they are written, so they are inserted leased.

        A round in progress is waited for (it may be leasing older work to the same agents): then new tasks
        are placed only if that round left nothing waiting and no work was announced since it began, so a
        newcomer never takes a slot an older pending task could have had."""
        if not self._idle.is_set():
            await self._idle.wait()
        if not self._idle.is_set() or not self._queue_clear or self.effects.signals.work_seq != self._seen:
            return  # older work may be waiting: new tasks queue behind it
        if self._stuck and self.fleet.changes != self._stuck_at:
            return  # the fleet changed since older tasks were set aside: they may fit now, they go first
        if self.fleet.spare() == 0:
            return  # nobody has room: no need to look at every agent
        candidates = self._open_candidates()
        if not candidates:
            return
        model = {c.agent_id: c.model for c in candidates}
        decisions, self.last_agent_id = route_batch(
            [self._requirements(row) for row in rows],
            candidates,
            self.policy,
            last_agent_id=self.last_agent_id,
            fits=self.fits,
        )
        for row, decision in zip(rows, decisions, strict=True):
            if decision is None:
                continue
            assignment_id = uuid.uuid4()
            row.update(
                agent_id=decision.agent_id, assignment_id=assignment_id, agent_model=model[decision.agent_id]
            )
            self.fleet.leased(decision.agent_id, assignment_id)  # reserved now: the next pick sees it taken

    def release(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self.fleet.assignment_ended(row["agent_id"], row["assignment_id"])

    def deliver(self, records: Sequence[Mapping[str, Any]]) -> None:
        agents = self.fleet.agents
        self._send(
            [
                lifecycle.Lease(
                    task_id=record["id"],
                    task_type=record["type"],
                    payload=record["payload"],
                    timeout=record["timeout"],
                    attempt=record["attempt"],
                    available_at=record["available_at"],
                    assignment_id=record["assignment_id"],
                    agent_id=record["agent_id"],
                    model=agent.model if (agent := agents.get(record["agent_id"])) else "unknown",
                    assigned_at=record["assigned_at"],
                    deadline=record["lease_expires_at"],
                    traceparent=record["traceparent"],
                )
                for record in records
            ]  # fmt: skip
        )

    async def dispatch_once(self) -> Round:
        """One batch: claim, route, lease, send. The claim asks for what the active agents here could take
        (cached in the fleet); the O(fleet) candidate list is built only when there are tasks to route."""
        spare = self.fleet.spare()
        if spare == 0:
            return Round(0, full=False, backlog=True)
        scope = self.fleet.claim_scope()
        if self.fleet.changes != self._stuck_at or len(self._stuck) > MAX_STUCK:
            self._stuck.clear()  # the fleet changed: what did not fit may fit now
        # Past tasks that could not be placed, look at a wider window than the free slots: what can run may
        # sit behind more of them.
        limit = min(MAX_BATCH, spare if not self._stuck else max(spare, STUCK_WINDOW))
        claimed_ns = None if tracing.SERVER is None else time.time_ns()  # the queue span's end
        async with self.held.transaction() as db:
            tasks = await lifecycle.claim_pending(
                db,
                capabilities=scope.capabilities,
                models=scope.models,
                agent_ids=scope.agent_ids,
                task_types=scope.task_types,
                fallback_after=self.settings.fallback_after,
                limit=limit,
                exclude=sorted(self._stuck),
            )
            if not tasks:
                self._stuck_at = self.fleet.changes
                return Round(0, full=False, backlog=self.fleet.any_full(), waiting=False)
            candidates = self._open_candidates()
            plans = self._route(tasks, candidates)
            leased = await lifecycle.lease(db, plans, replica_id=self.settings.replica_id)
        self._send(leased, claimed_ns)
        full = len(tasks) >= limit
        # Claimed but not leased (no agent here fits it now): set aside until the fleet changes, and the next
        # claim (at once) looks past it; it waits for an agent or capacity that fits it.
        taken = {lease.task_id for lease in leased}
        stuck = [task.id for task in tasks if task.id not in taken]
        self._stuck.update(stuck)
        self._stuck_at = self.fleet.changes
        waiting = full or bool(stuck)
        return Round(
            len(leased), full=full, backlog=waiting or self.fleet.any_full(), waiting=full, stuck=len(stuck)
        )

    def _route(
        self, tasks: list[lifecycle.Claimed], candidates: list[Candidate]
    ) -> list[tuple[lifecycle.Claimed, str, str]]:
        """Route the batch in priority order; a task some agent just refused is routed last, without it."""
        model = {c.agent_id: c.model for c in candidates}
        rejections = self.fleet.rejections
        refusals = {task.id: self.fleet.refused_recently(task.id) for task in tasks if task.id in rejections}
        fresh = [task for task in tasks if not refusals.get(task.id)]
        decisions, self.last_agent_id = route_batch(
            [self._requirements(task) for task in fresh],
            candidates,
            self.policy,
            last_agent_id=self.last_agent_id,
            fits=self.fits,
        )
        plans = [
            (t, d.agent_id, model[d.agent_id]) for t, d in zip(fresh, decisions, strict=True) if d is not None
        ]
        refused = [task for task in tasks if refusals.get(task.id)]
        if refused:
            taken = Counter(agent_id for _, agent_id, _ in plans)
            snapshot = {c.agent_id: replace(c, active=c.active + taken[c.agent_id]) for c in candidates}
            for task in refused:
                # A refusal holds for a cool-down; with nobody else to ask, the task waits rather than bounce.
                others = [c for c in snapshot.values() if c.agent_id not in refusals[task.id]]
                decision = pick(
                    self._requirements(task), others, self.policy, last_agent_id=self.last_agent_id
                )
                if decision is None:
                    continue
                chosen = snapshot[decision.agent_id]
                snapshot[decision.agent_id] = replace(chosen, active=chosen.active + 1)
                self.last_agent_id = decision.agent_id
                plans.append((task, decision.agent_id, chosen.model))
        return plans

    def _send(self, leased: list[lifecycle.Lease], claimed_ns: int | None = None) -> None:
        metrics = self.effects.metrics
        server = tracing.SERVER
        orphans = []
        for lease in leased:
            # Placement reserved the slot already; taking it again is a no-op, unless a capacity resync that
            # read the database before this lease committed dropped the reservation meanwhile.
            self.fleet.leased(lease.agent_id, lease.assignment_id)
            frame = Assign(
                assignment_id=lease.assignment_id,
                task_id=lease.task_id,
                task_type=lease.task_type,
                payload=lease.payload,
                timeout=lease.timeout,
                deadline=lease.deadline,
                attempt=lease.attempt,
                # Tracing off: the client's own context, as stored (None for most tasks: not on the wire).
                traceparent=lease.traceparent if server is None else None,
            )
            if server is None:
                delivered = self.hub.send(lease.agent_id, frame)
            else:
                span, traceparent = server.dispatch(lease, claimed_ns, self.settings.replica_id)
                delivered = self.hub.send(
                    lease.agent_id, frame.model_copy(update={"traceparent": traceparent})
                )
                server.sent(span, lease.assignment_id, delivered)
            if not delivered:
                orphans.append(lease.assignment_id)
                continue
            metrics.tasks_assigned.labels(lease.model, lease.task_type).inc()
            metrics.dispatch_latency.labels(lease.task_type).observe(
                max(0.0, (lease.assigned_at - lease.available_at).total_seconds())
            )
            self.effects.signals.task_changed(lease.task_id)
        if orphans:
            job = asyncio.create_task(self._requeue_orphans(orphans), name="requeue-orphans")
            self._background.add(job)
            job.add_done_callback(self._background.discard)

    async def _requeue_orphans(self, assignment_ids: list[uuid.UUID]) -> None:
        """The agent's socket closed between our pick and our send: give the work straight back."""
        async with self.sessionmaker() as session:
            outcome = await recovery.requeue_open_assignments(
                session,
                assignment_ids=assignment_ids,
                reason="agent gone before assign was sent",
                undelivered=True,
            )
            await session.commit()
        self.effects.after_commit(outcome, reason="agent_lost")
