"""What only the PostgreSQL store has: sessions that die, replicas in other processes, migrations
raced by replicas starting together, the database-side append-only rule, and URLs with secrets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from bot.errors import StoreError
from bot.store.postgres import LEADER_APPLICATION_NAME, MIGRATIONS, PostgresStore
from bot.store.rows import redact_url
from tests.store.conftest import with_search_path

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SECRET = "s3cret-Pa55word"


MakeStore = Callable[[], PostgresStore]


@pytest.fixture
async def make_store(postgres_url: str) -> AsyncIterator[MakeStore]:
    """``make_store()`` gives a store on the test's schema, not yet open; all are closed afterwards."""
    made: list[PostgresStore] = []

    def make() -> PostgresStore:
        made.append(PostgresStore(postgres_url))
        return made[-1]

    yield make
    for store in made:
        await store.close()


async def _opened(make_store: MakeStore) -> PostgresStore:
    store = make_store()
    await store.open()
    return store


# -- leadership across sessions and processes --------------------------------------------------


@pytest.mark.postgres
async def test_a_leader_whose_connection_drops_loses_leadership(
    make_store: MakeStore, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await _opened(make_store), await _opened(make_store)
    assert await first.try_lead("poller")
    assert not await second.try_lead("poller")

    # The server ends the leader's session, as a network failure or a failover would.
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s "
            "AND a.datname = current_database()",
            (LEADER_APPLICATION_NAME,),
        )
        assert [row[0] for row in await cursor.fetchall()] == [True]

    deadline = time.monotonic() + 5
    while not await second.try_lead("poller"):
        assert time.monotonic() < deadline, "the other store never took over"
        await asyncio.sleep(0.02)
    # The old leader notices on its next call, and says so in the log.
    with caplog.at_level(logging.WARNING, logger="bot.store.postgres"):
        assert not await first.try_lead("poller")
    assert "lost leadership of poller" in caplog.text
    # It is a healthy follower again: released leadership comes back to it.
    await second.release_lead("poller")
    assert await first.try_lead("poller")


async def _spawn(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.leader_child",
        url,
        "poller",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _role(process: asyncio.subprocess.Process, deadline: float) -> str:
    """The next role ``process`` reports, waiting no later than ``deadline`` (monotonic)."""
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pytest.fail("no role reported before the deadline")
    if not line:  # the child died: show why
        assert process.stderr is not None
        pytest.fail(f"child exited: {(await process.stderr.read()).decode()}")
    return line.decode().strip()


@pytest.mark.postgres
async def test_a_killed_leader_process_is_replaced_by_the_other(postgres_url: str) -> None:
    processes = [await _spawn(postgres_url), await _spawn(postgres_url)]
    try:
        deadline = time.monotonic() + 20  # two interpreters starting up
        roles = [await _role(process, deadline) for process in processes]
        assert sorted(roles) == ["follower", "leader"]
        leader, follower = processes if roles[0] == "leader" else processes[::-1]

        leader.send_signal(signal.SIGKILL)  # no clean-up of any kind runs
        await leader.wait()
        started = time.monotonic()
        assert await _role(follower, started + 10) == "leader"
        took_over_in = time.monotonic() - started
        assert took_over_in < 10
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.communicate()


# -- migrations ---------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_replicas_starting_together_migrate_once(make_store: MakeStore, postgres_url: str) -> None:
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    assert [await store.schema_version() for store in stores] == [len(MIGRATIONS)] * 4
    with psycopg.connect(postgres_url) as db:
        applied = db.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [row[0] for row in applied] == list(range(1, len(MIGRATIONS) + 1))


@pytest.mark.postgres
async def test_a_schema_newer_than_the_code_is_refused(make_store: MakeStore, postgres_url: str) -> None:
    await _opened(make_store)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await _opened(make_store)


@pytest.mark.postgres
async def test_a_search_path_naming_no_schema_is_explained(postgres_server: str) -> None:
    store = PostgresStore(with_search_path(postgres_server, "t_no_such_schema"))
    with pytest.raises(StoreError, match="no schema on the search_path"):
        await store.open()
    await store.close()


async def test_a_store_that_was_not_opened_says_so() -> None:
    store = PostgresStore("postgresql://bot@127.0.0.1:1/remediation")
    with pytest.raises(StoreError, match="not open"):
        await store.get_channel()
    with pytest.raises(StoreError, match="not open"):
        await store.try_lead("poller")


# -- the audit table is append-only in the database too -------------------------------------------


@pytest.mark.postgres
async def test_audit_rows_cannot_be_changed_and_a_forced_change_is_detected(
    make_store: MakeStore, postgres_url: str
) -> None:
    store = await _opened(make_store)
    for n in range(3):
        await store.append_audit(
            at=T0,
            actor_id="alex-id",
            actor_name="Alex",
            kind="request.opened",
            identity="adele@contoso.com",
            payload={"n": n},
        )
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for statement in (
            "UPDATE audit_events SET kind = 'nothing' WHERE sequence = 2",
            "DELETE FROM audit_events WHERE sequence = 3",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                db.execute(statement)
        assert (await store.verify_audit()).ok

        # Whoever owns the table can switch the triggers off; the chain still shows the edit.
        db.execute("SET session_replication_role = replica")
        db.execute("UPDATE audit_events SET identity = 'someone.else@contoso.com' WHERE sequence = 2")
        check = await store.verify_audit()
        assert (check.ok, check.first_broken) == (False, 2)
        assert "identity column does not match" in check.problem
        db.execute("UPDATE audit_events SET data = replace(data, '\"n\":0', '\"n\":7') WHERE sequence = 1")
        check = await store.verify_audit()
        assert (check.ok, check.first_broken) == (False, 1)
        assert "modified" in check.problem


@pytest.mark.postgres
async def test_a_least_privilege_role_can_run_the_bot_but_not_rewrite_the_audit_trail(
    make_store: MakeStore, postgres_url: str
) -> None:
    await _opened(make_store)  # migrated by the owner, as `remediation-bot migrate` would
    role = f"t_runtime_{secrets.token_hex(4)}"
    parts = urlsplit(postgres_url)
    runtime_url = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        row = db.execute("SELECT current_schema()").fetchone()
        assert row is not None
        schema = row[0]
        statements = [
            "CREATE ROLE {role} LOGIN",
            "GRANT USAGE ON SCHEMA {schema} TO {role}",
            "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}",
            "REVOKE UPDATE ON {schema}.audit_events FROM {role}",
        ]
        for statement in statements:
            db.execute(sql.SQL(statement).format(role=sql.Identifier(role), schema=sql.Identifier(schema)))
    runtime = PostgresStore(runtime_url)
    try:
        await runtime.open()
        event = await runtime.append_audit(
            at=T0, actor_id="remediation-bot", actor_name="bot", kind="started"
        )
        assert event.sequence == 1 and (await runtime.verify_audit()).ok
        assert await runtime.try_lead("poller")
        await runtime.enqueue_job("execute", "job-1", {})
        assert await runtime.claim_job("execute", "w", timedelta(seconds=5)) is not None
    finally:
        await runtime.close()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- secrets in URLs ----------------------------------------------------------------------------


def test_redact_url_hides_passwords_wherever_they_are() -> None:
    assert redact_url(f"postgresql://bot:{SECRET}@db:5432/rb") == "postgresql://bot:***@db:5432/rb"
    assert SECRET not in redact_url(f"postgresql://bot@db/rb?sslmode=require&password={SECRET}")
    assert redact_url("postgresql://bot@db/rb") == "postgresql://bot@db/rb"
    assert redact_url("sqlite:///data/bot.db") == "sqlite:///data/bot.db"


async def test_the_password_never_appears_in_an_error_or_log(caplog: pytest.LogCaptureFixture) -> None:
    # Port 1: nothing listens, so the connection is refused at once.
    for url in (
        f"postgresql://bot:{SECRET}@127.0.0.1:1/remediation",
        f"postgresql://bot@127.0.0.1:1/remediation?password={SECRET}",
    ):
        store = PostgresStore(url)
        assert SECRET not in repr(store)
        with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as caught:
            await store.open()
        assert "127.0.0.1" in caught.value.message and "***" in caught.value.message
        assert SECRET not in "".join(traceback.format_exception(caught.value))
        assert SECRET not in caplog.text
        await store.close()


def test_a_malformed_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(StoreError) as caught:
        PostgresStore(f"postgresql://bot:{SECRET}@db/rb?no_such_parameter=1")
    assert SECRET not in caught.value.message and "***" in caught.value.message
