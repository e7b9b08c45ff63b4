"""Time passing: expiry, reminders, re-checks, and work a dead replica left behind.

Owns :class:`Sweeper`: every replica sweeps; each note is decided inside the compare-and-swap
that records it, so two sweeping replicas write one audit event and one thread note between
them. A sweep also re-queues approved requests whose job was never queued, sends cards left
unsent and tries again to resolve cases waiting for their person's object id.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from bot.domain.approval import Expire, Refused, Remind
from bot.domain.campaigns import BulkRequest, parent_bulk_id
from bot.domain.campaigns import rechecked as bulk_rechecked
from bot.domain.models import ActionRequest, RequestState
from bot.domain.plans import plan
from bot.errors import RemediationError
from bot.services.audit_log import AuditLog
from bot.services.execution import EXECUTE_JOB
from bot.services.intake import Intake
from bot.services.ports import Ports
from bot.services.publishing import Publisher
from bot.services.reporting import Reporter
from bot.services.transitions import Transitions
from bot.services.views import OPEN_STATES, CaseViews
from bot.tenant.actions import Executor

log = logging.getLogger(__name__)


class Sweeper:
    """The work that time, not a person, sets off."""

    def __init__(
        self,
        ports: Ports,
        *,
        audit: AuditLog,
        views: CaseViews,
        transitions: Transitions,
        intake: Intake,
        publisher: Publisher,
        reporter: Reporter,
        executor: Executor,
    ) -> None:
        self._store = ports.store
        self._directory = ports.directory
        self._policy = ports.policy
        self._clock = ports.clock
        self._audit = audit
        self._views = views
        self._transitions = transitions
        self._intake = intake
        self._publisher = publisher
        self._reporter = reporter
        self._executor = executor

    async def sweep(self) -> None:
        """Expire overdue requests, remind approvers of waiting ones, re-verify pending results,
        send cards left behind by a replica that died, and try again to resolve cases still
        waiting for their person's Entra object id.

        Every replica sweeps; each note is decided inside the compare-and-swap that records it,
        so two sweeping replicas write one audit event and one thread note between them.
        """
        try:
            await self._intake.settle_unresolved()
        except RemediationError as exc:
            log.error("cases waiting for an object id are retried at the next sweep: %s", exc.message)
        now = self._clock()
        for request in await self._store.list_requests_due_recheck(now):
            result = request.result
            if result is not None and result.recheck_at is not None and result.recheck_at <= now:
                await self._sweep_one(request, self._recheck(request.id))
        for request in await self._store.list_requests_in(OPEN_STATES):
            if now >= request.expires_at:
                await self._sweep_one(request, self._expire(request.id))
            elif self._needs_reminder(request, now):
                await self._sweep_one(request, self._remind(request.id))
            elif request.state is RequestState.APPROVED:
                # Approved but its job was never queued (a crash right after the approval):
                # queueing is idempotent by key, so this is a no-op for a queued one.
                await self._sweep_one(
                    request,
                    self._store.enqueue_job(EXECUTE_JOB, request.idempotency_key, {"requestId": request.id}),
                )
        # Cards a dead replica left unsent (recorded alerts, a lapsed posting lease): publishing
        # is otherwise driven by new alerts and clicks, which may never come for that case.
        if await self._store.get_channel() is not None:
            await self._publisher.publish_cards()

    async def _sweep_one(self, request: ActionRequest, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except RemediationError as exc:
            log.error(
                "request %s: time-based work failed, retried at the next sweep: %s", request.id, exc.message
            )

    async def _recheck(self, request_id: str) -> None:
        """Read back what was pending verification, record it and tell the thread."""
        request = await self._store.get_request(request_id)
        if request is None or request.result is None or request.result.recheck_at is None:
            return
        case = await self._views.require_case(request.case_id)
        steps = plan(request.action, case, request.providers, request.extras)
        if isinstance(steps, Refused):
            return
        rechecked = await self._executor.recheck(request.action, case, steps, request.result)
        previous = request.result

        def refine(latest: ActionRequest) -> ActionRequest | None:
            # Verification refines the result of a finished request; it is not a state change.
            if latest.result != previous:
                return None
            return latest.model_copy(update={"result": rechecked})

        _, refined = await self._store.swap_request(request_id, refine)
        if refined is None:
            return  # another replica re-checked it first and told the thread
        bulk_id = parent_bulk_id(refined)
        if bulk_id is not None:
            # One identity of a bulk action: its outcome there moves on too (the campaign card's
            # progress counts it), in the same compare-and-swap as any progress.
            def refine_bulk(latest: BulkRequest) -> BulkRequest | None:
                return bulk_rechecked(latest, refined.case_id, rechecked)

            await self._store.swap_bulk(bulk_id, refine_bulk)
        await self._audit.write(
            "action.verified" if rechecked.verified else "action.verification_failed",
            case=case,
            request=refined,
            summary=rechecked.summary,
            verified_state=rechecked.verified_state,
        )
        await self._reporter.after_result(case.id, refined, first=False)

    def _needs_reminder(self, request: ActionRequest, now: datetime) -> bool:
        wait = self._policy.reminder_after
        return (
            wait is not None
            and request.state is RequestState.PENDING
            and request.reminded_at is None
            and now - request.created_at >= wait
        )

    async def _expire(self, request_id: str) -> None:
        expired = await self._transitions.apply(request_id, Expire())
        if not expired.won:
            return  # not due, decided otherwise, or another replica expired it and said so
        request = expired.request
        case = await self._views.require_case(request.case_id)
        log.info("request %s expired", request.id)
        await self._audit.write("request.expired", case=case, request=request)
        await self._store.update_case(case.id, lambda c: c.revised())
        await self._publisher.announce(case.id, request.id)

    async def _remind(self, request_id: str) -> None:
        reminded = await self._transitions.apply(request_id, Remind())
        if not reminded.won:
            return  # not due, or another replica reminded the approvers already
        request = reminded.request
        case = await self._views.require_case(request.case_id)
        await self._audit.write("request.reminded", case=case, request=request)
        mentions = await self._directory.named_approvers()
        await self._publisher.announce(
            case.id, request.id, [m for m in mentions if not m.same_person(request.requester)]
        )
