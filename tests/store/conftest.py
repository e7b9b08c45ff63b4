"""Fixtures for the store contract: every test runs against SQLite and against PostgreSQL.

PostgreSQL tests need ``TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``).
Each test gets a schema of its own, created here and dropped afterwards, selected through the
URL's ``options=-csearch_path=...``. Without the variable, or with the server unreachable, the
tests are skipped with the reason, unless ``REQUIRE_POSTGRES=1`` (CI), which makes them fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from bot.store import open_store
from bot.store.base import Store
from bot.store.rows import redact_url

T = TypeVar("T")

OpenStore = Callable[[], Awaitable[Store]]


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (REQUIRE_POSTGRES=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq ``options`` that put ``schema`` first on the search_path."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """``TEST_POSTGRES_URL``, once checked reachable (skip, or fail under REQUIRE_POSTGRES=1)."""
    url = os.environ.get("TEST_POSTGRES_URL", "")
    if not url:
        _unavailable("TEST_POSTGRES_URL is not set: PostgreSQL store tests not run")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {redact_url(url)} is unreachable: {' '.join(str(exc).split())}")
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped (with everything in it) afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_server, schema)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def open_stores(store_url: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the test's database (each one like another replica); closes them after."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = await open_store(store_url)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_stores: OpenStore) -> Store:
    """One store on an empty database."""
    return await open_stores()


class OtherProcess:
    """A store on the same database driven from another thread with its own event loop.

    Stands in for another replica writing *while* a ``mutate`` callback runs: ``mutate`` is
    synchronous, so the only way to change the row under it is from outside this event loop.
    """

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.store: Store = self.run(open_store(url))

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the other loop and wait for it (blocking this thread)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def other_process(store_url: str) -> Iterator[OtherProcess]:
    """Another writer on the test's database (see :class:`OtherProcess`)."""
    other = OtherProcess(store_url)
    yield other
    other.close()
