"""Pure: an A2A agent's card, messages and events in our terms, and its stored credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from a2a.types.a2a_pb2 import (
    AgentCard,
    AgentSkill,
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from cryptography.fernet import Fernet
from google.protobuf import json_format, struct_pb2
from pydantic import SecretStr

from app.config import ConfigError, load_settings
from app.gateway.protocol import Accept, Assign, Progress, Reject, Result, Usage
from app.interop import a2a_credentials
from app.interop.a2a_agent_mapping import Translation, capabilities_of, message_of, output_of


def assign(payload: dict[str, Any] | None = None) -> Assign:
    return Assign(
        assignment_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        task_type="word-count",
        payload={"text": "a b c"} if payload is None else payload,
        timeout=30,
        deadline=datetime.now(UTC),
        attempt=2,
    )


def data(value: Any) -> Part:
    return Part(data=json_format.ParseDict(value, struct_pb2.Value()))


def status(state: TaskState, text: str = "", metadata: dict[str, Any] | None = None) -> StreamResponse:
    message = Message(role=Role.ROLE_AGENT, parts=[Part(text=text)] if text else [])
    meta = struct_pb2.Struct()
    meta.update(metadata or {})
    update = TaskStatusUpdateEvent(
        task_id="t-1", status=TaskStatus(state=state, message=message), metadata=meta
    )
    return StreamResponse(status_update=update)


def test_skill_ids_and_tags_become_capabilities_once_and_bad_names_are_skipped() -> None:
    card = AgentCard(
        skills=[
            AgentSkill(id="summarize", tags=["text", "nlp"]),
            AgentSkill(id="translate", tags=["text", "two words"]),
        ]
    )
    assert capabilities_of(card) == (["summarize", "text", "nlp", "translate"], ["two words"])


def test_an_assign_becomes_a_message_with_the_payload_and_its_text() -> None:
    work = assign()
    message = message_of(work)
    assert message.message_id == str(work.assignment_id)
    assert message.context_id == str(work.task_id)
    assert message.role == Role.ROLE_USER
    assert json_format.MessageToDict(message.parts[0].data) == {"text": "a b c"}
    assert message.parts[1].text == "a b c"
    metadata = json_format.MessageToDict(message.metadata)
    assert metadata["task_id"] == str(work.task_id)
    assert metadata["task_type"] == "word-count"
    assert metadata["attempt"] == 2
    assert len(message_of(assign({"n": 1})).parts) == 1  # no text, no text part


def test_a_stream_becomes_accept_progress_and_a_result() -> None:
    work = assign()
    translation = Translation(work)
    first = translation.feed(
        StreamResponse(task=Task(id="t-1", status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED)))
    )
    assert first == [Accept(assignment_id=work.assignment_id)]
    assert translation.a2a_task_id == "t-1"
    working = translation.feed(status(TaskState.TASK_STATE_WORKING, "halfway", {"progress": 0.5}))
    assert working == [Progress(assignment_id=work.assignment_id, progress=0.5, message="halfway")]
    # A status with neither progress nor text says nothing new.
    assert translation.feed(status(TaskState.TASK_STATE_WORKING)) == []
    artifact = Artifact(artifact_id="a", parts=[data({"words": 3})])
    assert translation.feed(StreamResponse(artifact_update=TaskArtifactUpdateEvent(artifact=artifact))) == []
    done = translation.feed(
        status(TaskState.TASK_STATE_COMPLETED, metadata={"usage": {"input_tokens": 7, "cost": 0.5}})
    )
    assert done == [
        Result(
            assignment_id=work.assignment_id,
            status="succeeded",
            output={"words": 3},
            usage=Usage(input_tokens=7, cost=0.5),
        )
    ]
    assert translation.done
    assert translation.feed(status(TaskState.TASK_STATE_FAILED)) == []  # once ended, nothing more


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (TaskState.TASK_STATE_FAILED, "a2a_failed"),
        (TaskState.TASK_STATE_CANCELED, "a2a_canceled"),
        (TaskState.TASK_STATE_INPUT_REQUIRED, "a2a_input_required"),
        (TaskState.TASK_STATE_AUTH_REQUIRED, "a2a_auth_required"),
    ],
)
def test_states_that_end_without_an_answer_are_failures_not_retried(state: TaskState, code: str) -> None:
    translation = Translation(assign())
    [accept, result] = translation.feed(status(state, "why"))
    assert isinstance(accept, Accept)
    assert isinstance(result, Result)
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.retryable) == (code, "why", False)


def test_a_rejection_is_a_reject_and_a_direct_message_is_the_answer() -> None:
    translation = Translation(assign())
    [_, reject] = translation.feed(status(TaskState.TASK_STATE_REJECTED, "not mine"))
    assert isinstance(reject, Reject)
    assert reject.reason == "not mine"
    translation = Translation(assign())
    answer = Message(role=Role.ROLE_AGENT, parts=[Part(text="hello")])
    [_, result] = translation.feed(StreamResponse(message=answer))
    assert isinstance(result, Result)
    assert (result.status, result.output) == ("succeeded", {"text": "hello"})


def test_output_merges_objects_keeps_other_data_and_joins_text() -> None:
    assert output_of([data({"n": 3.0})]) == {"n": 3}  # protobuf's doubles back to integers
    assert output_of([data([1, 2])]) == [1, 2]
    assert output_of([data({"a": 1}), data({"b": 2}), data("x"), Part(text="t1"), Part(text="t2")]) == {
        "a": 1,
        "b": 2,
        "data": ["x"],
        "text": "t1\nt2",
    }
    assert output_of([]) == {}


def test_credentials_are_stored_encrypted_or_as_references_never_in_clear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = SecretStr(Fernet.generate_key().decode())
    given: dict[str, str | dict[str, str]] = {
        "Authorization": "Bearer s3cret",
        "X-Api-Key": {"env": "AGENTPLANE_A2A_SECRET_KEY"},
    }
    stored = a2a_credentials.seal(given, key)
    assert "s3cret" not in str(stored)
    assert stored["X-Api-Key"] == {"env": "AGENTPLANE_A2A_SECRET_KEY"}
    monkeypatch.setenv("AGENTPLANE_A2A_SECRET_KEY", "from-env")
    assert a2a_credentials.resolve(stored, key) == {"Authorization": "Bearer s3cret", "X-Api-Key": "from-env"}

    with pytest.raises(a2a_credentials.CredentialError) as refused:
        a2a_credentials.seal({"Authorization": "Bearer s3cret"}, None)
    assert refused.value.field == "headers.Authorization"
    reference = {"X": {"env": "AGENTPLANE_A2A_SECRET_KEY"}}
    assert a2a_credentials.seal(dict(reference), None) == reference

    other = SecretStr(Fernet.generate_key().decode())
    with pytest.raises(a2a_credentials.CredentialError, match="cannot be decrypted"):
        a2a_credentials.resolve(stored, other)
    monkeypatch.delenv("AGENTPLANE_A2A_SECRET_KEY")
    with pytest.raises(a2a_credentials.CredentialError, match="AGENTPLANE_A2A_SECRET_KEY is not set"):
        a2a_credentials.resolve({"X": {"env": "AGENTPLANE_A2A_SECRET_KEY"}}, key)


def test_a_key_rotation_keeps_headers_sealed_with_the_old_key_readable() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_before = a2a_credentials.seal({"Authorization": "Bearer before"}, SecretStr(old))
    rotating = SecretStr(f"{new}, {old}")  # the new key first: it encrypts; both decrypt
    sealed_after = a2a_credentials.seal({"Authorization": "Bearer after"}, rotating)
    assert a2a_credentials.resolve(sealed_before, rotating) == {"Authorization": "Bearer before"}
    assert a2a_credentials.resolve(sealed_after, SecretStr(new)) == {"Authorization": "Bearer after"}
    with pytest.raises(a2a_credentials.CredentialError, match="cannot be decrypted"):
        a2a_credentials.resolve(sealed_after, SecretStr(old))  # sealed with the new key only

    # Re-attaching re-seals what the old key sealed; after that the old key can go.
    assert a2a_credentials.reseal(sealed_after, rotating) is None  # nothing to do
    assert a2a_credentials.reseal(sealed_before, SecretStr(old)) is None  # one key: no rotation
    resealed = a2a_credentials.reseal(sealed_before, rotating)
    assert resealed is not None
    assert a2a_credentials.resolve(resealed, SecretStr(new)) == {"Authorization": "Bearer before"}


def test_the_credentials_key_setting_takes_one_key_or_several() -> None:
    keys = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    assert load_settings(database_url="postgresql://x@y/z", a2a_credentials_key=keys).a2a_credentials_key
    with pytest.raises(ConfigError, match="Fernet keys"):
        load_settings(database_url="postgresql://x@y/z", a2a_credentials_key=f"{keys},not-a-key")


def test_an_environment_reference_may_name_only_an_a2a_secret() -> None:
    for name in ("DATABASE_URL", "AGENTPLANE_A2A_CREDENTIALS_KEY", "AGENTPLANE_A2A_SECRET_"):
        with pytest.raises(a2a_credentials.CredentialError) as refused:
            a2a_credentials.seal({"Authorization": {"env": name}}, None)
        assert refused.value.field == "headers.Authorization"
        with pytest.raises(a2a_credentials.CredentialError):
            a2a_credentials.resolve({"Authorization": {"env": name}}, None)
