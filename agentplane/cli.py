"""`agentplane serve | migrate | keys | agent | task | session | bench`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server is an extra: `agentplane agent` and the client commands run without it
    from app.config import Settings

SERVER_MISSING = "the server is not installed here ({missing}): pip install 'agentplane[server]'"


def _fail(message: str, code: int = 2) -> int:
    print(f"agentplane: {message}", file=sys.stderr)
    return code


def _settings(**overrides: Any) -> Settings:
    from app.config import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


class _Database:
    """The database the command talks to: DATABASE_URL, or the embedded Postgres started here."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: Any = None

    def __enter__(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from app.db.embedded import EmbeddedPostgres

        self.embedded = EmbeddedPostgres(self.settings.data_dir)
        self.embedded.start()
        self.embedded.create_database()
        print(f"embedded PostgreSQL: {self.embedded.pgdata}", flush=True)
        return str(self.embedded.url())

    def __exit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()


async def _bootstrap_admin(settings: Settings) -> str | None:
    from app.db.session import create_engine, create_sessionmaker
    from app.keys.service import ensure_bootstrap_admin

    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            return await ensure_bootstrap_admin(session, admin_key_configured=settings.admin_key is not None)
    finally:
        await engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    from agentplane.serve import serve, tune_gc
    from app.db.migrate import upgrade_to_head
    from app.logs import configure_logging

    if args.workers is not None and args.workers < 1:
        return _fail("--workers must be at least 1")
    tune_gc()
    settings = _settings(host=args.host, port=args.port, log_level=args.log_level)
    configure_logging(settings.log_level, settings.log_format)
    with _Database(settings) as url:
        settings = settings.model_copy(update={"database_url": url})
        upgrade_to_head(url)
        secret = asyncio.run(_bootstrap_admin(settings))
        if secret:
            print(
                "\nA first admin API key was created. It is shown only this once; store it now:\n\n"
                f"    {secret}\n\nCreate more with `agentplane keys create` or POST /api/v1/keys.\n",
                flush=True,
            )
        base = f"http://{settings.host}:{settings.port}"
        workers = args.workers or 1

        def listening() -> None:
            print(
                f"Agentplane listening on {base}  (API docs: {base}/docs, agents: ws://{settings.host}:"
                f"{settings.port}/ws/agents)" + (f", {workers} replica processes" if workers > 1 else ""),
                flush=True,
            )

        serve(settings, workers, on_listening=listening)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade_to_head

    with _Database(_settings()) as url:
        upgrade_to_head(url)
    print("database migrated to head")
    return 0


async def _keys(args: argparse.Namespace, url: str) -> None:
    from app.db.session import create_engine, create_sessionmaker
    from app.keys import service
    from app.security import Scope

    engine = create_engine(url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            if args.keys_command == "create":
                key, secret = await service.create_key(
                    session,
                    name=args.name,
                    scopes=[Scope(scope) for scope in args.scope],
                    project=args.project,
                )
                print(
                    f"id:     {key.id}\nname:   {key.name}\nscopes: {','.join(key.scopes)}\n"
                    f"project: {key.project or '-'}\nsecret: {secret}"
                )
                print("(the secret is shown only this once)", file=sys.stderr)
            elif args.keys_command == "list":
                for key in await service.list_keys(session):
                    state = "revoked" if key.revoked_at else "active"
                    scopes, project = ",".join(key.scopes), key.project or "-"
                    print(f"{key.id}  {key.prefix}…  {scopes:<18} {state:<8} {project:<16} {key.name}")
            else:
                import uuid

                key = await service.revoke_key(session, key_id=uuid.UUID(args.id))
                print(f"revoked {key.id} ({key.name})")
    finally:
        await engine.dispose()


def cmd_keys(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade_to_head
    from app.errors import AppError

    with _Database(_settings()) as url:
        upgrade_to_head(url)
        try:
            asyncio.run(_keys(args, url))
        except AppError as exc:
            return _fail(exc.detail, 1)
        except ValueError as exc:
            return _fail(str(exc), 2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentplane", description="A control plane for fleets of AI agents."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate the database and run the server")
    serve.add_argument("--host", help="listen address (AGENTPLANE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (AGENTPLANE_PORT, default 8080)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers",
        type=int,
        help="replica processes sharing the port (default 1); each is a replica with id <replica id>/<n>",
    )
    serve.set_defaults(func=_needs_server(cmd_serve))

    migrate = sub.add_parser("migrate", help="run the database migrations and exit")
    migrate.set_defaults(func=_needs_server(cmd_migrate))

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=["admin", "client", "agent"])
    create.add_argument(
        "--project", help="keys of one project share their tasks and sessions (default: the key's own only)"
    )
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    keys.set_defaults(func=_needs_server(cmd_keys))

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in {"app", "agentplane", "bench"}:
                raise
            continue  # a command whose dependencies are in the server extra, which is not installed
        module.add_parser(sub)
    return parser


# Each of these modules has `add_parser(subparsers)`, adding its subcommand with a `func` default.
_COMMAND_MODULES = ["agentplane.agent_cli", "agentplane.task_cli", "agentplane.session_cli", "bench.cli"]
_COMMAND_MODULES = [name for name in _COMMAND_MODULES if importlib.util.find_spec(name) is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _is_config_error(exc):
            return _fail(str(exc))
        raise


def _is_config_error(exc: Exception) -> bool:
    try:
        from app.config import ConfigError
    except ImportError:
        return False
    return isinstance(exc, ConfigError)


def _needs_server(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a server command, or say in one line which extra it needs."""

    def run(args: argparse.Namespace) -> int:
        try:
            import app.main  # noqa: F401  - the whole server stack, or the name of what is missing
        except ModuleNotFoundError as exc:
            return _fail(SERVER_MISSING.format(missing=f"no module {exc.name}"))
        return command(args)

    return run


if __name__ == "__main__":
    sys.exit(main())
