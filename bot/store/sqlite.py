"""SQLite implementation of the store: the embedded default for one replica.

Writes go through one connection in WAL mode, used from a worker thread (``asyncio.to_thread``)
under a lock as ``BEGIN IMMEDIATE`` transactions, so the event loop never blocks on disk. Reads
use connections of their own (one per worker thread at most) without that lock: WAL lets them
read the last committed state while a write is under way, so a read never waits behind a write.
Rows hold the domain object as JSON plus the columns queries need; ``version`` backs compare-and-swap.
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
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel

from bot.domain.audit import AuditEvent, AuditKey, ChainCheck, Checkpoint
from bot.domain.models import ActionRequest, Alert, Case, IdentityRef, RequestState, ResponseAction
from bot.errors import ConflictError, DuplicateError, RemediationError, StoreError
from bot.store.base import AlertIntake, Job, Settlement
from bot.store.merging import OPEN_REQUEST_STATES, cancelled_for_merge, plan_merges
from bot.store.meta import MetaRecords
from bot.store.rows import (
    AUDIT_COLUMNS,
    LAST_AUDIT_EVENT,
    audit_checkpoint,
    check_finish,
    check_lease,
    decode_audit,
    job_payload_json,
    next_audit_events,
    recheck_due,
    verify_audit_rows,
)

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V", Case, ActionRequest)
W = TypeVar("W")

_MAX_CAS_ATTEMPTS = 20

Migration = str | Callable[[sqlite3.Connection], None]
"""A migration: SQL statements separated by ``;``, or a function run inside the migration's transaction."""

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
    lambda db: _merge_duplicate_cases(db),
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
    lambda db: _index_live_rows(db),
)


def _audit_row(event: AuditEvent) -> tuple[Any, ...]:
    """The row SQLite stores for ``event``, in :data:`~bot.store.rows.AUDIT_COLUMNS` order."""
    return (
        event.sequence,
        event.at.isoformat(),
        event.actor_id,
        event.kind,
        event.case_id,
        event.request_id,
        event.identity,
        event.to_json(),
        event.hash,
    )


class SqliteStore(MetaRecords):
    """The :class:`bot.store.base.Store` on one SQLite file."""

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
                        script(self._db)
                    else:
                        for statement in script.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                    self._db.execute("COMMIT")
                except (sqlite3.Error, ValueError, RemediationError) as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"migration {number} failed: {exc}") from exc

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def locked() -> Any:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result

        try:
            return await asyncio.to_thread(locked)
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

    async def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run the read-only ``work`` on a read connection: no write lock, no wait behind writers."""

        def read() -> Any:
            db = self._reader()
            try:
                return work(db)
            finally:
                self._readers.put(db)

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            raise StoreError(f"the state store failed: {exc}") from exc

    async def close(self) -> None:
        """Close the connections and give up any leadership this store holds."""
        for name in list(self._leading):
            await self.release_lead(name)
        with self._lock:
            self._closed = True
            for reader in self._opened_readers:
                reader.close()
            self._db.close()

    async def schema_version(self) -> int:
        """The number of the last migration applied to the file."""
        version = await self._read(lambda db: db.execute("PRAGMA user_version").fetchone()[0])
        return int(version)

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

    # -- meta -------------------------------------------------------------------------------

    async def _get_meta(self, key: str) -> str | None:
        row = await self._read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def _set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # -- replay claims ----------------------------------------------------------------------

    async def claim_replay(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Claim ``key`` until ``expires_at``: ``True`` for the first caller only.

        One ``BEGIN IMMEDIATE`` turn: claims that expired before ``now`` are pruned, then the
        insert either lands or meets the live claim of an earlier caller.
        """

        def work(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM replay_claims WHERE expires_at < ?", (_utc_text(now),))
            inserted = db.execute(
                "INSERT INTO replay_claims (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, _utc_text(expires_at)),
            ).rowcount
            return bool(inserted == 1)

        claimed: bool = await self._run(work)
        return claimed

    async def release_replay(self, key: str) -> None:
        """Give a claim up (the work it guarded failed), so the same request may come again."""
        await self._run(lambda db: db.execute("DELETE FROM replay_claims WHERE key = ?", (key,)))

    # -- cases ------------------------------------------------------------------------------

    async def record_alert(self, alert: Alert, *, new_case_id: str, now: datetime) -> AlertIntake:
        """Add ``alert`` to its identity's active case, opening one if needed (one transaction)."""
        [intake] = await self.record_alerts([alert], new_case_id=lambda: new_case_id, now=now)
        return intake

    async def record_alerts(
        self, alerts: Sequence[Alert], *, new_case_id: Callable[[], str], now: datetime
    ) -> list[AlertIntake]:
        """Record ``alerts`` in order in one transaction: all of them, or (on any failure) none."""
        batch = list(alerts)

        def work(db: sqlite3.Connection) -> list[AlertIntake]:
            return [_record(db, alert, new_case_id, now) for alert in batch]

        result: list[AlertIntake] = await self._run(work)
        return result

    async def rekey_case(self, case_id: str, identity: IdentityRef, *, now: datetime) -> Settlement | None:
        """Key an unresolved case on its object id, or merge it into the person's case (one transaction)."""
        if not identity.object_id:
            raise ValueError("a case is re-keyed on an Entra object id")

        def work(db: sqlite3.Connection) -> Settlement | None:
            row = db.execute(
                "SELECT data, version FROM cases WHERE id = ? AND active = 1", (case_id,)
            ).fetchone()
            if row is None:
                return None
            case = _decode(Case, row)
            if case.resolved:
                return None
            return _settle(db, case, identity, now)

        settled: Settlement | None = await self._run(work)
        return settled

    async def get_case(self, case_id: str) -> Case | None:
        """One case by id."""
        return await self._get(Case, "cases", case_id)

    async def find_active_case(self, identity: IdentityRef) -> Case | None:
        """The active case of an identity, if there is one."""
        row = await self._read(
            lambda db: db.execute(
                "SELECT data, version FROM cases WHERE identity_key = ? AND active = 1",
                (identity.key,),
            ).fetchone()
        )
        return None if row is None else _decode(Case, row)

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""
        rows = await self._read(
            lambda db: db.execute("SELECT data, version FROM cases ORDER BY rowid").fetchall()
        )
        return [_decode(Case, row) for row in rows]

    async def list_cases_needing_publishing(self) -> list[Case]:
        """The cases whose card is missing or behind, oldest first (through a partial index)."""
        rows = await self._read(
            lambda db: db.execute(
                "SELECT data, version FROM cases WHERE needs_publishing = 1 ORDER BY rowid"
            ).fetchall()
        )
        return [_decode(Case, row) for row in rows]

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case."""
        return await self._update(Case, "cases", case_id, mutate)

    async def swap_case(self, case_id: str, decide: Callable[[Case], Case | W]) -> tuple[Case, Case | W]:
        """Compare-and-swap of one case that says whether this call's change was written."""
        return await self._swap(Case, "cases", case_id, decide)

    # -- action requests --------------------------------------------------------------------

    async def add_request(self, request: ActionRequest) -> ActionRequest:
        """Store a new action request (version 1)."""
        stored = request.model_copy(update={"version": 1})

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO action_requests "
                    "(id, case_id, state, action, started_at, recheck_at, data, version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (
                        stored.id,
                        stored.case_id,
                        stored.state.value,
                        stored.action.value,
                        _utc_or_none(stored.started_at),
                        _utc_or_none(recheck_due(stored)),
                        stored.model_dump_json(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateError(f"case {stored.case_id} already has an active request") from exc

        await self._run(insert)
        return stored

    async def get_request(self, request_id: str) -> ActionRequest | None:
        """One action request by id."""
        return await self._get(ActionRequest, "action_requests", request_id)

    async def list_requests(self, case_id: str) -> list[ActionRequest]:
        """A case's action requests, oldest first."""
        rows = await self._read(
            lambda db: db.execute(
                "SELECT data, version FROM action_requests WHERE case_id = ? ORDER BY rowid",
                (case_id,),
            ).fetchall()
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def list_requests_in(self, states: Iterable[RequestState]) -> list[ActionRequest]:
        """Every request in one of ``states``, oldest first (open requests, recent executions)."""
        wanted = [state.value for state in states]
        marks = ", ".join("?" for _ in wanted)
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT data, version FROM action_requests WHERE state IN ({marks}) ORDER BY rowid", wanted
            ).fetchall()
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def list_requests_due_recheck(self, now: datetime) -> list[ActionRequest]:
        """Finished requests whose result awaits a re-check due by ``now``, oldest first."""
        rows = await self._read(
            lambda db: db.execute(
                "SELECT data, version FROM action_requests WHERE recheck_at <= ? ORDER BY rowid",
                (_utc_text(now),),
            ).fetchall()
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def count_started_since(
        self, counted: Collection[ResponseAction], since: datetime, *, exclude: str | None = None
    ) -> int:
        """How many requests (but ``exclude``) doing one of ``counted`` started at or after ``since``."""
        actions = sorted(action.value for action in counted)
        marks = ", ".join("?" for _ in actions) or "NULL"
        count = await self._read(
            lambda db: db.execute(
                "SELECT count(*) FROM action_requests "
                f"WHERE started_at >= ? AND action IN ({marks}) AND id IS NOT ?",
                (_utc_text(since), *actions, exclude),
            ).fetchone()[0]
        )
        return int(count)

    async def update_request(
        self, request_id: str, mutate: Callable[[ActionRequest], ActionRequest | None]
    ) -> ActionRequest:
        """Compare-and-swap update of one action request."""
        return await self._update(ActionRequest, "action_requests", request_id, mutate)

    async def swap_request(
        self, request_id: str, decide: Callable[[ActionRequest], ActionRequest | W]
    ) -> tuple[ActionRequest, ActionRequest | W]:
        """Compare-and-swap of one action request that says whether this call's change was written."""
        return await self._swap(ActionRequest, "action_requests", request_id, decide)

    async def start_request(
        self,
        request_id: str,
        decide: Callable[[ActionRequest, int], ActionRequest | W],
        *,
        counted: Collection[ResponseAction],
        since: datetime,
    ) -> tuple[ActionRequest, ActionRequest | W]:
        """Count recent starts and claim the request in one ``BEGIN IMMEDIATE`` transaction.

        The write lock is taken before the count, so starters (in this process or another on
        the file) take turns from the count to the commit.
        """
        actions = sorted(action.value for action in counted)
        marks = ", ".join("?" for _ in actions) or "NULL"

        def work(db: sqlite3.Connection) -> tuple[ActionRequest, ActionRequest | W]:
            row = db.execute(
                "SELECT data, version FROM action_requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no action_requests row {request_id!r}")
            current = _decode(ActionRequest, row)
            count = db.execute(
                "SELECT count(*) FROM action_requests "
                f"WHERE started_at >= ? AND action IN ({marks}) AND id <> ?",
                (_utc_text(since), *actions, request_id),
            ).fetchone()[0]
            outcome = decide(current, int(count))
            if not isinstance(outcome, ActionRequest):
                return current, outcome
            stored = outcome.model_copy(update={"version": current.version + 1})
            try:
                db.execute(
                    "UPDATE action_requests SET data = ?, version = ?, state = ?, started_at = ?, "
                    "recheck_at = ? WHERE id = ? AND version = ?",
                    (
                        stored.model_dump_json(),
                        stored.version,
                        stored.state.value,
                        _utc_or_none(stored.started_at),
                        _utc_or_none(recheck_due(stored)),
                        request_id,
                        current.version,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateError(f"action_requests row {request_id!r}: {exc}") from exc
            return stored, stored

        result: tuple[ActionRequest, ActionRequest | W] = await self._run(work)
        return result

    # -- audit trail (append-only: nothing here updates or deletes a row) --------------------

    async def append_audit(
        self,
        *,
        at: datetime,
        actor_id: str,
        actor_name: str,
        kind: str,
        case_id: str | None = None,
        request_id: str | None = None,
        identity: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Record one audit event, chained to the last one under the store's key; returns it.

        Reading the last event and inserting the next happen in one ``BEGIN IMMEDIATE``
        transaction, so concurrent callers (and other processes on the file) take turns and the
        chain stays linear and gap-free; an ``audit.key_changed`` event goes first when the key
        changed. ``ValueError`` for a payload that is not plain JSON; :class:`StoreError` when
        the trail is keyed and this store has no key.
        """
        fields = {
            "at": at,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "kind": kind,
            "case_id": case_id,
            "request_id": request_id,
            "identity": identity,
            "payload": payload,
        }

        def work(db: sqlite3.Connection) -> AuditEvent:
            last = db.execute(LAST_AUDIT_EVENT).fetchone()
            events = next_audit_events(last, self._audit_key, fields)
            marks = ", ".join("?" for _ in AUDIT_COLUMNS)
            for event in events:
                db.execute(
                    f"INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)}) VALUES ({marks})",
                    _audit_row(event),
                )
            return events[-1]

        event: AuditEvent = await self._run(work)
        return event

    async def list_audit(
        self, *, identity: str | None = None, case_id: str | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events in stored order, optionally only one identity's and/or one case's.

        ``limit`` keeps the newest ``limit`` events (still returned oldest first): what a
        ``history`` reply shows. ``identity`` matches case-insensitively, as it is stored lower-case.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        clauses: list[str] = []
        params: list[Any] = []
        if identity is not None:
            clauses.append("identity = ?")
            params.append(identity.lower())
        if case_id is not None:
            clauses.append("case_id = ?")
            params.append(case_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # Newest first so LIMIT keeps the latest; reversed below into stored order.
        sql = f"SELECT sequence, data FROM audit_events{where} ORDER BY sequence DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [decode_audit(row[0], row[1]) for row in reversed(rows)]

    async def verify_audit(
        self, *, keys: Iterable[AuditKey] = (), checkpoints: Iterable[Checkpoint] = ()
    ) -> ChainCheck:
        """Verify the whole stored trail under the store's key and ``keys``, against
        ``checkpoints``, and name the first broken event.

        See :func:`bot.store.rows.verify_audit_rows`: unreadable data and query columns edited
        apart from the data are reported as well as breaks in the chain itself.
        """
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events ORDER BY sequence"
            ).fetchall()
        )
        known = [key for key in (self._audit_key, *keys) if key is not None]
        return verify_audit_rows(rows, _audit_row, known, checkpoints)

    async def audit_checkpoint(self, *, at: datetime, short: bool = False) -> Checkpoint | None:
        """The head of the trail as a checkpoint authenticated with the store's key."""
        last = await self._read(lambda db: db.execute(LAST_AUDIT_EVENT).fetchone())
        return audit_checkpoint(last, self._audit_key, at=at, short=short)

    # -- job queue ---------------------------------------------------------------------------

    async def enqueue_job(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Queue a job; a job with the same ``key`` (queued, running or finished) wins."""
        text = job_payload_json(payload)
        now = _utc_text(datetime.now(UTC))
        await self._run(
            lambda db: db.execute(
                "INSERT INTO jobs (key, kind, payload, enqueued_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, kind, text, now),
            )
        )

    async def claim_job(self, kind: str, worker: str, lease: timedelta) -> Job | None:
        """Claim the oldest unfinished job of ``kind`` nobody holds a live lease on.

        ``BEGIN IMMEDIATE`` makes the look-up and the claim one turn, so two callers never claim
        the same job. A claim whose lease ran out (its worker died or stalled) is claimable again.
        """
        check_lease(lease.total_seconds())

        def work(db: sqlite3.Connection) -> Job | None:
            now = datetime.now(UTC)
            row = db.execute(
                "SELECT key, payload, attempts FROM jobs WHERE kind = ? AND finished_at IS NULL "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY rowid LIMIT 1",
                (kind, _utc_text(now)),
            ).fetchone()
            if row is None:
                return None
            until = now + lease
            db.execute(
                "UPDATE jobs SET worker = ?, lease_until = ?, attempts = attempts + 1 WHERE key = ?",
                (worker, _utc_text(until), row[0]),
            )
            return Job(
                key=row[0],
                kind=kind,
                payload=json.loads(row[1]),
                worker=worker,
                lease_until=until,
                attempts=int(row[2]) + 1,
            )

        job: Job | None = await self._run(work)
        return job

    async def renew_job(self, key: str, worker: str, lease: timedelta) -> bool:
        """Extend ``worker``'s claim to ``lease`` from now; ``False`` when it lost the job."""
        check_lease(lease.total_seconds())
        until = _utc_text(datetime.now(UTC) + lease)
        renewed = await self._run(
            lambda db: (
                db.execute(
                    "UPDATE jobs SET lease_until = ? WHERE key = ? AND worker = ? AND finished_at IS NULL",
                    (until, key, worker),
                ).rowcount
            )
        )
        return bool(renewed)

    async def finish_job(self, key: str, worker: str) -> None:
        """Mark a job done. Finishing a finished job again changes nothing.

        Raises :class:`ConflictError` when another worker claimed the job since (this worker's
        lease ran out), and :class:`StoreError` for an unknown key.
        """

        def work(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT worker, finished_at FROM jobs WHERE key = ?", (key,)).fetchone()
            check_finish(key, worker, row)
            if row[1] is None:
                db.execute(
                    "UPDATE jobs SET finished_at = ?, lease_until = NULL WHERE key = ?",
                    (_utc_text(datetime.now(UTC)), key),
                )

        await self._run(work)

    # -- generic row access -----------------------------------------------------------------

    async def _get(self, model: type[T], table: str, key: str) -> T | None:
        row = await self._read(
            lambda db: db.execute(f"SELECT data, version FROM {table} WHERE id = ?", (key,)).fetchone()
        )
        return None if row is None else _decode(model, row)

    async def _update(self, model: type[V], table: str, key: str, mutate: Callable[[V], V | None]) -> V:
        stored, _ = await self._swap(model, table, key, mutate)
        return stored

    async def _swap(
        self, model: type[V], table: str, key: str, decide: Callable[[V], V | W]
    ) -> tuple[V, V | W]:
        # action_requests also keeps the state and start time in columns: the one-active-request
        # rule and the blast-radius count read them.
        # (and the re-check time, which the sweep reads); cases keep whether their card is behind.
        extra = (
            ", state = ?, started_at = ?, recheck_at = ?"
            if table == "action_requests"
            else ", needs_publishing = ?"
        )
        sql = f"UPDATE {table} SET data = ?, version = version + 1{extra} WHERE id = ? AND version = ?"
        for _ in range(_MAX_CAS_ATTEMPTS):
            current = await self._get(model, table, key)
            if current is None:
                raise StoreError(f"no {table} row {key!r}")
            outcome = decide(current)
            if not isinstance(outcome, model):
                return current, outcome
            _check_same_person(current, outcome)
            stored = outcome.model_copy(update={"version": current.version + 1})
            params: tuple[Any, ...] = (stored.model_dump_json(),)
            if isinstance(stored, ActionRequest):
                params += (
                    stored.state.value,
                    _utc_or_none(stored.started_at),
                    _utc_or_none(recheck_due(stored)),
                )
            else:
                params += (int(stored.needs_publishing),)
            params += (key, current.version)

            def write(db: sqlite3.Connection, params: tuple[Any, ...] = params) -> int:
                try:
                    return int(db.execute(sql, params).rowcount)
                except sqlite3.IntegrityError as exc:
                    raise DuplicateError(f"{table} row {key!r}: {exc}") from exc

            if await self._run(write) == 1:
                return stored, stored
        raise ConflictError(f"{table} row {key!r} kept changing under concurrent writers")


def _utc_text(value: datetime) -> str:
    # Fixed width (microseconds always present), so comparing the text compares the times.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _utc_or_none(value: datetime | None) -> str | None:
    return None if value is None else _utc_text(value)


def _decode(model: type[T], row: Any) -> T:
    return model.model_validate_json(row[0]).model_copy(update={"version": int(row[1])})


def _load_case(db: sqlite3.Connection, case_id: str) -> Case:
    row = db.execute("SELECT data, version FROM cases WHERE id = ?", (case_id,)).fetchone()
    return _decode(Case, row)


def _save_case(db: sqlite3.Connection, case: Case, expected_version: int) -> Case:
    stored = case.model_copy(update={"version": expected_version + 1})
    count = db.execute(
        "UPDATE cases SET data = ?, version = ?, needs_publishing = ? WHERE id = ? AND version = ?",
        (stored.model_dump_json(), stored.version, int(stored.needs_publishing), case.id, expected_version),
    ).rowcount
    if count != 1:
        raise ConflictError(f"case {case.id} changed while an alert was being added")
    return stored


def _check_same_person(current: BaseModel, changed: BaseModel) -> None:
    if (
        isinstance(current, Case)
        and isinstance(changed, Case)
        and current.identity.key != changed.identity.key
    ):
        raise StoreError(f"case {current.id}: whom a case is about changes only by re-keying it")


def _active_case_id(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT id FROM cases WHERE identity_key = ? AND active = 1", (key,)).fetchone()
    return None if row is None else str(row[0])


def _record(
    db: sqlite3.Connection, alert: Alert, new_case_id: Callable[[], str], now: datetime
) -> AlertIntake:
    """Record one alert inside the caller's transaction (see :meth:`SqliteStore.record_alerts`)."""
    known = db.execute("SELECT case_id FROM alerts WHERE id = ?", (alert.id,)).fetchone()
    if known is not None:
        case = _load_case(db, known[0])
        previous = next((a for a in case.alerts if a.id == alert.id), None)
        if previous == alert or (previous and previous.updated_at > alert.updated_at):
            return AlertIntake(case, case_created=False, alert_new=False, alert_changed=False)
        case = _save_case(db, case.with_alert(alert), case.version)
        return AlertIntake(case, case_created=False, alert_new=False, alert_changed=True)
    target = alert.target
    settled: Settlement | None = None
    if target.object_id and target.upn and target.upn.lower() != target.key:
        stray_id = _active_case_id(db, target.upn.lower())
        if stray_id is not None:
            settled = _settle(db, _load_case(db, stray_id), target, now)
    active_id = _active_case_id(db, target.key)
    if active_id is None:
        case = Case(id=new_case_id(), identity=target, alerts=(alert,), opened_at=now, version=1)
        db.execute(
            "INSERT INTO cases (id, identity_key, active, data, version, needs_publishing) "
            "VALUES (?, ?, 1, ?, 1, ?)",
            (case.id, target.key, case.model_dump_json(), int(case.needs_publishing)),
        )
        created = True
    else:
        current = _load_case(db, active_id)
        case = _save_case(db, current.with_alert(alert), current.version)
        created = False
    db.execute("INSERT INTO alerts (id, case_id) VALUES (?, ?)", (alert.id, case.id))
    return AlertIntake(case, case_created=created, alert_new=True, alert_changed=True, settled=settled)


def _settle(db: sqlite3.Connection, stray: Case, identity: IdentityRef, now: datetime) -> Settlement:
    """Key the unresolved ``stray`` on ``identity``'s object id, or merge it into that person's case."""
    key = IdentityRef(object_id=identity.object_id).key
    owner_id = _active_case_id(db, key)
    if owner_id is None:
        rekeyed = stray.rekeyed(identity).model_copy(update={"version": stray.version + 1})
        count = db.execute(
            "UPDATE cases SET identity_key = ?, data = ?, version = ?, needs_publishing = ? "
            "WHERE id = ? AND version = ?",
            (
                key,
                rekeyed.model_dump_json(),
                rekeyed.version,
                int(rekeyed.needs_publishing),
                stray.id,
                stray.version,
            ),
        ).rowcount
        if count != 1:
            raise ConflictError(f"case {stray.id} changed while it was being re-keyed")
        return Settlement(case=rekeyed)
    owner = _load_case(db, owner_id)
    survivor = _save_case(db, owner.absorbing(stray), owner.version)
    reason = (
        f"Merged into case {survivor.id}: {stray.identity.upn} is Entra object id "
        f"{identity.object_id}, and one person has one case."
    )
    closed = _close(db, stray, survivor.id, reason, now)
    return Settlement(case=survivor, closed=closed)


def _close(
    db: sqlite3.Connection,
    duplicate: Case,
    survivor_id: str,
    reason: str,
    now: datetime,
    *,
    migrating: bool = False,
) -> Case:
    """Close ``duplicate`` into ``survivor_id``: alerts move, open requests are cancelled.

    ``migrating``: run by migration 4, before the ``needs_publishing`` column exists (7 fills it).
    """
    closed = duplicate.closed_into(survivor_id, reason).model_copy(update={"version": duplicate.version + 1})
    flag = "" if migrating else f", needs_publishing = {int(closed.needs_publishing)}"
    count = db.execute(
        f"UPDATE cases SET active = 0, data = ?, version = ?{flag} WHERE id = ? AND version = ?",
        (closed.model_dump_json(), closed.version, duplicate.id, duplicate.version),
    ).rowcount
    if count != 1:
        raise ConflictError(f"case {duplicate.id} changed while it was being merged")
    db.execute("UPDATE alerts SET case_id = ? WHERE case_id = ?", (survivor_id, duplicate.id))
    states = [state.value for state in OPEN_REQUEST_STATES]
    marks = ", ".join("?" for _ in states)
    rows = db.execute(
        f"SELECT data, version FROM action_requests WHERE case_id = ? AND state IN ({marks})",
        (duplicate.id, *states),
    ).fetchall()
    for row in rows:
        request = _decode(ActionRequest, row)
        cancelled = cancelled_for_merge(request, closed, now).model_copy(
            update={"version": request.version + 1}
        )
        db.execute(
            "UPDATE action_requests SET data = ?, state = ?, version = ? WHERE id = ? AND version = ?",
            (
                cancelled.model_dump_json(),
                cancelled.state.value,
                cancelled.version,
                request.id,
                request.version,
            ),
        )
    return closed


def _merge_duplicate_cases(db: sqlite3.Connection) -> None:
    """Migration 4: merge the duplicate open cases of one person (see :mod:`bot.store.merging`)."""
    now = datetime.now(UTC)
    rows = db.execute(
        "SELECT data, version, identity_key FROM cases WHERE active = 1 ORDER BY rowid"
    ).fetchall()
    active = [(_decode(Case, row), str(row[2])) for row in rows]
    plan = plan_merges(active, why="found when the bot was upgraded")
    current = {case.id: case for case, _ in active}
    # Close the duplicates first, so the unique index never sees two open cases under one key.
    for duplicate in plan.closed:
        _close(db, current[duplicate.id], duplicate.merged_into, duplicate.closed_reason, now, migrating=True)
    for case, key in plan.open_cases:
        before = current[case.id]
        db.execute(
            "UPDATE cases SET identity_key = ?, data = ?, version = ? WHERE id = ? AND version = ?",
            (
                key,
                case.model_copy(update={"version": before.version + 1}).model_dump_json(),
                before.version + 1,
                case.id,
                before.version,
            ),
        )


def _index_live_rows(db: sqlite3.Connection) -> None:
    """Migration 7: the columns and indexes that keep hot paths off history, filled from the data."""
    for statement in (
        "ALTER TABLE cases ADD COLUMN needs_publishing INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE action_requests ADD COLUMN recheck_at TEXT",
        "CREATE INDEX cases_needing_publishing ON cases (needs_publishing) WHERE needs_publishing = 1",
        "CREATE INDEX action_requests_by_state ON action_requests (state)",
        "CREATE INDEX action_requests_by_recheck ON action_requests (recheck_at)"
        " WHERE recheck_at IS NOT NULL",
    ):
        db.execute(statement)
    for row in db.execute("SELECT data, version FROM cases").fetchall():
        case = _decode(Case, row)
        if case.needs_publishing:
            db.execute("UPDATE cases SET needs_publishing = 1 WHERE id = ?", (case.id,))
    for row in db.execute("SELECT data, version FROM action_requests WHERE state IN ('succeeded', 'failed')"):
        request = _decode(ActionRequest, row)
        due = recheck_due(request)
        if due is not None:
            db.execute("UPDATE action_requests SET recheck_at = ? WHERE id = ?", (_utc_text(due), request.id))
