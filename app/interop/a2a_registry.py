"""A2A agents in the fleet: `POST /api/v1/agents/a2a`, and the replica's service that keeps them attached.

Registering resolves the Agent Card with the official a2a-sdk, makes the card's skills (ids and tags) the
agent's capabilities, registers the agent (transport `a2a`) like a socket's `register` would, stores what
reaches it again (card URL, headers encrypted or as environment references) and attaches its connection
(app.interop.a2a_agents) to this replica's hub: from then on routing, leases, health and metrics see an agent.

Who holds the connection: the replica that owns the `a2a_agents` row (the one that registered it). Every
sweep (at start, then each health interval), a replica takes over the rows of replicas that are gone from
`replicas` (dead, or stopped cleanly) and attaches each agent it owns that has no connection: after its own
restart, after a takeover, and after the agent was unreachable (it stays offline until its card answers).

The a2a-sdk loads with the first agent registered or attached (``_open``), not with this module: app.main and
app.runtime import it in every deployment, most of which have no A2A agent.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Request, status
from pydantic import Field, field_validator
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents import queries
from app.agents import service as agents
from app.agents.schemas import AgentDetail
from app.background import BackgroundService
from app.config import Settings
from app.db.models import A2AAgent
from app.db.outage import report_failure
from app.deps import AdminDep, SessionDep
from app.dispatch.effects import Effects
from app.errors import AgentRejected, CloseCode, Conflict, InvalidInput
from app.gateway.batcher import FrameBatcher
from app.gateway.channel import AgentChannel
from app.gateway.hub import Hub
from app.gateway.protocol import CapabilitySpec, Register
from app.interop import a2a_credentials
from app.interop.paths import A2A_CARD
from app.request_model import Integer, RequestModel
from app.security import Principal
from app.storable import StorableText
from app.tasks.work import Outcome

if TYPE_CHECKING:
    from a2a.client import Client
    from a2a.types.a2a_pb2 import AgentCard

    from app.interop.a2a_agents import A2AConnection

logger = logging.getLogger(__name__)
router = APIRouter(tags=["agents"])

DEFAULT_MODEL = "a2a"
CONNECT_TIMEOUT = 5.0
STOP_GRACE = 5.0  # seconds the calls in flight get to end (and CancelTask) when the replica stops
# An RFC 9110 token: what httpx sends as a header name.
HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")]
HeaderValue = Annotated[str, Field(max_length=8192, pattern=r"^[^\r\n\x00]*$")]

# Takeover: the rows of replicas that are gone (no row in `replicas`: declared dead, or stopped cleanly).
_TAKE_OVER = """UPDATE a2a_agents SET replica_id = :me
WHERE replica_id IS NULL OR (replica_id <> :me AND replica_id NOT IN (SELECT id FROM replicas))
RETURNING agent_id"""
_MINE = """SELECT a.agent_id, a.card_url, a.headers, g.model, g.max_concurrency
FROM a2a_agents a JOIN agents g ON g.id = a.agent_id WHERE a.replica_id = :me ORDER BY a.agent_id"""
_STILL_MINE = "SELECT 1 FROM a2a_agents WHERE agent_id = :id AND replica_id = :me FOR UPDATE"
_RESEAL = "UPDATE a2a_agents SET headers = CAST(:headers AS jsonb) WHERE agent_id = :id"


class EnvRef(RequestModel):
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", description="An environment variable.")


class A2AAgentCreate(RequestModel):
    card_url: str = Field(
        min_length=1,
        max_length=2000,
        description="The Agent Card's URL, or the agent's base URL (then /.well-known/agent-card.json).",
    )
    headers: dict[HeaderName, HeaderValue | EnvRef] = Field(
        default_factory=dict,
        max_length=32,
        description='Sent on every call: a value (stored encrypted) or {"env": NAME} (read on the server).',
    )
    max_concurrency: Integer = Field(ge=1, le=10_000)
    model: StorableText | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("card_url")
    @classmethod
    def _card_url(cls, value: str) -> str:
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http or https URL with a host")
        if url.username is not None or url.password is not None:
            raise ValueError("must not hold credentials: give them in `headers`")
        if url.path in ("", "/"):
            url = url._replace(path=A2A_CARD)
        return urllib.parse.urlunsplit(url._replace(fragment=""))


class CardProblem(InvalidInput):
    """The card could not be fetched or used: a problem with the input the client gave (its URL)."""

    code = "agent_card_unusable"


def _field_error(field: str, message: str, kind: str = "value_error") -> list[dict[str, Any]]:
    return [{"field": field, "message": message, "type": kind}]


class A2AAgents(BackgroundService):
    name = "a2a-agents"

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        hub: Hub,
        effects: Effects,
        batcher: FrameBatcher,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.hub = hub
        self.effects = effects
        self.batcher = batcher
        self.connections: dict[str, A2AConnection] = {}
        self._unreachable: set[str] = set()  # agents whose failed attach was logged

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # an outage is logged once, not every round
                report_failure(logger, exc, "A2A agents sweep failed")
            await asyncio.sleep(self.settings.health_check_interval)

    async def stop(self) -> None:
        await super().stop()
        connections = list(self.connections.values())
        for connection in connections:
            connection.close(CloseCode.SERVER_DRAINING, "server shutting down")
        await asyncio.gather(*(c.drained(STOP_GRACE) for c in connections), return_exceptions=True)

    # ---------------------------------------------------------------- registration (the route's service)

    async def register(self, body: A2AAgentCreate, principal: Principal) -> str:
        key = self.settings.a2a_credentials_key
        try:
            stored = a2a_credentials.seal(
                {
                    name: value if isinstance(value, str) else {"env": value.env}
                    for name, value in body.headers.items()
                },
                key,
            )
            headers = a2a_credentials.resolve(stored, key)
        except a2a_credentials.CredentialError as exc:
            raise InvalidInput(exc.message, errors=_field_error(exc.field, exc.message)) from None
        http, card, client = await self._open(body.card_url, headers)
        from app.interop.a2a_agent_mapping import capabilities_of  # loaded by _open already

        try:
            names, skipped = capabilities_of(card)
            if not names:
                message = "the Agent Card has no skill whose id or tag can be a capability name"
                raise CardProblem(message, errors=_field_error("card_url", message))
            if skipped:
                logger.info("A2A card skills skipped (not capability names): %s", ", ".join(skipped)[:300])
            agent_id = f"a2a-{uuid.uuid4().hex[:12]}"
            frame = self._register_frame(
                agent_id, card, names, body.model or DEFAULT_MODEL, body.max_concurrency
            )
            async with self.sessionmaker() as session:
                taken = await session.scalar(
                    select(A2AAgent.agent_id).where(A2AAgent.card_url == body.card_url)
                )
                if taken is not None:
                    raise Conflict(f"an A2A agent with this card_url is registered already: {taken}")
                try:
                    registered = await self._register_agent(session, frame, principal.key_id)
                except AgentRejected as exc:
                    raise InvalidInput(exc.reason, errors=_field_error("model", exc.reason)) from None
                session.add(
                    A2AAgent(
                        agent_id=agent_id, card_url=body.card_url, headers=stored, replica_id=self.replica_id
                    )
                )
                try:
                    await session.commit()
                except IntegrityError:
                    raise Conflict("an A2A agent with this card_url is registered already") from None
        except BaseException:
            await http.aclose()
            raise
        self._attach(registered, client, http, body.card_url)
        logger.info("A2A agent registered", extra={"agent_id": agent_id, "model": frame.model})
        return agent_id

    @property
    def replica_id(self) -> str:
        return self.settings.replica_id

    async def _open(
        self, card_url: str, headers: dict[str, str]
    ) -> tuple[httpx.AsyncClient, AgentCard, Client]:
        """An HTTP client with the agent's headers, its card, and the a2a-sdk client for it. Calls have no
        read timeout: a task may stream nothing for long, and its lease's end cancels the call."""
        # The a2a-sdk loads here, with the first A2A agent registered or attached.
        from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, ClientFactory

        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None)
        http = httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False)
        try:
            card = await A2ACardResolver(http, card_url).get_agent_card(
                relative_card_path="/", http_kwargs={"timeout": self.settings.health_check_timeout}
            )
            # Without streaming, the message returns at once and the task is polled: its id is known, so a
            # cancel can reach it, and its status updates still become progress.
            streaming = card.capabilities.streaming
            config = ClientConfig(httpx_client=http, streaming=streaming, polling=not streaming)
            try:
                client = ClientFactory(config).create(card)
            except ValueError:
                message = "the Agent Card offers no interface this server speaks (JSON-RPC or HTTP+JSON)"
                raise CardProblem(message, errors=_field_error("card_url", message)) from None
        except A2AClientError as exc:
            await http.aclose()
            message = f"could not fetch the Agent Card: {str(exc)[:500]}"
            raise CardProblem(message, errors=_field_error("card_url", message)) from None
        except BaseException:
            await http.aclose()
            raise
        return http, card, client

    @staticmethod
    def _register_frame(
        agent_id: str, card: AgentCard, names: list[str], model: str, concurrency: int
    ) -> Register:
        return Register(
            agent_id=agent_id,
            name=(card.name or agent_id)[:200],
            model=model,
            capabilities=[CapabilitySpec(name=name, type="a2a-skill") for name in names],
            max_concurrency=concurrency,
        )

    async def _register_agent(
        self, session: AsyncSession, frame: Register, key_id: uuid.UUID | None
    ) -> agents.RegisteredAgent:
        return await agents.register(
            session,
            frame,
            replica_id=self.replica_id,
            allowed_models=self.settings.allowed_models,
            default_concurrency=self.settings.max_concurrent_tasks,
            key_id=key_id,
            admin=True,
            transport="a2a",
        )

    def _attach(
        self, registered: agents.RegisteredAgent, client: Client, http: httpx.AsyncClient, card_url: str
    ) -> None:
        """What the gateway does for a socket that registered: the hub, the fleet, the metrics, a wake-up."""
        from app.interop.a2a_agents import A2AConnection

        connection = A2AConnection(
            agent_id=registered.id,
            model=registered.model,
            version=registered.version,
            client=client,
            http=http,
            card_url=card_url,
            on_closed=self._closed,
        )
        effects = self.effects
        connection.count_frame = effects.metrics.count_frame
        connection.channel = AgentChannel(
            connection, sessionmaker=self.sessionmaker, batcher=self.batcher, effects=effects
        )
        previous = self.hub.attach(connection)
        if previous is not None:
            previous.close(CloseCode.REPLACED, "replaced by a newer registration of the A2A agent")
        self.connections[registered.id] = connection
        effects.after_commit(registered.requeued, reason="agent_reconnected")
        effects.metrics.agents_registered.labels(registered.model).inc()
        effects.fleet.agent_joined(registered)
        effects.signals.agent_joined(registered.id)  # health-checked now, as a socket agent is on registering

    async def _closed(self, connection: A2AConnection) -> None:
        """A closed connection takes a closed socket's path (app.gateway.endpoint): offline, work requeued (or
        left for the hand-over grace when this replica is stopping)."""
        if self.connections.get(connection.agent_id) is connection:
            del self.connections[connection.agent_id]
        if not self.hub.detach(connection):
            return
        self.effects.fleet.agent_left(connection.agent_id)
        handover = self.settings.handover_grace > 0 and connection.close_code == CloseCode.SERVER_DRAINING

        async def disconnect() -> Outcome:
            async with self.sessionmaker() as session:
                outcome = await agents.disconnect(
                    session,
                    connection.agent_id,
                    replica_id=self.replica_id,
                    version=connection.version,
                    undelivered=connection.undelivered,
                    handover=handover,
                )
                await session.commit()
                return outcome

        try:
            outcome = await asyncio.shield(disconnect())
        except Exception as exc:  # the reaper recovers the leases when they lapse: delayed, not lost
            report_failure(logger, exc, "could not mark an A2A agent offline", agent_id=connection.agent_id)
            return
        logger.info("A2A agent offline", extra={"agent_id": connection.agent_id})
        self.effects.after_commit(outcome, reason="agent_lost")

    # ---------------------------------------------------------------- re-attaching (the sweep)

    async def sweep(self) -> int:
        """Take over the A2A agents of replicas that are gone, and attach those this replica owns that have no
        connection; returns how many were attached."""
        async with self.sessionmaker() as session:
            taken = list(await session.scalars(text(_TAKE_OVER), {"me": self.replica_id}))
            rows = (await session.execute(text(_MINE), {"me": self.replica_id})).all()
            await session.commit()
        if taken:
            logger.warning("took over %d A2A agents of replicas that are gone", len(taken))
        attached = 0
        for row in rows:
            if self.hub.is_open(row.agent_id):
                continue
            try:
                attached += await self._reattach(
                    row.agent_id, row.card_url, row.headers, row.model, row.max_concurrency
                )
            except Exception as exc:  # one agent that cannot come back must not keep the others away
                report_failure(logger, exc, "could not re-attach an A2A agent", agent_id=row.agent_id)
        return attached

    async def _reattach(
        self, agent_id: str, card_url: str, stored: dict[str, Any], model: str, max_concurrency: int
    ) -> bool:
        try:
            headers = a2a_credentials.resolve(stored, self.settings.a2a_credentials_key)
            http, card, client = await self._open(card_url, headers)
        except (a2a_credentials.CredentialError, CardProblem) as exc:
            if agent_id not in self._unreachable:  # once until it is attached again, not every sweep
                self._unreachable.add(agent_id)
                logger.warning("A2A agent not attached: %s", str(exc)[:300], extra={"agent_id": agent_id})
            return False
        self._unreachable.discard(agent_id)
        from app.interop.a2a_agent_mapping import capabilities_of

        try:
            names, _ = capabilities_of(card)
            frame = self._register_frame(agent_id, card, names or ["a2a"], model, max_concurrency)
            async with self.sessionmaker() as session:
                if await session.scalar(text(_STILL_MINE), {"id": agent_id, "me": self.replica_id}) is None:
                    await http.aclose()
                    return False  # taken over or deregistered meanwhile
                # A key rotation under way: headers sealed with an older key are sealed with the new one.
                if (
                    resealed := a2a_credentials.reseal(stored, self.settings.a2a_credentials_key)
                ) is not None:
                    await session.execute(
                        text(_RESEAL), {"id": agent_id, "headers": orjson.dumps(resealed).decode()}
                    )
                registered = await self._register_agent(session, frame, None)
                await session.commit()
        except BaseException:
            await http.aclose()
            raise
        self._attach(registered, client, http, card_url)
        logger.info("A2A agent attached", extra={"agent_id": agent_id})
        return True


# ---------------------------------------------------------------- the route


@router.post(
    "/agents/a2a",
    response_model=AgentDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Register an A2A agent (its Agent Card's skills become its capabilities)",
)
async def register_a2a_agent(
    body: A2AAgentCreate, request: Request, session: SessionDep, principal: AdminDep
) -> AgentDetail:
    service: A2AAgents = request.app.state.runtime.a2a_agents
    agent_id = await service.register(body, principal)
    return await queries.get_agent(session, agent_id)
