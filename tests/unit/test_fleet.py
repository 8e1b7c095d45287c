"""The dispatcher's in-memory view of its agents: capacity, the cached candidates routing reads, refusals."""

from __future__ import annotations

import random
import uuid

from app.agents.service import RegisteredAgent
from app.dispatch.fleet import Fleet
from app.tasks.lifecycle import Finished, Outcome


def joined(
    fleet: Fleet,
    agent_id: str,
    *,
    slots: int = 2,
    capabilities: tuple[str, ...] = ("code",),
    task_types: frozenset[str] | None = None,
) -> None:
    fleet.agent_joined(
        RegisteredAgent(
            id=agent_id,
            name=agent_id,
            model="gpt-4",
            capabilities=frozenset(capabilities),
            max_concurrency=slots,
            success_rate=1.0,
            active=0,
            requeued=Outcome(),
            version=1,
            task_types=task_types,
        )
    )


def finished(agent_id: str, assignment_id: uuid.UUID, status: str, **flags: bool) -> Finished:
    return Finished(uuid.uuid4(), "code", agent_id, status, assignment_id, **flags)


def test_a_candidate_follows_leases_releases_and_status() -> None:
    fleet = Fleet()
    joined(fleet, "a", slots=2)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert [c.active for c in fleet.candidates()] == [0]
    fleet.leased("a", first)
    assert [c.active for c in fleet.candidates()] == [1]
    fleet.leased("a", second)
    assert fleet.candidates() == []  # no room left
    assert fleet.any_full()
    fleet.assignment_released("a", first)
    assert [c.active for c in fleet.candidates()] == [1]
    assert not fleet.any_full()
    fleet.agent_status("a", "draining")
    assert fleet.candidates() == []
    assert not fleet.any_full()  # a draining agent takes nothing: it is not waiting for room


def test_the_cached_candidate_is_reused_until_something_routing_reads_changes() -> None:
    fleet = Fleet()
    joined(fleet, "a")
    [before] = fleet.candidates()
    assert fleet.candidates()[0] is before
    fleet.leased("a", uuid.uuid4())
    [after] = fleet.candidates()
    assert after is not before
    assert after.active == 1


def test_release_then_commit_frees_a_slot_once_and_counts_the_outcome_once() -> None:
    fleet = Fleet()
    joined(fleet, "a", slots=1)
    assignment = uuid.uuid4()
    fleet.leased("a", assignment)
    fleet.assignment_released("a", assignment)  # the result arrived
    fleet.leased("a", uuid.uuid4())  # the freed slot is filled at once
    fleet.assignments_ended([finished("a", assignment, "failed", executed=True)])  # the result committed
    [agent] = fleet.agents.values()
    assert len(agent.open) == 1  # the new lease still holds the slot
    assert (agent.completed, agent.failed) == (0, 1)
    assert fleet.candidates() == []
    assert fleet.agents["a"].candidate().success_rate == 0.0


def test_a_refusal_keeps_the_task_away_from_that_agent_for_a_while() -> None:
    fleet = Fleet()
    joined(fleet, "a")
    task_id = uuid.uuid4()
    fleet.assignments_ended(
        [Finished(task_id, "code", "a", "pending", uuid.uuid4(), retried=True, rejected=True)]
    )
    assert fleet.refused_recently(task_id) == {"a"}
    fleet.assignments_ended([Finished(task_id, "code", "b", "succeeded", uuid.uuid4())])
    assert fleet.refused_recently(task_id) == set()


def test_the_claim_scope_follows_joins_leaves_and_status_but_not_leases() -> None:
    fleet = Fleet()
    joined(fleet, "a", slots=1, capabilities=("code", "review"))
    joined(fleet, "b", slots=2, capabilities=("code",))
    assert fleet.claim_scope() == (["code", "review"], ["gpt-4"], ["a", "b"], None)
    assert fleet.spare() == 3
    fleet.leased("a", uuid.uuid4())  # a full agent still belongs to the scope; its slot is not spare
    assert fleet.claim_scope() == (["code", "review"], ["gpt-4"], ["a", "b"], None)
    assert fleet.spare() == 2
    fleet.agent_status("a", "draining")
    assert fleet.claim_scope() == (["code"], ["gpt-4"], ["b"], None)
    fleet.agent_left("b")
    assert fleet.claim_scope() == ([], [], [], [])
    assert fleet.spare() == 0


def test_the_running_counts_match_a_recount_after_any_sequence_of_changes() -> None:
    rng = random.Random(11)
    fleet = Fleet()
    leases: list[tuple[str, uuid.UUID]] = []
    for _ in range(3_000):
        agent_id = f"a{rng.randrange(12)}"
        action = rng.randrange(7)
        if action == 0:
            joined(fleet, agent_id, slots=rng.randint(1, 3), capabilities=tuple(rng.sample("xyz", 2)))
        elif action == 1:
            fleet.agent_left(agent_id)
        elif action == 2:
            fleet.agent_status(agent_id, rng.choice(["active", "draining", "unhealthy"]))
        elif action in (3, 4):
            assignment = uuid.uuid4()
            fleet.leased(agent_id, assignment)
            leases.append((agent_id, assignment))
        elif action == 5 and leases:
            fleet.assignment_ended(*leases.pop(rng.randrange(len(leases))))
        else:
            fleet.resync({agent.id: set(list(agent.open)[:1]) for agent in fleet.agents.values()})
        active = [agent for agent in fleet.agents.values() if agent.status == "active"]
        assert fleet.spare() == sum(max(0, a.max_concurrency - len(a.open)) for a in active)
        assert fleet.any_full() == any(len(a.open) >= a.max_concurrency for a in active)
        capabilities, models, ids, _ = fleet.claim_scope()
        assert capabilities == sorted(set().union(*(a.capabilities for a in active)))
        assert models == sorted({a.model for a in active})
        assert sorted(ids) == sorted(a.id for a in active)


def test_the_claim_scope_names_the_task_types_handled_unless_some_agent_takes_any() -> None:
    fleet = Fleet()
    joined(fleet, "a", task_types=frozenset({"review"}))
    joined(fleet, "b", task_types=frozenset({"code", "review"}))
    assert fleet.claim_scope().task_types == ["code", "review"]
    joined(fleet, "c")  # no task_types: any type
    assert fleet.claim_scope().task_types is None
    fleet.agent_status("c", "quarantined")  # only active agents count
    assert fleet.claim_scope().task_types == ["code", "review"]
    fleet.agent_left("b")
    assert fleet.claim_scope().task_types == ["review"]
    assert [c.task_types for c in fleet.candidates()] == [frozenset({"review"})]


def test_a_lapse_counts_against_the_success_rate_and_a_quarantined_agent_is_no_candidate() -> None:
    fleet = Fleet()
    joined(fleet, "a", slots=3)
    first, second = uuid.uuid4(), uuid.uuid4()
    fleet.leased("a", first)
    fleet.leased("a", second)
    fleet.assignments_ended([finished("a", first, "succeeded")])
    fleet.assignments_ended([finished("a", second, "pending", retried=True, lapsed=True)])
    assert [c.success_rate for c in fleet.candidates()] == [0.5]
    fleet.agent_status("a", "quarantined")
    assert fleet.candidates() == []
    assert fleet.spare() == 0
