"""Settings: environment variables (the seed's names), a `.env` file, an optional YAML file, defaults.

Precedence is env > `.env` (in the working directory) > YAML file (named by ``AGENTPLANE_CONFIG``) >
defaults. A YAML key outside the seed's tree is refused, and every error names the key as the operator wrote
it: the environment variable, or the YAML path. Durations accept the seed's
format (``30s``, ``5m``, ``1h``, ``250ms``; ``7d`` too) or plain seconds and are held as float seconds.
"""

from __future__ import annotations

import base64
import difflib
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"30s"`` -> 30.0, ``"5m"`` -> 300.0, ``12`` -> 12.0; anything else is a clear error."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use 30s, 5m, 1h, 250ms or a number of seconds")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_retention(value: Any) -> float:
    """A duration, or ``0`` (in any unit) for "keep everything", held as 0.0."""
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if match is not None and float(match.group(1)) == 0:
        return 0.0
    return parse_duration(value)


Retention = Annotated[float, BeforeValidator(parse_retention)]
DurationOrZero = Retention  # a duration, or 0 to turn the thing off


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]

RoutingStrategyName = Literal["capability_based", "round_robin", "least_loaded"]

# The seed's YAML tree, flattened: path in the `agents:` tree (or top level) -> field name.
_YAML_PATHS: dict[tuple[str, ...], str] = {
    ("agents", "manager", "health_check_interval"): "health_check_interval",
    ("agents", "manager", "health_check_timeout"): "health_check_timeout",
    ("agents", "manager", "max_concurrent_tasks"): "max_concurrent_tasks",
    ("agents", "manager", "task_timeout"): "task_timeout",
    ("agents", "manager", "queue_timeout"): "queue_timeout",
    ("agents", "manager", "max_attempts"): "max_attempts",
    ("agents", "manager", "max_message_bytes"): "max_message_bytes",
    ("agents", "manager", "quarantine_after"): "quarantine_after",
    ("agents", "manager", "quarantine_cooldown"): "quarantine_cooldown",
    ("agents", "routing", "strategy"): "routing_strategy",
    ("agents", "routing", "fallback_after"): "fallback_after",
    ("agents", "routing", "weights", "capability"): "routing_weight_capability",
    ("agents", "routing", "weights", "performance"): "routing_weight_performance",
    ("agents", "routing", "weights", "load"): "routing_weight_load",
    ("agents", "routing", "weights", "cost"): "routing_weight_cost",
    ("agents", "collaboration", "timeout"): "collaboration_timeout",
    ("agents", "collaboration", "strategies", "consensus", "threshold"): "consensus_threshold",
    ("agents", "collaboration", "strategies", "consensus", "max_rounds"): "consensus_max_rounds",
    ("agents", "collaboration", "strategies", "map_reduce", "max_parallel"): "map_reduce_max_parallel",
    ("agents", "models", "allowed"): "allowed_models",
    ("agents", "models", "cost_limits", "per_task"): "cost_limit_per_task",
    ("agents", "models", "cost_limits", "per_session"): "cost_limit_per_session",
    ("agents", "models", "prices"): "model_prices",
    ("agents", "models", "default_estimated_tokens"): "default_estimated_tokens",
}


# A subtree whose keys are the operator's own names (model names), not settings: not checked key by key.
_FREE_FORM = {("agents", "models", "prices")}
_YAML_PATH_OF = {field_name: ".".join(path) for path, field_name in _YAML_PATHS.items()}
DOTENV = ".env"


def config_path() -> str | None:
    """AGENTPLANE_CONFIG from the environment, else from `.env`."""
    return os.environ.get("AGENTPLANE_CONFIG") or dotenv_values(DOTENV).get("AGENTPLANE_CONFIG") or None


class YamlConfigSource(PydanticBaseSettingsSource):
    """Reads the seed's `agents:` tree from the file named by AGENTPLANE_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_path()
        self._values: dict[str, Any] = load_yaml_config(Path(path)) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def load_yaml_config(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"AGENTPLANE_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"AGENTPLANE_CONFIG: {path} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"AGENTPLANE_CONFIG: {path} must hold a mapping with an `agents:` tree")
    unknown = _unknown_keys(tree, ())
    if unknown:
        raise ConfigError(f"AGENTPLANE_CONFIG: {path}: " + "; ".join(unknown))
    values: dict[str, Any] = {}
    for yaml_path, field_name in _YAML_PATHS.items():
        node: Any = tree
        for key in yaml_path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            values[field_name] = node
    return values


def _unknown_keys(node: dict[Any, Any], at: tuple[str, ...]) -> list[str]:
    """Each key of ``node`` (at YAML path ``at``) outside the seed's tree, with the nearest known one."""
    known = {
        path[len(at)] for path in (*_YAML_PATHS, *_FREE_FORM) if path[: len(at)] == at and len(path) > len(at)
    }
    problems: list[str] = []
    for key, child in node.items():
        path = (*at, str(key))
        if str(key) not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {'.'.join((*at, close[0]))}?)" if close else ""
            problems.append(f"unknown key {'.'.join(path)}{hint}")
        elif isinstance(child, dict) and path not in _FREE_FORM and path not in _YAML_PATHS:
            problems.extend(_unknown_keys(child, path))
    return problems


class ConfigError(Exception):
    """A configuration problem, reported to the operator as one line."""


def _env(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    # `.env` holds the same names as the environment; keys it has for other programs (compose's) are ignored.
    model_config = SettingsConfigDict(
        extra="ignore",
        # The environment (and .env) names are the upper-case ones: each field's lower-case alias is its YAML
        # key and keyword, and read case-insensitively from the environment it turned a container's HOST or
        # PORT into the listen address.
        case_sensitive=True,
        populate_by_name=True,
        validate_default=True,
        env_ignore_empty=True,
        env_file=DOTENV,
        env_file_encoding="utf-8",
    )

    # Service
    database_url: str | None = _env("DATABASE_URL", "database_url")
    data_dir: Path = Field(
        default=Path.home() / ".local" / "share" / "agentplane",
        validation_alias=AliasChoices("AGENTPLANE_DATA_DIR", "data_dir"),
    )
    admin_key: SecretStr | None = _env("AGENTPLANE_ADMIN_KEY", "admin_key")
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("AGENTPLANE_HOST", "host"))
    port: int = Field(default=8080, ge=1, le=65535, validation_alias=AliasChoices("AGENTPLANE_PORT", "port"))
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=AliasChoices("AGENTPLANE_LOG_LEVEL", "log_level")
    )
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("AGENTPLANE_LOG_FORMAT", "log_format")
    )
    replica_id: str = Field(default="", validation_alias=AliasChoices("AGENTPLANE_REPLICA_ID", "replica_id"))
    replica_heartbeat_interval: Duration = Field(
        default=5.0,
        validation_alias=AliasChoices("AGENTPLANE_REPLICA_HEARTBEAT", "replica_heartbeat_interval"),
    )
    replica_timeout: Duration = Field(
        default=20.0, validation_alias=AliasChoices("AGENTPLANE_REPLICA_TIMEOUT", "replica_timeout")
    )
    # How long the leases of an agent whose socket dropped wait for it to reconnect (to any replica) and
    # claim them, before they go back to the queue: a blip or a failover then runs nothing twice. 0 requeues
    # at once.
    handover_grace: DurationOrZero = Field(
        default=5.0, validation_alias=AliasChoices("AGENTPLANE_HANDOVER_GRACE", "handover_grace")
    )
    reaper_interval: Duration = Field(
        default=1.0, validation_alias=AliasChoices("AGENTPLANE_REAPER_INTERVAL", "reaper_interval")
    )
    db_pool_size: int = Field(default=10, ge=1, validation_alias=AliasChoices("AGENTPLANE_DB_POOL_SIZE"))
    metrics_refresh: Duration = Field(
        default=5.0, validation_alias=AliasChoices("AGENTPLANE_METRICS_REFRESH", "metrics_refresh")
    )
    # Retention (app.retention): finished tasks, finished sessions and offline agents older than these are
    # deleted, a batch at a time, by one replica per interval; 0 keeps them forever.
    retention_tasks: Retention = Field(
        default=7 * 86400.0, validation_alias=AliasChoices("AGENTPLANE_RETENTION_TASKS", "retention_tasks")
    )
    retention_sessions: Retention = Field(
        default=7 * 86400.0,
        validation_alias=AliasChoices("AGENTPLANE_RETENTION_SESSIONS", "retention_sessions"),
    )
    retention_agents: Retention = Field(
        default=7 * 86400.0, validation_alias=AliasChoices("AGENTPLANE_RETENTION_AGENTS", "retention_agents")
    )
    retention_interval: Duration = Field(
        default=600.0, validation_alias=AliasChoices("AGENTPLANE_RETENTION_INTERVAL", "retention_interval")
    )
    retention_batch: int = Field(
        default=500,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("AGENTPLANE_RETENTION_BATCH", "retention_batch"),
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, validation_alias=AliasChoices("AGENTPLANE_MAX_REQUEST_BYTES")
    )
    # HTTP limits (app.http_protocol): headers and body must arrive in time; idle keep-alive connections
    # are closed.
    http_header_timeout: Duration = Field(
        default=10.0, validation_alias=AliasChoices("AGENTPLANE_HTTP_HEADER_TIMEOUT", "http_header_timeout")
    )
    http_body_timeout: Duration = Field(
        default=60.0, validation_alias=AliasChoices("AGENTPLANE_HTTP_BODY_TIMEOUT", "http_body_timeout")
    )
    http_keepalive_timeout: Duration = Field(
        default=20.0,
        validation_alias=AliasChoices("AGENTPLANE_HTTP_KEEPALIVE_TIMEOUT", "http_keepalive_timeout"),
    )
    # REST requests per second per API key on each replica (app.ratelimit), with bursts up to
    # rate_limit_burst; 0 turns the limit off.
    rate_limit: float = Field(
        default=2000.0, ge=0, validation_alias=AliasChoices("AGENTPLANE_RATE_LIMIT", "rate_limit")
    )
    rate_limit_burst: int = Field(
        default=4000, ge=1, validation_alias=AliasChoices("AGENTPLANE_RATE_LIMIT_BURST", "rate_limit_burst")
    )

    # Agent manager (the seed's names)
    health_check_interval: Duration = Field(
        default=30.0, validation_alias=AliasChoices("AGENT_HEALTH_CHECK_INTERVAL", "health_check_interval")
    )
    health_check_timeout: Duration = Field(
        default=10.0, validation_alias=AliasChoices("AGENT_HEALTH_CHECK_TIMEOUT", "health_check_timeout")
    )
    # Leases lapsed (or work lost with the agent) in a row before an agent is quarantined; 0: never.
    quarantine_after: int = Field(
        default=3, ge=0, le=1000, validation_alias=AliasChoices("AGENT_QUARANTINE_AFTER", "quarantine_after")
    )
    quarantine_cooldown: Duration = Field(
        default=300.0, validation_alias=AliasChoices("AGENT_QUARANTINE_COOLDOWN", "quarantine_cooldown")
    )
    # Attempts charged on a task's first model before its fallback_models are tried, one attempt each.
    fallback_after: int = Field(
        default=1, ge=1, le=100, validation_alias=AliasChoices("AGENT_FALLBACK_AFTER", "fallback_after")
    )
    max_concurrent_tasks: int = Field(
        default=10,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("AGENT_MAX_CONCURRENT_TASKS", "max_concurrent_tasks"),
    )
    task_timeout: Duration = Field(
        default=300.0, validation_alias=AliasChoices("AGENT_TASK_TIMEOUT", "task_timeout")
    )
    queue_timeout: Duration = Field(
        default=3600.0, validation_alias=AliasChoices("AGENT_QUEUE_TIMEOUT", "queue_timeout")
    )
    max_attempts: int = Field(
        default=3, ge=1, le=100, validation_alias=AliasChoices("AGENT_MAX_ATTEMPTS", "max_attempts")
    )
    retry_backoff: Duration = Field(
        default=1.0, validation_alias=AliasChoices("AGENT_RETRY_BACKOFF", "retry_backoff")
    )
    retry_backoff_max: Duration = Field(
        default=60.0, validation_alias=AliasChoices("AGENT_RETRY_BACKOFF_MAX", "retry_backoff_max")
    )
    max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("AGENT_MAX_MESSAGE_BYTES", "max_message_bytes"),
    )
    register_timeout: Duration = Field(
        default=10.0, validation_alias=AliasChoices("AGENT_REGISTER_TIMEOUT", "register_timeout")
    )
    # Frames one agent connection may send: a token bucket refilled at ws_frame_rate per second holding up
    # to ws_frame_burst (0 turns the limit off). Past it, results, accepts, rejects and pongs wait (the
    # server stops reading the socket); other frames are refused with `rate_limited` (docs/protocol.md).
    ws_frame_rate: float = Field(
        default=5000.0, ge=0, validation_alias=AliasChoices("AGENTPLANE_WS_FRAME_RATE", "ws_frame_rate")
    )
    ws_frame_burst: int = Field(
        default=10_000, ge=1, validation_alias=AliasChoices("AGENTPLANE_WS_FRAME_BURST", "ws_frame_burst")
    )

    # Routing
    routing_strategy: RoutingStrategyName = Field(
        default="capability_based",
        validation_alias=AliasChoices("AGENT_ROUTING_STRATEGY", "routing_strategy"),
    )
    routing_weight_capability: float = Field(
        default=0.4, ge=0, validation_alias=AliasChoices("AGENT_ROUTING_WEIGHTS_CAPABILITY")
    )
    routing_weight_performance: float = Field(
        default=0.3, ge=0, validation_alias=AliasChoices("AGENT_ROUTING_WEIGHTS_PERFORMANCE")
    )
    routing_weight_load: float = Field(
        default=0.2, ge=0, validation_alias=AliasChoices("AGENT_ROUTING_WEIGHTS_LOAD")
    )
    routing_weight_cost: float = Field(
        default=0.1, ge=0, validation_alias=AliasChoices("AGENT_ROUTING_WEIGHTS_COST")
    )

    # Collaboration
    collaboration_timeout: Duration = Field(
        default=600.0, validation_alias=AliasChoices("AGENT_COLLABORATION_TIMEOUT", "collaboration_timeout")
    )
    consensus_threshold: float = Field(
        default=0.8,
        gt=0,
        le=1,
        validation_alias=AliasChoices("AGENT_CONSENSUS_THRESHOLD", "consensus_threshold"),
    )
    consensus_max_rounds: int = Field(
        default=5,
        ge=1,
        le=100,
        validation_alias=AliasChoices("AGENT_CONSENSUS_MAX_ROUNDS", "consensus_max_rounds"),
    )
    map_reduce_max_parallel: int = Field(
        default=20, ge=1, le=1000, validation_alias=AliasChoices("AGENT_MAP_REDUCE_MAX_PARALLEL")
    )

    # Models and cost
    allowed_models: CommaList = Field(
        default_factory=list, validation_alias=AliasChoices("AGENT_MODELS_ALLOWED", "allowed_models")
    )
    cost_limit_per_task: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("AGENT_COST_LIMIT_PER_TASK", "cost_limit_per_task")
    )
    cost_limit_per_session: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices("AGENT_COST_LIMIT_PER_SESSION", "cost_limit_per_session"),
    )
    model_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES), validation_alias=AliasChoices("model_prices")
    )
    default_estimated_tokens: int = Field(
        default=1000,
        ge=0,
        validation_alias=AliasChoices("AGENT_DEFAULT_ESTIMATED_TOKENS", "default_estimated_tokens"),
    )
    # Interop (app.interop): Host headers /mcp and /a2a answer, against DNS rebinding ("host:port", "host:*");
    # empty: loopback names and the listen address only.
    interop_allowed_hosts: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("AGENTPLANE_INTEROP_ALLOWED_HOSTS", "interop_allowed_hosts"),
    )

    # A2A agents in the fleet (app.interop.a2a_registry): the Fernet key (urlsafe base64 of 32 bytes, e.g.
    # from `cryptography.fernet.Fernet.generate_key()`) that encrypts their stored headers, or several,
    # comma-separated, during a rotation. Unset: headers given in clear are refused; only {"env": NAME}
    # references are stored.
    a2a_credentials_key: SecretStr | None = _env("AGENTPLANE_A2A_CREDENTIALS_KEY", "a2a_credentials_key")

    @field_validator("a2a_credentials_key")
    @classmethod
    def _check_fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        # One key, or several comma-separated for a rotation: the first encrypts, each decrypts.
        for part in value.get_secret_value().split(",") if value is not None else ():
            try:
                raw = base64.urlsafe_b64decode(part.strip().encode())
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError("must be Fernet keys (urlsafe base64 of 32 bytes), comma-separated")
        return value

    @field_validator("replica_id")
    @classmethod
    def _default_replica_id(cls, value: str, info: ValidationInfo) -> str:
        # Stable across restarts of the same listener, so a restarted replica recovers the leases of its
        # previous incarnation at once instead of waiting for its heartbeat to lapse.
        return value or f"{socket.gethostname()}:{info.data.get('port', 0)}"

    @field_validator("model_prices")
    @classmethod
    def _check_prices(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, price in value.items():
            missing = {"input_per_1k", "output_per_1k"} - set(price)
            if missing:
                raise ValueError(f"price of {model!r} lacks {', '.join(sorted(missing))}")
        return value

    @property
    def routing_weights(self) -> dict[str, float]:
        return {
            "capability": self.routing_weight_capability,
            "performance": self.routing_weight_performance,
            "load": self.routing_weight_load,
            "cost": self.routing_weight_cost,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, YamlConfigSource(settings_cls)


# USD per 1,000 tokens; operators override them in the YAML file's agents.models.prices.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-3-opus": {"input_per_1k": 0.015, "output_per_1k": 0.075},
    "claude-3-sonnet": {"input_per_1k": 0.003, "output_per_1k": 0.015},
    "claude-3-haiku": {"input_per_1k": 0.00025, "output_per_1k": 0.00125},
    "gpt-4": {"input_per_1k": 0.03, "output_per_1k": 0.06},
    "gpt-4o": {"input_per_1k": 0.0025, "output_per_1k": 0.01},
    "gpt-3.5-turbo": {"input_per_1k": 0.0005, "output_per_1k": 0.0015},
    "titan-v2": {"input_per_1k": 0.0002, "output_per_1k": 0.0002},
}


# Values a command's flags pass in (`agentplane serve --port`), by field name.
_FLAGS = {"host": "--host", "port": "--port", "log_level": "--log-level"}


def describe_validation_error(exc: ValidationError, from_yaml: frozenset[str] = frozenset()) -> str:
    """One line per problem, naming the key the operator set: the environment variable (pydantic reports
    the alias that matched), the YAML path for a value from the file (``from_yaml``: those field names), or
    the command-line flag."""
    parts = []
    for error in exc.errors():
        loc = [str(item) for item in error["loc"]]
        if loc and loc[0] in from_yaml:
            loc[0] = _YAML_PATH_OF[loc[0]]
        elif loc and loc[0] in _FLAGS:
            loc[0] = _FLAGS[loc[0]]
        key = ".".join(loc) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and "KEY" not in key else ""
        parts.append(f"{key}: {message}{shown}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        path = config_path()
        from_yaml = frozenset(load_yaml_config(Path(path))) - set(overrides) if path else frozenset()
        raise ConfigError(describe_validation_error(exc, from_yaml)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
