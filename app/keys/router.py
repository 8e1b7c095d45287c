from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from app.deps import AdminDep, ReaderDep, SessionDep
from app.keys import service
from app.keys.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, KeySelf

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key(body: KeyCreate, session: SessionDep, _: AdminDep) -> KeyCreated:
    key, secret = await service.create_key(session, name=body.name, scopes=body.scopes, project=body.project)
    return KeyCreated.model_validate({**KeyOut.model_validate(key).model_dump(), "secret": secret})


@router.get("", response_model=KeyList)
async def list_keys(session: SessionDep, _: AdminDep) -> KeyList:
    return KeyList(items=[KeyOut.model_validate(key) for key in await service.list_keys(session)])


@router.delete("/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: uuid.UUID, session: SessionDep, _: AdminDep) -> KeyOut:
    return KeyOut.model_validate(await service.revoke_key(session, key_id=key_id))


# Outside /keys: `/keys/me` would share its path with `DELETE /keys/{key_id}`, which reads "me" as a bad id.
self_router = APIRouter(tags=["keys"])


@self_router.get("/me", response_model=KeySelf)
async def own_key(principal: ReaderDep) -> KeySelf:
    # Any valid key may ask what it may do (the console shows only what the key allows); 401 otherwise.
    return KeySelf.of(principal)
