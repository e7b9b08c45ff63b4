"""The ``remediation-bot`` command: ``serve`` runs the bot, ``demo`` runs it against a local tenant."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from bot import tracing
from bot.cli.audit import DEFAULT_STORE_URL, add_audit_commands
from bot.cli.dev import add_dev_commands
from bot.cli.logs import setup_logging
from bot.config.settings import load_settings
from bot.errors import ConfigError, StoreError


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the app pulls in botbuilder and the Graph client, which the audit commands
    # (run by an auditor with nothing but the database) must not depend on.
    from aiohttp import web

    from bot.web.app import SHUTDOWN_REQUEST_SECONDS, create_app

    try:
        # A .env file in the working folder is read too (the environment wins over it).
        settings = load_settings(_env_file=".env")
    except ConfigError as exc:
        print(f"remediation-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.effective_log_format)
    if tracing.configure():
        logging.getLogger(__name__).info("traces exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)")
    # SIGTERM closes the listener, lets requests being answered finish (briefly), then stops the
    # background work: see create_app's shutdown.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=SHUTDOWN_REQUEST_SECONDS,
    )
    # Everything that matters is done: requests answered, jobs finished or released, the store
    # closed. What may be left are worker threads blocked in a Bot Connector call that botbuilder
    # makes synchronously (msrest, its own timeout 100 s) for work that was cancelled; the
    # interpreter would wait for them at exit. Leave now instead, with spans and logs flushed.
    tracing.flush()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- migrate ----------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations to the store and print the schema version.

    Opening a store migrates it (the bot does so at start too); running this first lets a
    deploy fail on a migration before any replica is replaced.
    """
    from bot.store import open_store, redact_url  # only this command may load the PostgreSQL driver

    url = args.store_url or os.environ.get("STORE_URL") or DEFAULT_STORE_URL
    entra = os.environ.get("STORE_ENTRA_AUTH", "").strip().lower() in ("1", "true", "yes", "on")

    async def run() -> int:
        async with contextlib.AsyncExitStack() as stack:
            password = None
            if entra:
                # The token comes from the bot's own credential, as configured for serve.
                from bot.web.app import database_password

                password = database_password(load_settings(_env_file=".env"), stack)
            store = await open_store(url, password=password)
            try:
                return await store.schema_version()
            finally:
                await store.close()

    try:
        version = asyncio.run(run())
    except (ConfigError, StoreError) as exc:
        print(f"remediation-bot: {exc.message}", file=sys.stderr)
        return 2
    print(f"{redact_url(url)}: schema at version {version}")
    return 0


def _add_migrate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser("migrate", help="apply the store's schema migrations and print its version")
    store_help = f"the bot's database (default: $STORE_URL, else {DEFAULT_STORE_URL})"
    migrate.add_argument("--store-url", metavar="URL", help=store_help)
    migrate.set_defaults(run=_migrate)


# -- doctor ----------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    """Check the configuration against the real tenant; exit 1 when anything is missing."""
    from bot.cli.doctor import run_doctor  # pulls in the Graph client and msal

    setup_logging("WARNING")
    try:
        settings = load_settings(_env_file=".env")
    except ConfigError as exc:
        print(f"remediation-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    print(
        f"remediation-bot doctor: Graph app {settings.graph_client_id} in tenant "
        f"{settings.graph_tenant_id} ({settings.graph_base_url})"
    )
    report = asyncio.run(run_doctor(settings))
    print(report.render())
    return report.exit_code


def _add_doctor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="before go-live: prove the token, each Graph permission (harmless reads) and the "
        "channel registration; exit 1 when anything is missing",
    )
    doctor.set_defaults(run=_doctor)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``remediation-bot`` console script."""
    parser = argparse.ArgumentParser(prog="remediation-bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the bot (configuration from the environment)")
    serve.set_defaults(run=_serve)
    add_dev_commands(commands)
    add_audit_commands(commands)
    _add_migrate_command(commands)
    _add_doctor_command(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
