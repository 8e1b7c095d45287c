"""Submitting tasks: a burst (as fast as the API takes them), an open loop at a rate, or a closed loop.

Every submitted task id is stamped with time.time_ns() taken just before its request was sent; the agents
stamp the assign they receive on the same clock, so the difference is the dispatch latency."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.agents import CAPABILITY, TASK_TYPE
from bench.rawhttp import RawConnection, RawHttpError

_MAX_OPEN = 512  # open loop: requests in flight at most, so a stalled server cannot exhaust our memory


@dataclass
class Submitted:
    sent_ns: dict[str, int] = field(default_factory=dict)  # task id -> when its request left
    errors: list[str] = field(default_factory=list)
    late: int = 0  # open loop: requests sent later than their schedule (the server or we fell behind)
    first_ns: int = 0
    last_ns: int = 0

    def record(self, ids: list[str], sent: int) -> None:
        for task_id in ids:
            self.sent_ns[task_id] = sent
        self.first_ns = min(self.first_ns or sent, sent)
        self.last_ns = max(self.last_ns, sent)


def task_spec(index: int) -> dict[str, Any]:
    return {"type": TASK_TYPE, "capabilities": [CAPABILITY], "payload": {"i": index}}


async def _post(client: httpx.AsyncClient, first: int, count: int, out: Submitted) -> list[str]:
    """Submit tasks first..first+count-1 in one request (single or batch); their ids, [] on failure."""
    sent = time.time_ns()
    try:
        if count == 1:
            response = await client.post("/api/v1/tasks", json=task_spec(first))
        else:
            specs = [task_spec(index) for index in range(first, first + count)]
            response = await client.post("/api/v1/tasks:batch", json={"tasks": specs})
    except httpx.HTTPError as exc:
        out.errors.append(f"submit: {exc!r}")
        return []
    if response.status_code not in (200, 201):
        out.errors.append(f"submit: HTTP {response.status_code}: {response.text[:200]}")
        return []
    body = response.json()
    ids = [body["id"]] if count == 1 else [task["id"] for task in body["tasks"]]
    out.record(ids, sent)
    return ids


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(size, total - first)) for first in range(0, total, size)]


async def burst(
    client: httpx.AsyncClient, total: int, batch: int, inflight: int, deadline: float
) -> Submitted:
    """As fast as the API accepts: `inflight` requests outstanding at any time."""
    return await _workers(client, total, batch, inflight, deadline, wait=False)


async def _workers(
    client: httpx.AsyncClient, total: int, batch: int, workers: int, deadline: float, *, wait: bool
) -> Submitted:
    """`workers` loops taking the next batch until all are sent; with `wait`, each long-polls its batch's
    tasks to the end before taking another."""
    out = Submitted()
    queue = list(reversed(_chunks(total, batch)))
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while queue and loop.time() < deadline:
            first, count = queue.pop()
            ids = await _post(client, first, count, out)
            if wait:
                for task_id in ids:
                    await _wait_terminal(client, task_id, deadline, out)

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    return out


async def single(base_url: str, key: str, total: int, inflight: int, deadline: float) -> Submitted:
    """One `POST /api/v1/tasks` per task, `inflight` requests outstanding (one per keep-alive connection),
    through the lean client (bench/rawhttp.py) so the harness's own CPU does not cap the rate."""
    out = Submitted()
    loop = asyncio.get_running_loop()
    indexes = iter(range(total))

    async def worker() -> None:
        connection = await RawConnection.open(base_url, key)
        try:
            for index in indexes:
                if loop.time() >= deadline:
                    out.errors.append(f"single: deadline reached at task {index} of {total}")
                    return
                sent = time.time_ns()
                try:
                    response = await connection.post("/api/v1/tasks", orjson.dumps(task_spec(index)))
                except (RawHttpError, OSError) as exc:
                    out.errors.append(f"submit: {exc!r}")
                    return
                if response.status != 201:
                    out.errors.append(f"submit: HTTP {response.status}: {response.body[:200]!r}")
                    continue
                out.record([orjson.loads(response.body)["id"]], sent)
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(max(1, inflight))))
    return out


async def open_loop(
    client: httpx.AsyncClient, total: int, batch: int, rate: float, deadline: float, *, key: str = ""
) -> Submitted:
    """Requests at fixed times (a batch of K every K/rate seconds), whether or not earlier ones are done.
    Single submits go through the lean client (bench/rawhttp.py) on a pool of keep-alive connections, so the
    harness adds as little as it can to the latency it measures."""
    out = Submitted()
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(_MAX_OPEN)
    pending: set[asyncio.Task[list[str]]] = set()
    start = loop.time() + 0.05
    period = batch / rate
    idle: list[RawConnection] = []

    async def lean(index: int) -> list[str]:
        connection = idle.pop() if idle else await RawConnection.open(str(client.base_url), key)
        sent = time.time_ns()
        try:
            response = await connection.post("/api/v1/tasks", orjson.dumps(task_spec(index)))
        except (RawHttpError, OSError) as exc:
            out.errors.append(f"submit: {exc!r}")
            await connection.close()
            return []
        idle.append(connection)
        if response.status != 201:
            out.errors.append(f"submit: HTTP {response.status}: {response.body[:200]!r}")
            return []
        ids = [orjson.loads(response.body)["id"]]
        out.record(ids, sent)
        return ids

    async def one(first: int, count: int) -> list[str]:
        try:
            if count == 1 and key:
                return await lean(first)
            return await _post(client, first, count, out)
        finally:
            gate.release()

    for number, (first, count) in enumerate(_chunks(total, batch)):
        due = start + number * period
        if loop.time() >= deadline:
            out.errors.append(f"open loop: deadline reached after {first} of {total} tasks")
            break
        await asyncio.sleep(max(0.0, due - loop.time()))
        await gate.acquire()
        if loop.time() - due > 0.005:
            out.late += 1
        task = asyncio.create_task(one(first, count))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=max(1.0, deadline - loop.time()))
    for connection in idle:
        await connection.close()
    return out


async def closed_loop(
    client: httpx.AsyncClient, total: int, batch: int, concurrency: int, deadline: float
) -> Submitted:
    """`concurrency` workers, each submitting and then long-polling until its tasks are finished."""
    return await _workers(client, total, batch, concurrency, deadline, wait=True)


async def _wait_terminal(client: httpx.AsyncClient, task_id: str, deadline: float, out: Submitted) -> None:
    loop = asyncio.get_running_loop()
    while (remaining := deadline - loop.time()) > 0:
        try:
            response = await client.get(f"/api/v1/tasks/{task_id}", params={"wait": min(30.0, remaining)})
        except httpx.HTTPError as exc:
            out.errors.append(f"wait: {exc!r}")
            return
        if response.status_code != 200:
            out.errors.append(f"wait: HTTP {response.status_code}")
            return
        if response.json()["status"] in {"succeeded", "failed", "cancelled", "timed_out"}:
            return
