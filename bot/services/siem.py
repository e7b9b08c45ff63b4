"""The audit trail streamed to the SIEM (Microsoft Sentinel / Log Analytics), in order, once.

One replica at a time (the store's leadership) reads the events after the export cursor, uploads
them in sequence order, and moves the cursor (compare-and-swap) after each batch the ingestion
endpoint accepted. A restart, a failed upload or a replica taking over resumes at the cursor:
nothing is skipped, and nothing the endpoint accepted is sent again, except in the one window
no protocol closes without the receiver's help (the endpoint accepted a batch and the bot died
before saving its cursor). Every record carries its ``Sequence`` and chain ``Hash``, so a query can
drop such a duplicate (``summarize arg_max(TimeGenerated, *) by Sequence``) and prove the trail
in the SIEM is the bot's (the hashes chain).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bot.domain.audit import AuditEvent
from bot.store.base import Store

log = logging.getLogger(__name__)

EXPORT_NAME = "siem"
BATCH_EVENTS = 200


class AuditSink(Protocol):
    """Where audit records go (the Azure Monitor Logs Ingestion API in production)."""

    async def upload(self, records: Sequence[dict[str, Any]]) -> None:
        """Deliver ``records`` in order; raise when the receiver did not accept all of them."""
        ...


def siem_record(event: AuditEvent) -> dict[str, Any]:
    """One audit event as a row of the custom table (column names as in deploy/main.bicep)."""
    return {
        "TimeGenerated": event.at.isoformat(),
        "Sequence": event.sequence,
        "Kind": event.kind,
        "ActorId": event.actor_id,
        "ActorName": event.actor_name,
        "CaseId": event.case_id or "",
        "RequestId": event.request_id or "",
        "Identity": event.identity or "",
        "Payload": event.payload,
        "PreviousHash": event.previous_hash,
        "Hash": event.hash,
        "KeyId": event.key_id or "",
    }


class AuditStream:
    """Ships the audit events after the cursor to the sink, batch by batch."""

    def __init__(self, store: Store, sink: AuditSink, *, batch: int = BATCH_EVENTS) -> None:
        self._store = store
        self._sink = sink
        self._batch = batch

    async def ship(self) -> int:
        """Send every event not yet delivered; how many were. Raises what the sink raised (the
        cursor stays at the last delivered batch, so the next call resumes there)."""
        shipped = 0
        while True:
            cursor = await self._store.export_cursor(EXPORT_NAME)
            events = await self._store.audit_after(cursor, limit=self._batch)
            if not events:
                return shipped
            await self._sink.upload([siem_record(event) for event in events])
            last = events[-1].sequence
            if not await self._store.advance_export_cursor(EXPORT_NAME, cursor, last):
                # Another replica delivered from the same cursor meanwhile (it held the lead
                # after this one lost it): stop; the duplicates carry their Sequence.
                log.warning(
                    "audit stream: the cursor moved past %d while this replica sent to %d", cursor, last
                )
                return shipped
            shipped += len(events)
