"""The ``remediation-bot`` command: ``serve`` runs the bot, ``demo`` runs it against a local tenant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from bot.config import Settings, load_settings
from bot.errors import ConfigError, StoreError
from bot.store.sqlite import SqliteStore

T = TypeVar("T")


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

    from bot.app import create_app

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


# -- audit ------------------------------------------------------------------------------------

# The bot's own default, read from its settings model so the two cannot drift apart.
_DEFAULT_STORE_URL = str(Settings.model_fields["store_url"].default)


def _audit_database(store_url: str | None) -> Path | None:
    """The SQLite file to audit, or ``None`` after printing why there is none."""
    url = store_url or os.environ.get("STORE_URL") or _DEFAULT_STORE_URL
    if not url.startswith("sqlite:///"):
        print(
            f"remediation-bot: the store URL must look like sqlite:///path/to/file.db, got {url!r}",
            file=sys.stderr,
        )
        return None
    path = Path(url.removeprefix("sqlite:///"))
    # Opening a missing file would create an empty database, which would then "verify".
    if not path.is_file():
        print(f"remediation-bot: no database at {path} (from {url})", file=sys.stderr)
        return None
    return path


def _on_audit_store(path: Path, work: Callable[[SqliteStore], Awaitable[T]]) -> T | None:
    """Run ``work`` on the store at ``path``; ``None`` after printing why it could not run.

    Opening applies pending migrations (so a database from before the audit trail gets an
    empty one) and nothing else: no audit row is ever written here.
    """
    try:
        store = SqliteStore(path)
    except Exception as exc:  # sqlite3 errors included; only bot/store may import sqlite3
        print(f"remediation-bot: cannot open {path} as the bot's database: {exc}", file=sys.stderr)
        return None

    async def run() -> T:
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        print(f"remediation-bot: {exc.message}", file=sys.stderr)
        return None


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the audit chain is intact, 1 when broken (naming the first broken event)."""
    path = _audit_database(args.store_url)
    check = None if path is None else _on_audit_store(path, lambda store: store.verify_audit())
    if check is None:
        return 2
    if not check.ok:
        print(f"audit chain broken: {check.problem}")
        return 1
    print(f"audit chain intact: {check.checked} event{'' if check.checked == 1 else 's'}")
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    """Write every audit event as one JSON line, in stored order, to ``--out`` (default stdout).

    Each line is the event's canonical JSON, so ``sha256`` of the line without its ``hash`` key
    (re-serialised with sorted keys and no whitespace) reproduces ``hash``.
    """
    path = _audit_database(args.store_url)
    events = None if path is None else _on_audit_store(path, lambda store: store.list_audit())
    if events is None:
        return 2
    lines = "".join(f"{event.to_json()}\n" for event in events)
    if args.out == "-":
        sys.stdout.write(lines)
        return 0
    try:
        Path(args.out).write_text(lines, encoding="utf-8")
    except OSError as exc:
        print(f"remediation-bot: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"exported {len(events)} audit events to {args.out}", file=sys.stderr)
    return 0


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify or export the hash-chained audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    store_help = f"the bot's database (default: $STORE_URL, else {_DEFAULT_STORE_URL})"
    verify = audit_commands.add_parser(
        "verify", help="check the chain; exit 0 when intact, 1 naming the first broken event"
    )
    verify.add_argument("--store-url", metavar="URL", help=store_help)
    verify.set_defaults(run=_audit_verify)
    export = audit_commands.add_parser("export", help="write every event as JSON Lines, in stored order")
    export.add_argument("--store-url", metavar="URL", help=store_help)
    export.add_argument("--out", metavar="FILE", default="-", help="where to write; - for stdout (default)")
    export.set_defaults(run=_audit_export)


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
    _add_audit_commands(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
