"""The development commands: ``demo``, ``cards dump`` and ``manifest build``.

They run the tools in ``devtools/`` (the sandbox tenant, the demo stack, the sample cards, the
Teams app package build), which live in the repository and are not part of the installed package:
a deployment runs ``serve`` and never imports them. From a development checkout (``make install``,
or ``pip install -e '.[dev]'``) they work as before; from an installed wheel they say so and exit 2.
Keeping them on ``remediation-bot`` (rather than a second script) keeps ``make demo``, the README
and muscle memory unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from bot.cli.logs import setup_logging
from bot.errors import ManifestError

NEEDS_CHECKOUT = "needs a development checkout of remediation-bot (make install, or pip install -e '.[dev]')"


def _devtools_ready(command: str) -> bool:
    """True when ``devtools`` can be imported, printing why not otherwise.

    An editable install maps only the shipped packages (bot, cards), so a console script started
    from ``.venv/bin`` does not see ``devtools/``; it sits beside ``bot/`` in the checkout, which
    is put on the path here. An installed wheel has no checkout beside it.
    """
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "devtools" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        # Importing the sandbox also proves the development extras are installed.
        importlib.import_module("devtools.sandbox")
    except ModuleNotFoundError as exc:
        missing = "" if (exc.name or "").startswith("devtools") else f" (missing: {exc.name})"
        print(f"remediation-bot: `{command}` {NEEDS_CHECKOUT}{missing}", file=sys.stderr)
        return False
    return True


def _manifest_defaults() -> dict[str, str]:
    """The manifest build's defaults for ``--help``; none when the development tools are absent."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "devtools" / "manifest.py").is_file():
        return {}
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from devtools import manifest  # constants only: the defaults shown in --help

    return {
        "version": manifest.default_version(),
        "--short-name": manifest.DEFAULT_SHORT_NAME,
        "--developer-name": manifest.DEFAULT_DEVELOPER_NAME,
        "--website-url": manifest.DEFAULT_WEBSITE_URL,
        "--privacy-url": manifest.DEFAULT_PRIVACY_URL,
        "--terms-url": manifest.DEFAULT_TERMS_URL,
    }


def _demo(args: argparse.Namespace) -> int:
    if not _devtools_ready("demo"):
        return 2
    from devtools.demo import run_demo  # the demo pulls in the sandbox tenant; serve never needs it

    setup_logging("INFO")
    try:
        return asyncio.run(run_demo(bot_port=args.port, playground=not args.no_playground))
    except KeyboardInterrupt:
        return 0


def _cards_dump(args: argparse.Namespace) -> int:
    """Write one ``<state>.json`` per sample card state into ``args.directory``."""
    if not _devtools_ready("cards dump"):
        return 2
    from devtools.samples import card_json, catalogue  # only this command renders sample cards

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    cards = catalogue()
    for state, card in cards.items():
        (directory / f"{state}.json").write_text(card_json(card), encoding="utf-8")
    print(f"wrote {len(cards)} cards to {directory}")
    return 0


def _manifest_build(args: argparse.Namespace) -> int:
    """Render, validate (offline) and zip the Teams app package; exit 2 naming what is wrong."""
    if not _devtools_ready("manifest build"):
        return 2
    from devtools.manifest import ManifestOptions, build_package

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
    defaults = _manifest_defaults()
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
        f"(default: the package version, {defaults.get('version', 'of this checkout')})",
    )
    for option, what in (
        ("--short-name", "the app name shown in Teams (30 characters at most)"),
        ("--developer-name", "who publishes the app (your team)"),
        ("--website-url", "your page about the bot (https)"),
        ("--privacy-url", "your privacy statement (https)"),
        ("--terms-url", "your terms of use (https)"),
    ):
        default = defaults.get(option)
        shown = f"{what} (default: {default})" if default else what
        build.add_argument(option, default=default, metavar="TEXT", help=shown)
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


def add_dev_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``, ``cards dump`` and ``manifest build`` to the ``remediation-bot`` parser."""
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
    _add_manifest_commands(commands)
