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

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from bot.domain.audit import AuditEvent, AuditKey, ChainCheck, Checkpoint
from bot.domain.campaigns import BulkRequest, Campaign
from bot.domain.models import (
    ActionRequest,
    Alert,
    Case,
    ChannelRef,
    IdentityRef,
    RequestState,
    ResponseAction,
)
from bot.domain.policy import StormRule

R = TypeVar("R")


@dataclass(frozen=True)
class Settlement:
    """An unresolved case (keyed on a UPN) settled on its person's Entra object id.

    ``case`` is the person's one active case afterwards. ``closed`` is the unresolved case when
    the person already had a case it was merged into (closed, ``merged_into`` set, its alerts
    moved); ``None`` when the unresolved case itself was re-keyed (then it is ``case``).
    """

    case: Case
    closed: Case | None = None


@dataclass(frozen=True)
class AlertIntake:
    """What recording one alert did: the case it joined, and whether anything changed.

    ``settled`` is set when the alert named a person by object id and UPN whose UPN had an
    unresolved case: that case was settled first, so the alert joined the person's one case.
    """

    case: Case
    case_created: bool
    alert_new: bool
    alert_changed: bool
    settled: Settlement | None = None
    campaign_opened: bool = False


@dataclass(frozen=True)
class JobBacklog:
    """Unfinished jobs (queued or running): how many, and when the oldest was queued."""

    pending: int
    oldest_enqueued_at: datetime | None


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

    async def record_alert(
        self, alert: Alert, *, new_case_id: str, now: datetime, storm: StormRule | None = None
    ) -> AlertIntake:
        """Add ``alert`` to its identity's active case, opening one (``new_case_id``) if needed.

        Idempotent by alert id: the same alert twice changes nothing the second time. The case
        is the one active case of ``alert.target.key`` (the object id, else the lower-cased
        UPN): a uniqueness rule in the store admits one, so concurrent callers naming one
        person join one case. An alert naming both an object id and a UPN that has an
        unresolved case settles that case first (see :meth:`rekey_case`).
        """

    async def record_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        new_case_id: Callable[[], str],
        now: datetime,
        storm: StormRule | None = None,
        new_campaign_id: Callable[[], str] | None = None,
    ) -> list[AlertIntake]:
        """Record ``alerts`` in order, as :meth:`record_alert` does, all in one transaction.

        With ``storm``, a case opened here joins the accepting campaign, or opens one (id from
        ``new_campaign_id``) when more than ``storm.threshold`` identities opened cases within
        ``storm.window``; replicas racing through one storm open exactly one campaign.

        All or nothing: when recording any of them fails, none is stored (``ValueError`` for an
        alert that cannot be stored, e.g. text that is not valid Unicode). ``new_case_id`` is
        called for an id whenever a case may have to be opened. Returns one intake per alert.
        """

    async def rekey_case(self, case_id: str, identity: IdentityRef, *, now: datetime) -> Settlement | None:
        """Settle an unresolved case on the Entra object id its identity resolved to.

        The case is keyed on ``identity.object_id`` from now on, or, when that person already
        has an active case, merged into it: its alerts move there and it is closed with the
        reason (open requests on it are cancelled). One transaction. ``None`` when there is
        nothing to settle (the case was settled meanwhile, or is closed). ``ValueError`` when
        ``identity`` has no object id.
        """

    async def get_case(self, case_id: str) -> Case | None:
        """One case by id."""

    async def get_campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign by id."""

    async def list_campaigns(self) -> list[Campaign]:
        """Every campaign, oldest first."""

    async def list_campaigns_needing_publishing(self) -> list[Campaign]:
        """Campaigns whose card is missing or behind, oldest first."""

    async def list_campaign_cases(self, campaign_id: str) -> list[Case]:
        """The active cases of a campaign, oldest first."""

    async def swap_campaign(
        self, campaign_id: str, decide: Callable[[Campaign], Campaign | R]
    ) -> tuple[Campaign, Campaign | R]:
        """Compare-and-swap of one campaign; the second value is ``decide``'s answer when it
        returned no campaign (nothing written)."""

    async def add_bulk(self, bulk: BulkRequest) -> BulkRequest:
        """Store a new bulk request (version 1)."""

    async def get_bulk(self, bulk_id: str) -> BulkRequest | None:
        """One bulk request by id."""

    async def list_bulks(self, campaign_id: str) -> list[BulkRequest]:
        """A campaign's bulk requests, oldest first."""

    async def list_bulks_in(self, states: Iterable[RequestState]) -> list[BulkRequest]:
        """Every bulk request in one of ``states``, oldest first."""

    async def swap_bulk(
        self, bulk_id: str, decide: Callable[[BulkRequest], BulkRequest | R]
    ) -> tuple[BulkRequest, BulkRequest | R]:
        """Compare-and-swap of one bulk request (as :meth:`swap_campaign`)."""

    async def find_active_case(self, identity: IdentityRef) -> Case | None:
        """The identity's active case, if it has one."""

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""

    async def list_unresolved_cases(self) -> list[Case]:
        """The active cases still keyed on a UPN, waiting for their person's Entra object id,
        oldest first: an indexed query, so closed and resolved cases cost it nothing."""

    async def list_cases_needing_publishing(self) -> list[Case]:
        """The cases whose card is missing or behind (:attr:`Case.needs_publishing`), oldest first.

        An indexed query kept up to date by every case write: its cost follows the cases waiting
        to be published, not every case ever stored.
        """

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case; returns the stored value.

        :class:`~bot.errors.StoreError` when ``mutate`` would change whom the case is about
        (its identity key): that happens only through :meth:`rekey_case`.
        """

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
        """Every request in one of ``states``, oldest first (an index on the state finds them)."""

    async def list_requests_due_recheck(self, now: datetime) -> list[ActionRequest]:
        """Succeeded or failed requests whose result awaits a re-check due at or before ``now``,
        oldest first; an indexed query, so finished requests with nothing to re-check cost nothing."""

    async def count_started_since(
        self, counted: Collection[ResponseAction], since: datetime, *, exclude: str | None = None
    ) -> int:
        """How many requests whose action is in ``counted`` started at or after ``since``
        (``exclude``: a request id not to count); an indexed time-window count."""

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

        The event is keyed with the store's audit key (given when it was opened); when that key
        is not the last event's, an ``audit.key_changed`` event is recorded first. Atomic:
        concurrent callers get consecutive sequence numbers and one linear chain. Raises
        ``ValueError`` when ``payload`` is not plain JSON, :class:`~bot.errors.StoreError` when
        the trail is keyed and the store has no key. Audit rows are never updated or deleted.
        """

    async def list_audit(
        self, *, identity: str | None = None, case_id: str | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events in stored order, filtered by identity (case-insensitive) and/or case.

        ``limit`` keeps the newest ``limit`` events, still returned oldest first.
        """

    async def verify_audit(
        self, *, keys: Iterable[AuditKey] = (), checkpoints: Iterable[Checkpoint] = ()
    ) -> ChainCheck:
        """Verify the stored audit trail under the store's key and ``keys`` (earlier keys),
        against ``checkpoints`` published outside the store; the verdict names the first break."""

    async def audit_checkpoint(self, *, at: datetime, short: bool = False) -> Checkpoint | None:
        """The newest event's sequence and hash, authenticated with the store's key (``None``
        while the trail is empty). ``short`` publishes 16 hex characters of hash and mac."""

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

    async def release_job(self, key: str, worker: str) -> None:
        """Give up ``worker``'s claim on an unfinished job so any worker may claim it at once.

        Used by a replica shutting down with the job unfinished; nothing happens when the job is
        finished or held by another worker.
        """

    async def finish_job(self, key: str, worker: str) -> None:
        """Mark the job done so it is never claimed again; idempotent.

        Raises :class:`~bot.errors.ConflictError` when another worker has claimed the job since
        (``worker``'s lease ran out), :class:`~bot.errors.StoreError` for an unknown key.
        """

    async def audit_after(self, sequence: int, *, limit: int) -> list[AuditEvent]:
        """Up to ``limit`` audit events after ``sequence``, oldest first (for a streaming export)."""

    async def export_cursor(self, name: str) -> int:
        """The last audit sequence the export ``name`` has delivered (0: none yet)."""

    async def advance_export_cursor(self, name: str, expected: int, to: int) -> bool:
        """Move the export cursor from ``expected`` to ``to`` (compare-and-swap); ``False`` when
        another replica moved it first (this one's batch was a duplicate attempt)."""

    async def job_backlog(self) -> JobBacklog:
        """How many jobs are unfinished and when the oldest of them was queued (for metrics)."""

    # -- replay protection (shared by every replica) ------------------------------------------

    async def claim_replay(self, key: str, *, expires_at: datetime, now: datetime) -> bool:
        """Claim ``key`` until ``expires_at``; ``True`` for exactly one caller across replicas.

        Everyone after the first gets ``False`` until the claim expires or is released. Claims
        that expired before ``now`` are pruned.
        """

    async def release_replay(self, key: str) -> None:
        """Give up a claim (the work it guarded failed, so the sender may retry); idempotent."""

    async def replay_claimed(self, key: str, *, now: datetime) -> bool:
        """Whether a claim on ``key`` is held and has not expired by ``now`` (a read)."""
