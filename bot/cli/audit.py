"""``remediation-bot audit``: verify, checkpoint or export the keyed, chained audit trail.

Read-only on the audit rows: opening the store applies pending migrations and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from bot.config.settings import Settings
from bot.domain.audit import SANDBOX_AUDIT_KEY, AuditKey, Break, ChainCheck, Checkpoint, parse_checkpoint
from bot.errors import ConfigError, StoreError
from bot.store import open_store
from bot.store.base import Store

T = TypeVar("T")


# -- audit ------------------------------------------------------------------------------------

# The bot's own default, read from its settings model so the two cannot drift apart.
DEFAULT_STORE_URL = Settings.model_fields["store_url"].default.get_secret_value()


def _audit_database(store_url: str | None) -> str | None:
    """The store URL to audit, or ``None`` after printing why there is none."""
    url = store_url or os.environ.get("STORE_URL") or DEFAULT_STORE_URL
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


def add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify, checkpoint or export the keyed, chained audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    store_help = f"the bot's database (default: $STORE_URL, else {DEFAULT_STORE_URL})"
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
