"""The SQL both stores share: statements, row mapping and the transactions built from them.

:class:`SqlStore` holds everything SQLite and PostgreSQL do alike (cases, alerts, requests, the
audit trail, settings), written once against a small :class:`Tx` (one transaction's statements)
and a :class:`Dialect` (placeholders, ordering column, booleans, how times are stored). The two
stores supply only what truly differs: how a transaction begins and locks (``BEGIN IMMEDIATE``
on SQLite's one writer; advisory and row locks on PostgreSQL), how connections are held (one
SQLite writer in a worker thread plus read connections; a psycopg async pool), leadership and
the job queue's claims (a lock file; ``SKIP LOCKED`` and the database's clock).

Statements are written with ``?`` placeholders; PostgreSQL's :class:`Tx` turns them into ``%s``.
A transaction body that meets a concurrent writer raises :class:`Collision`, and the store runs
the whole transaction again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from bot.domain.audit import AuditEvent, AuditKey, ChainCheck, Checkpoint
from bot.domain.campaigns import BulkRequest, Campaign, joinable, opens_campaign
from bot.domain.merging import OPEN_REQUEST_STATES, cancelled_for_merge, plan_merges
from bot.domain.models import ActionRequest, Alert, Case, IdentityRef, RequestState, ResponseAction
from bot.domain.policy import StormRule
from bot.errors import ConflictError, RemediationError, StoreError
from bot.store.base import AlertIntake, JobBacklog, Settlement
from bot.store.meta import MetaRecords
from bot.store.rows import (
    AUDIT_COLUMNS,
    LAST_AUDIT_EVENT,
    audit_checkpoint,
    decode_audit,
    next_audit_events,
    recheck_due,
    verify_audit_rows,
)

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V", Case, ActionRequest)
M = TypeVar("M", Campaign, BulkRequest)
R = TypeVar("R")
W = TypeVar("W")

MAX_CAS_ATTEMPTS = 20


class Collision(Exception):
    """A concurrent transaction got there first: roll back and run the whole transaction again."""


class Tx(Protocol):
    """The statements of one transaction (or of one read), with ``?`` placeholders."""

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        """The first row of ``sql``'s result, if any."""

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Every row of ``sql``'s result."""

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute ``sql``; how many rows it changed."""


@dataclass(frozen=True)
class Dialect:
    """Where the two SQL dialects' shared statements differ in a word."""

    order: str  # the column that keeps insertion order ("oldest first")
    active: str  # the test for an active case (matches the partial unique index)
    behind: str  # the test for a case whose card is behind (matches the partial index)
    unresolved: str  # the test for an active case awaiting its object id (matches the partial index)
    for_update: str  # how a read locks the rows it will change ("" where the writer is alone)
    time: Callable[[datetime], Any]  # a time as the database stores it
    audit_time: Callable[[datetime], Any]  # an audit event's time as its ``at`` column holds it
    duplicate_errors: tuple[type[Exception], ...]  # what a unique or foreign-key violation raises

    def time_or_none(self, value: datetime | None) -> Any:
        return None if value is None else self.time(value)


def utc_text(value: datetime) -> str:
    """A time as fixed-width UTC text (microseconds always present): text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def marks(values: Sequence[Any]) -> str:
    """Placeholders for an ``IN (...)`` list (``NULL`` for none, which matches nothing)."""
    return ", ".join("?" for _ in values) or "NULL"


def decode(model: type[T], row: Sequence[Any]) -> T:
    """The domain object a row's ``(data, version)`` holds."""
    return model.model_validate_json(row[0]).model_copy(update={"version": int(row[1])})


def drive(work: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine that never waits (SQLite's statements are synchronous) to its end."""
    try:
        work.send(None)
    except StopIteration as done:
        result: R = done.value
        return result
    work.close()
    raise RuntimeError("a SQLite transaction body waited on something; it must not")


class SqlStore(MetaRecords):
    """Everything a :class:`bot.store.base.Store` does alike on SQLite and PostgreSQL.

    A store provides :attr:`dialect`, :meth:`_read` (a read that needs no transaction),
    :meth:`_write` (one transaction, run again on :class:`Collision`), and, where it has them,
    :meth:`_take_lock` (a named lock held to commit) and :meth:`_pause` (back-off between attempts).
    """

    dialect: Dialect
    _audit_key: AuditKey | None

    async def _read(self, work: Callable[[Tx], Coroutine[Any, Any, R]]) -> R:
        raise NotImplementedError

    async def _write(self, work: Callable[[Tx], Coroutine[Any, Any, R]], *, what: str) -> R:
        raise NotImplementedError

    async def _take_lock(self, tx: Tx, purpose: str) -> None:
        """Take the lock called ``purpose`` until the transaction ends (none where writers take turns)."""

    async def _lock_people(self, tx: Tx, keys: Iterable[str]) -> None:
        """Lock the people (identity keys) a transaction may open, join or settle cases of."""

    async def _pause(self, attempt: int) -> None:
        """Wait before compare-and-swap attempt ``attempt + 1`` (nothing by default)."""

    def _duplicate(self, exc: Exception, what: str) -> RemediationError:
        """The error for a unique or foreign-key violation while writing ``what``."""
        raise NotImplementedError

    # -- small reads and writes -------------------------------------------------------------

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return await self._read(lambda tx: tx.all(sql, params))

    async def _first(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        return await self._read(lambda tx: tx.one(sql, params))

    async def audit_after(self, sequence: int, *, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` audit events after ``sequence``, oldest first (the primary key serves it)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        rows = await self._rows(
            "SELECT sequence, data FROM audit_events WHERE sequence > ? ORDER BY sequence LIMIT ?",
            (sequence, limit),
        )
        return [decode_audit(row[0], row[1]) for row in rows]

    async def export_cursor(self, name: str) -> int:
        """The last audit sequence the export ``name`` has delivered (0: none yet)."""
        value = await self._get_meta(f"export:{name}")
        return 0 if value is None else int(value)

    async def advance_export_cursor(self, name: str, expected: int, to: int) -> bool:
        """Compare-and-swap the export cursor from ``expected`` to ``to``; ``False`` if it had moved."""
        key = f"export:{name}"

        async def work(tx: Tx) -> bool:
            await tx.run("INSERT INTO meta (key, value) VALUES (?, '0') ON CONFLICT (key) DO NOTHING", (key,))
            row = await tx.one(f"SELECT value FROM meta WHERE key = ?{self.dialect.for_update}", (key,))
            if row is None or int(row[0]) != expected:
                return False
            await tx.run("UPDATE meta SET value = ? WHERE key = ?", (str(to), key))
            return True

        return await self._write(work, what=f"advancing the {name} export cursor")

    async def job_backlog(self) -> JobBacklog:
        """Unfinished jobs: how many, and when the oldest was queued (the partial index serves it)."""
        row = await self._first("SELECT count(*), min(enqueued_at) FROM jobs WHERE finished_at IS NULL")
        if row is None:
            return JobBacklog(0, None)
        oldest = row[1]
        if isinstance(oldest, str):
            oldest = datetime.fromisoformat(oldest)
        return JobBacklog(int(row[0]), oldest)

    async def _models(self, model: type[T], where: str, params: Sequence[Any] = ()) -> list[T]:
        table = "cases" if model is Case else "action_requests"
        rows = await self._rows(
            f"SELECT data, version FROM {table} WHERE {where} ORDER BY {self.dialect.order}", params
        )
        return [decode(model, row) for row in rows]

    async def _get_meta(self, key: str) -> str | None:
        row = await self._first("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    async def _set_meta(self, key: str, value: str) -> None:
        await self._write(
            lambda tx: tx.run(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            ),
            what="saving a setting",
        )

    async def replay_claimed(self, key: str, *, now: datetime) -> bool:
        """Whether a claim on ``key`` is held and has not expired by ``now``."""
        row = await self._first(
            "SELECT 1 FROM replay_claims WHERE key = ? AND expires_at >= ?", (key, self.dialect.time(now))
        )
        return row is not None

    async def release_replay(self, key: str) -> None:
        """Give a claim up (the work it guarded failed), so the same request may come again."""
        await self._write(
            lambda tx: tx.run("DELETE FROM replay_claims WHERE key = ?", (key,)),
            what="releasing a replay claim",
        )

    # -- cases ------------------------------------------------------------------------------

    async def record_alert(
        self, alert: Alert, *, new_case_id: str, now: datetime, storm: StormRule | None = None
    ) -> AlertIntake:
        """Add ``alert`` to its identity's active case, opening one if needed (one transaction)."""
        [intake] = await self.record_alerts([alert], new_case_id=lambda: new_case_id, now=now, storm=storm)
        return intake

    async def record_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        new_case_id: Callable[[], str],
        now: datetime,
        storm: StormRule | None = None,
        new_campaign_id: Callable[[], str] | None = None,
    ) -> list[AlertIntake]:
        """Record ``alerts`` in order in one transaction: all of them, or (on any failure) none.

        The people the batch names are locked first (see :meth:`_lock_people`), so batches
        naming several people in different orders wait for each other instead of deadlocking.
        With ``storm``, a case opened here joins the accepting campaign, or opens one when more
        than ``storm.threshold`` identities opened cases within ``storm.window`` (see
        :meth:`_campaign_for_new_case`), in the same transaction: a case that joins a campaign
        is never without it, so no card of its own is posted for it by mistake.
        """
        batch = list(alerts)
        keys: set[str] = set()
        for alert in batch:
            keys.add(alert.target.key)
            if alert.target.upn:
                keys.add(alert.target.upn.lower())  # an unresolved case it may settle

        async def work(tx: Tx) -> list[AlertIntake]:
            await self._lock_people(tx, keys)
            return [
                await self._record(tx, alert, new_case_id, now, storm, new_campaign_id or new_case_id)
                for alert in batch
            ]

        what = f"recording alert {batch[0].id!r}" if len(batch) == 1 else f"recording {len(batch)} alerts"
        return await self._write(work, what=what)

    async def rekey_case(self, case_id: str, identity: IdentityRef, *, now: datetime) -> Settlement | None:
        """Key an unresolved case on its object id, or merge it into the person's case (one transaction)."""
        if not identity.object_id:
            raise ValueError("a case is re-keyed on an Entra object id")

        async def work(tx: Tx) -> Settlement | None:
            stored = await tx.one("SELECT identity_key FROM cases WHERE id = ?", (case_id,))
            if stored is None:
                return None
            await self._lock_people(tx, {str(stored[0]), identity.key})
            row = await tx.one(
                "SELECT data, version, identity_key FROM cases "
                f"WHERE id = ? AND {self.dialect.active}{self.dialect.for_update}",
                (case_id,),
            )
            if row is None:
                return None
            if row[2] != stored[0]:
                raise Collision  # re-keyed between the two reads: look again
            case = decode(Case, row)
            if case.resolved:
                return None
            return await self._settle(tx, case, identity, now)

        return await self._write(work, what=f"re-keying case {case_id!r}")

    async def get_case(self, case_id: str) -> Case | None:
        """One case by id."""
        return await self._get(Case, "cases", case_id)

    async def find_active_case(self, identity: IdentityRef) -> Case | None:
        """The active case of an identity, if there is one."""
        found = await self._models(Case, f"identity_key = ? AND {self.dialect.active}", (identity.key,))
        return found[0] if found else None

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""
        return await self._models(Case, "1 = 1")

    async def list_cases_needing_publishing(self) -> list[Case]:
        """The cases whose card is missing or behind, oldest first (through a partial index)."""
        return await self._models(Case, self.dialect.behind)

    async def list_unresolved_cases(self) -> list[Case]:
        """The active cases still waiting for their person's object id, oldest first (through a
        partial index)."""
        return await self._models(Case, self.dialect.unresolved)

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case."""
        stored, _ = await self._swap(Case, "cases", case_id, mutate)
        return stored

    async def swap_case(self, case_id: str, decide: Callable[[Case], Case | W]) -> tuple[Case, Case | W]:
        """Compare-and-swap of one case that says whether this call's change was written."""
        return await self._swap(Case, "cases", case_id, decide)

    # -- action requests --------------------------------------------------------------------

    async def add_request(self, request: ActionRequest) -> ActionRequest:
        """Store a new action request (version 1); :class:`DuplicateError` if the case has one active."""
        stored = request.model_copy(update={"version": 1})
        time = self.dialect.time_or_none

        async def insert(tx: Tx) -> None:
            try:
                await tx.run(
                    "INSERT INTO action_requests "
                    "(id, case_id, state, action, started_at, recheck_at, data, version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (
                        stored.id,
                        stored.case_id,
                        stored.state.value,
                        stored.action.value,
                        time(stored.started_at),
                        time(recheck_due(stored)),
                        stored.model_dump_json(),
                    ),
                )
            except self.dialect.duplicate_errors as exc:
                raise self._duplicate(exc, f"action request {stored.id} on case {stored.case_id}") from exc

        await self._write(insert, what=f"adding action request {stored.id!r}")
        return stored

    async def get_request(self, request_id: str) -> ActionRequest | None:
        """One action request by id."""
        return await self._get(ActionRequest, "action_requests", request_id)

    async def list_requests(self, case_id: str) -> list[ActionRequest]:
        """A case's action requests, oldest first."""
        return await self._models(ActionRequest, "case_id = ?", (case_id,))

    async def list_requests_in(self, states: Iterable[RequestState]) -> list[ActionRequest]:
        """Every request in one of ``states``, oldest first (through the index on the state)."""
        wanted = [state.value for state in states]
        return await self._models(ActionRequest, f"state IN ({marks(wanted)})", wanted)

    async def list_requests_due_recheck(self, now: datetime) -> list[ActionRequest]:
        """Finished requests whose result awaits a re-check due by ``now``, oldest first."""
        return await self._models(ActionRequest, "recheck_at <= ?", (self.dialect.time(now),))

    async def count_started_since(
        self, counted: Collection[ResponseAction], since: datetime, *, exclude: str | None = None
    ) -> int:
        """How many requests (but ``exclude``) doing one of ``counted`` started at or after ``since``."""
        return await self._read(lambda tx: self._count_started(tx, counted, since, exclude))

    async def _count_started(
        self, tx: Tx, counted: Collection[ResponseAction], since: datetime, exclude: str | None
    ) -> int:
        actions = sorted(action.value for action in counted)
        row = await tx.one(
            "SELECT count(*) FROM action_requests "
            f"WHERE started_at >= ? AND action IN ({marks(actions)}) "
            "AND (CAST(? AS TEXT) IS NULL OR id <> ?)",
            (self.dialect.time(since), *actions, exclude, exclude),
        )
        return 0 if row is None else int(row[0])

    async def update_request(
        self, request_id: str, mutate: Callable[[ActionRequest], ActionRequest | None]
    ) -> ActionRequest:
        """Compare-and-swap update of one action request.

        :class:`DuplicateError` when the new state would make a second active request on its case.
        """
        stored, _ = await self._swap(ActionRequest, "action_requests", request_id, mutate)
        return stored

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

        Every starter (in every process) takes turns from the count to the commit (the store's
        ``blast-radius`` lock, or SQLite's one writer): the next one counts the start this one
        wrote. The row is locked too, so a compare-and-swap writer in between retries.
        """

        async def work(tx: Tx) -> tuple[ActionRequest, ActionRequest | W]:
            await self._take_lock(tx, "blast-radius")
            row = await tx.one(
                f"SELECT data, version FROM action_requests WHERE id = ?{self.dialect.for_update}",
                (request_id,),
            )
            if row is None:
                raise StoreError(f"no action_requests row {request_id!r}")
            current = decode(ActionRequest, row)
            outcome = decide(current, await self._count_started(tx, counted, since, request_id))
            if not isinstance(outcome, ActionRequest):
                return current, outcome
            stored = outcome.model_copy(update={"version": current.version + 1})
            if not await self._write_row(tx, "action_requests", stored, current.version):
                raise Collision
            return stored, stored

        return await self._write(work, what=f"starting action request {request_id!r}")

    # -- audit trail (append-only: nothing here updates or deletes a row) --------------------

    def _audit_row(self, event: AuditEvent) -> tuple[Any, ...]:
        """The row stored for ``event``, in :data:`~bot.store.rows.AUDIT_COLUMNS` order."""
        return (
            event.sequence,
            self.dialect.audit_time(event.at),
            event.actor_id,
            event.kind,
            event.case_id,
            event.request_id,
            event.identity,
            event.to_json(),
            event.hash,
        )

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

        The ``audit`` lock (SQLite: its one writer), held until commit, makes reading the last
        event and inserting the next a single turn for every writer in every process, so the
        chain stays linear and gap-free; readers are not blocked. An ``audit.key_changed`` event
        goes first when the key changed. ``ValueError`` for a payload that is not plain JSON,
        :class:`StoreError` when the trail is keyed and this store has no key (nothing is stored).
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

        async def work(tx: Tx) -> AuditEvent:
            await self._take_lock(tx, "audit")
            events = next_audit_events(await tx.one(LAST_AUDIT_EVENT), self._audit_key, fields)
            for event in events:
                try:
                    await tx.run(
                        f"INSERT INTO audit_events ({', '.join(AUDIT_COLUMNS)}) "
                        f"VALUES ({marks(AUDIT_COLUMNS)})",
                        self._audit_row(event),
                    )
                except self.dialect.duplicate_errors:
                    # Only a writer that skipped the lock can have taken this sequence; chain after it.
                    raise Collision from None
            return events[-1]

        return await self._write(work, what="appending an audit event")

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
        rows = await self._rows(sql, params)
        return [decode_audit(row[0], row[1]) for row in reversed(rows)]

    async def verify_audit(
        self, *, keys: Iterable[AuditKey] = (), checkpoints: Iterable[Checkpoint] = ()
    ) -> ChainCheck:
        """Verify the whole stored trail under the store's key and ``keys``, against
        ``checkpoints``, and name the first broken event.

        See :func:`bot.store.rows.verify_audit_rows`: unreadable data and query columns edited
        apart from the data are reported as well as breaks in the chain itself.
        """
        rows = await self._rows(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_events ORDER BY sequence")
        known = [key for key in (self._audit_key, *keys) if key is not None]
        return verify_audit_rows(rows, self._audit_row, known, checkpoints)

    async def audit_checkpoint(self, *, at: datetime, short: bool = False) -> Checkpoint | None:
        """The head of the trail as a checkpoint authenticated with the store's key."""
        return audit_checkpoint(await self._first(LAST_AUDIT_EVENT), self._audit_key, at=at, short=short)

    # -- campaigns and bulk requests (storm mode) -------------------------------------------

    async def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign by id."""
        return await self._get(Campaign, "campaigns", campaign_id)

    async def list_campaigns_needing_publishing(self) -> list[Campaign]:
        """Campaigns whose card is missing or behind, oldest first."""
        rows = await self._rows(
            f"SELECT data, version FROM campaigns WHERE needs_publishing = ? ORDER BY {self.dialect.order}",
            (True,),
        )
        return [decode(Campaign, row) for row in rows]

    async def list_campaigns(self) -> list[Campaign]:
        """Every campaign, oldest first."""
        rows = await self._rows(f"SELECT data, version FROM campaigns ORDER BY {self.dialect.order}")
        return [decode(Campaign, row) for row in rows]

    async def list_campaign_cases(self, campaign_id: str) -> list[Case]:
        """The active cases of a campaign, oldest first (through the index on ``campaign_id``).

        A storm's campaign holds a thousand cases of ten alerts each: they are decoded in a
        worker thread, so that this process goes on with its other work (a bulk action's next
        Graph batch) meanwhile instead of waiting for the whole list."""
        rows = await self._rows(
            f"SELECT data, version FROM cases WHERE campaign_id = ? AND {self.dialect.active} "
            f"ORDER BY {self.dialect.order}",
            (campaign_id,),
        )
        return await asyncio.to_thread(lambda: [decode(Case, row) for row in rows])

    async def swap_campaign(
        self, campaign_id: str, decide: Callable[[Campaign], Campaign | W]
    ) -> tuple[Campaign, Campaign | W]:
        """Compare-and-swap of one campaign that says whether this call's change was written."""
        return await self._swap_row(Campaign, "campaigns", campaign_id, decide)

    async def add_bulk(self, bulk: BulkRequest) -> BulkRequest:
        """Store a new bulk request (version 1)."""
        stored = bulk.model_copy(update={"version": 1})

        async def insert(tx: Tx) -> None:
            try:
                await tx.run(
                    "INSERT INTO bulk_requests (id, campaign_id, state, data, version) "
                    "VALUES (?, ?, ?, ?, 1)",
                    (stored.id, stored.campaign_id, stored.state.value, stored.model_dump_json()),
                )
            except self.dialect.duplicate_errors as exc:
                raise self._duplicate(exc, f"bulk request {stored.id}") from exc

        await self._write(insert, what=f"adding bulk request {stored.id!r}")
        return stored

    async def get_bulk(self, bulk_id: str) -> BulkRequest | None:
        """One bulk request by id."""
        return await self._get(BulkRequest, "bulk_requests", bulk_id)

    async def list_bulks(self, campaign_id: str) -> list[BulkRequest]:
        """A campaign's bulk requests, oldest first."""
        rows = await self._rows(
            f"SELECT data, version FROM bulk_requests WHERE campaign_id = ? ORDER BY {self.dialect.order}",
            (campaign_id,),
        )
        return [decode(BulkRequest, row) for row in rows]

    async def list_bulks_in(self, states: Iterable[RequestState]) -> list[BulkRequest]:
        """Every bulk request in one of ``states``, oldest first."""
        wanted = [state.value for state in states]
        rows = await self._rows(
            f"SELECT data, version FROM bulk_requests WHERE state IN ({marks(wanted)}) "
            f"ORDER BY {self.dialect.order}",
            wanted,
        )
        return [decode(BulkRequest, row) for row in rows]

    async def swap_bulk(
        self, bulk_id: str, decide: Callable[[BulkRequest], BulkRequest | W]
    ) -> tuple[BulkRequest, BulkRequest | W]:
        """Compare-and-swap of one bulk request that says whether this call's change was written."""
        return await self._swap_row(BulkRequest, "bulk_requests", bulk_id, decide)

    async def _swap_row(
        self, model: type[M], table: str, key: str, decide: Callable[[M], M | W]
    ) -> tuple[M, M | W]:
        for attempt in range(MAX_CAS_ATTEMPTS):
            current = await self._get(model, table, key)
            if current is None:
                raise StoreError(f"no {table} row {key!r}")
            outcome = decide(current)
            if not isinstance(outcome, model):
                return current, outcome
            stored: M = outcome.model_copy(update={"version": current.version + 1})
            if isinstance(stored, Campaign):
                extra = ", accepting = ?, needs_publishing = ?"
                columns: tuple[Any, ...] = (stored.accepting, stored.needs_publishing)
            else:
                extra, columns = ", state = ?", (stored.state.value,)
            statement = f"UPDATE {table} SET data = ?, version = ?{extra} WHERE id = ? AND version = ?"
            values = (stored.model_dump_json(), stored.version, *columns, key, current.version)
            write = partial(_run_statement, sql=statement, params=values)
            if await self._write(write, what=f"updating {table} row {key!r}") == 1:
                return stored, stored
            await self._pause(attempt)
        raise ConflictError(f"{table} row {key!r} kept changing under concurrent writers")

    # -- generic row access -----------------------------------------------------------------

    async def _get(self, model: type[T], table: str, key: str) -> T | None:
        row = await self._first(f"SELECT data, version FROM {table} WHERE id = ?", (key,))
        return None if row is None else decode(model, row)

    async def _write_row(self, tx: Tx, table: str, stored: Case | ActionRequest, expected: int) -> bool:
        """Write ``stored`` over version ``expected``, with the columns queries read; ``False`` when
        the row is no longer at that version. Requests keep their state, start and re-check times
        (the one-active-request rule, the blast radius and the sweep read them); cases whether
        their card is behind."""
        time = self.dialect.time_or_none
        if isinstance(stored, ActionRequest):
            extra = ", state = ?, started_at = ?, recheck_at = ?"
            columns: tuple[Any, ...] = (
                stored.state.value,
                time(stored.started_at),
                time(recheck_due(stored)),
            )
        else:
            extra = ", needs_publishing = ?, campaign_id = ?"
            columns = (stored.needs_publishing, stored.campaign_id or None)
        try:
            count = await tx.run(
                f"UPDATE {table} SET data = ?, version = ?{extra} WHERE id = ? AND version = ?",
                (stored.model_dump_json(), stored.version, *columns, stored.id, expected),
            )
        except self.dialect.duplicate_errors as exc:
            raise self._duplicate(exc, f"{table} row {stored.id!r}") from exc
        return count == 1

    async def _swap(
        self, model: type[V], table: str, key: str, decide: Callable[[V], V | W]
    ) -> tuple[V, V | W]:
        for attempt in range(MAX_CAS_ATTEMPTS):
            current = await self._get(model, table, key)
            if current is None:
                raise StoreError(f"no {table} row {key!r}")
            outcome = decide(current)
            if not isinstance(outcome, model):
                return current, outcome
            _check_same_person(current, outcome)
            stored: V = outcome.model_copy(update={"version": current.version + 1})
            write = partial(self._write_row, table=table, stored=stored, expected=current.version)
            if await self._write(write, what=f"updating {table} row {key!r}"):
                return stored, stored
            await self._pause(attempt)
        raise ConflictError(f"{table} row {key!r} kept changing under concurrent writers")

    # -- inside a transaction: recording alerts, settling and merging cases ----------------

    async def _lock_case(self, tx: Tx, where: str, value: str) -> Case | None:
        """The case matching ``where`` (one ``?``), locked for the rest of the transaction."""
        row = await tx.one(
            f"SELECT data, version FROM cases WHERE {where}{self.dialect.for_update}", (value,)
        )
        return None if row is None else decode(Case, row)

    async def _save_case(self, tx: Tx, case: Case, expected_version: int) -> Case:
        """Write ``case`` (locked) as version ``expected_version + 1``."""
        stored = case.model_copy(update={"version": expected_version + 1})
        if not await self._write_row(tx, "cases", stored, expected_version):
            raise Collision
        return stored

    async def _record(
        self,
        tx: Tx,
        alert: Alert,
        new_case_id: Callable[[], str],
        now: datetime,
        storm: StormRule | None = None,
        new_campaign_id: Callable[[], str] | None = None,
    ) -> AlertIntake:
        """Record one alert inside the caller's transaction (see :meth:`record_alerts`)."""
        known = await tx.one("SELECT case_id FROM alerts WHERE id = ?", (alert.id,))
        if known is not None:
            case = await self._lock_case(tx, "id = ?", known[0])
            if case is None:
                raise Collision  # it changed between our statements; the retry sees the settled state
            if not case.changed_by(alert):
                return AlertIntake(case, case_created=False, alert_new=False, alert_changed=False)
            case = await self._save_case(tx, case.with_alert(alert), case.version)
            return AlertIntake(case, case_created=False, alert_new=False, alert_changed=True)
        active = f"identity_key = ? AND {self.dialect.active}"
        target = alert.target
        settled: Settlement | None = None
        if target.object_id and target.upn and target.upn.lower() != target.key:
            stray = await self._lock_case(tx, active, target.upn.lower())
            if stray is not None:
                settled = await self._settle(tx, stray, target, now)
        current = await self._lock_case(tx, active, target.key)
        campaign: tuple[str, bool] = ("", False)
        # When the person's trouble began: a backlog ingested at once (after an outage) is not a
        # storm unless its alerts were created close together.
        seen = min(alert.created_at, now)
        if current is None:
            if storm is not None:
                campaign = await self._campaign_for_new_case(
                    tx, storm, seen, now, new_campaign_id or new_case_id
                )
            case = Case(
                id=new_case_id(),
                identity=target,
                alerts=(alert,),
                opened_at=now,
                campaign_id=campaign[0],
                version=1,
            )
            # A concurrent insert of the identity's case makes this do nothing: run again, and join it.
            inserted = await tx.run(
                "INSERT INTO cases (id, identity_key, data, version, needs_publishing, unresolved, "
                "first_seen_at, campaign_id) "
                "VALUES (?, ?, ?, 1, ?, ?, ?, ?) "
                f"ON CONFLICT (identity_key) WHERE {self.dialect.active} DO NOTHING",
                (
                    case.id,
                    target.key,
                    case.model_dump_json(),
                    case.needs_publishing,
                    not case.resolved,
                    self.dialect.time(seen),
                    case.campaign_id or None,
                ),
            )
            if inserted != 1:
                raise Collision
            created = True
        else:
            case, created = await self._save_case(tx, current.with_alert(alert), current.version), False
        recorded = await tx.run(
            "INSERT INTO alerts (id, case_id) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (alert.id, case.id)
        )
        if recorded != 1:
            raise Collision  # recorded by a concurrent caller: undo the case change, look again
        return AlertIntake(
            case,
            case_created=created,
            alert_new=True,
            alert_changed=True,
            settled=settled,
            campaign_opened=campaign[1],
        )

    async def _campaign_for_new_case(
        self, tx: Tx, storm: StormRule, seen: datetime, now: datetime, new_campaign_id: Callable[[], str]
    ) -> tuple[str, bool]:
        """The campaign a case opened now joins, and whether this call opened it (``""`` for none).

        Time is when each case's first alert was created (``seen``), not when the bot stored it:
        the identities of a storm are compromised close together, while a backlog read after an
        outage is not a storm.

        Every caller takes turns here (the ``campaign`` lock, or SQLite's one writer), and the
        store allows one accepting campaign (a unique index), so replicas racing through the
        same storm open exactly one. A campaign accepts cases while they keep arriving within
        the window of its last join; then it stops accepting, and a later storm opens another.
        When a campaign opens, the cases opened within the window join it too: those whose card
        is not out yet are listed on the campaign card instead.
        """
        await self._take_lock(tx, "campaign")
        row = await tx.one(
            f"SELECT data, version FROM campaigns WHERE accepting = ?{self.dialect.for_update}", (True,)
        )
        if row is not None:
            campaign = decode(Campaign, row)
            if joinable(campaign, seen):
                joined = campaign.revised(
                    last_joined_at=max(campaign.last_joined_at, seen),
                    first_joined_at=min(campaign.first_joined_at or seen, seen),
                    members=campaign.members + 1,
                )
                await self._save_campaign(tx, joined, campaign.version)
                return campaign.id, False
            closed = campaign.revised(accepting=False)  # its card then says so
            await self._save_campaign(tx, closed, campaign.version)
        recent = await tx.all(
            f"SELECT data, version FROM cases WHERE {self.dialect.active} "
            "AND first_seen_at >= ? AND first_seen_at <= ? "
            f"ORDER BY {self.dialect.order}{self.dialect.for_update}",
            (self.dialect.time(seen - storm.window), self.dialect.time(seen + storm.window)),
        )
        if not opens_campaign(len(recent) + 1, storm):
            return "", False
        opened = Campaign(
            id=new_campaign_id(),
            opened_at=now,
            last_joined_at=max([seen, *(decode(Case, row).first_seen for row in recent)]),
            first_joined_at=min([seen, *(decode(Case, row).first_seen for row in recent)]),
            threshold=storm.threshold,
            window_seconds=int(storm.window.total_seconds()),
            members=len(recent) + 1,
            version=1,
        )
        try:
            await tx.run(
                "INSERT INTO campaigns (id, accepting, needs_publishing, data, version) "
                "VALUES (?, ?, ?, ?, 1)",
                (opened.id, True, True, opened.model_dump_json()),
            )
        except self.dialect.duplicate_errors:
            raise Collision from None  # another writer opened it first: join that one instead
        for found in recent:
            member = decode(Case, found)
            if not member.campaign_id and not member.merged_into:
                await self._save_case(
                    tx, member.model_copy(update={"campaign_id": opened.id}), member.version
                )
        return opened.id, True

    async def _save_campaign(self, tx: Tx, campaign: Campaign, expected: int) -> Campaign:
        stored = campaign.model_copy(update={"version": expected + 1})
        written = await tx.run(
            "UPDATE campaigns SET data = ?, version = ?, accepting = ?, needs_publishing = ? "
            "WHERE id = ? AND version = ?",
            (
                stored.model_dump_json(),
                stored.version,
                stored.accepting,
                stored.needs_publishing,
                stored.id,
                expected,
            ),
        )
        if written != 1:
            raise Collision
        return stored

    async def _settle(self, tx: Tx, stray: Case, identity: IdentityRef, now: datetime) -> Settlement:
        """Key the unresolved ``stray`` (locked) on ``identity``'s object id, or merge it into that
        person's case."""
        key = IdentityRef(object_id=identity.object_id).key
        owner = await self._lock_case(tx, f"identity_key = ? AND {self.dialect.active}", key)
        if owner is None:
            rekeyed = stray.rekeyed(identity).model_copy(update={"version": stray.version + 1})
            try:
                written = await tx.run(
                    "UPDATE cases SET identity_key = ?, data = ?, version = ?, needs_publishing = ?, "
                    "unresolved = ? WHERE id = ? AND version = ?",
                    (
                        key,
                        rekeyed.model_dump_json(),
                        rekeyed.version,
                        rekeyed.needs_publishing,
                        False,  # keyed on the object id now
                        stray.id,
                        stray.version,
                    ),
                )
            except self.dialect.duplicate_errors:
                raise Collision from None  # the person's case was opened meanwhile: merge into it instead
            if written != 1:
                raise Collision
            return Settlement(case=rekeyed)
        survivor = await self._save_case(tx, owner.absorbing(stray), owner.version)
        reason = (
            f"Merged into case {survivor.id}: {stray.identity.upn} is Entra object id "
            f"{identity.object_id}, and one person has one case."
        )
        closed = await close_case(self.dialect, tx, stray, survivor.id, reason, now)
        return Settlement(case=survivor, closed=closed)


async def _run_statement(tx: Tx, *, sql: str, params: Sequence[Any]) -> int:
    return await tx.run(sql, params)


def _check_same_person(current: BaseModel, changed: BaseModel) -> None:
    if (
        isinstance(current, Case)
        and isinstance(changed, Case)
        and current.identity.key != changed.identity.key
    ):
        raise StoreError(f"case {current.id}: whom a case is about changes only by re-keying it")


async def close_case(
    dialect: Dialect,
    tx: Tx,
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
    flag = "" if migrating else ", needs_publishing = ?"
    written = await tx.run(
        f"UPDATE cases SET active = ?, data = ?, version = ?{flag} WHERE id = ? AND version = ?",
        (
            False,
            closed.model_dump_json(),
            closed.version,
            *(() if migrating else (closed.needs_publishing,)),
            duplicate.id,
            duplicate.version,
        ),
    )
    if written != 1:
        raise Collision
    await tx.run("UPDATE alerts SET case_id = ? WHERE case_id = ?", (survivor_id, duplicate.id))
    states = [state.value for state in OPEN_REQUEST_STATES]
    rows = await tx.all(
        f"SELECT data, version FROM action_requests WHERE case_id = ? AND state IN ({marks(states)})"
        f"{dialect.for_update}",
        (duplicate.id, *states),
    )
    for row in rows:
        request = decode(ActionRequest, row)
        cancelled = cancelled_for_merge(request, closed, now).model_copy(
            update={"version": request.version + 1}
        )
        await tx.run(
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


async def merge_duplicate_cases(dialect: Dialect, tx: Tx) -> None:
    """Migration 4: merge the duplicate open cases of one person (see :mod:`bot.domain.merging`)."""
    now = datetime.now(UTC)
    rows = await tx.all(
        f"SELECT data, version, identity_key FROM cases WHERE {dialect.active} "
        f"ORDER BY {dialect.order}{dialect.for_update}"
    )
    active = [(decode(Case, row), str(row[2])) for row in rows]
    plan = plan_merges(active, why="found when the bot was upgraded")
    current = {case.id: case for case, _ in active}
    # Close the duplicates first, so the unique index never sees two open cases under one key.
    for duplicate in plan.closed:
        before = current[duplicate.id]
        await close_case(
            dialect, tx, before, duplicate.merged_into, duplicate.closed_reason, now, migrating=True
        )
    for case, key in plan.open_cases:
        before = current[case.id]
        stored = case.model_copy(update={"version": before.version + 1})
        await tx.run(
            "UPDATE cases SET identity_key = ?, data = ?, version = ? WHERE id = ? AND version = ?",
            (key, stored.model_dump_json(), stored.version, case.id, before.version),
        )


async def index_unresolved_cases(dialect: Dialect, tx: Tx) -> None:
    """Migration 8 (after its DDL): flag the active cases still keyed on a UPN."""
    for row in await tx.all(f"SELECT data, version FROM cases WHERE {dialect.active}"):
        case = decode(Case, row)
        if not case.resolved:
            await tx.run("UPDATE cases SET unresolved = ? WHERE id = ?", (True, case.id))


async def index_live_rows(dialect: Dialect, tx: Tx) -> None:
    """Migration 7 (after its DDL): fill ``needs_publishing`` and ``recheck_at`` from the data."""
    for row in await tx.all("SELECT data, version FROM cases"):
        case = decode(Case, row)
        if case.needs_publishing:
            await tx.run("UPDATE cases SET needs_publishing = ? WHERE id = ?", (True, case.id))
    for row in await tx.all(
        "SELECT data, version FROM action_requests WHERE state IN ('succeeded', 'failed')"
    ):
        request = decode(ActionRequest, row)
        due = recheck_due(request)
        if due is not None:
            await tx.run(
                "UPDATE action_requests SET recheck_at = ? WHERE id = ?", (dialect.time(due), request.id)
            )
