"""The ``remediation-bot`` command: ``serve`` runs the bot, ``demo`` runs it against a local tenant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from bot.config import Settings, load_settings
from bot.domain.audit import SANDBOX_AUDIT_KEY, AuditKey, Break, ChainCheck, Checkpoint, parse_checkpoint
from bot.errors import ConfigError, StoreError
from bot.store import open_store
from bot.store.base import Store

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


def _audit_database(store_url: str | None) -> str | None:
    """The store URL to audit, or ``None`` after printing why there is none."""
    url = store_url or os.environ.get("STORE_URL") or _DEFAULT_STORE_URL
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        # Opening a missing file would create an empty database, which would then "verify".
        if not path.is_file():
            print(f"remediation-bot: no database at {path} (from {url})", file=sys.stderr)
            return None
    return url


def _on_audit_store(
    url: str, work: Callable[[Store], Awaitable[T]], *, audit_key: AuditKey | None = None
) -> T | None:
    """Run ``work`` on the store at ``url``; ``None`` after printing why it could not run.

    Opening applies pending migrations (so a database from before the audit trail gets an
    empty one) and nothing else: no audit row is ever written here. ``audit_key`` only
    authenticates checkpoints.
    """

    async def run() -> T:
        store = await open_store(url, audit_key=audit_key)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreError, ConfigError) as exc:
        print(f"remediation-bot: {exc.message}", file=sys.stderr)
        return None
    except Exception as exc:  # a file that is not a database, say; only bot/store imports sqlite3
        print(f"remediation-bot: cannot open the bot's database: {exc}", file=sys.stderr)
        return None


# Exit codes of `audit verify` (and of `audit checkpoint` on a broken trail), one per finding.
AUDIT_EXIT_CODES: dict[Break | None, int] = {
    None: 0,
    Break.MODIFIED: 1,
    Break.UNVERIFIABLE: 2,
    Break.DELETED: 3,
    Break.REORDERED: 4,
    Break.TRUNCATED: 5,
    Break.RECOMPUTED: 6,
    Break.REWRITTEN: 7,
}
"""0 intact; 1 modified; 2 not verifiable (no database, a key or checkpoint missing or wrong);
3 deleted; 4 reordered; 5 truncated; 6 recomputed without the key; 7 rewritten since a checkpoint."""

_TRUE = ("1", "true", "yes", "on")


def _audit_keys() -> list[AuditKey]:
    """The audit keys from the environment: ``AUDIT_HMAC_KEY`` first, then every key of
    ``AUDIT_HMAC_PREVIOUS_KEYS`` (comma-separated: the keys used before a rotation)."""
    secrets = [os.environ.get("AUDIT_HMAC_KEY", "")]
    secrets += os.environ.get("AUDIT_HMAC_PREVIOUS_KEYS", "").replace("\n", ",").split(",")
    return [AuditKey.from_secret(secret.strip()) for secret in secrets if secret.strip()]


def _signing_key() -> AuditKey | None:
    """The key checkpoints are authenticated with, as ``serve`` would use it."""
    secret = os.environ.get("AUDIT_HMAC_KEY", "")
    if secret:
        return AuditKey.from_secret(secret)
    if os.environ.get("SANDBOX_MODE", "").strip().lower() in _TRUE:
        return SANDBOX_AUDIT_KEY
    return None


def _checkpoint_argument(text: str) -> Checkpoint:
    try:
        return parse_checkpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is {exc}") from None


def _read_checkpoints(paths: Sequence[str]) -> list[Checkpoint] | None:
    """Every checkpoint in ``paths`` (one per non-blank line); ``None`` after printing the first
    line that is not one."""
    found: list[Checkpoint] = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"remediation-bot: cannot read checkpoints from {path}: {exc}", file=sys.stderr)
            return None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                found.append(parse_checkpoint(line))
            except ValueError as exc:
                print(f"remediation-bot: {path}, line {number} is {exc}", file=sys.stderr)
                return None
    return found


def _report_break(check: ChainCheck, keys: Sequence[AuditKey]) -> int:
    """Print a broken or unverifiable verdict; return its exit code."""
    if check.kind is Break.UNVERIFIABLE:
        print(f"audit chain not verified: {check.problem}")
        given = ", ".join(key.key_id for key in keys)
        if given:
            print(f"keys given: {given} (AUDIT_HMAC_KEY, AUDIT_HMAC_PREVIOUS_KEYS)")
        else:
            print(
                "no key was given: set AUDIT_HMAC_KEY "
                "(and AUDIT_HMAC_PREVIOUS_KEYS for keys used before a rotation)"
            )
    else:
        print(f"audit chain broken: {check.problem}")
    return AUDIT_EXIT_CODES[check.kind]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the audit chain is intact and matches every checkpoint given; otherwise the
    code of :data:`AUDIT_EXIT_CODES` for what was found, naming the first broken event."""
    checkpoints = list(args.checkpoint or [])
    from_files = _read_checkpoints(args.checkpoints or [])
    if from_files is None:
        return 2
    checkpoints += from_files
    keys = _audit_keys()
    path = _audit_database(args.store_url)
    check = (
        None
        if path is None
        else _on_audit_store(path, lambda store: store.verify_audit(keys=keys, checkpoints=checkpoints))
    )
    if check is None:
        return 2
    if not check.ok:
        return _report_break(check, keys)
    summary = f"audit chain intact: {_plural(check.checked, 'event')}"
    if checkpoints:
        summary += f", {_plural(check.checkpoints, 'checkpoint')} matched"
    print(summary)
    unkeyed = check.checked - check.keyed
    if unkeyed:
        print(
            f"note: {_plural(unkeyed, 'event')} from before an audit key was configured (plain SHA-256): "
            "anyone with the database could have rewritten those"
        )
    if check.public_key:
        print(
            f"note: {_plural(check.public_key, 'event')} keyed with the public sandbox key "
            f"{SANDBOX_AUDIT_KEY.key_id}: anyone could have rewritten those"
        )
    if check.checked and not checkpoints:
        print(
            "note: no checkpoint was given, so newest events cut off, or a rewrite by someone holding "
            "the key, cannot be detected (give the thread's 'Audit checkpoint' lines with --checkpoints)"
        )
    return 0


def _audit_checkpoint(args: argparse.Namespace) -> int:
    """Print the head of a verified trail as a checkpoint authenticated with ``AUDIT_HMAC_KEY``."""
    key = _signing_key()
    if key is None:
        print(
            "remediation-bot: AUDIT_HMAC_KEY is not set: a checkpoint is authenticated with the bot's "
            "audit key (SANDBOX_MODE=true uses the public sandbox key)",
            file=sys.stderr,
        )
        return 2
    keys = [key, *_audit_keys()]
    path = _audit_database(args.store_url)

    async def work(store: Store) -> tuple[ChainCheck, Checkpoint | None]:
        check = await store.verify_audit(keys=keys)
        return check, (await store.audit_checkpoint(at=datetime.now(UTC)) if check.ok else None)

    found = None if path is None else _on_audit_store(path, work, audit_key=key)
    if found is None:
        return 2
    check, checkpoint = found
    if not check.ok:
        # A checkpoint of a broken trail would vouch for the break.
        return _report_break(check, keys)
    if checkpoint is None:
        print("the audit trail is empty: there is nothing to checkpoint yet", file=sys.stderr)
        return 0
    print(checkpoint.model_dump_json() if args.json else checkpoint.text())
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
    audit = commands.add_parser("audit", help="verify, checkpoint or export the keyed, chained audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    store_help = f"the bot's database (default: $STORE_URL, else {_DEFAULT_STORE_URL})"
    verify_help = (
        "check the chain under AUDIT_HMAC_KEY (and AUDIT_HMAC_PREVIOUS_KEYS) against published "
        "checkpoints; exit 0 when intact, else 1 modified, 2 not verifiable, 3 deleted, 4 reordered, "
        "5 truncated, 6 recomputed without the key, 7 rewritten since a checkpoint"
    )
    verify = audit_commands.add_parser("verify", help=verify_help, description=verify_help)
    verify.add_argument("--store-url", metavar="URL", help=store_help)
    verify.add_argument(
        "--checkpoint",
        action="append",
        type=_checkpoint_argument,
        metavar="SEQ:HASH[:KEY_ID:MAC]",
        help="a published checkpoint (repeatable), e.g. from the thread's 'Audit checkpoint' line",
    )
    verify.add_argument(
        "--checkpoints",
        action="append",
        metavar="FILE",
        help="a file of checkpoints, one per line: the thread's 'Audit checkpoint' lines, SEQ:HASH, "
        "or the JSON `audit checkpoint --json` prints (repeatable)",
    )
    verify.set_defaults(run=_audit_verify)
    checkpoint = audit_commands.add_parser(
        "checkpoint",
        help="verify the chain, then print its head (sequence, hash, key id, mac under AUDIT_HMAC_KEY) "
        "to keep outside the database",
    )
    checkpoint.add_argument("--store-url", metavar="URL", help=store_help)
    checkpoint.add_argument(
        "--json", action="store_true", help="print it as JSON, with the time it was taken"
    )
    checkpoint.set_defaults(run=_audit_checkpoint)
    export = audit_commands.add_parser("export", help="write every event as JSON Lines, in stored order")
    export.add_argument("--store-url", metavar="URL", help=store_help)
    export.add_argument("--out", metavar="FILE", default="-", help="where to write; - for stdout (default)")
    export.set_defaults(run=_audit_export)


# -- migrate ----------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations to the store and print the schema version.

    Opening a store migrates it (the bot does so at start too); running this first lets a
    deploy fail on a migration before any replica is replaced.
    """
    from bot.store import open_store, redact_url  # only this command may load the PostgreSQL driver

    url = args.store_url or os.environ.get("STORE_URL") or _DEFAULT_STORE_URL

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
    store_help = f"the bot's database (default: $STORE_URL, else {_DEFAULT_STORE_URL})"
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
    from bot.doctor import run_doctor  # pulls in the Graph client and msal

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
    _add_audit_commands(commands)
    _add_migrate_command(commands)
    _add_manifest_commands(commands)
    _add_doctor_command(commands)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
