"""Persistent state behind one port (:class:`bot.store.base.Store`), chosen by URL.

``sqlite:///path/to/file.db`` is the embedded default for one replica;
``postgresql://user:password@host:5432/db`` (or ``postgres://``) is shared by several.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.domain.audit import AuditKey
from bot.errors import ConfigError, StoreError
from bot.store.base import Store
from bot.store.rows import redact_url

__all__ = ["open_store", "redact_url"]

_SQLITE = "sqlite:///"
_POSTGRES = ("postgresql://", "postgres://")


async def open_store(
    url: str, *, audit_key: AuditKey | None = None, password: Callable[[], Awaitable[str]] | None = None
) -> Store:
    """The store ``url`` names, opened and migrated to the current schema.

    ``audit_key`` keys the audit events it appends and authenticates its checkpoints (see
    :mod:`bot.domain.audit`); without one, events are chained with the unkeyed scheme, and
    appending to a keyed trail is refused.

    ``password`` (PostgreSQL only) gives each new connection its password, an Entra ID token.

    Raises :class:`~bot.errors.ConfigError` (naming ``STORE_URL``) for a URL of another kind,
    and :class:`~bot.errors.StoreError` when the store cannot be opened.
    """
    if url.startswith(_SQLITE):
        from bot.store.sqlite import SqliteStore

        path = Path(url.removeprefix(_SQLITE))
        try:
            return SqliteStore(path, audit_key=audit_key)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {path} as the bot's database: {exc}") from exc
    if url.startswith(_POSTGRES):
        # Imported here: a SQLite deployment never loads the PostgreSQL driver.
        try:
            from bot.store.postgres import PostgresStore
        except ModuleNotFoundError as exc:  # the driver is the `postgres` extra
            raise ConfigError(
                "STORE_URL",
                f"a PostgreSQL store needs the driver ({exc.name} is not installed): "
                "pip install 'remediation-bot[postgres]'",
            ) from exc

        store = PostgresStore(url, audit_key=audit_key, password=password)
        await store.open()
        return store
    # Only the scheme is echoed: the rest of a URL may hold a password.
    got = f"one starting with {url.split('://', 1)[0]}://" if "://" in url else "no scheme://"
    raise ConfigError(
        "STORE_URL", f"must be sqlite:///path/to/file.db or postgresql://user@host:5432/dbname, got {got}"
    )
