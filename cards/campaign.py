"""The campaign card (storm mode): one card for a mass compromise, rendered by one pure function.

``render_campaign`` returns Adaptive Card 1.5 JSON: the storm rule that opened the campaign,
counts by severity, source and detection, clusters of identities sharing an alert title,
technique, source IP or Defender incident (largest first), one page of the identities (10 per
page, protected and privileged marked, each with "Show card"), the bulk requests with their
sign-offs and progress, and the form to ask for a bulk action.

Paging is a view for the person who clicks: the bot answers their ``Action.Execute`` with the
page, and Teams replaces the card for them only; the card in the channel stays on its page.
The card's data carries only ids, a page number, a cluster key (a hash) or a severity; the
server takes targets and authorization from its own state. Untrusted text (names, UPNs, alert
titles, reasons) is shown only in ``TextRun``s or through :func:`cards.text.plain`; the card fits
:data:`cards.text.MESSAGE_BUDGET` at any size (a page is ten rows, lists are capped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

from microsoft_teams.cards import (
    ActionSet,
    AdaptiveCard,
    Choice,
    ChoiceSetInput,
    Column,
    ColumnSet,
    Container,
    ExecuteAction,
    Fact,
    FactSet,
    OpenUrlAction,
    RichTextBlock,
    TextBlock,
    TextInput,
    TextRun,
)

from bot.domain.approval import MAX_REASON_CHARS
from bot.domain.campaigns import (
    BULK_ACTIONS,
    PAGE_SIZE,
    BulkRequest,
    Campaign,
    Cluster,
    clusters,
    counts,
    page_of,
)
from bot.domain.models import Case, CaseStatus, RequestState
from bot.domain.policy import Policy
from cards.case import detection_label, format_time, request_headline
from cards.text import Limits, fit, inert, joined, plain

__all__ = [
    "BULK_ACTION_INPUT",
    "BULK_SCOPE_INPUT",
    "REASON_INPUT_ID",
    "bulk_page_link",
    "note_input_id",
    "render_campaign",
]

REASON_INPUT_ID = "reason"
BULK_SCOPE_INPUT = "bulkScope"
BULK_ACTION_INPUT = "bulkAction"
MAX_CLUSTERS_SHOWN = 5
MAX_BULKS_SHOWN = 3
MAX_NAMES_LISTED = 10

Color = Literal["Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"]


def note_input_id(bulk_id: str) -> str:
    """The id of a bulk request's decision-note input (one per request shown: ids are unique)."""
    return f"note-{bulk_id}"


def render_campaign(
    campaign: Campaign,
    members: Sequence[Case],
    bulks: Sequence[BulkRequest],
    policy: Policy,
    *,
    page: int = 0,
    note: str | None = None,
    page_url: str = "",
) -> dict[str, Any]:
    """The campaign card showing page ``page`` of its identities, and ``note`` for the clicker.

    ``page_url`` is the approval page's base URL (``APPROVAL_PAGE_URL``): with it, each bulk
    request still open for decisions links to its page there ("Open approval page"); without
    it, no link.
    """

    def render(limits: Limits) -> dict[str, Any]:
        return _render(campaign, members, bulks, policy, page, note, limits, page_url)

    return fit(render)


def _runs(*runs: str | TextRun, separator: bool | None = None, **style: Any) -> RichTextBlock:
    inlines: list[Any] = [run if isinstance(run, TextRun) else TextRun(text=run, **style) for run in runs]
    return RichTextBlock(inlines=inlines, separator=separator)


def _fact(title: str, value: str, limit: int) -> Fact:
    return Fact(title=title, value=inert(value, limit))


def _render(
    campaign: Campaign,
    members: Sequence[Case],
    bulks: Sequence[BulkRequest],
    policy: Policy,
    page: int,
    note: str | None,
    limits: Limits,
    page_url: str = "",
) -> dict[str, Any]:
    found = clusters(members)  # once per card: a storm's members carry thousands of alerts
    body: list[Any] = [_header(campaign, members), _counts(members, policy, limits)]
    body += _clusters(found, limits)
    body += _page(campaign, members, policy, page, limits)
    shown = list(bulks)[-min(MAX_BULKS_SHOWN, limits.items) :]
    for bulk in reversed(shown):
        body += _bulk_block(bulk, policy, limits, page_url)
    if len(bulks) > len(shown):
        earlier = len(bulks) - len(shown)
        body.append(TextBlock(text=f"… and {earlier} earlier bulk requests (see the thread)", is_subtle=True))
    if note:
        body.append(_runs(plain(note, limits.long), color="Attention", weight="Bolder", separator=True))
    body += _bulk_form(campaign, members, found, policy, limits)
    card = AdaptiveCard(
        version="1.5",
        fallback_text=f"Campaign: {len(members)} compromised identities",
        body=body,
    )
    card_json: dict[str, Any] = card.model_dump(exclude_none=True, mode="json")
    card_json["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json"
    card_json["msteams"] = {"width": "Full"}
    return card_json


def _header(campaign: Campaign, members: Sequence[Case]) -> Container:
    minutes = campaign.window_seconds // 60
    window = (
        f"{minutes} minutes" if campaign.window_seconds % 60 == 0 else f"{campaign.window_seconds} seconds"
    )
    status = "Growing" if campaign.accepting else "Closed to new identities"
    return Container(
        style="attention",
        bleed=True,
        items=[
            ColumnSet(
                columns=[
                    Column(
                        width="stretch",
                        items=[
                            TextBlock(
                                text="STORM · Campaign",
                                weight="Bolder",
                                color="Attention",
                                size="Small",
                                wrap=True,
                            )
                        ],
                    ),
                    Column(width="auto", items=[TextBlock(text=status, weight="Bolder", size="Small")]),
                ]
            ),
            TextBlock(
                text=f"{len(members)} compromised identities", size="Large", weight="Bolder", wrap=True
            ),
            TextBlock(
                text=(
                    f"Opened {format_time(campaign.opened_at)}: more than {campaign.threshold} identities "
                    f"opened cases within {window} (storm.threshold {campaign.threshold}, storm.window "
                    f"{window}). Identities in this campaign get no card of their own: Show card posts "
                    "one in this thread."
                ),
                wrap=True,
                is_subtle=True,
                spacing="None",
            ),
        ],
    )


def _protected(case: Case, policy: Policy) -> bool:
    return case.protected or policy.is_protected(case.identity)


def _counts(members: Sequence[Case], policy: Policy, limits: Limits) -> FactSet:
    severities = counts(case.severity.value for case in members)
    sources = counts(label for case in members for label in sorted({a.source.label for a in case.alerts}))
    detections = counts(
        label
        for case in members
        for label in sorted({detection_label(a.detection_source) for a in case.alerts if a.detection_source})
    )
    contained = sum(1 for case in members if case.status is CaseStatus.CONTAINED)
    protected = sum(1 for case in members if _protected(case, policy))
    privileged = sum(1 for case in members if case.privileged_reason)
    unchecked = sum(1 for case in members if not case.target_checked)

    def tally(items: list[tuple[str, int]]) -> str:
        return joined((f"{name} {count}" for name, count in items), limits.short, separator=" · ") or "none"

    facts = [
        _fact("Severity", tally(severities), limits.short),
        _fact("Source", tally(sources), limits.short),
        _fact("Detected by", tally(detections), limits.short),
        _fact("Contained", f"{contained} of {len(members)}", limits.short),
        _fact("Protected", f"{protected} (never acted on)", limits.short),
        _fact(
            "Privileged",
            f"{privileged}" + (f" ({unchecked} not checked yet)" if unchecked else ""),
            limits.short,
        ),
    ]
    return FactSet(facts=facts, separator=True)


def _clusters(found: Sequence[Cluster], limits: Limits) -> list[Any]:
    blocks: list[Any] = [TextBlock(text="Clusters (largest first)", weight="Bolder", separator=True)]
    if not found:
        blocks.append(
            TextBlock(text="No two identities share an alert, technique, IP or incident yet.", wrap=True)
        )
        return blocks
    for cluster in found[: min(MAX_CLUSTERS_SHOWN, limits.items)]:
        blocks.append(
            _runs(
                "• ",
                TextRun(text=plain(cluster.label, limits.short)),
                f" — {len(cluster.case_ids)} identities",
            )
        )
    hidden = len(found) - min(len(found), MAX_CLUSTERS_SHOWN, limits.items)
    if hidden > 0:
        blocks.append(TextBlock(text=f"… and {hidden} smaller clusters", is_subtle=True, wrap=True))
    return blocks


def _page(
    campaign: Campaign, members: Sequence[Case], policy: Policy, page: int, limits: Limits
) -> list[Any]:
    shown, pages, cases = page_of(members, page)
    first = shown * PAGE_SIZE + 1 if cases else 0
    last = first + len(cases) - 1 if cases else 0
    blocks: list[Any] = [
        TextBlock(
            text=f"Identities {first}–{last} of {len(members)} (page {shown + 1} of {pages})",
            weight="Bolder",
            separator=True,
        )
    ]
    for case in cases:
        marks = []
        if _protected(case, policy):
            marks.append("PROTECTED")
        if case.privileged_reason:
            marks.append("PRIVILEGED")
        status = "contained" if case.status is CaseStatus.CONTAINED else "open"
        label = plain(case.identity.upn or case.identity.display_name or case.identity.object_id, limits.name)
        row: list[Any] = [
            Column(
                width="stretch",
                items=[
                    _runs(
                        TextRun(text=label or "unknown user"),
                        f" · {case.severity.value} · {status}",
                        *(TextRun(text=f" · {m}", weight="Bolder", color="Attention") for m in marks),
                    )
                ],
                vertical_content_alignment="Center",
            )
        ]
        if case.card is None:
            row.append(
                Column(
                    width="auto",
                    items=[
                        ActionSet(
                            actions=[
                                ExecuteAction(
                                    title="Show card",
                                    verb="showCard",
                                    data={"campaignId": campaign.id, "caseId": case.id},
                                    associated_inputs="none",
                                )
                            ]
                        )
                    ],
                )
            )
        blocks.append(ColumnSet(columns=row, spacing="Small"))
    paging: list[Any] = []
    if shown > 0:
        paging.append(
            ExecuteAction(
                title="Previous page",
                verb="campaignPage",
                data={"campaignId": campaign.id, "page": shown - 1},
                associated_inputs="none",
            )
        )
    if shown + 1 < pages:
        paging.append(
            ExecuteAction(
                title="Next page",
                verb="campaignPage",
                data={"campaignId": campaign.id, "page": shown + 1},
                associated_inputs="none",
            )
        )
    if paging:
        blocks.append(ActionSet(actions=paging))
    return blocks


def bulk_page_link(page_url: str, bulk_id: str) -> str:
    """A bulk request's approval page (``page_url`` is the configured base URL)."""
    return f"{page_url.rstrip('/')}/approve/bulk/{quote(bulk_id, safe='')}"


def _bulk_block(bulk: BulkRequest, policy: Policy, limits: Limits, page_url: str = "") -> list[Any]:
    colors: dict[RequestState, Color] = {
        RequestState.SUCCEEDED: "Good",
        RequestState.FAILED: "Attention",
        RequestState.PENDING: "Warning",
    }
    approval = bulk.approval
    headline = request_headline(approval, limits)
    items: list[Any] = [
        _runs(
            f"Bulk: {headline} — {len(bulk.targets)} identities in ",
            TextRun(text=plain(bulk.scope_label, limits.short)),
            weight="Bolder",
            color=colors.get(bulk.state, "Accent"),
        ),
        _runs(
            f"Requested by {plain(approval.requester.label, limits.name)} at "
            f"{format_time(approval.created_at)}: “{plain(approval.reason, limits.long, quoted=True)}”",
        ),
    ]
    signed = joined((a.label for a in approval.approvals), limits.short) or "nobody yet"
    limit = policy.blast_radius_per_hour
    radius = f"{bulk.started_last_hour} started in the past hour + {len(bulk.targets)} = " + (
        f"{bulk.started_last_hour + len(bulk.targets)} of {limit} per hour"
    )
    if bulk.over_blast_radius:
        radius += f"; past the limit, allowed by the policy's storm.max_bulk ({policy.storm.max_bulk})"
    facts = [
        _fact(
            "Sign-offs", f"{len(approval.approvals)} of {approval.required_approvals}: {signed}", limits.short
        ),
        _fact(
            "Target set", f"{len(bulk.targets)} identities, SHA-256 {bulk.target_hash[:16]}…", limits.short
        ),
    ]
    privileged = bulk.privileged
    if privileged:
        facts.append(
            _fact(
                f"Privileged ({len(privileged)})",
                joined((t.upn or t.label for t in privileged[:MAX_NAMES_LISTED]), limits.short),
                limits.short,
            )
        )
    if bulk.protected:
        facts.append(
            _fact(
                f"Left out: protected ({len(bulk.protected)})",
                joined(bulk.protected[:MAX_NAMES_LISTED], limits.short),
                limits.short,
            )
        )
    if bulk.state in (RequestState.PENDING, RequestState.APPROVED):
        missing = max(approval.required_approvals - len(approval.approvals), 0)
        who = f"{missing} more approver{'s' if missing != 1 else ''} other than {approval.requester.label}"
        facts.append(_fact("Who can approve", who if missing else "signed off", limits.short))
        facts.append(_fact("Expires", format_time(approval.expires_at), limits.short))
    if bulk.outcomes or bulk.state in (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED):
        done, failed, pending = bulk.tally()
        left = len(bulk.targets) - done - failed - pending
        facts.append(
            _fact(
                "Progress",
                f"{done} done · {failed} failed · {pending} pending verification · {left} not yet run",
                limits.short,
            )
        )
    if approval.decision_note:
        facts.append(_fact("Note", approval.decision_note, limits.long))
    items.append(FactSet(facts=facts))
    # The bot's own words, with the policy key's name as written (no markdown reading of "_").
    items.append(_runs(f"Blast radius: {radius}", is_subtle=True))
    actions: list[Any] = []
    data = {"bulkId": bulk.id}
    if bulk.state is RequestState.PENDING:
        items.append(
            TextInput(
                id=note_input_id(bulk.id),
                label="Note (optional, recorded with your decision)",
                is_multiline=True,
                max_length=MAX_REASON_CHARS,
            )
        )
        actions += [
            ExecuteAction(title="Approve bulk action", verb="bulkApprove", data=data),
            ExecuteAction(title="Reject", verb="bulkReject", data=data),
        ]
    if bulk.state in (RequestState.PENDING, RequestState.APPROVED):
        actions.append(ExecuteAction(title="Cancel bulk request", verb="bulkCancel", data=data))
    if bulk.state in (RequestState.SUCCEEDED, RequestState.FAILED) and bulk.failed_targets:
        actions.append(
            ExecuteAction(title=f"Retry failed ({len(bulk.failed_targets)})", verb="bulkRetry", data=data)
        )
    if page_url and bulk.state in (RequestState.PENDING, RequestState.APPROVED):
        # Where a sign-off the policy's step_up covers is made (a Teams click cannot prove it).
        actions.append(OpenUrlAction(title="Open approval page", url=bulk_page_link(page_url, bulk.id)))
    if actions:
        items.append(ActionSet(actions=actions))
    return [Container(items=items, separator=True, style="emphasis")]


def _bulk_form(
    campaign: Campaign, members: Sequence[Case], found: Sequence[Cluster], policy: Policy, limits: Limits
) -> list[Any]:
    scopes: list[Choice] = []
    for cluster in found[: min(MAX_CLUSTERS_SHOWN, limits.items)]:
        scopes.append(
            Choice(title=f"{plain(cluster.label, limits.name)} ({len(cluster.case_ids)})", value=cluster.key)
        )
    for severity, count in counts(case.severity.value for case in members):
        scopes.append(Choice(title=f"All {severity} severity ({count})", value=f"severity:{severity}"))
    if not scopes:
        return []
    return [
        TextBlock(text="Bulk action", weight="Bolder", separator=True),
        _runs(
            "The identities are frozen when you ask; protected accounts are left out; "
            f"{policy.storm.required_approvals} distinct approvers must sign off (you count once if you "
            "are one). "
            f"Blast radius: {policy.blast_radius_per_hour} destructive actions per hour"
            + (
                f"; past it only up to storm.max_bulk ({policy.storm.max_bulk}) targets."
                if policy.storm.max_bulk is not None
                else "; the policy sets no storm.max_bulk, so a bulk request past it is refused."
            ),
            is_subtle=True,
        ),
        ChoiceSetInput(
            id=BULK_SCOPE_INPUT,
            label="Who",
            choices=scopes,
            value=scopes[0].value,
        ),
        ChoiceSetInput(
            id=BULK_ACTION_INPUT,
            label="Action",
            choices=[Choice(title=action.label, value=action.value) for action in BULK_ACTIONS],
            value=BULK_ACTIONS[0].value,
        ),
        # Not marked required: the card's other buttons (paging, decisions) must not be held up
        # by an empty form; the bot refuses a bulk request without a reason in words.
        TextInput(
            id=REASON_INPUT_ID,
            label="Reason (recorded in the audit log)",
            placeholder="e.g. Password spray from one IP; containing every account it reached",
            is_multiline=True,
            max_length=MAX_REASON_CHARS,
        ),
        ActionSet(
            actions=[
                ExecuteAction(
                    title="Request bulk action",
                    verb="bulkRequest",
                    data={"campaignId": campaign.id},
                )
            ]
        ),
    ]
