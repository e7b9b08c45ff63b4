"""The case card: one pure function renders every state a responder can see.

``render_case`` returns Adaptive Card 1.5 JSON built from ``microsoft-teams-cards`` models. Its
``Action.Execute`` data carries only ids and the card version; the server takes everything else
(target, action, who clicked) from its own state, so a tampered payload cannot steer an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from microsoft_teams.cards import (
    AdaptiveCard,
    Column,
    ColumnSet,
    Container,
    ExecuteAction,
    Fact,
    FactSet,
    OpenUrlAction,
    TextBlock,
    TextInput,
)

from bot.domain.models import (
    ActionRequest,
    Case,
    CaseStatus,
    RequestState,
    ResponseAction,
    Severity,
)

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


def render_case(
    case: Case,
    request: ActionRequest | None = None,
    *,
    links: PortalLinks = DEFAULT_LINKS,
    note: str | None = None,
) -> dict[str, Any]:
    """The card of ``case`` with its latest action ``request`` (if any) and an optional ``note``.

    ``note`` is a line for the person who clicked (a refusal or a stale-card notice); it is never
    part of the card shown to the whole channel.
    """
    body: list[Any] = [_header(case), _facts(case), *_alerts(case, links)]
    if request is not None:
        body.append(_request_block(request))
    if note:
        body.append(TextBlock(text=note, wrap=True, color="Attention", weight="Bolder", separator=True))
    actions: list[Any] = []
    if _can_request(case, request):
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
        actions.append(
            ExecuteAction(
                title=ResponseAction.DISABLE_ACCOUNT.label,
                verb=ResponseAction.DISABLE_ACCOUNT.value,
                data={"caseId": case.id, "cardVersion": case.revision},
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
    card_json: dict[str, Any] = card.model_dump(exclude_none=True, mode="json")
    card_json["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json"
    card_json["msteams"] = {"width": "Full"}
    return card_json


def _can_request(case: Case, request: ActionRequest | None) -> bool:
    if case.status is not CaseStatus.OPEN:
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
        ],
    )


def _account_line(case: Case) -> str:
    account = case.account
    if account.enabled is None:
        return "Not read yet"
    state = "Enabled" if account.enabled else "Disabled"
    return f"{state} (read back {format_time(account.checked_at)})"


def _facts(case: Case) -> FactSet:
    sources = sorted({a.source.label for a in case.alerts})
    detections = sorted({a.detection_source for a in case.alerts if a.detection_source})
    facts = [
        Fact(title="Account", value=_account_line(case)),
        Fact(title="Severity", value=case.severity.value.capitalize()),
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


_REQUEST_HEADLINES = {
    RequestState.PENDING: "Awaiting approval",
    RequestState.APPROVED: "Approved, starting",
    RequestState.EXECUTING: "Running",
    RequestState.SUCCEEDED: "Done",
    RequestState.FAILED: "Failed",
    RequestState.REJECTED: "Rejected",
    RequestState.EXPIRED: "Expired",
    RequestState.CANCELLED: "Cancelled",
}


def _request_block(request: ActionRequest) -> Container:
    headline = f"{request.action.label}: {_REQUEST_HEADLINES[request.state]}"
    colors: dict[RequestState, Color] = {RequestState.SUCCEEDED: "Good", RequestState.FAILED: "Attention"}
    color = colors.get(request.state, "Accent")
    items: list[Any] = [
        TextBlock(text=headline, weight="Bolder", color=color, wrap=True),
        TextBlock(
            text=f"Requested by {request.requester.label} at {format_time(request.created_at)}"
            + (f": “{request.reason}”" if request.reason else ""),
            wrap=True,
            spacing="None",
        ),
    ]
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
