"""Telling the thread how an attempt ended, and writing the result back to the alerts.

Owns :class:`Reporter`: each attempt's result reply goes out at least once (a re-send after a
restart is marked as such), the card and the case's account state are refreshed with it, and
each alert of the case gets a comment (and, when configured, a new status).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.domain.models import ActionRequest, Case, CaseStatus, RequestState, ResponseAction
from bot.errors import RemediationError
from bot.faults import fault_point
from bot.log_context import fresh_ids
from bot.services.audit_log import AuditLog
from bot.services.ports import Ports, ServiceSettings
from bot.services.publishing import Publisher
from bot.services.views import CaseViews
from bot.tenant.identities import RiskMap, resolve_identity
from cards.replies import render_alert_comment, render_request_note, render_result_reply

log = logging.getLogger(__name__)

# The actions whose result changes the identity's risk state in Identity Protection: only their
# report reads it again. Identity Protection is paced to one call per second per tenant, so a
# read there would hold every other action's thread reply behind the pacer for nothing.
RISK_ACTIONS = frozenset(
    {
        ResponseAction.CONFIRM_COMPROMISED,
        ResponseAction.DISMISS_RISK,
        ResponseAction.CONFIRM_SAFE,
        ResponseAction.MARK_COMPROMISED,
        ResponseAction.FORCE_PASSWORD_CHANGE,
    }
)


def _risk_unchanged(case: Case, request: ActionRequest) -> RiskMap | None:
    """The case's known risk state, for a report whose action does not touch risk; else ``None``
    (read it again). Unknown is kept unknown rather than read through the pacer."""
    touches_risk = request.action in RISK_ACTIONS or any(a in RISK_ACTIONS for a in request.extras)
    if touches_risk or not case.identity.object_id:
        return None
    return {case.identity.object_id.lower(): (case.facts.risk_state, case.facts.risk_level)}


# The first line of a result reply sent again because the worker sending it first may have died
# after it went out: a visible duplicate instead of silence.
RESENT_MARKER = "Re-sent after a restart: an earlier copy of this message may be above."


class Reporter:
    """Result replies in the thread, and comments on the alerts in Defender."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        audit: AuditLog,
        views: CaseViews,
        publisher: Publisher,
    ) -> None:
        self._store = ports.store
        self._graph = ports.graph
        self._messenger = ports.messenger
        self._clock = ports.clock
        self._settings = settings
        self._audit = audit
        self._views = views
        self._publisher = publisher
        # The campaign of a member case changed (its card counts contained members and shows
        # bulk progress): bump its card, coalesced. Set by the service.
        self.campaign_changed: Callable[[str], Awaitable[None]] | None = None

    @fresh_ids(lambda self, request: {"request_id": request.id, "case_id": request.case_id})
    async def report(self, request: ActionRequest) -> None:
        """Tell the thread how the attempt ended: at least once, a re-send marked as such.

        Claiming the report (compare-and-swap) counts the tries; it is recorded as reported only
        after the reply went out. A worker that dies in between leaves it unrecorded, and the
        next worker on the job sends it again with a "re-sent after a restart" line: a visible
        duplicate rather than silence.
        """

        def claim(latest: ActionRequest) -> ActionRequest | None:
            if (
                latest.attempt != request.attempt
                or latest.reported_attempt >= latest.attempt
                or latest.state not in (RequestState.SUCCEEDED, RequestState.FAILED)
            ):
                return None
            return latest.model_copy(update={"report_claims": latest.report_claims + 1})

        _, claimed = await self._store.swap_request(request.id, claim)
        if claimed is None:
            return  # reported already
        fault_point("report.claimed")
        resent = RESENT_MARKER if claimed.report_claims > 1 else ""
        await self.after_result(claimed.case_id, claimed, first=True, prefix=resent)

        def reported(latest: ActionRequest) -> ActionRequest | None:
            if latest.reported_attempt >= claimed.attempt:
                return None
            return latest.model_copy(update={"reported_attempt": claimed.attempt})

        await self._store.update_request(request.id, reported)

    async def after_result(
        self, case_id: str, request: ActionRequest, *, first: bool, prefix: str = ""
    ) -> None:
        """Refresh what the card shows, reply in the thread and comment on the case's alerts.

        ``prefix`` is a first line for the reply (a re-send, a correction). Raises when there is
        nowhere to reply yet (no channel, no card), so the report is not recorded as sent and is
        tried again.
        """
        ran = request.started_at is not None
        known = await self._views.require_case(case_id)
        identity, account, facts = await resolve_identity(
            self._graph, known.identity, now=self._clock, risky=_risk_unchanged(known, request)
        )
        result = request.result

        def record(latest: Case) -> Case:
            changes: dict[str, Any] = {"facts": facts, "identity": latest.identity.merged(identity)}
            if account.checked_at is not None:
                changes["account"] = account
            if result is not None and result.succeeded:
                if request.action is ResponseAction.DISABLE_ACCOUNT:
                    changes["status"] = CaseStatus.CONTAINED
                elif request.action is ResponseAction.ENABLE_ACCOUNT:
                    # Rolled back: automatic containment is undone, on the record in the thread.
                    changes.update(status=CaseStatus.OPEN, auto_contained_at=None, auto_contained_by="")
                elif request.action is ResponseAction.KEEP_CONTAINED:
                    changes["ratified_at"] = result.verified_at or self._clock()
            return latest.revised(**changes).containment_checked()

        case = await self._store.update_case(case_id, record)
        if case.campaign_id and self.campaign_changed is not None:
            try:
                await self.campaign_changed(case.campaign_id)
            except RemediationError as exc:
                # The campaign's revision is bumped: the next publishing pass sends its card.
                log.warning("campaign %s: card not updated yet: %s", case.campaign_id, exc.message)
        channel = await self._store.get_channel()
        if channel is None:
            raise RemediationError(
                f"request {request.id}: the incident channel is not known yet; reported later"
            )
        case = await self._publisher.publish(case.id, channel, urgent=True)
        if case.card is None and case.campaign_id and not case.card_requested:
            # A campaign member without a card of its own (a re-check of a bulk action's result):
            # the result is on its request and in the audit log; there is no thread to tell.
            return
        if case.card is None:
            raise RemediationError(f"request {request.id}: case {case.id} has no card yet; reported later")
        if ran:
            text = render_result_reply(case, request, links=self._settings.links, update=not first)
            text = await self._audit.with_checkpoint(text)
        else:
            text = render_request_note(case, request, now=self._clock())
        if prefix:
            text = f"{prefix}\n\n{text}"
        await self._messenger.reply_in_thread(channel, case.card, text)
        fault_point("report.sent")
        if ran and (first or (result is not None and not result.pending_verification)):
            await self._write_back(case, request)

    async def _write_back(self, case: Case, request: ActionRequest) -> None:
        """Comment on each alert of the case, and set its status when configured to."""
        comment = render_alert_comment(case, request)
        for alert in case.alerts:
            if not alert.in_alerts_v2:
                # Opened from chat, from Identity Protection's risky users or pushed in the
                # minimal form: there is no alert in Graph to comment on. A pusher's callback
                # would be the place to write back to; none is offered yet.
                continue
            try:
                await self._graph.add_alert_comment(alert.id, comment)
                alert_status = self._settings.alert_status
                if alert_status and request.result is not None and request.result.succeeded:
                    await self._graph.update_alert(alert.id, status=alert_status)
            except RemediationError as exc:
                # The action itself stands; a missing comment is worth a log line, not a failure.
                log.warning("case %s: could not comment on alert %s: %s", case.id, alert.id, exc.message)
