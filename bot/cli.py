"""The ``remediation-bot`` command: ``serve`` runs the bot, ``demo`` runs it against a local tenant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from bot.app import create_app
from bot.config import load_settings
from bot.errors import ConfigError


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
    try:
        settings = load_settings()
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
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
