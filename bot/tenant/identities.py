"""Identity resolution: what Entra ID, Identity Protection and Defender for Identity know about
the identity a case is about. The card offers only the actions this makes valid."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.domain.models import AccountState, IdentityFacts, IdentityRef, LinkedAccount, Provider, RiskSignal
from bot.errors import GraphError, GraphNotFound
from bot.graph import GraphClient

log = logging.getLogger(__name__)

USER_FIELDS = (
    "id",
    "userPrincipalName",
    "displayName",
    "accountEnabled",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
)


RiskMap = dict[str, tuple[str | None, str | None]]
SignalMap = dict[str, tuple[RiskSignal, ...]]
MAX_SIGNALS = 3


async def risky_user_map(graph: GraphClient) -> RiskMap | None:
    """Every user Identity Protection currently flags, by lower-case object id, in one paged read.

    Identity Protection allows one request per second tenant-wide, so cards are enriched from
    this one list instead of one risky-user read per identity. ``None`` if it could not be read.
    """
    risky: RiskMap = {}
    try:
        async for item in graph.list_risky_users(
            filter="riskState eq 'atRisk' or riskState eq 'confirmedCompromised'"
        ):
            user_id = _str(item.get("id"))
            if user_id:
                risky[user_id.lower()] = (_str(item.get("riskState")), _str(item.get("riskLevel")))
    except GraphError as exc:
        log.warning("could not list risky users: %s", exc.message)
        return None
    return risky


async def risk_signal_map(graph: GraphClient, since: datetime) -> SignalMap | None:
    """Recent risk detections by lower-case user object id (newest first, at most three each)."""
    signals: dict[str, list[RiskSignal]] = {}
    try:
        async for item in graph.list_risk_detections_since(since):
            user_id = _str(item.get("userId"))
            if not user_id or len(signals.get(user_id.lower(), [])) >= MAX_SIGNALS:
                continue
            signals.setdefault(user_id.lower(), []).append(_signal(item))
    except GraphError as exc:
        log.warning("could not list risk detections: %s", exc.message)
        return None
    return {user: tuple(found) for user, found in signals.items()}


def _signal(item: dict[str, Any]) -> RiskSignal:
    raw_location = item.get("location")
    location: dict[str, Any] = raw_location if isinstance(raw_location, dict) else {}
    place = ", ".join(p for p in (_str(location.get("city")), _str(location.get("countryOrRegion"))) if p)
    detected = _str(item.get("detectedDateTime"))
    return RiskSignal(
        detection=_str(item.get("riskEventType")) or "unknown",
        detected_at=datetime.fromisoformat(detected) if detected else None,
        ip_address=_str(item.get("ipAddress")),
        location=place or None,
    )


async def resolve_identity(
    graph: GraphClient,
    identity: IdentityRef,
    *,
    now: Callable[[], datetime],
    risky: RiskMap | None = None,
    signals: SignalMap | None = None,
) -> tuple[IdentityRef, AccountState, IdentityFacts]:
    """Read the identity everywhere it lives. A source that fails leaves its part unknown (the
    card then offers fewer actions); it never invents state. With ``risky`` (from
    :func:`risky_user_map`) the risk state comes from that list instead of its own read."""
    user_id = identity.object_id or identity.upn
    account = AccountState()
    synced = False
    sid = identity.on_prem_sid
    if user_id:
        try:
            user = await graph.get_user(user_id, select=list(USER_FIELDS))
        except GraphError as exc:
            log.warning("could not read %s from Entra ID: %s", identity.label, exc.message)
        else:
            identity = identity.merged(
                IdentityRef(
                    object_id=user.get("id"),
                    upn=user.get("userPrincipalName"),
                    display_name=user.get("displayName"),
                    on_prem_sid=user.get("onPremisesSecurityIdentifier"),
                )
            )
            enabled = user.get("accountEnabled")
            account = AccountState(enabled=enabled if isinstance(enabled, bool) else None, checked_at=now())
            synced = user.get("onPremisesSyncEnabled") is True
            sid = identity.on_prem_sid
    if risky is not None and identity.object_id:
        risk_state, risk_level = risky.get(identity.object_id.lower(), ("none", "none"))
    else:
        risk_state, risk_level = await _risk(graph, identity)
    linked, defender_enabled = await _linked_accounts(graph, identity, sid)
    # The Entra account's state is the user's own, read above.
    linked = tuple(
        a.model_copy(update={"enabled": account.enabled}) if a.provider is Provider.ENTRA else a
        for a in linked
    )
    facts = IdentityFacts(
        synced=synced,
        on_prem_sid=sid,
        risk_state=risk_state,
        risk_level=risk_level,
        defender_enabled=defender_enabled,
        linked=linked,
        signals=(signals or {}).get((identity.object_id or "").lower(), ()),
        read_at=now(),
    )
    return identity, account, facts


async def _risk(graph: GraphClient, identity: IdentityRef) -> tuple[str | None, str | None]:
    if not identity.object_id:
        return None, None
    try:
        risky = await graph.get_risky_user(identity.object_id)
    except GraphNotFound:
        return "none", "none"  # Identity Protection has never flagged this user
    except GraphError as exc:
        log.warning("could not read the risk state of %s: %s", identity.label, exc.message)
        return None, None
    return _str(risky.get("riskState")), _str(risky.get("riskLevel"))


async def _linked_accounts(
    graph: GraphClient, identity: IdentityRef, sid: str | None
) -> tuple[tuple[LinkedAccount, ...], bool | None]:
    try:
        found = await graph.list_identity_accounts(sid=sid, upn=None if sid else identity.upn)
    except GraphError as exc:
        log.warning("could not read %s from Defender for Identity: %s", identity.label, exc.message)
        return (), None
    linked: list[LinkedAccount] = []
    enabled: bool | None = None
    for entry in found:
        identity_id = _str(entry.get("id"))
        if not identity_id:
            continue
        if isinstance(entry.get("isEnabled"), bool):
            enabled = entry["isEnabled"]
        accounts = [a for a in entry.get("accounts") or [] if isinstance(a, dict)]
        # isEnabled is one flag per identity: Defender for Identity takes it from Active
        # Directory for an identity that has an account there; Okta's state is not in Graph.
        on_prem = any(a.get("identityProvider") == Provider.ACTIVE_DIRECTORY.value for a in accounts)
        for account in accounts:
            provider = _provider(account.get("identityProvider"))
            identifier = _str(account.get("identifier"))
            if provider is None or not identifier:
                continue
            actions = frozenset(str(a) for a in account.get("actions") or [])
            linked.append(
                LinkedAccount(
                    identity_id=identity_id,
                    identifier=identifier,
                    provider=provider,
                    actions=actions,
                    enabled=enabled if provider is Provider.ACTIVE_DIRECTORY and on_prem else None,
                )
            )
    return tuple(linked), enabled


def _provider(value: Any) -> Provider | None:
    try:
        return Provider(str(value))
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
