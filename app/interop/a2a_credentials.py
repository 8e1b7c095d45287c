"""An A2A agent's headers as stored: each one encrypted (Fernet, with AGENTPLANE_A2A_CREDENTIALS_KEY) or a
reference to an environment variable of the server (``{"env": NAME}``). Nothing here logs a value, and
nothing returns a stored form to a client: the API shows neither."""

from __future__ import annotations

import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

ENC = "enc"
ENV = "env"
# Only variables meant for A2A agents may be named: an admin key must not be able to make the server send its
# DATABASE_URL, its credentials key or a cloud credential to a URL of the caller's choosing.
ENV_PREFIX = "AGENTPLANE_A2A_SECRET_"


class CredentialError(Exception):
    """A header cannot be stored or resolved; ``field`` names it (``headers.Authorization``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _check_env_name(field: str, name: str) -> None:
    if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
        raise CredentialError(
            field, f"an environment reference must name a variable starting with {ENV_PREFIX} (got {name!r})"
        )


def _keys(key: SecretStr | None) -> list[Fernet]:
    """The configured keys, comma-separated: the first encrypts, every one decrypts (rotation: put the new key
    first and keep the old ones after it while headers sealed with them are stored)."""
    return (
        [] if key is None else [Fernet(part.strip().encode()) for part in key.get_secret_value().split(",")]
    )


def _fernet(key: SecretStr | None) -> MultiFernet | None:
    keys = _keys(key)
    return MultiFernet(keys) if keys else None


def seal(headers: dict[str, str | dict[str, str]], key: SecretStr | None) -> dict[str, dict[str, str]]:
    """The stored form of the headers a client gave: a literal value encrypted, a reference kept."""
    fernet = _fernet(key)
    stored: dict[str, dict[str, str]] = {}
    for name, value in headers.items():
        if isinstance(value, dict):
            _check_env_name(f"headers.{name}", value[ENV])
            stored[name] = {ENV: value[ENV]}
            continue
        if fernet is None:
            raise CredentialError(
                f"headers.{name}",
                "the server has no AGENTPLANE_A2A_CREDENTIALS_KEY, so it will not store a credential; "
                'give {"env": "AGENTPLANE_A2A_SECRET_..."} naming a variable of the server instead',
            )
        stored[name] = {ENC: fernet.encrypt(value.encode()).decode()}
    return stored


def resolve(stored: dict[str, Any], key: SecretStr | None) -> dict[str, str]:
    """The headers to send, from their stored form."""
    fernet = _fernet(key)
    headers: dict[str, str] = {}
    for name, ref in stored.items():
        field = f"headers.{name}"
        if ENV in ref:
            _check_env_name(field, ref[ENV])
            value = os.environ.get(ref[ENV])
            if value is None:
                raise CredentialError(field, f"the environment variable {ref[ENV]} is not set on the server")
            headers[name] = value
            continue
        if fernet is None:
            raise CredentialError(field, "stored encrypted, but AGENTPLANE_A2A_CREDENTIALS_KEY is not set")
        try:
            headers[name] = fernet.decrypt(str(ref[ENC]).encode()).decode()
        except InvalidToken:
            raise CredentialError(field, "cannot be decrypted with AGENTPLANE_A2A_CREDENTIALS_KEY") from None
    return headers


def reseal(stored: dict[str, Any], key: SecretStr | None) -> dict[str, Any] | None:
    """``stored`` with every header sealed by a key other than the first re-sealed with the first; None when
    none was (nothing to write). Re-attaching an agent does this, so an old key can be dropped once every
    agent has been attached since the rotation."""
    keys = _keys(key)
    if len(keys) < 2:
        return None
    current, rotate = keys[0], MultiFernet(keys)
    changed = False
    resealed: dict[str, Any] = {}
    for name, ref in stored.items():
        resealed[name] = ref
        if ENC in ref:
            token = str(ref[ENC]).encode()
            try:
                current.decrypt(token)
            except InvalidToken:
                try:
                    resealed[name] = {ENC: rotate.rotate(token).decode()}
                    changed = True
                except InvalidToken:
                    pass  # no configured key opens it: resolve() says so
    return resealed if changed else None
