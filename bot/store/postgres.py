"""PostgreSQL implementation of the store: shared state for one or several replicas.

Same rows and rules as :mod:`bot.store.sqlite`, made safe for writers in several processes:

- cases and action requests are compare-and-swap on ``version`` (``UPDATE ... WHERE version``);
- one active case per identity and one active request per case are partial unique indexes, so
  the database itself refuses a second one whoever races to insert it;
- ``record_alert`` is one transaction: ``INSERT ... ON CONFLICT DO NOTHING`` on the active case,
  ``SELECT ... FOR UPDATE`` when it exists, and a retry of the whole transaction when a
  concurrent caller recorded the same alert first (or on a deadlock or serialization failure);
- the audit trail is appended under a transaction-scoped advisory lock, so appends from every
  process take turns and the chain stays linear (readers are not blocked, and unlike ``LOCK
  TABLE`` it needs no UPDATE/DELETE privilege, so the runtime role may be granted only INSERT and
  SELECT on the table); the primary key on ``sequence`` backs it up, and triggers refuse
  UPDATE, DELETE and TRUNCATE;
- leadership is a session-level advisory lock held on one dedicated connection, so it lasts
  exactly as long as that connection: a replica that dies loses it when the server sees its
  socket close. It needs a direct connection (or a session-mode pooler), not a transaction-mode
  PgBouncer, which would hand the session to someone else;
- jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and a lease measured on the database's clock,
  so replicas with skewed clocks still agree on when a lease ran out; a worker renews its lease
  while it works, so only a dead or stopped worker loses it;
- starting a request counts the recent destructive starts and claims the request in one
  transaction under a transaction-scoped advisory lock, so the blast-radius limit holds exactly
  however many replicas start requests at once.

Documents (cases, requests, audit events, job payloads) are stored as JSON *text*, not ``jsonb``:
``jsonb`` refuses the ``\\u0000`` escape that outside alert text may carry, we never query inside
a document, and the audit data must be kept byte for byte as it was hashed.

Migrations are numbered; ``schema_migrations`` records the ones applied, and :meth:`open` applies
the rest under an advisory lock, so replicas starting together migrate once. Every lock key is
derived from the schema name, so deployments in different schemas of one database (and the
tests, one schema each) never contend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from bot.domain.audit import AuditEvent, AuditKey, ChainCheck, Checkpoint
from bot.domain.models import ActionRequest, Alert, Case, IdentityRef, RequestState, ResponseAction
from bot.errors import ConflictError, DuplicateError, StoreError
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
    redact_url,
    verify_audit_rows,
)

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V", Case, ActionRequest)
R = TypeVar("R")
W = TypeVar("W")
Connection = AsyncConnection[TupleRow]

LEADER_APPLICATION_NAME = "remediation-bot leader election"
"""``application_name`` of the session holding leader locks: find the leader in pg_stat_activity."""

_MAX_CAS_ATTEMPTS = 20
_MAX_TRANSACTION_ATTEMPTS = 20
_ACTIVE_REQUEST_INDEX = "action_requests_one_active_per_case"
# Advisory locks that order writers naming people (see PostgresStore._lock_people).
_PERSON_LOCK_BUCKETS = 128

Migration = str | Callable[[Connection], Awaitable[None]]
"""A migration: an SQL script, or a coroutine function run inside the migration's transaction."""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: cases, their alerts, action requests and small settings (watermarks, the channel).
    # ``seq`` keeps insertion order, which is what "oldest first" means (SQLite's rowid).
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE cases (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        identity_key text NOT NULL,
        active boolean NOT NULL DEFAULT true,
        data text NOT NULL,
        version integer NOT NULL
    );
    CREATE UNIQUE INDEX cases_one_active_per_identity ON cases (identity_key) WHERE active;
    CREATE TABLE alerts (id text PRIMARY KEY, case_id text NOT NULL REFERENCES cases (id));
    CREATE TABLE action_requests (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        case_id text NOT NULL REFERENCES cases (id),
        state text NOT NULL,
        data text NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX action_requests_by_case ON action_requests (case_id, seq);
    CREATE INDEX action_requests_by_state ON action_requests (state, seq);
    CREATE UNIQUE INDEX action_requests_one_active_per_case ON action_requests (case_id)
        WHERE state IN ('pending', 'approved', 'executing');
    """,
    # 2: the audit trail. ``data`` holds the whole hash-chained event (what verification checks);
    # the other columns exist for queries. The triggers make "append-only" the database's rule
    # too: a mistaken UPDATE or DELETE fails instead of silently breaking the chain.
    """
    CREATE TABLE audit_events (
        sequence bigint PRIMARY KEY,
        at timestamptz NOT NULL,
        actor_id text NOT NULL,
        kind text NOT NULL,
        case_id text,
        request_id text,
        identity text,
        data text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX audit_events_by_identity ON audit_events (identity, sequence);
    CREATE INDEX audit_events_by_case ON audit_events (case_id, sequence);
    CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
    END
    $$;
    CREATE TRIGGER audit_events_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_events
        FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
    CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
    """,
    # 3: the job queue. Unfinished jobs are found through the partial index, oldest first.
    """
    CREATE TABLE jobs (
        key text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        kind text NOT NULL,
        payload text NOT NULL,
        worker text,
        lease_until timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        enqueued_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    );
    CREATE INDEX jobs_open_by_kind ON jobs (kind, seq) WHERE finished_at IS NULL;
    """,
    # 4: one case per person. Cases are keyed on the Entra object id once it is known; older
    # versions could leave one person with two open cases (object id and UPN): merge them.
    lambda connection: _merge_duplicate_cases(connection),
    # 5: replay claims (a signed push is accepted once, by whichever replica claims it first).
    """
    CREATE TABLE replay_claims (key text PRIMARY KEY, expires_at timestamptz NOT NULL);
    CREATE INDEX replay_claims_by_expiry ON replay_claims (expires_at);
    """,
    # 6: the blast-radius count reads the action and start time of requests from columns, through
    # an index on the time window. The backfill reads the JSON text with a pattern, not a json
    # cast: a document holding a \u0000 escape (outside text) cannot be cast.
    """
    ALTER TABLE action_requests ADD COLUMN action text, ADD COLUMN started_at timestamptz;
    UPDATE action_requests SET
        action = substring(data from '"action":"([^"]+)"'),
        started_at = substring(data from '"started_at":"([^"]+)"')::timestamptz;
    CREATE INDEX action_requests_by_start ON action_requests (started_at) WHERE started_at IS NOT NULL;
    """,
    # 7: hot paths never scan history. Cases whose card is behind are found through a partial
    # index on ``needs_publishing``; results awaiting a re-check through one on ``recheck_at``
    # (open requests already have the index on ``state``).
    lambda connection: _index_live_rows(connection),
)


class _Collision(Exception):
    """A concurrent transaction got there first: roll back and run the whole transaction again."""


def _audit_row(event: AuditEvent) -> tuple[Any, ...]:
    """The row PostgreSQL stores for ``event``, in :data:`~bot.store.rows.AUDIT_COLUMNS` order."""
    return (
        event.sequence,
        event.at,
        event.actor_id,
        event.kind,
        event.case_id,
        event.request_id,
        event.identity,
        event.to_json(),
        event.hash,
    )


async def _backoff(attempt: int) -> None:
    # Jittered, so writers that collided once do not collide again in lock step.
    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))


class PostgresStore(MetaRecords):
    """The :class:`bot.store.base.Store` on a PostgreSQL database, shared by several replicas.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/db``); pick a schema with the
    ``options=-csearch_path%3Dname`` parameter. Nothing connects until :meth:`open`.
    """

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        audit_key: AuditKey | None = None,
    ) -> None:
        self._url = url
        # The key new audit events are chained with (None: the unkeyed scheme; see bot.domain.audit).
        self._audit_key = audit_key
        self._safe_url = redact_url(url)
        try:
            self._conninfo = conninfo_to_dict(url)
            password = urlsplit(url).password
        except (psycopg.Error, ValueError):
            # libpq's complaint may quote the URL, password and all: name only the redacted form.
            raise StoreError(f"not a valid PostgreSQL URL: {self._safe_url}") from None
        # Any password, wherever the URL carries it, is scrubbed from the messages we build.
        self._secrets = [str(s) for s in (password, self._conninfo.get("password")) if s]
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._schema = ""
        self._lead_connection: Connection | None = None
        self._leading: set[str] = set()
        self._lead_guard = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({self._safe_url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, apply pending migrations, then open the connection pool."""
        if self._pool is not None:
            return
        await self._migrate()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            kwargs={"autocommit": True, **self._connect_options()},
            min_size=self._min_connections,
            max_size=self._max_connections,
            open=False,
            name="remediation-bot-store",
            # A connection the server dropped (restart, failover) is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            timeout=self._connect_timeout,
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise self._error(exc, "opening the connection pool") from exc
        self._pool = pool

    async def close(self) -> None:
        """Give up leadership, then close every connection. Safe to call twice."""
        async with self._lead_guard:
            await self._drop_lead_connection(unlock=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _connect_options(self, application_name: str = "remediation-bot") -> dict[str, Any]:
        """libpq parameters we add unless the URL sets them itself (the URL always wins)."""
        defaults: dict[str, Any] = {
            # libpq's default is to wait as long as TCP does.
            "connect_timeout": max(1, round(self._connect_timeout)),
            # Shown in pg_stat_activity, so an operator can tell the bot's sessions apart.
            "application_name": application_name,
        }
        return {key: value for key, value in defaults.items() if key not in self._conninfo}

    async def _connect(self, application_name: str = "remediation-bot") -> Connection:
        """A dedicated connection outside the pool (migrations, leadership)."""
        options = self._connect_options(application_name)
        try:
            return await AsyncConnection.connect(self._url, autocommit=True, **options)
        except psycopg.Error as exc:
            raise self._error(exc, f"connecting to {self._safe_url}") from exc

    def _detail(self, exc: BaseException) -> str:
        """A driver error's text on one line (one log line), with any password scrubbed."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return detail

    def _error(self, exc: BaseException, doing: str) -> StoreError:
        """A :class:`StoreError` for a driver error met while ``doing`` something."""
        return StoreError(f"PostgreSQL store: {doing} failed: {self._detail(exc)}")

    def _lock_key(self, purpose: str) -> int:
        """A signed 64-bit advisory lock key for ``purpose`` in this store's schema.

        Advisory locks are per database; keying them by schema keeps deployments (and tests)
        in different schemas of one database apart. A stable hash, unlike ``hash()``, gives
        every process the same key.
        """
        digest = hashlib.blake2b(f"remediation-bot:{self._schema}:{purpose}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    async def _migrate(self) -> None:
        connection = await self._connect()
        try:
            schema = await _value(connection, "SELECT current_schema()")
            if schema is None:
                raise StoreError(
                    f"no schema on the search_path of {self._safe_url} exists: create it, "
                    "or fix the URL's options=-csearch_path=... parameter"
                )
            self._schema = str(schema)
            lock = self._lock_key("migrate")
            # Session-level and blocking: a replica starting alongside waits here until the
            # first one has migrated, then finds nothing left to do.
            await connection.execute("SELECT pg_advisory_lock(%s)", (lock,))
            # Looked up rather than CREATE TABLE IF NOT EXISTS, which needs the CREATE privilege
            # even when the table exists: a runtime role without DDL rights can then open a
            # store that `remediation-bot migrate` (run as the owner) brought up to date.
            if not await _value(connection, "SELECT to_regclass('schema_migrations') IS NOT NULL"):
                await connection.execute(
                    "CREATE TABLE schema_migrations ("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            current = int(await _value(connection, "SELECT coalesce(max(version), 0) FROM schema_migrations"))
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"the database schema is at version {current}, newer than this bot knows "
                    f"({len(MIGRATIONS)}): run the newer bot, or restore a matching backup"
                )
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                async with connection.transaction():
                    if callable(script):
                        await script(connection)
                    else:
                        await connection.execute(script)  # several statements: allowed without parameters
                    await connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
                log.info("applied store migration %d to schema %s", number, self._schema)
            # Released explicitly so a waiting replica proceeds now, not when this socket closes.
            await connection.execute("SELECT pg_advisory_unlock(%s)", (lock,))
        except (psycopg.Error, ValueError, _Collision) as exc:
            # ValueError: a stored document a data migration could not read.
            raise self._error(exc, "migrating the schema") from exc
        finally:
            await connection.close()

    def _require_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise StoreError("the PostgreSQL state store is not open: await store.open() first")
        return self._pool

    async def _query(self, work: Callable[[Connection], Awaitable[R]]) -> R:
        """Run ``work`` on a pooled connection in autocommit mode (one statement, or reads)."""
        try:
            async with self._require_pool().connection() as connection:
                return await work(connection)
        except psycopg.Error as exc:
            raise self._error(exc, "a query") from exc

    async def _transaction(self, work: Callable[[Connection], Awaitable[R]], *, what: str) -> R:
        """Run ``work`` in one transaction, again from the start when it collided with another."""
        for attempt in range(_MAX_TRANSACTION_ATTEMPTS):
            try:
                async with self._require_pool().connection() as connection, connection.transaction():
                    return await work(connection)
            except (_Collision, errors.SerializationFailure, errors.DeadlockDetected):
                await _backoff(attempt)
            except psycopg.Error as exc:
                raise self._error(exc, what) from exc
        raise ConflictError(f"{what} kept colliding with concurrent writers")

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> TupleRow | None:
        async def work(connection: Connection) -> TupleRow | None:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchone()

        return await self._query(work)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[TupleRow]:
        async def work(connection: Connection) -> list[TupleRow]:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchall()

        return await self._query(work)

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async def work(connection: Connection) -> None:
            await connection.execute(sql, params)

        await self._query(work)

    async def schema_version(self) -> int:
        """The number of the last migration applied to the schema."""
        row = await self._fetchone("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return 0 if row is None else int(row[0])

    # -- meta -------------------------------------------------------------------------------

    async def _get_meta(self, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    async def _set_meta(self, key: str, value: str) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- replay claims ----------------------------------------------------------------------

    async def claim_replay(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Claim ``key`` until ``expires_at``: ``True`` for the first caller in any process only.

        The primary key decides: a concurrent insert of the same key waits for the first one's
        transaction and then does nothing. Claims that expired before ``now`` are pruned in the
        same transaction, a batch at a time, skipping rows another pruner holds.
        """

        async def work(connection: Connection) -> bool:
            await connection.execute(
                "DELETE FROM replay_claims WHERE key IN (SELECT key FROM replay_claims "
                "WHERE expires_at < %s ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)",
                (now,),
            )
            inserted = await _row(
                connection,
                "INSERT INTO replay_claims (key, expires_at) VALUES (%s, %s) "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, expires_at),
            )
            return inserted is not None

        return await self._transaction(work, what="claiming a replay record")

    async def release_replay(self, key: str) -> None:
        """Give a claim up (the work it guarded failed), so the same request may come again."""
        await self._execute("DELETE FROM replay_claims WHERE key = %s", (key,))

    # -- cases ------------------------------------------------------------------------------

    async def record_alert(self, alert: Alert, *, new_case_id: str, now: datetime) -> AlertIntake:
        """Add ``alert`` to its identity's active case, opening one if needed (one transaction).

        Safe under concurrent callers in any number of processes: the partial unique index
        admits one active case per identity, ``FOR UPDATE`` serialises changes to it, and a
        caller that finds the alert recorded by someone else meanwhile starts over and sees it.
        """
        [intake] = await self.record_alerts([alert], new_case_id=lambda: new_case_id, now=now)
        return intake

    async def record_alerts(
        self, alerts: Sequence[Alert], *, new_case_id: Callable[[], str], now: datetime
    ) -> list[AlertIntake]:
        """Record ``alerts`` in order in one transaction: all of them, or (on any failure) none.

        The people the batch names are locked first, in one global order (see
        :meth:`_lock_people`), so batches naming several people in different orders wait for
        each other instead of deadlocking. A collision with a concurrent writer rolls the whole
        batch back and runs it again.
        """
        batch = list(alerts)
        keys: set[str] = set()
        for alert in batch:
            keys.add(alert.target.key)
            if alert.target.upn:
                keys.add(alert.target.upn.lower())  # an unresolved case it may settle

        async def work(connection: Connection) -> list[AlertIntake]:
            await self._lock_people(connection, keys)
            return [await _record(connection, alert, new_case_id, now) for alert in batch]

        what = f"recording alert {batch[0].id!r}" if len(batch) == 1 else f"recording {len(batch)} alerts"
        return await self._transaction(work, what=what)

    async def rekey_case(self, case_id: str, identity: IdentityRef, *, now: datetime) -> Settlement | None:
        """Key an unresolved case on its object id, or merge it into the person's case (one transaction)."""
        if not identity.object_id:
            raise ValueError("a case is re-keyed on an Entra object id")

        async def work(connection: Connection) -> Settlement | None:
            stored_key = await _value(connection, "SELECT identity_key FROM cases WHERE id = %s", (case_id,))
            if stored_key is None:
                return None
            await self._lock_people(connection, {str(stored_key), identity.key})
            row = await _row(
                connection,
                "SELECT data, version, identity_key FROM cases WHERE id = %s AND active FOR UPDATE",
                (case_id,),
            )
            if row is None:
                return None
            if row[2] != stored_key:
                raise _Collision  # re-keyed between the two reads: look again
            case = _decode(Case, row)
            if case.resolved:
                return None
            return await _settle(connection, case, identity, now)

        return await self._transaction(work, what=f"re-keying case {case_id!r}")

    async def _lock_people(self, connection: Connection, keys: Iterable[str]) -> None:
        """Take the transaction's locks on the people (identity keys) it may open, join or settle.

        Keys fall into :data:`_PERSON_LOCK_BUCKETS` advisory locks taken in ascending order:
        writers naming a common person take turns, the others run side by side, and nobody
        waits in a circle. Bounded, so a 500-alert batch holds a fixed number of locks.
        """
        buckets = sorted({_person_bucket(key) for key in keys})
        locks = [self._lock_key(f"person:{bucket}") for bucket in buckets]
        # unnest() yields the array in order, so the locks are taken in ascending bucket order.
        await connection.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", (locks,))

    async def get_case(self, case_id: str) -> Case | None:
        """One case by id."""
        return await self._get(Case, "cases", case_id)

    async def find_active_case(self, identity: IdentityRef) -> Case | None:
        """The active case of an identity, if there is one."""
        row = await self._fetchone(
            "SELECT data, version FROM cases WHERE identity_key = %s AND active", (identity.key,)
        )
        return None if row is None else _decode(Case, row)

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""
        rows = await self._fetchall("SELECT data, version FROM cases ORDER BY seq")
        return [_decode(Case, row) for row in rows]

    async def list_cases_needing_publishing(self) -> list[Case]:
        """The cases whose card is missing or behind, oldest first (through a partial index)."""
        rows = await self._fetchall("SELECT data, version FROM cases WHERE needs_publishing ORDER BY seq")
        return [_decode(Case, row) for row in rows]

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case."""
        return await self._update(Case, "cases", case_id, mutate)

    async def swap_case(self, case_id: str, decide: Callable[[Case], Case | W]) -> tuple[Case, Case | W]:
        """Compare-and-swap of one case that says whether this call's change was written."""
        return await self._swap(Case, "cases", case_id, decide)

    # -- action requests --------------------------------------------------------------------

    async def add_request(self, request: ActionRequest) -> ActionRequest:
        """Store a new action request (version 1); :class:`DuplicateError` if the case has one active."""
        stored = request.model_copy(update={"version": 1})

        async def insert(connection: Connection) -> None:
            try:
                await connection.execute(
                    "INSERT INTO action_requests "
                    "(id, case_id, state, action, started_at, recheck_at, data, version) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, 1)",
                    (
                        stored.id,
                        stored.case_id,
                        stored.state.value,
                        stored.action.value,
                        stored.started_at,
                        recheck_due(stored),
                        stored.model_dump_json(),
                    ),
                )
            except errors.UniqueViolation as exc:
                if exc.diag.constraint_name == _ACTIVE_REQUEST_INDEX:
                    raise DuplicateError(f"case {stored.case_id} already has an active request") from exc
                raise DuplicateError(f"action request {stored.id} exists already") from exc
            except errors.ForeignKeyViolation as exc:
                raise StoreError(f"no case {stored.case_id!r} for action request {stored.id}") from exc

        await self._query(insert)
        return stored

    async def get_request(self, request_id: str) -> ActionRequest | None:
        """One action request by id."""
        return await self._get(ActionRequest, "action_requests", request_id)

    async def list_requests(self, case_id: str) -> list[ActionRequest]:
        """A case's action requests, oldest first."""
        rows = await self._fetchall(
            "SELECT data, version FROM action_requests WHERE case_id = %s ORDER BY seq", (case_id,)
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def list_requests_in(self, states: Iterable[RequestState]) -> list[ActionRequest]:
        """Every request in one of ``states``, oldest first (open requests, recent executions)."""
        wanted = [state.value for state in states]
        rows = await self._fetchall(
            "SELECT data, version FROM action_requests WHERE state = ANY(%s) ORDER BY seq", (wanted,)
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def list_requests_due_recheck(self, now: datetime) -> list[ActionRequest]:
        """Finished requests whose result awaits a re-check due by ``now``, oldest first."""
        rows = await self._fetchall(
            "SELECT data, version FROM action_requests WHERE recheck_at <= %s ORDER BY seq", (now,)
        )
        return [_decode(ActionRequest, row) for row in rows]

    async def count_started_since(
        self, counted: Collection[ResponseAction], since: datetime, *, exclude: str | None = None
    ) -> int:
        """How many requests (but ``exclude``) doing one of ``counted`` started at or after ``since``."""
        row = await self._fetchone(
            "SELECT count(*) FROM action_requests "
            "WHERE started_at >= %s AND action = ANY(%s) AND id IS DISTINCT FROM %s",
            (since, sorted(action.value for action in counted), exclude),
        )
        return 0 if row is None else int(row[0])

    async def update_request(
        self, request_id: str, mutate: Callable[[ActionRequest], ActionRequest | None]
    ) -> ActionRequest:
        """Compare-and-swap update of one action request.

        :class:`DuplicateError` when the new state would make a second active request on its case.
        """
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
        """Count recent starts and claim the request in one transaction.

        A transaction-scoped advisory lock makes every starter (in every process) take turns
        from the count to the commit: the next one counts the start this one wrote. The row is
        also locked, so a compare-and-swap writer in between waits and then retries.
        """
        lock = self._lock_key("blast-radius")
        actions = sorted(action.value for action in counted)

        async def work(connection: Connection) -> tuple[ActionRequest, ActionRequest | W]:
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            row = await _row(
                connection,
                "SELECT data, version FROM action_requests WHERE id = %s FOR UPDATE",
                (request_id,),
            )
            if row is None:
                raise StoreError(f"no action_requests row {request_id!r}")
            current = _decode(ActionRequest, row)
            count = await _value(
                connection,
                "SELECT count(*) FROM action_requests "
                "WHERE started_at >= %s AND action = ANY(%s) AND id <> %s",
                (since, actions, request_id),
            )
            outcome = decide(current, int(count or 0))
            if not isinstance(outcome, ActionRequest):
                return current, outcome
            stored = outcome.model_copy(update={"version": current.version + 1})
            await self._write_request(connection, stored, current.version)
            return stored, stored

        return await self._transaction(work, what=f"starting action request {request_id!r}")

    async def _write_request(self, connection: Connection, stored: ActionRequest, expected: int) -> None:
        """Write ``stored`` over version ``expected`` (locked by the caller), columns included."""
        try:
            written = await _row(
                connection,
                "UPDATE action_requests SET data = %s, version = %s, state = %s, started_at = %s, "
                "recheck_at = %s WHERE id = %s AND version = %s RETURNING id",
                (
                    stored.model_dump_json(),
                    stored.version,
                    stored.state.value,
                    stored.started_at,
                    recheck_due(stored),
                    stored.id,
                    expected,
                ),
            )
        except errors.UniqueViolation as exc:
            raise DuplicateError(
                f"action_requests row {stored.id!r}: its case already has an active request"
                if exc.diag.constraint_name == _ACTIVE_REQUEST_INDEX
                else f"action_requests row {stored.id!r}: {exc.diag.message_primary}"
            ) from exc
        if written is None:
            raise _Collision

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

        The advisory lock, held until commit, makes reading the last event and inserting the
        next one a single turn for every writer in every process, so the chain stays linear and
        gap-free; readers are not blocked. An ``audit.key_changed`` event goes first when the
        key changed. ``ValueError`` for a payload that is not plain JSON, :class:`StoreError`
        when the trail is keyed and this store has no key (nothing is stored).
        """
        lock = self._lock_key("audit")
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

        async def work(connection: Connection) -> AuditEvent:
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            last = await _row(connection, LAST_AUDIT_EVENT)
            events = next_audit_events(last, self._audit_key, fields)
            marks = ", ".join("%s" for _ in AUDIT_COLUMNS)
            for event in events:
                try:
                    await connection.execute(
                        f"INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)}) VALUES ({marks})",
                        _audit_row(event),
                    )
                except errors.UniqueViolation:
                    # Only a writer that skipped the lock can have taken this sequence; chain after it.
                    raise _Collision from None
            return events[-1]

        return await self._transaction(work, what="appending an audit event")

    async def list_audit(
        self, *, identity: str | None = None, case_id: str | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events in stored order, optionally only one identity's and/or one case's.

        ``limit`` keeps the newest ``limit`` events (still returned oldest first).
        ``identity`` matches case-insensitively, as it is stored lower-case.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        clauses: list[str] = []
        params: list[Any] = []
        if identity is not None:
            clauses.append("identity = %s")
            params.append(identity.lower())
        if case_id is not None:
            clauses.append("case_id = %s")
            params.append(case_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # Newest first so LIMIT keeps the latest; reversed below into stored order.
        sql = f"SELECT sequence, data FROM audit_events{where} ORDER BY sequence DESC"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        rows = await self._fetchall(sql, params)
        return [decode_audit(row[0], row[1]) for row in reversed(rows)]

    async def verify_audit(
        self, *, keys: Iterable[AuditKey] = (), checkpoints: Iterable[Checkpoint] = ()
    ) -> ChainCheck:
        """Verify the whole stored trail under the store's key and ``keys``, against
        ``checkpoints``, and name the first broken event.

        See :func:`bot.store.rows.verify_audit_rows`: unreadable data and query columns edited
        apart from the data are reported as well as breaks in the chain itself.
        """
        rows = await self._fetchall(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events ORDER BY sequence")
        known = [key for key in (self._audit_key, *keys) if key is not None]
        return verify_audit_rows(rows, _audit_row, known, checkpoints)

    async def audit_checkpoint(self, *, at: datetime, short: bool = False) -> Checkpoint | None:
        """The head of the trail as a checkpoint authenticated with the store's key."""
        rows = await self._fetchall(LAST_AUDIT_EVENT)
        return audit_checkpoint(rows[0] if rows else None, self._audit_key, at=at, short=short)

    # -- leadership -------------------------------------------------------------------------

    async def try_lead(self, name: str) -> bool:
        """Become, or confirm still being, the leader called ``name`` among replicas on this schema.

        ``pg_try_advisory_lock`` on a connection of its own, held for as long as this store
        leads: a replica that dies, or whose connection drops, loses the lock with the session,
        and the next replica to call this takes over. While leading, each call checks the
        connection is still alive, so a lost lock is noticed (and logged) on the next call.
        """
        key = self._lock_key(f"lead:{name}")
        async with self._lead_guard:
            for attempt in range(2):  # a dropped connection is replaced once
                connection = await self._leader_connection()
                try:
                    if name in self._leading:
                        await connection.execute("SELECT 1")
                        return True
                    locked = await _value(connection, "SELECT pg_try_advisory_lock(%s)", (key,))
                except psycopg.OperationalError as exc:
                    await self._drop_lead_connection(unlock=False, reason=exc)
                    if attempt == 1:
                        raise self._error(exc, f"checking leadership of {name!r}") from exc
                    continue
                except psycopg.Error as exc:
                    raise self._error(exc, f"checking leadership of {name!r}") from exc
                if locked:
                    self._leading.add(name)
                    log.info("this replica now leads %r", name)
                return bool(locked)
        raise AssertionError("unreachable")  # pragma: no cover

    async def release_lead(self, name: str) -> None:
        """Give up leadership of ``name`` (nothing happens when this store does not hold it)."""
        async with self._lead_guard:
            if name not in self._leading or self._lead_connection is None:
                return
            self._leading.discard(name)
            try:
                await self._lead_connection.execute(
                    "SELECT pg_advisory_unlock(%s)", (self._lock_key(f"lead:{name}"),)
                )
            except psycopg.OperationalError as exc:
                # The session is gone, and with it the lock: nothing left to release.
                await self._drop_lead_connection(unlock=False, reason=exc)

    async def _leader_connection(self) -> Connection:
        self._require_pool()  # the schema (hence the lock keys) is known once open
        if self._lead_connection is None or self._lead_connection.closed:
            self._lead_connection = await self._connect(LEADER_APPLICATION_NAME)
        return self._lead_connection

    async def _drop_lead_connection(self, *, unlock: bool, reason: BaseException | None = None) -> None:
        connection, self._lead_connection = self._lead_connection, None
        lost, self._leading = sorted(self._leading), set()
        if reason is not None and lost:
            log.warning(
                "lost leadership of %s: the connection holding it dropped (%s)",
                ", ".join(lost),
                self._detail(reason),
            )
        if connection is None:
            return
        try:
            if unlock and not connection.closed:
                # Released before closing so another replica can lead at once, rather than when
                # the server has finished tearing this session down.
                await connection.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass  # closing below ends the session, which releases the locks anyway
        finally:
            await connection.close()

    # -- job queue ---------------------------------------------------------------------------

    async def enqueue_job(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Queue a job; a job with the same ``key`` (queued, running or finished) wins."""
        text = job_payload_json(payload)
        await self._execute(
            "INSERT INTO jobs (key, kind, payload) VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING",
            (key, kind, text),
        )

    async def claim_job(self, kind: str, worker: str, lease: timedelta) -> Job | None:
        """Claim the oldest unfinished job of ``kind`` nobody holds a live lease on.

        ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass over a job another is claiming
        instead of queueing behind it; the lease is reckoned on the database's clock.
        """
        check_lease(lease.total_seconds())
        row = await self._fetchone(
            "UPDATE jobs SET worker = %s, lease_until = now() + %s, attempts = attempts + 1 "
            "WHERE key = ("
            "  SELECT key FROM jobs"
            "  WHERE kind = %s AND finished_at IS NULL AND (lease_until IS NULL OR lease_until < now())"
            "  ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
            ") RETURNING key, payload, lease_until, attempts",
            (worker, lease, kind),
        )
        if row is None:
            return None
        return Job(
            key=row[0],
            kind=kind,
            payload=json.loads(row[1]),
            worker=worker,
            lease_until=row[2],
            attempts=int(row[3]),
        )

    async def renew_job(self, key: str, worker: str, lease: timedelta) -> bool:
        """Extend ``worker``'s claim to ``lease`` from now (the database's clock); ``False`` when lost."""
        check_lease(lease.total_seconds())
        renewed = await self._fetchone(
            "UPDATE jobs SET lease_until = now() + %s "
            "WHERE key = %s AND worker = %s AND finished_at IS NULL RETURNING key",
            (lease, key, worker),
        )
        return renewed is not None

    async def finish_job(self, key: str, worker: str) -> None:
        """Mark a job done. Finishing a finished job again changes nothing.

        Raises :class:`ConflictError` when another worker claimed the job since (this worker's
        lease ran out), and :class:`StoreError` for an unknown key.
        """
        finished = await self._fetchone(
            "UPDATE jobs SET finished_at = now(), lease_until = NULL "
            "WHERE key = %s AND worker = %s AND finished_at IS NULL RETURNING key",
            (key, worker),
        )
        if finished is None:
            check_finish(
                key,
                worker,
                await self._fetchone("SELECT worker, finished_at FROM jobs WHERE key = %s", (key,)),
            )

    # -- generic row access -----------------------------------------------------------------

    async def _get(self, model: type[T], table: str, key: str) -> T | None:
        row = await self._fetchone(f"SELECT data, version FROM {table} WHERE id = %s", (key,))
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
            ", state = %s, started_at = %s, recheck_at = %s"
            if table == "action_requests"
            else ", needs_publishing = %s"
        )
        sql = (
            f"UPDATE {table} SET data = %s, version = version + 1{extra} "
            "WHERE id = %s AND version = %s RETURNING id"
        )
        for attempt in range(_MAX_CAS_ATTEMPTS):
            current = await self._get(model, table, key)
            if current is None:
                raise StoreError(f"no {table} row {key!r}")
            outcome = decide(current)
            if not isinstance(outcome, model):
                return current, outcome
            if (
                isinstance(current, Case)
                and isinstance(outcome, Case)
                and current.identity.key != outcome.identity.key
            ):
                raise StoreError(f"case {key}: whom a case is about changes only by re-keying it")
            stored = outcome.model_copy(update={"version": current.version + 1})
            params: tuple[Any, ...] = (stored.model_dump_json(),)
            if isinstance(stored, ActionRequest):
                params += (stored.state.value, stored.started_at, recheck_due(stored))
            else:
                params += (stored.needs_publishing,)
            params += (key, current.version)

            async def write(connection: Connection, params: tuple[Any, ...] = params) -> bool:
                try:
                    return await _row(connection, sql, params) is not None
                except errors.UniqueViolation as exc:
                    raise DuplicateError(
                        f"{table} row {key!r}: its case already has an active request"
                        if exc.diag.constraint_name == _ACTIVE_REQUEST_INDEX
                        else f"{table} row {key!r}: {exc.diag.message_primary}"
                    ) from exc

            if await self._query(write):
                return stored, stored
            await _backoff(attempt)
        raise ConflictError(f"{table} row {key!r} kept changing under concurrent writers")


def _decode(model: type[T], row: Sequence[Any]) -> T:
    return model.model_validate_json(row[0]).model_copy(update={"version": int(row[1])})


async def _row(connection: Connection, sql: str, params: Sequence[Any] = ()) -> TupleRow | None:
    cursor = await connection.execute(sql, params)
    return await cursor.fetchone()


async def _value(connection: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    row = await _row(connection, sql, params)
    return None if row is None else row[0]


async def _lock_case(connection: Connection, column: str, value: str) -> Case:
    """The case whose ``column`` is ``value``, locked for the rest of the transaction."""
    active = " AND active" if column == "identity_key" else ""
    row = await _row(
        connection, f"SELECT data, version FROM cases WHERE {column} = %s{active} FOR UPDATE", (value,)
    )
    if row is None:
        raise _Collision  # it changed between our statements; the retry sees the settled state
    return _decode(Case, row)


async def _save_case(connection: Connection, case: Case, expected_version: int) -> Case:
    """Write ``case`` (locked by :func:`_lock_case`) as version ``expected_version + 1``."""
    stored = case.model_copy(update={"version": expected_version + 1})
    written = await _row(
        connection,
        "UPDATE cases SET data = %s, version = %s, needs_publishing = %s "
        "WHERE id = %s AND version = %s RETURNING id",
        (stored.model_dump_json(), stored.version, stored.needs_publishing, case.id, expected_version),
    )
    if written is None:
        raise _Collision
    return stored


async def _record(
    connection: Connection, alert: Alert, new_case_id: Callable[[], str], now: datetime
) -> AlertIntake:
    """Record one alert inside the caller's transaction (see :meth:`PostgresStore.record_alerts`)."""
    known = await _row(connection, "SELECT case_id FROM alerts WHERE id = %s", (alert.id,))
    if known is not None:
        case = await _lock_case(connection, "id", known[0])
        previous = next((a for a in case.alerts if a.id == alert.id), None)
        if previous == alert or (previous and previous.updated_at > alert.updated_at):
            return AlertIntake(case, case_created=False, alert_new=False, alert_changed=False)
        case = await _save_case(connection, case.with_alert(alert), case.version)
        return AlertIntake(case, case_created=False, alert_new=False, alert_changed=True)
    target = alert.target
    settled: Settlement | None = None
    if target.object_id and target.upn and target.upn.lower() != target.key:
        stray = await _row(
            connection,
            "SELECT data, version FROM cases WHERE identity_key = %s AND active FOR UPDATE",
            (target.upn.lower(),),
        )
        if stray is not None:
            settled = await _settle(connection, _decode(Case, stray), target, now)
    opened = Case(id=new_case_id(), identity=target, alerts=(alert,), opened_at=now, version=1)
    # A concurrent insert of the identity's case makes this wait for that transaction,
    # then do nothing; the SELECT ... FOR UPDATE below then sees the committed case.
    inserted = await _row(
        connection,
        "INSERT INTO cases (id, identity_key, data, version, needs_publishing) VALUES (%s, %s, %s, 1, %s) "
        "ON CONFLICT (identity_key) WHERE active DO NOTHING RETURNING id",
        (opened.id, target.key, opened.model_dump_json(), opened.needs_publishing),
    )
    if inserted is not None:
        case, created = opened, True
    else:
        current = await _lock_case(connection, "identity_key", target.key)
        case, created = await _save_case(connection, current.with_alert(alert), current.version), False
    recorded = await _row(
        connection,
        "INSERT INTO alerts (id, case_id) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
        (alert.id, case.id),
    )
    if recorded is None:
        raise _Collision  # recorded by a concurrent caller: undo the case change, look again
    return AlertIntake(case, case_created=created, alert_new=True, alert_changed=True, settled=settled)


async def _settle(connection: Connection, stray: Case, identity: IdentityRef, now: datetime) -> Settlement:
    """Key the unresolved ``stray`` (locked) on ``identity``'s object id, or merge it into that
    person's case."""
    key = IdentityRef(object_id=identity.object_id).key
    owner = await _row(
        connection, "SELECT data, version FROM cases WHERE identity_key = %s AND active FOR UPDATE", (key,)
    )
    if owner is None:
        rekeyed = stray.rekeyed(identity).model_copy(update={"version": stray.version + 1})
        try:
            written = await _row(
                connection,
                "UPDATE cases SET identity_key = %s, data = %s, version = %s, needs_publishing = %s "
                "WHERE id = %s AND version = %s RETURNING id",
                (
                    key,
                    rekeyed.model_dump_json(),
                    rekeyed.version,
                    rekeyed.needs_publishing,
                    stray.id,
                    stray.version,
                ),
            )
        except errors.UniqueViolation:
            raise _Collision from None  # the person's case was opened meanwhile: merge into it instead
        if written is None:
            raise _Collision
        return Settlement(case=rekeyed)
    current = _decode(Case, owner)
    survivor = await _save_case(connection, current.absorbing(stray), current.version)
    reason = (
        f"Merged into case {survivor.id}: {stray.identity.upn} is Entra object id "
        f"{identity.object_id}, and one person has one case."
    )
    closed = await _close(connection, stray, survivor.id, reason, now)
    return Settlement(case=survivor, closed=closed)


async def _close(
    connection: Connection,
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
    flag = "" if migrating else f", needs_publishing = {str(closed.needs_publishing).lower()}"
    written = await _row(
        connection,
        f"UPDATE cases SET active = false, data = %s, version = %s{flag} "
        "WHERE id = %s AND version = %s RETURNING id",
        (closed.model_dump_json(), closed.version, duplicate.id, duplicate.version),
    )
    if written is None:
        raise _Collision
    await connection.execute("UPDATE alerts SET case_id = %s WHERE case_id = %s", (survivor_id, duplicate.id))
    cursor = await connection.execute(
        "SELECT data, version FROM action_requests WHERE case_id = %s AND state = ANY(%s) FOR UPDATE",
        (duplicate.id, [state.value for state in OPEN_REQUEST_STATES]),
    )
    for row in await cursor.fetchall():
        request = _decode(ActionRequest, row)
        cancelled = cancelled_for_merge(request, closed, now).model_copy(
            update={"version": request.version + 1}
        )
        await connection.execute(
            "UPDATE action_requests SET data = %s, state = %s, version = %s WHERE id = %s AND version = %s",
            (
                cancelled.model_dump_json(),
                cancelled.state.value,
                cancelled.version,
                request.id,
                request.version,
            ),
        )
    return closed


async def _merge_duplicate_cases(connection: Connection) -> None:
    """Migration 4: merge the duplicate open cases of one person (see :mod:`bot.store.merging`)."""
    now = datetime.now(UTC)
    cursor = await connection.execute(
        "SELECT data, version, identity_key FROM cases WHERE active ORDER BY seq FOR UPDATE"
    )
    active = [(_decode(Case, row), str(row[2])) for row in await cursor.fetchall()]
    plan = plan_merges(active, why="found when the bot was upgraded")
    current = {case.id: case for case, _ in active}
    # Close the duplicates first, so the unique index never sees two open cases under one key.
    for duplicate in plan.closed:
        await _close(
            connection,
            current[duplicate.id],
            duplicate.merged_into,
            duplicate.closed_reason,
            now,
            migrating=True,
        )
    for case, key in plan.open_cases:
        before = current[case.id]
        stored = case.model_copy(update={"version": before.version + 1})
        await connection.execute(
            "UPDATE cases SET identity_key = %s, data = %s, version = %s WHERE id = %s AND version = %s",
            (key, stored.model_dump_json(), stored.version, case.id, before.version),
        )


def _person_bucket(key: str) -> int:
    """Which of the person locks guards identity key ``key`` (stable across processes)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _PERSON_LOCK_BUCKETS


async def _index_live_rows(connection: Connection) -> None:
    """Migration 7: the columns and indexes that keep hot paths off history, filled from the data."""
    await connection.execute(
        "ALTER TABLE cases ADD COLUMN needs_publishing boolean NOT NULL DEFAULT false;"
        "ALTER TABLE action_requests ADD COLUMN recheck_at timestamptz;"
        "CREATE INDEX cases_needing_publishing ON cases (seq) WHERE needs_publishing;"
        "CREATE INDEX action_requests_by_recheck ON action_requests (recheck_at) WHERE recheck_at IS NOT NULL"
    )
    cursor = await connection.execute("SELECT data, version FROM cases")
    for row in await cursor.fetchall():
        case = _decode(Case, row)
        if case.needs_publishing:
            await connection.execute("UPDATE cases SET needs_publishing = true WHERE id = %s", (case.id,))
    cursor = await connection.execute(
        "SELECT data, version FROM action_requests WHERE state IN ('succeeded', 'failed')"
    )
    for row in await cursor.fetchall():
        request = _decode(ActionRequest, row)
        due = recheck_due(request)
        if due is not None:
            await connection.execute(
                "UPDATE action_requests SET recheck_at = %s WHERE id = %s", (due, request.id)
            )
