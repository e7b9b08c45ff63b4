"""Alert intake: normalise Graph ``alerts_v2`` JSON into :class:`Alert`, and poll for new ones."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.models import ATTACK_DISRUPTION_TAG, Alert, AlertSource, IdentityRef, Severity
from bot.errors import GraphError
from bot.graph import GraphClient
from bot.log_context import fresh_ids
from bot.store.base import Store

log = logging.getLogger(__name__)

IDENTITY_SOURCES: tuple[AlertSource, ...] = (
    AlertSource.DEFENDER_FOR_IDENTITY,
    AlertSource.IDENTITY_PROTECTION,
)
WATERMARK_KEY = "alerts_v2"

# Only the fields the bot reads; less to transfer and to parse during an alert storm.
ALERT_FIELDS: tuple[str, ...] = (
    "id",
    "title",
    "severity",
    "status",
    "serviceSource",
    "detectionSource",
    "createdDateTime",
    "lastUpdateDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "alertWebUrl",
    "mitreTechniques",
    "systemTags",
    "evidence",
)

_USER_EVIDENCE = "#microsoft.graph.security.userEvidence"


def parse_time(value: Any) -> datetime | None:
    """A Graph timestamp (ISO 8601, up to 7 fractional digits) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def target_identity(evidence: Iterable[Mapping[str, Any]]) -> IdentityRef | None:
    """The identity an alert is about: its user evidence, preferring the one marked compromised."""
    users = [e for e in evidence if isinstance(e, Mapping) and e.get("@odata.type") == _USER_EVIDENCE]
    users.sort(key=lambda e: "compromised" not in (e.get("roles") or []))
    for item in users:
        account = item.get("userAccount") or {}
        upn = account.get("userPrincipalName") or None
        object_id = account.get("azureAdUserId") or None
        if upn or object_id:
            return IdentityRef(
                object_id=object_id,
                upn=upn,
                display_name=account.get("displayName") or account.get("accountName") or None,
                on_prem_sid=account.get("userSid") or None,
            )
    return None


def parse_graph_alert(raw: Mapping[str, Any]) -> Alert | None:
    """Normalise one Graph security alert; ``None`` if it names no user we could act on."""
    try:
        source = AlertSource(str(raw.get("serviceSource")))
    except ValueError:
        return None
    created = parse_time(raw.get("createdDateTime"))
    updated = parse_time(raw.get("lastUpdateDateTime")) or created
    target = target_identity(raw.get("evidence") or [])
    alert_id = raw.get("id")
    if not alert_id or created is None or updated is None or target is None:
        return None
    return Alert(
        id=str(alert_id),
        source=source,
        title=str(raw.get("title") or "Untitled alert"),
        severity=Severity.parse(raw.get("severity")),
        status=str(raw.get("status") or "unknown"),
        created_at=created,
        updated_at=updated,
        first_activity_at=parse_time(raw.get("firstActivityDateTime")),
        last_activity_at=parse_time(raw.get("lastActivityDateTime")),
        web_url=raw.get("alertWebUrl") or None,
        detection_source=raw.get("detectionSource") or None,
        techniques=tuple(str(t) for t in raw.get("mitreTechniques") or ()),
        incident_id=str(raw["incidentId"]) if raw.get("incidentId") else None,
        source_ips=_evidence_ips(raw.get("evidence") or []),
        target=target,
        disrupted=is_disrupted(raw),
    )


def _evidence_ips(evidence: Any) -> tuple[str, ...]:
    """The IP addresses in an alert's ``ipEvidence`` (what groups a spray into one cluster)."""
    found: list[str] = []
    if not isinstance(evidence, list):
        return ()
    for item in evidence:
        if not isinstance(item, Mapping) or item.get("@odata.type") != "#microsoft.graph.security.ipEvidence":
            continue
        address = item.get("ipAddress")
        if isinstance(address, str) and address and address not in found:
            found.append(address[:64])
    return tuple(found[:10])


def is_disrupted(raw: Mapping[str, Any]) -> bool:
    """Whether a Graph alert carries Defender XDR's *Attack Disruption* system tag."""
    tags = raw.get("systemTags")
    if not isinstance(tags, list):
        return False
    return any(isinstance(t, str) and t.strip().lower() == ATTACK_DISRUPTION_TAG for t in tags)


RISKY_USER_FILTER = "riskLevel eq 'high' and riskState eq 'atRisk'"


def risky_user_alert(raw: Mapping[str, Any]) -> Alert | None:
    """A user Entra ID Protection holds at high risk, as an alert of its own.

    Risk can rise without an alert in ``alerts_v2`` (e.g. leaked credentials found offline), so
    ``riskyUsers`` is a source too. The id is stable per user; a later risk change updates it.
    """
    user_id = raw.get("id")
    updated = parse_time(raw.get("riskLastUpdatedDateTime"))
    if not isinstance(user_id, str) or not user_id or updated is None:
        return None
    detail = raw.get("riskDetail")
    reason = f" ({detail})" if isinstance(detail, str) and detail not in ("none", "") else ""
    return Alert(
        id=f"riskyUser:{user_id}",
        source=AlertSource.IDENTITY_PROTECTION,
        title=f"User at {raw.get('riskLevel', 'high')} risk in Entra ID Protection{reason}",
        severity=Severity.HIGH,
        status=str(raw.get("riskState") or "atRisk"),
        created_at=updated,
        updated_at=updated,
        detection_source=AlertSource.IDENTITY_PROTECTION.value,
        target=IdentityRef(
            object_id=user_id,
            upn=raw.get("userPrincipalName") or None,
            display_name=raw.get("userDisplayName") or None,
        ),
    )


class AlertPoller:
    """Polls ``alerts_v2`` for identity alerts newer than a persisted watermark.

    Each poll re-reads a short overlap before the watermark, because alerts can become visible
    with a ``lastUpdateDateTime`` slightly in the past; recording an alert is idempotent, so the
    overlap costs a few repeated rows, never a duplicate case or card. The watermark only moves
    after every page was ingested, so a crash mid-poll re-reads instead of skipping.
    """

    def __init__(
        self,
        graph: GraphClient,
        store: Store,
        ingest: Callable[[Sequence[Alert]], Awaitable[int]],
        *,
        clock: Callable[[], datetime],
        lookback: timedelta = timedelta(days=1),
        overlap: timedelta = timedelta(minutes=5),
    ) -> None:
        self._graph = graph
        self._store = store
        self._ingest = ingest
        self._clock = clock
        self._lookback = lookback
        self._overlap = overlap

    @fresh_ids(lambda self: {"poll": uuid.uuid4().hex[:12]})
    async def poll_once(self) -> int:
        """Fetch and ingest every identity alert updated since the watermark.

        Returns how many of them were new or changed.
        """
        watermark = await self._store.get_watermark(WATERMARK_KEY)
        since = (watermark - self._overlap) if watermark else (self._clock() - self._lookback)
        alerts: list[Alert] = []
        newest = watermark
        skipped = 0
        async for raw in self._graph.list_alerts(
            service_sources=[s.value for s in IDENTITY_SOURCES],
            updated_after=since,
            select=list(ALERT_FIELDS),
        ):
            alert = parse_graph_alert(raw)
            if alert is None:
                skipped += 1
                continue
            alerts.append(alert)
            if newest is None or alert.updated_at > newest:
                newest = alert.updated_at
        if skipped:
            log.warning("%d alert(s) named no user the bot can act on and were left out", skipped)
        try:
            async for raw in self._graph.list_risky_users(filter=RISKY_USER_FILTER):
                risky = risky_user_alert(raw)
                if risky is not None:
                    alerts.append(risky)
        except GraphError as exc:
            # The alerts already read must not wait on Identity Protection (no P2 licence, no
            # permission): ingest them and say what is missing.
            log.warning("risky users could not be read (%s); alerts_v2 is still ingested", exc.message)
        changed = await self._ingest(alerts) if alerts else 0
        if newest is not None and newest != watermark:
            await self._store.set_watermark(WATERMARK_KEY, newest)
        return changed
