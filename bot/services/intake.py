"""Alerts becoming cases: recording them, opening cases by hand, settling unresolved people.

Owns :class:`Intake`: every alert's target is resolved to its Entra object id and recorded
into that person's one case (audited, counted, an escalation noted under a card the channel
has seen); ``contain <upn>`` opens a case from chat; cases still waiting for their person's
object id are re-keyed (or merged into the person's case) once Entra ID knows them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.domain.models import Actor, Alert, AlertSource, IdentityRef, Severity
from bot.errors import RemediationError
from bot.services.audit_log import AuditLog
from bot.services.ports import Ports
from bot.services.publishing import Publisher
from bot.store.base import AlertIntake, Settlement
from bot.tenant.resolver import IdentityResolver, Outcome
from bot.web.metrics import Metrics
from cards.replies import escalation_note

log = logging.getLogger(__name__)

# Alerts stored per transaction; a push (at most 500 alerts) is one transaction, all or nothing.
RECORD_BATCH = 500


class Intake:
    """Records alerts into cases, one case per person."""

    def __init__(
        self,
        ports: Ports,
        *,
        audit: AuditLog,
        resolver: IdentityResolver,
        publisher: Publisher,
        metrics: Metrics,
    ) -> None:
        self._store = ports.store
        self._storm = ports.policy.storm
        self._directory = ports.directory
        self._clock = ports.clock
        self._new_id = ports.new_id
        self._audit = audit
        self._resolver = resolver
        self._publisher = publisher
        self._metrics = metrics

    async def ingest(self, alerts: Sequence[Alert], *, publish: bool = True) -> int:
        """Record alerts into cases (one per person) and bring every card up to date.

        Every alert's target is first resolved to its Entra object id (see
        :class:`bot.tenant.resolver.IdentityResolver`), so a person named by object id in one alert and
        by UPN (in any letter case) in another has one case. A name that cannot be resolved yet
        opens a case that offers no action until :meth:`settle_unresolved` resolves it.

        Alerts are stored in transactions of up to :data:`RECORD_BATCH` (a push, at most that
        many, is stored all or nothing). Returns how many alerts were new or changed; repeats
        of known alerts change nothing. An alert that raises a case's severity or brings a new
        source gets a thread note.
        """
        resolved = await self._resolver.resolve_alerts(alerts)
        changed = 0
        for start in range(0, len(resolved), RECORD_BATCH):
            batch = resolved[start : start + RECORD_BATCH]
            intakes = await self._store.record_alerts(
                batch,
                new_case_id=self._new_id,
                now=self._clock(),
                storm=self._storm,
                new_campaign_id=self._new_id,
            )
            for alert, intake in zip(batch, intakes, strict=True):
                changed += await self._noted(alert, intake)
        if changed and publish:
            await self._publisher.publish_cards()
        return changed

    async def _noted(self, alert: Alert, intake: AlertIntake) -> bool:
        """Count, log and audit what recording ``alert`` did; queue its escalation note."""
        if intake.settled is not None:
            await self._audit_settlement(intake.settled)
        if intake.alert_changed:
            self._metrics.add("remediation_alerts_ingested_total", source=alert.source.value)
        if intake.case_created:
            log.info("case %s opened for %s", intake.case.id, intake.case.identity.label)
            await self._audit.write(
                "case.opened",
                case=intake.case,
                alert_id=alert.id,
                title=alert.title,
                resolved=intake.case.resolved,
                campaign_id=intake.case.campaign_id or None,
            )
            if intake.campaign_opened:
                await self._audit_campaign_opened(intake.case.campaign_id)
            return intake.alert_changed
        if intake.alert_new:
            await self._audit.write("alert.added", case=intake.case, alert_id=alert.id, title=alert.title)
        if intake.alert_changed and intake.case.card is not None:
            # Only a card the channel has seen can escalate; a new card shows it all anyway.
            escalation = escalation_note(intake.case, alert)
            if escalation:
                self._publisher.queue_escalation(intake.case.id, escalation)
        return intake.alert_changed

    async def _audit_campaign_opened(self, campaign_id: str) -> None:
        campaign = await self._store.get_campaign(campaign_id)
        if campaign is None:
            return
        members = await self._store.list_campaign_cases(campaign_id)
        log.warning(
            "storm: campaign %s opened (%d identities within %d s, threshold %d)",
            campaign_id,
            len(members),
            campaign.window_seconds,
            campaign.threshold,
        )
        await self._audit.write(
            "campaign.opened",
            campaign_id=campaign_id,
            threshold=campaign.threshold,
            window_seconds=campaign.window_seconds,
            members=[case.id for case in members],
        )

    async def settle_unresolved(self) -> int:
        """Try again to resolve every open case still waiting for its person's Entra object id.

        A resolved case is keyed on the object id from then on (its card then offers actions),
        or merged into the person's case if they have one: never two open cases for one person.
        Returns how many were settled; their cards are brought up to date.
        """
        settled = 0
        for case in await self._store.list_unresolved_cases():
            if case.resolved or case.merged_into:
                continue
            resolution = await self._resolver.resolve(case.identity)
            if not resolution.resolved:
                continue
            try:
                settlement = await self._store.rekey_case(case.id, resolution.identity, now=self._clock())
            except RemediationError as exc:
                log.error("case %s: could not be keyed on its object id yet: %s", case.id, exc.message)
                continue
            if settlement is not None:
                await self._audit_settlement(settlement)
                settled += 1
        if settled:
            await self._publisher.publish_cards()
        return settled

    async def _audit_settlement(self, settlement: Settlement) -> None:
        closed = settlement.closed
        if closed is None:
            case = settlement.case
            log.info("case %s resolved to Entra object id %s", case.id, case.identity.object_id)
            await self._audit.write("case.resolved", case=case, object_id=case.identity.object_id)
            return
        log.info("case %s merged into case %s (one case per person)", closed.id, settlement.case.id)
        await self._audit.write(
            "case.merged", case=closed, merged_into=settlement.case.id, reason=closed.closed_reason
        )

    async def contain(self, actor: Actor, upn: str) -> str:
        """``contain <upn>``: a responder opens a case by hand for any user; returns the reply."""
        roles = await self._directory.roles_of(actor.object_id)
        if not roles.responder:
            return f"{actor.label} is not an authorized responder, so no case was opened."
        resolution = await self._resolver.resolve(IdentityRef(upn=upn))
        if resolution.outcome is Outcome.NOT_FOUND:
            return f"Entra ID has no user {upn}; no case was opened."
        if not resolution.resolved:
            return f"Could not look up {upn}: {resolution.detail}"
        target = resolution.identity
        now = self._clock()
        alert = Alert(
            id=f"manual:{target.object_id}:{int(now.timestamp())}",
            source=AlertSource.MANUAL,
            title=f"Opened from chat by {actor.label}",
            severity=Severity.HIGH,
            status="new",
            created_at=now,
            updated_at=now,
            detection_source="manual",
            target=target,
        )
        [intake] = await self._store.record_alerts(
            [alert], new_case_id=self._new_id, now=now, storm=self._storm, new_campaign_id=self._new_id
        )
        if intake.settled is not None:
            await self._audit_settlement(intake.settled)
        await self._audit.write("case.contain_command", actor=actor, case=intake.case, upn=upn)
        if intake.case_created:
            await self._audit.write(
                "case.opened", actor=actor, case=intake.case, alert_id=alert.id, title=alert.title
            )
        case = intake.case
        if case.campaign_id and case.card is None and not case.card_requested:
            # A campaign member has no card of its own: `contain` asks for it, in the campaign's thread.
            case = await self._store.update_case(
                case.id, lambda c: c.revised(card_requested=True) if not c.card_requested else None
            )
            await self._audit.write(
                "campaign.card_shown", actor=actor, case=case, campaign_id=case.campaign_id
            )
        await self._publisher.publish_cards()
        label = intake.case.identity.label
        if case.campaign_id:
            opened = "Opened a case for" if intake.case_created else "Found the open case of"
            return f"{opened} {label}: it is in a campaign, so its card is in the campaign card's thread."
        if intake.case_created:
            return f"Opened a case for {label}: its card is in the incident channel."
        return f"{label} already has an open case; its card in the incident channel now notes your request."
