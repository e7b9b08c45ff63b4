"""SQLite implementation of the store: the embedded default for one replica.

Writes go through one connection in WAL mode, used from the store's writer thread under a lock
as ``BEGIN IMMEDIATE`` transactions, so the event loop never blocks on disk and writers (in this
process or another on the file) take turns. Reads use connections of their own (one per reader
thread at most) without that lock: WAL lets them read the last committed state while a write is
under way, so a read never waits behind a write.

The store's threads are its own, not the event loop's default executor: botbuilder sends every
Bot Connector request from that executor and blocks a thread until Teams answers, so a slow or
unreachable Bot Connector would otherwise queue every store call (a click's, a job release at
shutdown) behind those requests.

The statements and rules are :mod:`bot.store.core`'s, shared with PostgreSQL; this module adds
the schema, the connections, leadership (a lock file) and the job queue's claims.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

from bot.domain.audit import AuditKey
from bot.errors import ConflictError, DuplicateError, RemediationError, StoreError
from bot.store.base import Job
from bot.store.core import (
    Collision,
    Dialect,
    SqlStore,
    Tx,
    drive,
    index_live_rows,
    index_unresolved_cases,
    merge_duplicate_cases,
    utc_text,
)
from bot.store.rows import check_finish, check_lease, job_payload_json

R = TypeVar("R")

_MAX_TRANSACTION_ATTEMPTS = 20
# Threads (and so read connections) reading at once.
READER_THREADS = 4

SQLITE = Dialect(
    order="rowid",
    active="active = 1",
    behind="needs_publishing = 1",
    unresolved="unresolved = 1 AND active = 1",
    for_update="",  # BEGIN IMMEDIATE: the writer is alone
    time=utc_text,
    audit_time=lambda at: at.isoformat(),
    duplicate_errors=(sqlite3.IntegrityError,),
)

Migration = str | Callable[[Tx], Coroutine[Any, Any, None]]
"""A migration: SQL statements separated by ``;``, or a coroutine function run inside the migration's
transaction (on SQLite's synchronous connection, so it never waits)."""

MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        identity_key TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        data TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX cases_one_active_per_identity ON cases (identity_key) WHERE active = 1;
    CREATE TABLE alerts (id TEXT PRIMARY KEY, case_id TEXT NOT NULL REFERENCES cases (id));
    CREATE TABLE action_requests (
        id TEXT PRIMARY KEY,
        case_id TEXT NOT NULL REFERENCES cases (id),
        state TEXT NOT NULL,
        data TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX action_requests_by_case ON action_requests (case_id);
    CREATE UNIQUE INDEX action_requests_one_active_per_case ON action_requests (case_id)
        WHERE state IN ('pending', 'approved', 'executing');
    """,
    # 2: the audit trail. Rows are only ever inserted. ``data`` holds the whole hash-chained
    # event, which is what verification checks; the other columns exist for queries.
    """
    CREATE TABLE audit_events (
        sequence INTEGER PRIMARY KEY,
        at TEXT,
        actor_id TEXT,
        kind TEXT,
        case_id TEXT,
        request_id TEXT,
        identity TEXT,
        data TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_events_by_identity ON audit_events (identity);
    CREATE INDEX audit_events_by_case ON audit_events (case_id);
    """,
    # 3: the job queue (action executions handed from the approval to an executor). Times are
    # ISO 8601 UTC text with microseconds always written, so text order is time order.
    """
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        worker TEXT,
        lease_until TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX jobs_open_by_kind ON jobs (kind) WHERE finished_at IS NULL;
    """,
    # 4: one case per person. Cases are keyed on the Entra object id once it is known; older
    # versions could leave one person with two open cases (object id and UPN): merge them.
    lambda tx: merge_duplicate_cases(SQLITE, tx),
    # 5: replay claims (a signed push is accepted once). Times as in 3.
    """
    CREATE TABLE replay_claims (key TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
    CREATE INDEX replay_claims_by_expiry ON replay_claims (expires_at);
    """,
    # 6: the blast-radius count reads the action and start time of requests from columns, through
    # an index on the time window. Start times are fixed-width UTC text (see _utc_text), so text
    # order is time order; the backfill gives the same form (to the millisecond).
    """
    ALTER TABLE action_requests ADD COLUMN action TEXT;
    ALTER TABLE action_requests ADD COLUMN started_at TEXT;
    UPDATE action_requests SET
        action = json_extract(data, '$.action'),
        started_at = CASE WHEN json_extract(data, '$.started_at') IS NULL THEN NULL
            ELSE strftime('%Y-%m-%dT%H:%M:%f', json_extract(data, '$.started_at')) || '000+00:00' END;
    CREATE INDEX action_requests_by_start ON action_requests (started_at) WHERE started_at IS NOT NULL;
    """,
    # 7: hot paths never scan history. Cases whose card is behind are found through a partial
    # index on ``needs_publishing``; sweeps read open requests through an index on ``state`` and
    # results awaiting a re-check through one on ``recheck_at`` (times as in 3).
    lambda tx: _index_live_rows(tx),
    # 8: the sweep retries only the active cases still waiting for their person's object id,
    # found through a partial index (closed and resolved cases cost it nothing).
    lambda tx: _index_unresolved_cases(tx),
    # 9: storm mode. A case records when its first alert was created (the storm window counts
    # recent cases through an index) and the campaign it joined; one campaign at a time accepts
    # new cases (a unique index, so replicas racing through one storm open one); bulk requests.
    """
    ALTER TABLE cases ADD COLUMN first_seen_at TEXT;
    ALTER TABLE cases ADD COLUMN campaign_id TEXT;
    CREATE INDEX cases_by_first_seen ON cases (first_seen_at) WHERE active = 1 AND first_seen_at IS NOT NULL;
    CREATE INDEX cases_by_campaign ON cases (campaign_id) WHERE campaign_id IS NOT NULL;
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        accepting INTEGER NOT NULL,
        needs_publishing INTEGER NOT NULL DEFAULT 1,
        data TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX campaigns_one_accepting ON campaigns (accepting) WHERE accepting = 1;
    CREATE INDEX campaigns_needing_publishing ON campaigns (needs_publishing) WHERE needs_publishing = 1;
    CREATE TABLE bulk_requests (
        id TEXT PRIMARY KEY,
        campaign_id TEXT NOT NULL REFERENCES campaigns (id),
        state TEXT NOT NULL,
        data TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX bulk_requests_by_campaign ON bulk_requests (campaign_id);
    CREATE INDEX bulk_requests_by_state ON bulk_requests (state);
    """,
)


async def _index_unresolved_cases(tx: Tx) -> None:
    """Migration 8: the ``unresolved`` flag and its partial index, filled from the data."""
    await tx.run("ALTER TABLE cases ADD COLUMN unresolved INTEGER NOT NULL DEFAULT 0")
    await tx.run("CREATE INDEX cases_unresolved ON cases (id) WHERE unresolved = 1 AND active = 1")
    await index_unresolved_cases(SQLITE, tx)


async def _index_live_rows(tx: Tx) -> None:
    """Migration 7: the columns and indexes that keep hot paths off history, filled from the data."""
    for statement in (
        "ALTER TABLE cases ADD COLUMN needs_publishing INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE action_requests ADD COLUMN recheck_at TEXT",
        "CREATE INDEX cases_needing_publishing ON cases (needs_publishing) WHERE needs_publishing = 1",
        "CREATE INDEX action_requests_by_state ON action_requests (state)",
        "CREATE INDEX action_requests_by_recheck ON action_requests (recheck_at)"
        " WHERE recheck_at IS NOT NULL",
    ):
        await tx.run(statement)
    await index_live_rows(SQLITE, tx)


class _Tx:
    """:class:`bot.store.core.Tx` on a SQLite connection (synchronous: the coroutines never wait)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._db.execute(sql, params).fetchone()
        return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self._db.execute(sql, params).fetchall())

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._db.execute(sql, params).rowcount)


class SqliteStore(SqlStore):
    """The :class:`bot.store.base.Store` on one SQLite file."""

    dialect = SQLITE

    def __init__(self, path: Path, *, audit_key: AuditKey | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        # The key new audit events are chained with (None: the unkeyed scheme; see bot.domain.audit).
        self._audit_key = audit_key
        # Leadership held by this store: name -> the open lock file whose flock holds it.
        self._leading: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        # Read connections, made on demand and handed out one per worker thread at a time.
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._opened_readers: list[sqlite3.Connection] = []
        self._closed = False
        self._writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._reading = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="store-reader")
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            current = self._db.execute("PRAGMA user_version").fetchone()[0]
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"the database schema is at version {current}, newer than this bot knows "
                    f"({len(MIGRATIONS)}): run the newer bot, or restore a matching backup"
                )
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if callable(script):
                        drive(script(_Tx(self._db)))
                    else:
                        for statement in script.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                    self._db.execute("COMMIT")
                except (sqlite3.Error, ValueError, RemediationError, Collision) as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"migration {number} failed: {exc}") from exc

    async def _write(self, work: Callable[[Tx], Coroutine[Any, Any, R]], *, what: str) -> R:
        """Run ``work`` as one ``BEGIN IMMEDIATE`` transaction under the writer's lock."""

        def locked() -> R:
            with self._lock:
                for _ in range(_MAX_TRANSACTION_ATTEMPTS):
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        result = drive(work(_Tx(self._db)))
                    except Collision:
                        self._db.execute("ROLLBACK")
                        continue
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                    return result
            raise ConflictError(f"{what} kept colliding with concurrent writers")

        try:
            return await asyncio.get_running_loop().run_in_executor(self._writing, locked)
        except sqlite3.Error as exc:
            raise StoreError(f"the state store failed: {exc}") from exc

    def _reader(self) -> sqlite3.Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA query_only=ON")
        with self._lock:
            if self._closed:
                db.close()
                raise sqlite3.ProgrammingError("the store is closed")
            self._opened_readers.append(db)
        return db

    async def _read(self, work: Callable[[Tx], Coroutine[Any, Any, R]]) -> R:
        """Run the read-only ``work`` on a read connection: no write lock, no wait behind writers."""

        def read() -> R:
            db = self._reader()
            try:
                return drive(work(_Tx(db)))
            finally:
                self._readers.put(db)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._reading, read)
        except sqlite3.Error as exc:
            raise StoreError(f"the state store failed: {exc}") from exc

    def _duplicate(self, exc: Exception, what: str) -> RemediationError:
        return DuplicateError(f"{what}: {exc}")

    async def close(self) -> None:
        """Close the connections and give up any leadership this store holds."""
        for name in list(self._leading):
            await self.release_lead(name)
        with self._lock:
            self._closed = True
            for reader in self._opened_readers:
                reader.close()
            self._db.close()
        self._writing.shutdown(wait=False)
        self._reading.shutdown(wait=False)

    async def schema_version(self) -> int:
        """The number of the last migration applied to the file."""
        row = await self._first("PRAGMA user_version")
        return 0 if row is None else int(row[0])

    # -- leadership -------------------------------------------------------------------------

    def _lead_file(self, name: str) -> Path:
        # One lock file per name, beside the database: the name is free text, so the file name
        # carries a readable slug plus a digest that keeps distinct names apart.
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:40]
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
        return self._path.with_name(f"{self._path.name}.lead-{slug}-{digest}.lock")

    async def try_lead(self, name: str) -> bool:
        """Become (or stay) the one leader called ``name`` among the stores on this file.

        An exclusive ``flock`` on a lock file beside the database: the kernel releases it when
        the process exits however it dies, and, being tied to the open file rather than the
        process, it also keeps two stores in one process apart. SQLite means one replica, so
        this only guards against a second process started by mistake on the same file.
        """
        if name in self._leading:
            return True
        path = self._lead_file(name)
        try:
            handle = path.open("a+b")
        except OSError as exc:
            raise StoreError(f"cannot open the {name!r} leader lock file {path}: {exc}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False  # another store holds it
        except OSError as exc:
            handle.close()
            raise StoreError(f"cannot take the {name!r} leader lock {path}: {exc}") from exc
        self._leading[name] = handle
        return True

    async def release_lead(self, name: str) -> None:
        """Give up leadership of ``name`` (nothing happens when this store does not hold it)."""
        handle = self._leading.pop(name, None)
        if handle is not None:
            # Closing the file drops the flock.
            handle.close()

    # -- replay claims ----------------------------------------------------------------------

    async def claim_replay(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Claim ``key`` until ``expires_at``: ``True`` for the first caller only.

        One ``BEGIN IMMEDIATE`` turn: claims that expired before ``now`` are pruned, then the
        insert either lands or meets the live claim of an earlier caller.
        """

        async def work(tx: Tx) -> bool:
            await tx.run("DELETE FROM replay_claims WHERE expires_at < ?", (utc_text(now),))
            return (
                await tx.run(
                    "INSERT INTO replay_claims (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (key, utc_text(expires_at)),
                )
                == 1
            )

        return await self._write(work, what="claiming a replay record")

    # -- job queue ---------------------------------------------------------------------------

    async def enqueue_job(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Queue a job; a job with the same ``key`` (queued, running or finished) wins."""
        text = job_payload_json(payload)
        now = utc_text(datetime.now(UTC))
        await self._write(
            lambda tx: tx.run(
                "INSERT INTO jobs (key, kind, payload, enqueued_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, kind, text, now),
            ),
            what=f"queueing job {key!r}",
        )

    async def claim_job(self, kind: str, worker: str, lease: timedelta) -> Job | None:
        """Claim the oldest unfinished job of ``kind`` nobody holds a live lease on.

        ``BEGIN IMMEDIATE`` makes the look-up and the claim one turn, so two callers never claim
        the same job. A claim whose lease ran out (its worker died or stalled) is claimable again.
        """
        check_lease(lease.total_seconds())

        async def work(tx: Tx) -> Job | None:
            now = datetime.now(UTC)
            row = await tx.one(
                "SELECT key, payload, attempts FROM jobs WHERE kind = ? AND finished_at IS NULL "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY rowid LIMIT 1",
                (kind, utc_text(now)),
            )
            if row is None:
                return None
            until = now + lease
            await tx.run(
                "UPDATE jobs SET worker = ?, lease_until = ?, attempts = attempts + 1 WHERE key = ?",
                (worker, utc_text(until), row[0]),
            )
            payload = json.loads(row[1])
            return Job(row[0], kind, payload, worker=worker, lease_until=until, attempts=int(row[2]) + 1)

        return await self._write(work, what=f"claiming a {kind!r} job")

    async def renew_job(self, key: str, worker: str, lease: timedelta) -> bool:
        """Extend ``worker``'s claim to ``lease`` from now; ``False`` when it lost the job."""
        check_lease(lease.total_seconds())
        until = utc_text(datetime.now(UTC) + lease)
        renewed = await self._write(
            lambda tx: tx.run(
                "UPDATE jobs SET lease_until = ? WHERE key = ? AND worker = ? AND finished_at IS NULL",
                (until, key, worker),
            ),
            what=f"renewing job {key!r}",
        )
        return bool(renewed)

    async def release_job(self, key: str, worker: str) -> None:
        """Drop ``worker``'s lease on an unfinished job so it is claimable at once."""
        await self._write(
            lambda tx: tx.run(
                "UPDATE jobs SET lease_until = NULL WHERE key = ? AND worker = ? AND finished_at IS NULL",
                (key, worker),
            ),
            what=f"releasing job {key!r}",
        )

    async def finish_job(self, key: str, worker: str) -> None:
        """Mark a job done. Finishing a finished job again changes nothing.

        Raises :class:`ConflictError` when another worker claimed the job since (this worker's
        lease ran out), and :class:`StoreError` for an unknown key.
        """

        async def work(tx: Tx) -> None:
            row = await tx.one("SELECT worker, finished_at FROM jobs WHERE key = ?", (key,))
            check_finish(key, worker, row)
            if row is not None and row[1] is None:
                await tx.run(
                    "UPDATE jobs SET finished_at = ?, lease_until = NULL WHERE key = ?",
                    (utc_text(datetime.now(UTC)), key),
                )

        await self._write(work, what=f"finishing job {key!r}")
