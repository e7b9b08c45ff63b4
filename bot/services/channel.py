"""The incident channel: remembering where cards go, and refusing activities from elsewhere.

Owns :class:`IncidentChannel`: the configured channel is registered when Teams tells the bot
about it (the first registration and every change of service URL audited); installations
elsewhere are ignored; activities from another tenant are logged, counted and audited.
"""

from __future__ import annotations

import logging

from bot.domain.models import Actor, ChannelRef
from bot.errors import RemediationError
from bot.services.audit_log import AuditLog
from bot.services.ports import Ports, ServiceSettings
from bot.web.metrics import Metrics

log = logging.getLogger(__name__)


class IncidentChannel:
    """Where cards go, and who may talk to the bot."""

    def __init__(self, ports: Ports, settings: ServiceSettings, *, audit: AuditLog, metrics: Metrics) -> None:
        self._store = ports.store
        self._settings = settings
        self._audit = audit
        self._metrics = metrics

    async def register_channel(self, channel: ChannelRef, *, actor: Actor | None = None) -> bool:
        """Remember the incident channel when Teams tells us about the configured one.

        Returns whether ``channel`` is the configured channel. Installations elsewhere are
        ignored: cards go only where the admin said. The caller has checked the activity's
        tenant (:class:`bot.teams.routing.ActivityRouter` refuses every other tenant first). The first
        registration and every change of service URL are audited, since cards and replies go
        wherever that URL points.
        """
        if channel.channel_id != self._settings.channel_id:
            log.info("ignoring conversation %s: not the configured incident channel", channel.channel_id)
            return False
        known = await self._store.get_channel()
        if known != channel:
            await self._store.set_channel(channel)
            log.info(
                "incident channel %s registered (service url %s)", channel.channel_id, channel.service_url
            )
            if known is None:
                await self._audit.write(
                    "channel.registered",
                    actor=actor,
                    channel_id=channel.channel_id,
                    service_url=channel.service_url,
                    tenant_id=channel.tenant_id,
                )
            elif known.service_url != channel.service_url:
                log.warning(
                    "incident channel %s: service url changed from %s to %s",
                    channel.channel_id,
                    known.service_url,
                    channel.service_url,
                )
                await self._audit.write(
                    "channel.service_url_changed",
                    actor=actor,
                    channel_id=channel.channel_id,
                    previous_service_url=known.service_url,
                    service_url=channel.service_url,
                    tenant_id=channel.tenant_id,
                )
        return True

    async def refuse_activity(self, reason: str, **details: str) -> None:
        """An activity refused before any use case ran (another tenant, or none): log and audit.

        One warning line and one ``activity.refused_tenant`` audit event naming who it claimed to
        be from. The actor id is qualified by the claimed tenant, so a foreign user whose object
        id happens to equal one of ours is never recorded as that person. If the audit cannot be
        written the activity stays refused.
        """
        log.warning(
            "refused %s activity %s from tenant %r (object id %r): %s",
            details.get("activity_type"),
            details.get("activity_id"),
            details.get("tenant"),
            details.get("object_id"),
            reason,
        )
        self._metrics.add("remediation_refusals_total")
        claimed = f"{details.get('tenant') or 'no tenant'}/{details.get('object_id') or 'unknown'}"
        actor = Actor(object_id=claimed, name=details.get("name") or "")
        try:
            await self._audit.write(
                "activity.refused_tenant", actor=actor, reason=reason, activity=dict(details)
            )
        except RemediationError as exc:
            log.error("the refusal of activity %s could not be audited: %s", details.get("activity_id"), exc)
