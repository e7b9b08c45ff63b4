"""The store port: what the service layer needs from persistent state.

Every write of a case or an action request is compare-and-swap on the row's ``version``:
``update_*(id, mutate)`` reads the row, calls ``mutate`` (a pure function of the current value),
and writes only if nobody wrote in between, retrying otherwise. ``mutate`` may return ``None`` to
leave the row alone. A double click, a retried invoke or a second replica is thereby harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.domain.audit import AuditEvent, ChainCheck
from bot.domain.models import ActionRequest, Alert, Case, ChannelRef, RequestState


@dataclass(frozen=True)
class AlertIntake:
    """What recording one alert did: the case it joined, and whether anything changed."""

    case: Case
    case_created: bool
    alert_new: bool
    alert_changed: bool


class Store(Protocol):
    """Persistent state of the bot. Implementations: :class:`bot.store.sqlite.SqliteStore`."""

    async def close(self) -> None:
        """Release connections."""

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

    async def list_cases(self) -> list[Case]:
        """Every case, oldest first."""

    async def update_case(self, case_id: str, mutate: Callable[[Case], Case | None]) -> Case:
        """Compare-and-swap update of one case; returns the stored value."""

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
