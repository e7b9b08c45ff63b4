"""The case card: one pure function renders every state a responder can see.

``render_case`` returns Adaptive Card 1.5 JSON built from ``microsoft-teams-cards`` models. Its
``Action.Execute`` data carries only ids and the card version; the server takes everything else
(target, action, who clicked) from its own state, so a tampered payload cannot steer an action.

Untrusted text (names, UPNs, titles, reasons, notes, results) is shown only in ``TextRun``s,
which no Teams client reads as markdown, or as :func:`cards.text.inert` values in a
``FactSet``; ``TextBlock``s carry the bot's own words. Links come from :mod:`cards.links` only.
The card is rendered to fit :data:`cards.text.MESSAGE_BUDGET` whatever the input: values are
cut with an ellipsis, the alert list is capped with "and N more", and an oversized case is
rendered again with tighter limits (:func:`cards.text.fit`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
    RichTextBlock,
    TargetElement,
    TextBlock,
    TextInput,
    TextRun,
    ToggleVisibilityAction,
)

from bot.domain.approval import MAX_REASON_CHARS
from bot.domain.models import (
    ActionRequest,
    Actor,
    Alert,
    Case,
    CaseStatus,
    RequestState,
    Severity,
)
from bot.domain.plans import blocked, offered_actions
from cards.links import DEFAULT_LINKS, PortalLinks
from cards.response import (
    ACCOUNTS_INPUT_ID,
    ADD_PASSWORD_CHANGE_INPUT_ID,
    ADD_REVOKE_SESSIONS_INPUT_ID,
    account_picker,
    action_explanations,
    action_title,
    containment_banner,
    keep_contained_choices,
    linked_accounts,
    request_scope_facts,
)
from cards.text import DEFAULT, Limits, fit, inert, joined, json_size, plain

__all__ = [
    "ACCOUNTS_INPUT_ID",
    "ADD_PASSWORD_CHANGE_INPUT_ID",
    "ADD_REVOKE_SESSIONS_INPUT_ID",
    "DEFAULT_LINKS",
    "REASON_INPUT_ID",
    "PortalLinks",
    "Viewer",
    "render_case",
    "request_headline",
]

MAX_ALERTS_SHOWN = DEFAULT.alerts
MAX_SIGNALS_SHOWN = 3
MAX_TEAMS_ID_CHARS = 128
REASON_INPUT_ID = "reason"


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
    page_url: str = "",
) -> dict[str, Any]:
    """The card of ``case`` with its latest action ``request`` (if any).

    ``page_url`` is the case's approval page, built by the bot from ``APPROVAL_PAGE_URL`` and the
    case id (never from text it received); empty: no link.

    ``note`` is a line for the person who clicked (a refusal or a stale-card notice); it is shown
    as untrusted text, since refusals quote names. ``refresh_user_ids`` (Teams user ids, at most
    60) get their own view through ``refresh`` where Teams supports it: the requester sees
    Cancel, approvers Approve and Reject.
    """

    def render(limits: Limits) -> dict[str, Any]:
        return _render(case, request, links, note, viewer, refresh_user_ids, limits, page_url)

    return fit(render)


def _render(
    case: Case,
    request: ActionRequest | None,
    links: PortalLinks,
    note: str | None,
    viewer: Viewer | None,
    refresh_user_ids: Sequence[str],
    limits: Limits,
    page_url: str = "",
) -> dict[str, Any]:
    # Phone first: who, why in one line, the account's state, the request and the choices on the
    # first screen; every alert, the sign-in risk, times, ids and portal links behind "Show details".
    body: list[Any] = [
        _header(case, limits),
        *containment_banner(case),
        _why(case, limits),
        _account(case, limits),
        *linked_accounts(case, limits),
        *_details(case, links, limits),
    ]
    if request is not None:
        body.append(_request_block(request, limits))
    if note:
        body.append(_runs(plain(note, limits.long), color="Attention", weight="Bolder", separator=True))
    actions: list[Any] = []
    if request is not None and request.state in (RequestState.PENDING, RequestState.APPROVED):
        actions += _decision_actions(case, request, viewer, body)
    if page_url:
        actions.append(OpenUrlAction(title="Open approval page", url=page_url))
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
                max_length=MAX_REASON_CHARS,
            )
        )
        data = {"caseId": case.id, "cardVersion": case.revision}
        offered = offered_actions(case)
        body += account_picker(case, offered)
        body += keep_contained_choices(case, offered)
        body.append(
            ActionSet(
                actions=[
                    ExecuteAction(title=action_title(case, action), verb=action.value, data=data)
                    for action in offered
                ]
            )
        )
        body += action_explanations(case, offered)
    card = AdaptiveCard(
        version="1.5",
        fallback_text=(
            f"Compromised identity: {plain(case.identity.label, limits.name)} ({case.severity.value})"
        ),
        body=body,
        actions=actions,
    )
    # Teams user ids are short ASCII ("29:1a2b..."); anything else is not one.
    user_ids = [u for u in refresh_user_ids if 0 < len(u) <= MAX_TEAMS_ID_CHARS and u.isascii()]
    if not limits.refresh:
        user_ids = []
    if user_ids:
        card.refresh = RefreshDefinition(
            action=ExecuteAction(title="Refresh", verb="refresh", data={"caseId": case.id}),
            user_ids=user_ids[:60],
        )
    card_json: dict[str, Any] = card.model_dump(exclude_none=True, mode="json")
    card_json["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json"
    card_json["msteams"] = {"width": "Full"}
    return card_json


def _runs(
    *runs: str | TextRun,
    spacing: Literal["None", "Small", "Default"] | None = None,
    separator: bool | None = None,
    **style: Any,
) -> RichTextBlock:
    """A line that shows untrusted text: ``TextRun``s, which no client reads as markdown.

    ``style`` (weight, color, size, is_subtle) applies to the plain strings among ``runs``.
    """
    inlines: list[Any] = [run if isinstance(run, TextRun) else TextRun(text=run, **style) for run in runs]
    return RichTextBlock(inlines=inlines, spacing=spacing, separator=separator)


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
                max_length=MAX_REASON_CHARS,
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


def _header(case: Case, limits: Limits) -> Container:
    severity = case.severity
    status = "Contained" if case.status is CaseStatus.CONTAINED else "Open"
    identity = case.identity
    return Container(
        # One background for every case: the severity is in the first line's color, and the
        # badges below stay readable (never yellow or red text on a red background).
        style="emphasis",
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
            _runs(
                plain(identity.display_name or identity.upn, limits.name) or "Unknown user",
                size="Large",
                weight="Bolder",
            ),
            _runs(plain(identity.upn or identity.object_id, limits.name), is_subtle=True, spacing="None"),
            *_badges(case, limits),
        ],
    )


def _badges(case: Case, limits: Limits) -> list[Any]:
    """Warnings a responder must see before acting: why no action is offered, protected or
    privileged accounts."""
    badges: list[Any] = []
    why_not = blocked(case)
    if why_not:
        badges.append(_runs(plain(why_not, limits.long), color="Attention", weight="Bolder"))
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
            _runs(
                f"Privileged: {plain(case.privileged_reason, limits.short)}. "
                "Every action needs two approvers.",
                color="Attention",
                weight="Bolder",
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
    """Graph's ``detectionSource`` as a product name (camelCase split into words otherwise).

    The result is as untrusted as ``value``: render it with :mod:`cards.text`.
    """
    if value in _DETECTION_LABELS:
        return _DETECTION_LABELS[value]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", value[:200])
    return words[:1].upper() + words[1:]


def _fact(title: str, value: str, limit: int) -> Fact:
    """A fact whose value may hold untrusted text (facts' values are markdown in Teams)."""
    return Fact(title=title, value=inert(value, limit))


DETAILS_ID = "details"


def _why(case: Case, limits: Limits) -> RichTextBlock:
    """Why, in one line: how many alerts, and the newest one's title."""
    count = len(case.alerts)
    if not count:
        return _runs("Why: no alerts", weight="Bolder", separator=True)
    newest = max(case.alerts, key=lambda a: (a.updated_at, a.id))
    title = plain(newest.title, limits.short) or "(untitled alert)"
    return _runs(
        TextRun(text=f"Why: {count} alert{'s' if count != 1 else ''} · ", weight="Bolder"),
        TextRun(text=title),
        f" ({newest.source.label})",
        separator=True,
    )


def _account(case: Case, limits: Limits) -> FactSet:
    account = case.account
    if account.enabled is None:
        state = "Not read yet"
    else:
        where = "synced from on-premises AD" if case.facts.synced else "cloud-only"
        enabled = "Enabled" if account.enabled else "Disabled"
        state = f"{enabled}, {where} (read back {format_time(account.checked_at)})"
    return FactSet(facts=[_fact("Account", state, limits.short)], spacing="Small")


def _details(case: Case, links: PortalLinks, limits: Limits) -> list[Any]:
    """The "Show details" toggle and what it shows: facts, every alert, portal links."""
    detections = {detection_label(a.detection_source) for a in case.alerts if a.detection_source}
    # One row for where the alerts came from (the product, and the detector when Graph names one).
    sources = sorted({a.source.label for a in case.alerts} | detections)
    facts = [
        _fact("Severity", case.severity.value.capitalize(), limits.short),
        *_risk_fact(case, limits),
        _fact("Detected by", joined(sources, limits.short) or "none", limits.short),
        _fact("First seen", format_time(case.first_seen), limits.short),
        _fact("Last seen", format_time(case.last_seen), limits.short),
        _fact("Case", case.id, limits.name),
    ]
    portal: list[Any] = []
    latest = case.alerts[-1] if case.alerts else None
    if latest is not None:
        portal.append(
            OpenUrlAction(title="Open alert in Defender", url=links.alert(latest.id, latest.web_url))
        )
    portal.append(
        OpenUrlAction(title="Open user in Entra", url=links.user(case.identity.object_id, case.identity.upn))
    )
    return [
        ActionSet(
            actions=[
                ToggleVisibilityAction(
                    title="Show details", target_elements=[TargetElement(element_id=DETAILS_ID)]
                )
            ],
            separator=True,
        ),
        Container(
            id=DETAILS_ID,
            is_visible=False,
            items=[FactSet(facts=facts), *_alerts(case, links, limits), ActionSet(actions=portal)],
        ),
    ]


def _risk_fact(case: Case, limits: Limits) -> list[Fact]:
    facts = case.facts
    found: list[Fact] = []
    if facts.risk_state and facts.risk_state != "none":
        level = (
            f" ({plain(facts.risk_level, limits.name)})"
            if facts.risk_level and facts.risk_level != "none"
            else ""
        )
        found.append(_fact("User risk", f"{plain(facts.risk_state, limits.name)}{level}", limits.short))
    for signal in facts.signals[: min(MAX_SIGNALS_SHOWN, limits.items)]:
        where = " · ".join(plain(p, limits.name) for p in (signal.ip_address, signal.location) if p)
        detection = plain(detection_label(signal.detection), limits.name)
        found.append(
            _fact(
                "Sign-in risk",
                f"{detection}{f' from {where}' if where else ''} ({format_time(signal.detected_at)})",
                limits.short,
            )
        )
    return found


def _alerts(case: Case, links: PortalLinks, limits: Limits) -> list[Any]:
    newest_first = sorted(case.alerts, key=lambda a: (a.updated_at, a.id), reverse=True)
    blocks: list[Any] = [
        TextBlock(
            text=f"All {len(case.alerts)} alert{'s' if len(case.alerts) != 1 else ''}",
            weight="Bolder",
            separator=True,
        )
    ]
    for alert in newest_first[: limits.alerts]:
        title = plain(alert.title, limits.short) or "(untitled alert)"
        link = OpenUrlAction(url=links.alert(alert.id, alert.web_url)) if limits.links else None
        techniques = f" · {joined(alert.techniques, limits.short)}" if alert.techniques else ""
        blocks.append(
            _runs(
                "• ",
                TextRun(text=title, select_action=link),
                f" — {alert.severity.value} · {alert.source.label} · "
                f"{format_time(alert.created_at)}{techniques}",
                spacing="Small",
            )
        )
    hidden = len(case.alerts) - min(len(case.alerts), limits.alerts)
    if hidden > 0:
        blocks.append(TextBlock(text=f"… and {hidden} more in Defender", is_subtle=True, wrap=True))
    blocks.append(_alert_ids(newest_first, limits))
    return blocks


def _alert_ids(newest_first: Sequence[Alert], limits: Limits) -> RichTextBlock:
    """Every alert id of the case, newest first, so each can be found in the portal and matched
    to what the sources sent (a case with more than the card can carry ends "and N more")."""
    named: list[str] = []
    room = limits.alert_ids
    for alert in newest_first:
        shown = plain(alert.id, limits.name)
        room -= json_size(shown) + 2  # and its ", "
        if room < 0:
            break
        named.append(shown)
    more = len(newest_first) - len(named)
    runs: list[str | TextRun] = ["Alert ids: ", TextRun(text=", ".join(named), is_subtle=True)]
    if more > 0:
        runs.append(f" and {more} more")
    return _runs(*runs, spacing="Small", is_subtle=True, size="Small")


def request_headline(request: ActionRequest, limits: Limits = DEFAULT) -> str:
    """One line a responder reads at a glance: the action and where it stands (plain text)."""
    action = request.action.label
    state = request.state
    if state is RequestState.PENDING:
        if request.approvals and request.required_approvals - len(request.approvals) == 1:
            return f"{action}: awaiting second approver"
        return f"{action}: awaiting approval"
    decider = plain(request.decided_by.label, limits.name) if request.decided_by else ""
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


def _request_block(request: ActionRequest, limits: Limits) -> Container:
    colors: dict[RequestState, Color] = {
        RequestState.SUCCEEDED: "Good",
        RequestState.FAILED: "Attention",
        RequestState.PENDING: "Warning",
    }
    requester = plain(request.requester.label, limits.name)
    reason = plain(request.reason, limits.long, quoted=True)
    items: list[Any] = [
        _runs(request_headline(request, limits), weight="Bolder", color=colors.get(request.state, "Accent")),
        _runs(
            f"Requested by {requester} at {format_time(request.created_at)}"
            + (f": “{reason}”" if reason else ""),
            spacing="None",
        ),
    ]
    signed = joined((a.label for a in request.approvals), limits.short) or "nobody yet"
    facts = [
        _fact(
            "Sign-offs",
            f"{len(request.approvals)} of {request.required_approvals}: {signed}",
            limits.short + 20,
        )
    ]
    if request.state in (RequestState.PENDING, RequestState.APPROVED):
        facts.append(_fact("Who can approve", f"an approver other than {requester}", limits.short))
        facts.append(_fact("Expires", format_time(request.expires_at), limits.short))
    if request.privileged_reason:
        facts.append(_fact("Why two", request.privileged_reason, limits.short))
    facts += request_scope_facts(request)
    if request.decision_note:
        facts.append(_fact("Note", request.decision_note, limits.long))
    items.append(FactSet(facts=facts, spacing="Small"))
    if request.result is not None:
        items.append(_runs(plain(request.result.summary, limits.long), spacing="Small"))
        if request.result.verified_state:
            verified_at = format_time(request.result.verified_at)
            items.append(
                _runs(
                    f"Verified: {plain(request.result.verified_state, limits.short)} at {verified_at}",
                    is_subtle=True,
                    spacing="None",
                )
            )
    return Container(items=items, separator=True, style="emphasis")
