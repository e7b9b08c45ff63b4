"""PostgreSQL implementation of the store: shared state for one or several replicas.

The statements and rules are :mod:`bot.store.core`'s, shared with SQLite; this module adds the
schema, the connection pool, the locks and leadership, made safe for writers in several processes:

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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from bot.domain.audit import AuditKey
from bot.errors import ConflictError, DuplicateError, RemediationError, StoreError
from bot.store.base import Job
from bot.store.core import (
    Collision,
    Dialect,
    SqlStore,
    Tx,
    index_live_rows,
    index_unresolved_cases,
    merge_duplicate_cases,
)
from bot.store.rows import check_finish, check_lease, job_payload_json, redact_url

log = logging.getLogger(__name__)

R = TypeVar("R")
Connection = AsyncConnection[TupleRow]

LEADER_APPLICATION_NAME = "remediation-bot leader election"
"""``application_name`` of the session holding leader locks: find the leader in pg_stat_activity."""

_MAX_TRANSACTION_ATTEMPTS = 20
_ACTIVE_REQUEST_INDEX = "action_requests_one_active_per_case"
# Advisory locks that order writers naming people (see PostgresStore._lock_people).
_PERSON_LOCK_BUCKETS = 128

POSTGRES = Dialect(
    order="seq",
    active="active",
    behind="needs_publishing",
    unresolved="unresolved AND active",
    for_update=" FOR UPDATE",
    time=lambda value: value,
    audit_time=lambda value: value,
    duplicate_errors=(errors.UniqueViolation, errors.ForeignKeyViolation),
)

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
    lambda connection: merge_duplicate_cases(POSTGRES, _Tx(connection)),
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
    # 8: the sweep retries only the active cases still waiting for their person's object id,
    # found through a partial index (closed and resolved cases cost it nothing).
    lambda connection: _index_unresolved_cases(connection),
    # 9: storm mode. A case records when its first alert was created (the storm window counts
    # recent cases through an index) and the campaign it joined; one campaign at a time accepts
    # new cases (a unique index, so replicas racing through one storm open one); bulk requests.
    """
    ALTER TABLE cases ADD COLUMN first_seen_at timestamptz, ADD COLUMN campaign_id text;
    CREATE INDEX cases_by_first_seen ON cases (first_seen_at) WHERE active AND first_seen_at IS NOT NULL;
    CREATE INDEX cases_by_campaign ON cases (campaign_id, seq) WHERE campaign_id IS NOT NULL;
    CREATE TABLE campaigns (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        accepting boolean NOT NULL,
        needs_publishing boolean NOT NULL DEFAULT true,
        data text NOT NULL,
        version integer NOT NULL
    );
    CREATE UNIQUE INDEX campaigns_one_accepting ON campaigns (accepting) WHERE accepting;
    CREATE INDEX campaigns_needing_publishing ON campaigns (seq) WHERE needs_publishing;
    CREATE TABLE bulk_requests (
        id text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        campaign_id text NOT NULL REFERENCES campaigns (id),
        state text NOT NULL,
        data text NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX bulk_requests_by_campaign ON bulk_requests (campaign_id, seq);
    CREATE INDEX bulk_requests_by_state ON bulk_requests (state, seq);
    """,
)


async def _index_unresolved_cases(connection: Connection) -> None:
    """Migration 8: the ``unresolved`` flag and its partial index, filled from the data."""
    await connection.execute(
        "ALTER TABLE cases ADD COLUMN unresolved boolean NOT NULL DEFAULT false;"
        "CREATE INDEX cases_unresolved ON cases (seq) WHERE unresolved AND active"
    )
    await index_unresolved_cases(POSTGRES, _Tx(connection))


async def _index_live_rows(connection: Connection) -> None:
    """Migration 7: the columns and indexes that keep hot paths off history, filled from the data."""
    await connection.execute(
        "ALTER TABLE cases ADD COLUMN needs_publishing boolean NOT NULL DEFAULT false;"
        "ALTER TABLE action_requests ADD COLUMN recheck_at timestamptz;"
        "CREATE INDEX cases_needing_publishing ON cases (seq) WHERE needs_publishing;"
        "CREATE INDEX action_requests_by_recheck ON action_requests (recheck_at) WHERE recheck_at IS NOT NULL"
    )
    await index_live_rows(POSTGRES, _Tx(connection))


class _Tx:
    """:class:`bot.store.core.Tx` on a psycopg connection (``?`` placeholders become ``%s``)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        cursor = await self._connection.execute(sql.replace("?", "%s"), params)
        return await cursor.fetchone()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        cursor = await self._connection.execute(sql.replace("?", "%s"), params)
        return list(await cursor.fetchall())

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._connection.execute(sql.replace("?", "%s"), params)
        return cursor.rowcount


async def _backoff(attempt: int) -> None:
    # Jittered, so writers that collided once do not collide again in lock step.
    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))


class PostgresStore(SqlStore):
    """The :class:`bot.store.base.Store` on a PostgreSQL database, shared by several replicas.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/db``); pick a schema with the
    ``options=-csearch_path%3Dname`` parameter. Nothing connects until :meth:`open`.
    """

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        audit_key: AuditKey | None = None,
        password: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """``password``, when given, is asked for each new connection's password: an Entra ID
        access token for Azure Database for PostgreSQL (the URL then carries none)."""
        self._url = url
        self._password = password
        # The key new audit events are chained with (None: the unkeyed scheme; see bot.domain.audit).
        self._audit_key = audit_key
        self._safe_url = redact_url(url)
        try:
            self._conninfo = conninfo_to_dict(url)
            url_password = urlsplit(url).password
        except (psycopg.Error, ValueError):
            # libpq's complaint may quote the URL, password and all: name only the redacted form.
            raise StoreError(f"not a valid PostgreSQL URL: {self._safe_url}") from None
        # Any password, wherever the URL carries it, is scrubbed from the messages we build.
        self._secrets = [str(s) for s in (url_password, self._conninfo.get("password")) if s]
        self._tokens: list[str] = []
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
            kwargs=self._pool_options,
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

    async def _pool_options(self) -> dict[str, Any]:
        """The pool's options for each new connection: a fresh token as its password, if any."""
        return {"autocommit": True, **self._connect_options(), **await self._credentials()}

    async def _credentials(self) -> dict[str, Any]:
        if self._password is None:
            return {}
        try:
            token = await self._password()
        except RemediationError as exc:
            raise StoreError(f"no Entra ID token for the database {self._safe_url}: {exc.message}") from exc
        # A token is a secret like a password: scrubbed from every message we build (the two newest).
        self._tokens = [*self._tokens[-1:], token]
        return {"password": token}

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
        options = {**self._connect_options(application_name), **await self._credentials()}
        try:
            return await AsyncConnection.connect(self._url, autocommit=True, **options)
        except psycopg.Error as exc:
            raise self._error(exc, f"connecting to {self._safe_url}") from exc

    def _detail(self, exc: BaseException) -> str:
        """A driver error's text on one line (one log line), with any password scrubbed."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        for secret in [*self._secrets, *self._tokens]:
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
        except (psycopg.Error, ValueError, Collision) as exc:
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
            except (Collision, errors.SerializationFailure, errors.DeadlockDetected):
                await _backoff(attempt)
            except psycopg.Error as exc:
                raise self._error(exc, what) from exc
        raise ConflictError(f"{what} kept colliding with concurrent writers")

    async def _read(self, work: Callable[[Tx], Coroutine[Any, Any, R]]) -> R:
        """Run ``work`` on a pooled connection in autocommit mode (reads see committed rows)."""
        return await self._query(lambda connection: work(_Tx(connection)))

    async def _write(self, work: Callable[[Tx], Coroutine[Any, Any, R]], *, what: str) -> R:
        return await self._transaction(lambda connection: work(_Tx(connection)), what=what)

    async def _take_lock(self, tx: Tx, purpose: str) -> None:
        """The transaction-scoped advisory lock for ``purpose``: every process takes turns."""
        await tx.run("SELECT pg_advisory_xact_lock(?)", (self._lock_key(purpose),))

    async def _pause(self, attempt: int) -> None:
        await _backoff(attempt)

    def _duplicate(self, exc: Exception, what: str) -> RemediationError:
        if isinstance(exc, errors.ForeignKeyViolation):
            return StoreError(f"{what}: {exc.diag.message_primary}")
        assert isinstance(exc, errors.UniqueViolation)
        if exc.diag.constraint_name == _ACTIVE_REQUEST_INDEX:
            return DuplicateError(f"{what}: its case already has an active request")
        return DuplicateError(f"{what}: {exc.diag.message_primary}")

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> TupleRow | None:
        async def work(connection: Connection) -> TupleRow | None:
            return await _row(connection, sql, params)

        return await self._query(work)

    async def schema_version(self) -> int:
        """The number of the last migration applied to the schema."""
        row = await self._fetchone("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return 0 if row is None else int(row[0])

    # -- replay claims ----------------------------------------------------------------------

    async def claim_replay(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Claim ``key`` until ``expires_at``: ``True`` for the first caller in any process only.

        The primary key decides: a concurrent insert of the same key waits for the first one's
        transaction and then does nothing. Claims that expired before ``now`` are pruned in the
        same transaction, a batch at a time, skipping rows another pruner holds.
        """

        async def work(tx: Tx) -> bool:
            await tx.run(
                "DELETE FROM replay_claims WHERE key IN (SELECT key FROM replay_claims "
                "WHERE expires_at < ? ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED)",
                (now,),
            )
            inserted = await tx.run(
                "INSERT INTO replay_claims (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, expires_at),
            )
            return inserted == 1

        return await self._write(work, what="claiming a replay record")

    async def _lock_people(self, tx: Tx, keys: Iterable[str]) -> None:
        """Take the transaction's locks on the people (identity keys) it may open, join or settle.

        Keys fall into :data:`_PERSON_LOCK_BUCKETS` advisory locks taken in ascending order:
        writers naming a common person take turns, the others run side by side, and nobody
        waits in a circle. Bounded, so a 500-alert batch holds a fixed number of locks.
        """
        buckets = sorted({_person_bucket(key) for key in keys})
        locks = [self._lock_key(f"person:{bucket}") for bucket in buckets]
        # unnest() yields the array in order, so the locks are taken in ascending bucket order.
        await tx.run("SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) AS k", (locks,))

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
        await self._fetchone(
            "INSERT INTO jobs (key, kind, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
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

    async def release_job(self, key: str, worker: str) -> None:
        """Drop ``worker``'s lease on an unfinished job so it is claimable at once."""
        await self._fetchone(
            "UPDATE jobs SET lease_until = NULL "
            "WHERE key = %s AND worker = %s AND finished_at IS NULL RETURNING key",
            (key, worker),
        )

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


async def _row(connection: Connection, sql: str, params: Sequence[Any] = ()) -> TupleRow | None:
    cursor = await connection.execute(sql, params)
    return await cursor.fetchone()


async def _value(connection: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    row = await _row(connection, sql, params)
    return None if row is None else row[0]


def _person_bucket(key: str) -> int:
    """Which of the person locks guards identity key ``key`` (stable across processes)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _PERSON_LOCK_BUCKETS
