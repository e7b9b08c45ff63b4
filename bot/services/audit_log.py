"""Writing the audit trail: who did what to which case and request, and its checkpoints.

Owns :class:`AuditLog`: every decision, refusal and result of every use case is appended
through it, and result replies carry the trail's head as a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.domain.models import ActionRequest, Actor, Case
from bot.errors import StoreError
from bot.store.base import Store
from cards.audit import with_audit_checkpoint

log = logging.getLogger(__name__)

BOT_ACTOR_ID = "remediation-bot"


class AuditLog:
    """Appends audit events on behalf of the bot or a person."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    async def write(
        self,
        kind: str,
        *,
        actor: Actor | None = None,
        case: Case | None = None,
        request: ActionRequest | None = None,
        **payload: Any,
    ) -> None:
        """Append one event of ``kind`` about ``case`` and ``request``, by ``actor`` (or the bot)."""
        identity = None
        if case is not None:
            identity = (case.identity.upn or case.identity.object_id or "").lower() or None
        await self._store.append_audit(
            at=self._clock(),
            actor_id=actor.object_id if actor else BOT_ACTOR_ID,
            actor_name=actor.label if actor else "remediation-bot",
            kind=kind,
            case_id=case.id if case else (request.case_id if request else None),
            request_id=request.id if request else None,
            identity=identity,
            payload=payload,
        )

    async def with_checkpoint(self, text: str) -> str:
        """``text`` with the audit trail's head as a checkpoint: published in the thread, outside
        the store, it lets ``audit verify`` notice events later cut off or rewritten."""
        try:
            checkpoint = await self._store.audit_checkpoint(at=self._clock(), short=True)
        except StoreError as exc:
            # The result itself is recorded; a reply without its checkpoint beats no reply.
            log.warning("no audit checkpoint for this reply: %s", exc.message)
            return text
        return with_audit_checkpoint(text, checkpoint)
