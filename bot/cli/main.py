"""The ``remediation-bot`` command: ``serve`` runs the bot, ``demo`` runs it against a local tenant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.cli.audit import DEFAULT_STORE_URL, add_audit_commands
from bot.config.settings import load_settings
from bot.errors import ConfigError, StoreError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # botbuilder and msal are chatty at INFO; their warnings still show.
    for noisy in ("msal", "botbuilder", "botframework", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the app pulls in botbuilder and the Graph client, which the audit commands
    # (run by an auditor with nothing but the database) must not depend on.
    from aiohttp import web

    from bot.web.app import create_app

    try:
        # A .env file in the working folder is read too (the environment wins over it).
        settings = load_settings(_env_file=".env")
    except ConfigError as exc:
        print(f"remediation-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo  # the demo pulls in the sandbox tenant; serve never needs it

    _setup_logging("INFO")
    try:
        return asyncio.run(run_demo(bot_port=args.port, playground=not args.no_playground))
    except KeyboardInterrupt:
        return 0


def _cards_dump(args: argparse.Namespace) -> int:
    """Write one ``<state>.json`` per sample card state into ``args.directory``."""
    from cards.samples import card_json, catalogue  # only this command renders sample cards

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    cards = catalogue()
    for state, card in cards.items():
        (directory / f"{state}.json").write_text(card_json(card), encoding="utf-8")
    print(f"wrote {len(cards)} cards to {directory}")
    return 0


# -- migrate ----------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations to the store and print the schema version.

    Opening a store migrates it (the bot does so at start too); running this first lets a
    deploy fail on a migration before any replica is replaced.
    """
    from bot.store import open_store, redact_url  # only this command may load the PostgreSQL driver

    url = args.store_url or os.environ.get("STORE_URL") or DEFAULT_STORE_URL

    async def run() -> int:
        store = await open_store(url)
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


# -- manifest and doctor ----------------------------------------------------------------------


def _manifest_build(args: argparse.Namespace) -> int:
    """Render, validate (offline) and zip the Teams app package; exit 2 naming what is wrong."""
    from bot.errors import ManifestError
    from bot.manifest import ManifestOptions, build_package

    options = ManifestOptions(
        bot_id=args.bot_id,
        out=Path(args.out),
        app_id=args.app_id,
        version=args.version,
        short_name=args.short_name,
        developer_name=args.developer_name,
        website_url=args.website_url,
        privacy_url=args.privacy_url,
        terms_url=args.terms_url,
        bot_domain=args.bot_domain,
        template=Path(args.template) if args.template else None,
        icons_dir=Path(args.icons_dir) if args.icons_dir else None,
        node_modules=Path(args.node_modules) if args.node_modules else None,
    )
    try:
        built = build_package(options)
    except ManifestError as exc:
        print(f"remediation-bot: {exc.message}", file=sys.stderr)
        return 2
    print(built.summary())
    return 0


def _add_manifest_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bot import manifest  # constants only: the defaults shown in --help

    group = commands.add_parser("manifest", help="build the Teams app package (manifest.json + icons)")
    manifest_commands = group.add_subparsers(dest="manifest_command", metavar="COMMAND", required=True)
    build = manifest_commands.add_parser(
        "build",
        help="render manifest/manifest.template.json, validate it offline against the official "
        "Teams schema (npm ci installs it) and write the zip to upload in Teams",
    )
    build.add_argument(
        "--bot-id", required=True, metavar="GUID", help="the Azure Bot's Microsoft App ID (MicrosoftAppId)"
    )
    build.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="the zip to write, or an existing folder (then remediation-bot-<version>.zip in it)",
    )
    build.add_argument("--app-id", metavar="GUID", help="the Teams app id (default: the bot id)")
    build.add_argument(
        "--version",
        metavar="X.Y.Z",
        help="the app version; raise it for every upload that replaces the app "
        f"(default: the package version, {manifest.default_version()})",
    )
    for option, default, what in (
        ("--short-name", manifest.DEFAULT_SHORT_NAME, "the app name shown in Teams (30 characters at most)"),
        ("--developer-name", manifest.DEFAULT_DEVELOPER_NAME, "who publishes the app (your team)"),
        ("--website-url", manifest.DEFAULT_WEBSITE_URL, "your page about the bot (https)"),
        ("--privacy-url", manifest.DEFAULT_PRIVACY_URL, "your privacy statement (https)"),
        ("--terms-url", manifest.DEFAULT_TERMS_URL, "your terms of use (https)"),
    ):
        build.add_argument(option, default=default, metavar="TEXT", help=f"{what} (default: {default})")
    build.add_argument(
        "--bot-domain",
        default="",
        metavar="HOST",
        help="the messaging endpoint's host, listed in validDomains (default: none)",
    )
    build.add_argument("--template", metavar="FILE", help="another manifest template (default: manifest/)")
    build.add_argument(
        "--icons-dir", metavar="DIR", help="where the icons are (default: the template's folder)"
    )
    build.add_argument(
        "--node-modules",
        metavar="DIR",
        help="where npm installed @microsoft/app-manifest (default: the checkout's node_modules)",
    )
    build.set_defaults(run=_manifest_build)


def _doctor(args: argparse.Namespace) -> int:
    """Check the configuration against the real tenant; exit 1 when anything is missing."""
    from bot.cli.doctor import run_doctor  # pulls in the Graph client and msal

    _setup_logging("WARNING")
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
    demo = commands.add_parser(
        "demo", help="run the bot with a local sandbox tenant and the Microsoft 365 Agents Playground"
    )
    demo.add_argument("--port", type=int, default=3978, help="the bot's port (default 3978)")
    demo.add_argument(
        "--no-playground", action="store_true", help="start only the bot and the sandbox tenant"
    )
    demo.set_defaults(run=_demo)
    cards = commands.add_parser("cards", help="work with the case card's sample states")
    cards_commands = cards.add_subparsers(dest="cards_command", metavar="COMMAND", required=True)
    cards_dump = cards_commands.add_parser(
        "dump", help="write every sample state's card as DIR/<state>.json (Adaptive Card JSON)"
    )
    cards_dump.add_argument("directory", metavar="DIR", help="where to write (created if missing)")
    cards_dump.set_defaults(run=_cards_dump)
    add_audit_commands(commands)
    _add_migrate_command(commands)
    _add_manifest_commands(commands)
    _add_doctor_command(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
