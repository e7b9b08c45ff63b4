"""The case card: one pure function renders every state a responder can see.

``render_case`` returns Adaptive Card 1.5 JSON built from ``microsoft-teams-cards`` models. Its
``Action.Execute`` data carries only ids and the card version; the server takes everything else
(target, action, who clicked) from its own state, so a tampered payload cannot steer an action.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from microsoft_teams.cards import (
    ActionSet,
    AdaptiveCard,
    Column,
    ColumnSet,
    Container,
    ExecuteAction,
    Fact,
    FactSet,
    OpenUrlAction,
    RefreshDefinition,
    TextBlock,
    TextInput,
)

from bot.domain.models import (
    ActionRequest,
    Actor,
    Case,
    CaseStatus,
    RequestState,
    Severity,
)
from bot.domain.plans import blocked, offered_actions

MAX_ALERTS_SHOWN = 5
REASON_INPUT_ID = "reason"


@dataclass(frozen=True)
class PortalLinks:
    """Base URLs of the portals the card links to (overridable for sovereign clouds)."""

    defender: str = "https://security.microsoft.com"
    entra: str = "https://entra.microsoft.com"

    def alert(self, alert_id: str, web_url: str | None) -> str:
        """The alert in the Defender portal (Graph's ``alertWebUrl`` when it gave one)."""
        return web_url or f"{self.defender}/alerts/{quote(alert_id, safe='')}"

    def user(self, object_id: str | None, upn: str | None) -> str:
        """The user's page in the Entra admin center."""
        if object_id:
            return (
                f"{self.entra}/#view/Microsoft_AAD_UsersAndTenants/UserProfileMenuBlade"
                f"/~/overview/userId/{quote(object_id, safe='')}"
            )
        return f"{self.entra}/#view/Microsoft_AAD_UsersAndTenants/UserManagementMenuBlade/~/AllUsers"


DEFAULT_LINKS = PortalLinks()


def format_time(value: datetime | None) -> str:
    """A timestamp as responders read it in every time zone: ``2026-11-25 14:05 UTC``."""
    if value is None:
        return "unknown"
    return value.strftime("%Y-%m-%d %H:%M UTC")


Color = Literal["Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"]

_SEVERITY_COLOR: dict[Severity, Color] = {
    Severity.HIGH: "Attention",
    Severity.MEDIUM: "Warning",
    Severity.LOW: "Accent",
    Severity.INFORMATIONAL: "Default",
    Severity.UNKNOWN: "Default",
}


@dataclass(frozen=True)
class Viewer:
    """Who the card is rendered for, when it is rendered for one person (an invoke answer or a
    ``refresh``). The shared card in the channel has no viewer and shows every button; the
    server authorizes every click anyway."""

    actor: Actor
    responder: bool = False
    approver: bool = False


def render_case(
    case: Case,
    request: ActionRequest | None = None,
    *,
    links: PortalLinks = DEFAULT_LINKS,
    note: str | None = None,
    viewer: Viewer | None = None,
    refresh_user_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The card of ``case`` with its latest action ``request`` (if any).

    ``note`` is a line for the person who clicked (a refusal or a stale-card notice).
    ``refresh_user_ids`` (Teams user ids, at most 60) get their own view through ``refresh``
    where Teams supports it: the requester sees Cancel, approvers Approve and Reject.
    """
    body: list[Any] = [_header(case), _facts(case), *_alerts(case, links)]
    if request is not None:
        body.append(_request_block(request))
    if note:
        body.append(TextBlock(text=note, wrap=True, color="Attention", weight="Bolder", separator=True))
    actions: list[Any] = []
    if request is not None and request.state in (RequestState.PENDING, RequestState.APPROVED):
        actions += _decision_actions(case, request, viewer, body)
    if request is not None and _can_retry(request, viewer) and not blocked(case):
        body.append(
            ActionSet(
                actions=[
                    ExecuteAction(
                        title=f"Retry {request.action.label.lower()}",
                        verb="retry",
                        data={"requestId": request.id, "cardVersion": case.revision},
                    )
                ]
            )
        )
    if _can_request(case, request) and (viewer is None or viewer.responder):
        body.append(
            TextInput(
                id=REASON_INPUT_ID,
                label="Reason (recorded in the audit log)",
                placeholder="e.g. Pass-the-ticket from an unknown host; containing until reviewed",
                is_required=True,
                error_message="Say why before you act.",
                is_multiline=True,
                max_length=500,
            )
        )
        data = {"caseId": case.id, "cardVersion": case.revision}
        body.append(
            ActionSet(
                actions=[
                    ExecuteAction(title=action.label, verb=action.value, data=data)
                    for action in offered_actions(case)
                ]
            )
        )
    latest = case.alerts[-1] if case.alerts else None
    if latest is not None:
        actions.append(
            OpenUrlAction(title="Open alert in Defender", url=links.alert(latest.id, latest.web_url))
        )
    actions.append(
        OpenUrlAction(title="Open user in Entra", url=links.user(case.identity.object_id, case.identity.upn))
    )
    card = AdaptiveCard(
        version="1.5",
        fallback_text=f"Compromised identity: {case.identity.label} ({case.severity.value})",
        body=body,
        actions=actions,
    )
    if refresh_user_ids:
        card.refresh = RefreshDefinition(
            action=ExecuteAction(title="Refresh", verb="refresh", data={"caseId": case.id}),
            user_ids=list(refresh_user_ids)[:60],
        )
    card_json: dict[str, Any] = card.model_dump(exclude_none=True, mode="json")
    card_json["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json"
    card_json["msteams"] = {"width": "Full"}
    return card_json


def _decision_actions(
    case: Case, request: ActionRequest, viewer: Viewer | None, body: list[Any]
) -> list[Any]:
    """Approve / Reject for approvers, Cancel for the requester (all three on the shared card)."""
    data = {"requestId": request.id, "cardVersion": case.revision}
    is_requester = viewer is not None and viewer.actor.same_person(request.requester)
    may_decide = viewer is None or (viewer.approver and not is_requester)
    may_cancel = viewer is None or is_requester
    actions: list[Any] = []
    if may_decide and request.state is RequestState.PENDING:
        body.append(
            TextInput(
                id=REASON_INPUT_ID,
                label="Note (optional, recorded with your decision)",
                is_multiline=True,
                max_length=500,
            )
        )
        actions.append(ExecuteAction(title="Approve", verb="approve", data=data))
        actions.append(ExecuteAction(title="Reject", verb="reject", data=data))
    if may_cancel:
        actions.append(ExecuteAction(title="Cancel request", verb="cancel", data=data))
    if viewer is not None and not actions:
        body.append(
            TextBlock(
                text="Only approvers other than the requester can approve or reject this request.",
                wrap=True,
                is_subtle=True,
            )
        )
    return actions


def _can_retry(request: ActionRequest, viewer: Viewer | None) -> bool:
    # Offered until the approval expires; the server checks the clock and the person again.
    ran_and_failed = request.state is RequestState.FAILED and request.started_at is not None
    allowed = viewer is None or viewer.approver or viewer.actor.same_person(request.requester)
    return ran_and_failed and allowed


def _can_request(case: Case, request: ActionRequest | None) -> bool:
    if not offered_actions(case):
        return False
    return request is None or request.state.is_final


def _header(case: Case) -> Container:
    severity = case.severity
    status = "Contained" if case.status is CaseStatus.CONTAINED else "Open"
    return Container(
        style="attention" if severity is Severity.HIGH and case.status is CaseStatus.OPEN else "emphasis",
        bleed=True,
        items=[
            ColumnSet(
                columns=[
                    Column(
                        width="stretch",
                        items=[
                            TextBlock(
                                text=f"{severity.value.upper()} · Compromised identity",
                                weight="Bolder",
                                color=_SEVERITY_COLOR[severity],
                                size="Small",
                                wrap=True,
                            )
                        ],
                    ),
                    Column(width="auto", items=[TextBlock(text=status, weight="Bolder", size="Small")]),
                ]
            ),
            TextBlock(
                text=case.identity.display_name or case.identity.upn or "Unknown user",
                size="Large",
                weight="Bolder",
                wrap=True,
            ),
            TextBlock(
                text=case.identity.upn or case.identity.object_id or "",
                is_subtle=True,
                spacing="None",
                wrap=True,
            ),
            *_badges(case),
        ],
    )


def _badges(case: Case) -> list[TextBlock]:
    """Warnings a responder must see before acting: why no action is offered, protected or
    privileged accounts."""
    badges = []
    why_not = blocked(case)
    if why_not:
        badges.append(TextBlock(text=why_not, color="Warning", weight="Bolder", wrap=True))
    if case.protected:
        badges.append(
            TextBlock(
                text="Protected account: the bot never acts on it. Use your break-glass procedure.",
                color="Attention",
                weight="Bolder",
                wrap=True,
            )
        )
    if case.privileged_reason:
        badges.append(
            TextBlock(
                text=f"Privileged: {case.privileged_reason}. Every action needs two approvers.",
                color="Warning",
                weight="Bolder",
                wrap=True,
            )
        )
    return badges


_DETECTION_LABELS = {
    "microsoftDefenderForIdentity": "Defender for Identity",
    "azureAdIdentityProtection": "Entra ID Protection",
    "microsoftDefenderForEndpoint": "Defender for Endpoint",
    "microsoftDefenderForCloudApps": "Defender for Cloud Apps",
    "microsoftDefenderForOffice365": "Defender for Office 365",
    "microsoft365Defender": "Microsoft Defender XDR",
    "microsoftSentinel": "Microsoft Sentinel",
}


def detection_label(value: str) -> str:
    """Graph's ``detectionSource`` as a product name (camelCase split into words otherwise)."""
    if value in _DETECTION_LABELS:
        return _DETECTION_LABELS[value]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", value)
    return words[:1].upper() + words[1:]


def _account_line(case: Case) -> str:
    account = case.account
    if account.enabled is None:
        return "Not read yet"
    state = "Enabled" if account.enabled else "Disabled"
    where = "synced from on-premises AD" if case.facts.synced else "cloud-only"
    return f"{state}, {where} (read back {format_time(account.checked_at)})"


def _facts(case: Case) -> FactSet:
    sources = sorted({a.source.label for a in case.alerts})
    detections = sorted({detection_label(a.detection_source) for a in case.alerts if a.detection_source})
    facts = [
        Fact(title="Account", value=_account_line(case)),
        Fact(title="Severity", value=case.severity.value.capitalize()),
        *_risk_fact(case),
        Fact(title="Source", value=", ".join(sources) or "none"),
    ]
    if detections:
        facts.append(Fact(title="Detected by", value=", ".join(detections)))
    facts += [
        Fact(title="First seen", value=format_time(case.first_seen)),
        Fact(title="Last seen", value=format_time(case.last_seen)),
        Fact(title="Case", value=case.id),
    ]
    return FactSet(facts=facts, separator=True)


def _risk_fact(case: Case) -> list[Fact]:
    facts = case.facts
    found: list[Fact] = []
    if facts.risk_state and facts.risk_state != "none":
        level = f" ({facts.risk_level})" if facts.risk_level and facts.risk_level != "none" else ""
        found.append(Fact(title="User risk", value=f"{facts.risk_state}{level}"))
    for signal in facts.signals:
        where = " · ".join(p for p in (signal.ip_address, signal.location) if p)
        found.append(
            Fact(
                title="Sign-in risk",
                value=f"{detection_label(signal.detection)}{f' from {where}' if where else ''} "
                f"({format_time(signal.detected_at)})",
            )
        )
    return found


def _alerts(case: Case, links: PortalLinks) -> list[Any]:
    newest_first = sorted(case.alerts, key=lambda a: (a.updated_at, a.id), reverse=True)
    blocks: list[Any] = [
        TextBlock(
            text=f"Why: {len(case.alerts)} alert{'s' if len(case.alerts) != 1 else ''}",
            weight="Bolder",
            separator=True,
        )
    ]
    for alert in newest_first[:MAX_ALERTS_SHOWN]:
        techniques = f" · {', '.join(alert.techniques)}" if alert.techniques else ""
        blocks.append(
            TextBlock(
                text=(
                    f"- [{_escape_md(alert.title)}]({links.alert(alert.id, alert.web_url)}) — "
                    f"{alert.severity.value} · {alert.source.label} · "
                    f"{format_time(alert.created_at)}{techniques}"
                ),
                wrap=True,
                spacing="Small",
            )
        )
    hidden = len(case.alerts) - MAX_ALERTS_SHOWN
    if hidden > 0:
        blocks.append(TextBlock(text=f"… and {hidden} more in Defender", is_subtle=True, wrap=True))
    return blocks


def request_headline(request: ActionRequest) -> str:
    """One line a responder reads at a glance: the action and where it stands."""
    action = request.action.label
    state = request.state
    if state is RequestState.PENDING:
        if request.approvals and request.required_approvals - len(request.approvals) == 1:
            return f"{action}: awaiting second approver"
        return f"{action}: awaiting approval"
    decider = request.decided_by.label if request.decided_by else ""
    headlines = {
        RequestState.APPROVED: "approved, starting",
        RequestState.EXECUTING: "running",
        RequestState.SUCCEEDED: "done",
        RequestState.FAILED: "failed",
        RequestState.REJECTED: f"rejected by {decider or 'an approver'}",
        RequestState.CANCELLED: f"cancelled by {decider or 'the requester'}",
        RequestState.EXPIRED: "expired without a decision",
    }
    return f"{action}: {headlines[state]}"


def _request_block(request: ActionRequest) -> Container:
    colors: dict[RequestState, Color] = {
        RequestState.SUCCEEDED: "Good",
        RequestState.FAILED: "Attention",
        RequestState.PENDING: "Warning",
    }
    items: list[Any] = [
        TextBlock(
            text=request_headline(request),
            weight="Bolder",
            color=colors.get(request.state, "Accent"),
            wrap=True,
        ),
        TextBlock(
            text=f"Requested by {request.requester.label} at {format_time(request.created_at)}"
            + (f": “{request.reason}”" if request.reason else ""),
            wrap=True,
            spacing="None",
        ),
    ]
    signed = ", ".join(a.label for a in request.approvals) or "nobody yet"
    facts = [
        Fact(title="Sign-offs", value=f"{len(request.approvals)} of {request.required_approvals}: {signed}")
    ]
    if request.state in (RequestState.PENDING, RequestState.APPROVED):
        facts.append(Fact(title="Who can approve", value=f"an approver other than {request.requester.label}"))
        facts.append(Fact(title="Expires", value=format_time(request.expires_at)))
    if request.privileged_reason:
        facts.append(Fact(title="Why two", value=request.privileged_reason))
    if request.decision_note:
        facts.append(Fact(title="Note", value=request.decision_note))
    items.append(FactSet(facts=facts, spacing="Small"))
    if request.result is not None:
        items.append(TextBlock(text=request.result.summary, wrap=True, spacing="Small"))
        if request.result.verified_state:
            verified_at = format_time(request.result.verified_at)
            items.append(
                TextBlock(
                    text=f"Verified: {request.result.verified_state} at {verified_at}",
                    wrap=True,
                    is_subtle=True,
                    spacing="None",
                )
            )
    return Container(items=items, separator=True, style="emphasis")


def _escape_md(text: str) -> str:
    return text.replace("[", "(").replace("]", ")")
