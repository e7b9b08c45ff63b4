"""The store port: what the service layer needs from persistent state.

Every write of a case or an action request is compare-and-swap on the row's ``version``:
``update_*(id, mutate)`` reads the row, calls ``mutate`` (a pure function of the current value),
and writes only if nobody wrote in between, retrying otherwise. ``mutate`` may return ``None`` to
leave the row alone. A double click, a retried invoke or a second replica is thereby harmless.

Several replicas share one PostgreSQL store and coordinate through it: :meth:`Store.try_lead`
elects the one replica that runs a singleton loop (the alert poller), and the job queue
(:meth:`Store.enqueue_job`, :meth:`Store.claim_job`, :meth:`Store.finish_job`) hands each action
execution to exactly one live worker at a time, re-offering it when that worker dies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from bot.domain.audit import AuditEvent, ChainCheck
from bot.domain.models import (
    ActionRequest,
    Alert,
    Case,
    ChannelRef,
    IdentityRef,
    RequestState,
    ResponseAction,
)

R = TypeVar("R")


@dataclass(frozen=True)
class AlertIntake:
    """What recording one alert did: the case it joined, and whether anything changed."""

    case: Case
    case_created: bool
    alert_new: bool
    alert_changed: bool


@dataclass(frozen=True)
class Job:
    """One claimed job: what to do (``kind``, ``payload``) and the claim on it.

    ``lease_until`` is when the claim lapses and the job becomes claimable again unless
    finished; ``attempts`` counts claims so far, this one included (above 1 means an earlier
    worker died or overran its lease, and the work may have been started before).
    """

    key: str
    kind: str
    payload: dict[str, Any]
    worker: str
    lease_until: datetime
    attempts: int


class Store(Protocol):
    """Persistent state of the bot.

    Implementations: :class:`bot.store.sqlite.SqliteStore` (one replica) and
    :class:`bot.store.postgres.PostgresStore` (one or several); :func:`bot.store.open_store`
    picks one from a URL.
    """

    async def close(self) -> None:
        """Release connections, and with them any leadership held."""

    async def schema_version(self) -> int:
        """The number of the last schema migration applied."""

    async def get_watermark(self, source: str) -> datetime | None:
        """The last ``lastUpdateDateTime`` fully ingested from ``source``."""

    async def set_watermark(self, source: str, value: datetime) -> None:
        """Advance the watermark of ``source``."""

    async def get_channel(self) -> ChannelRef | None:
        """The incident channel captured from the installation, if any."""

    async def set_channel(self, channel: ChannelRef) -> None:
        """Remember the incident channel."""

    async def record_alert(self, alert: Alert, *, new_case_id: str, now: datetime) -> AlertIntake:
        """Add ``alert`` to its identity's active case, opening one (``new_case_id``) if needed.

        Idempotent by alert id: the same alert twice changes nothing the second time.
        """

    async def get_case(self, case_id: str) -> Case | None:
        """One case by id."""

    async def find_active_case(self, identity: IdentityRef) -> Case | None:
        """The identity's active case, if it has one."""

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case; returns the stored value."""

    async def swap_case(self, case_id: str, decide: Callable[[Case], Case | R]) -> tuple[Case, Case | R]:
        """Compare-and-swap of one case that says who won.

        ``decide`` gets the current case and returns the case to write, or anything else (a
        refusal) to leave the row alone; it runs again on the newer value when another writer
        got in between. Returns the stored case and ``decide``'s last answer: a :class:`Case`
        (the one written, version included) exactly when this call's change was written.
        """

    async def add_request(self, request: ActionRequest) -> ActionRequest:
        """Store a new action request."""

    async def get_request(self, request_id: str) -> ActionRequest | None:
        """One action request by id."""

    async def list_requests(self, case_id: str) -> list[ActionRequest]:
        """A case's action requests, oldest first."""

    async def list_requests_in(self, states: Iterable[RequestState]) -> list[ActionRequest]:
        """Every request in one of ``states``, oldest first."""

    async def update_request(
        self, request_id: str, mutate: Callable[[ActionRequest], ActionRequest | None]
    ) -> ActionRequest:
        """Compare-and-swap update of one action request; returns the stored value."""

    async def swap_request(
        self, request_id: str, decide: Callable[[ActionRequest], ActionRequest | R]
    ) -> tuple[ActionRequest, ActionRequest | R]:
        """Compare-and-swap of one action request that says who won (see :meth:`swap_case`)."""

    async def start_request(
        self,
        request_id: str,
        decide: Callable[[ActionRequest, int], ActionRequest | R],
        *,
        counted: Collection[ResponseAction],
        since: datetime,
    ) -> tuple[ActionRequest, ActionRequest | R]:
        """Count and claim in one turn: the blast-radius check.

        In one transaction that concurrent callers (in any process) take in turns: count the
        other requests whose action is in ``counted`` and that started at or after ``since``,
        call ``decide(current, count)``, and write its answer when it is a request (as
        :meth:`swap_request`). A limit that ``decide`` checks against the count therefore holds
        exactly however many replicas start requests at once.
        """

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
        """Record one audit event chained to the last one (see :mod:`bot.domain.audit`).

        Atomic: concurrent callers get consecutive sequence numbers and one linear chain.
        Raises ``ValueError`` when ``payload`` is not plain JSON. Audit rows are never updated
        or deleted.
        """

    async def list_audit(
        self, *, identity: str | None = None, case_id: str | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events in stored order, filtered by identity (case-insensitive) and/or case.

        ``limit`` keeps the newest ``limit`` events, still returned oldest first.
        """

    async def verify_audit(self) -> ChainCheck:
        """Verify the stored audit trail; the verdict names the first broken event."""

    # -- coordination between replicas -----------------------------------------------------

    async def try_lead(self, name: str) -> bool:
        """Become, or confirm still being, the one leader called ``name``; ``False`` if another is.

        Call it before every round of leader-only work: leadership can be lost (a dropped
        database connection), and the answer says so. A process that dies loses leadership
        without any clean-up, so another replica's next call takes over.
        """

    async def release_lead(self, name: str) -> None:
        """Give up leadership of ``name``; nothing happens when not holding it."""

    async def enqueue_job(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        """Queue a job of ``kind``; idempotent by ``key`` (the first payload stays).

        Raises ``ValueError`` when ``payload`` is not plain JSON.
        """

    async def claim_job(self, kind: str, worker: str, lease: timedelta) -> Job | None:
        """Claim the oldest unfinished job of ``kind`` for ``lease``, or ``None`` if there is none.

        Each job is held by one worker at a time; a job whose lease ran out without
        :meth:`finish_job` (its worker died) is claimable again.
        """

    async def renew_job(self, key: str, worker: str, lease: timedelta) -> bool:
        """Extend ``worker``'s claim on an unfinished job to ``lease`` from now.

        ``False`` when the job is finished or another worker has claimed it since (this one's
        lease ran out): the caller has lost it and must not act on the job's behalf any more.
        """

    async def finish_job(self, key: str, worker: str) -> None:
        """Mark the job done so it is never claimed again; idempotent.

        Raises :class:`~bot.errors.ConflictError` when another worker has claimed the job since
        (``worker``'s lease ran out), :class:`~bot.errors.StoreError` for an unknown key.
        """
