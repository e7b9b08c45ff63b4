"""Storm mode as pure code: campaigns, their clusters and pages, and bulk requests.

A **campaign** gathers the cases of a mass compromise (more than ``storm.threshold`` identities
opening cases within ``storm.window``) under one card. A **bulk request** asks for one action on
a frozen set of the campaign's identities (a cluster, or every identity of a severity): its
list and hash are fixed when it is asked for, protected accounts are left out and listed, and
it always needs two distinct approvers. Its approval lifecycle is the single-action one
(:mod:`bot.domain.approval`), run on the ``approval`` request it carries, so the rules and the
refusals a person reads are the same.

Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from bot.domain.approval import (
    Approve,
    Event,
    Refused,
    Retry,
    _has_visible_text,
    _too_long,
    decide,
    not_a_responder,
)
from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Actor,
    CardRef,
    Case,
    CaseStatus,
    Frozen,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.domain.policy import ActorRoles, Policy, StepUp, StormRule

PAGE_SIZE = 10
BULK_ACTIONS = (
    ResponseAction.DISABLE_ACCOUNT,
    ResponseAction.REVOKE_SESSIONS,
    ResponseAction.FORCE_PASSWORD_CHANGE,
    ResponseAction.CONFIRM_COMPROMISED,
)
ClusterKind = Literal["title", "technique", "ip", "incident"]
CLUSTER_LABELS: dict[str, str] = {
    "title": "Alert",
    "technique": "Technique",
    "ip": "Source IP",
    "incident": "Defender incident",
}


class Campaign(Frozen):
    """One mass compromise: the cases that joined it are listed on its one card.

    A campaign accepts new members while identities keep being first seen within the storm
    window of its latest member (``last_joined_at``, alert time); after that a new storm opens a
    new campaign. Its card is
    published like a case's (revision, publishing lease, posting claims).
    """

    id: str
    opened_at: datetime
    last_joined_at: datetime  # the latest first-seen time of a member
    first_joined_at: datetime | None = None  # the earliest first-seen time of a member
    threshold: int
    window_seconds: int
    members: int = 0
    accepting: bool = True
    card: CardRef | None = None
    revision: int = 1
    published_revision: int = 0
    publishing_by: str = ""
    publishing_until: datetime | None = None
    posting_claims: int = 0
    version: int = 0

    @property
    def needs_publishing(self) -> bool:
        """Whether the campaign card is missing or older than the campaign."""
        return self.card is None or self.published_revision < self.revision

    def revised(self, **changes: object) -> Campaign:
        """The campaign with ``changes`` and its card revision bumped."""
        return self.model_copy(update={**changes, "revision": self.revision + 1})


def opens_campaign(recent_cases: int, rule: StormRule) -> bool:
    """Whether ``recent_cases`` identities opening cases within the window make a campaign."""
    return recent_cases > rule.threshold


def joinable(campaign: Campaign, seen: datetime) -> bool:
    """Whether a new case first seen at ``seen`` still joins ``campaign``: within the window of
    its members' first-seen times (a late alert about an earlier time joins too)."""
    if not campaign.accepting:
        return False
    window = timedelta(seconds=campaign.window_seconds)
    earliest = campaign.first_joined_at or campaign.last_joined_at
    return earliest - window <= seen <= campaign.last_joined_at + window


@dataclass(frozen=True)
class Cluster:
    """Identities of a campaign sharing one alert title, technique, source IP or incident."""

    kind: str
    value: str
    case_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """A stable id for the card's data: a hash, so no alert text travels in it."""
        digest = hashlib.sha256(f"{self.kind}\x00{self.value}".encode()).hexdigest()
        return f"cluster:{digest[:16]}"

    @property
    def label(self) -> str:
        """``Alert: Password spray`` (untrusted value: render it inert)."""
        return f"{CLUSTER_LABELS[self.kind]}: {self.value}"


def clusters(cases: Iterable[Case]) -> list[Cluster]:
    """Clusters of two or more identities, largest first (ties by kind and value)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for case in cases:
        keys: set[tuple[str, str]] = set()
        for alert in case.alerts:
            keys.add(("title", alert.title))
            keys.update(("technique", t) for t in alert.techniques)
            keys.update(("ip", ip) for ip in alert.source_ips)
            if alert.incident_id:
                keys.add(("incident", alert.incident_id))
        keys.update(("ip", s.ip_address) for s in case.facts.signals if s.ip_address)
        for key in keys:
            groups.setdefault(key, []).append(case.id)
    found = [Cluster(kind, value, tuple(ids)) for (kind, value), ids in groups.items() if len(ids) >= 2]
    order = list(CLUSTER_LABELS)
    return sorted(found, key=lambda c: (-len(c.case_ids), order.index(c.kind), c.value))


def counts(values: Iterable[str]) -> list[tuple[str, int]]:
    """How many of each value, most first."""
    tally: dict[str, int] = {}
    for value in values:
        tally[value] = tally.get(value, 0) + 1
    return sorted(tally.items(), key=lambda item: (-item[1], item[0]))


def page_of(cases: Sequence[Case], page: int) -> tuple[int, int, list[Case]]:
    """Page ``page`` (0-based, clamped) of ``cases`` in the campaign's order: highest severity
    first, protected and privileged accounts first within it (they need a second look), then by
    name. Returns the page shown, how many pages there are, and its cases."""

    def order(case: Case) -> tuple[int, bool, str, str]:
        flagged = case.protected or bool(case.privileged_reason)
        name = (case.identity.upn or case.identity.display_name or case.identity.object_id or "").lower()
        return (-case.severity.rank, not flagged, name, case.id)

    ordered = sorted(cases, key=order)
    pages = max(1, -(-len(ordered) // PAGE_SIZE))
    shown = min(max(page, 0), pages - 1)
    return shown, pages, ordered[shown * PAGE_SIZE : (shown + 1) * PAGE_SIZE]


class BulkTarget(Frozen):
    """One identity a bulk request acts on, as frozen when it was asked for."""

    case_id: str
    object_id: str
    upn: str = ""
    label: str
    privileged_reason: str = ""


class ItemOutcome(Frozen):
    """What happened to one identity of a bulk request."""

    outcome: Literal["verified", "failed", "pending"]
    detail: str = ""


class BulkRequest(Frozen):
    """One action asked for on a frozen set of a campaign's identities.

    ``approval`` is the request the approval lifecycle runs on (its ``case_id`` is the
    campaign's id); its state is the bulk request's state.
    """

    id: str
    campaign_id: str
    scope: str
    scope_label: str
    approval: ActionRequest
    targets: tuple[BulkTarget, ...]
    protected: tuple[str, ...] = ()
    target_hash: str
    started_last_hour: int = 0
    over_blast_radius: bool = False
    retry_of: str = ""
    outcomes: dict[str, ItemOutcome] = Field(default_factory=dict)
    summary_claims: int = 0
    summary_sent: bool = False
    version: int = 0

    @property
    def state(self) -> RequestState:
        """Where the bulk request stands (its approval's state)."""
        return self.approval.state

    @property
    def action(self) -> ResponseAction:
        """The action asked for."""
        return self.approval.action

    @property
    def privileged(self) -> list[BulkTarget]:
        """The targets holding an admin role (shown apart on the card)."""
        return [t for t in self.targets if t.privileged_reason]

    def tally(self) -> tuple[int, int, int]:
        """Identities done (verified), failed, and pending verification so far."""
        done = sum(1 for o in self.outcomes.values() if o.outcome == "verified")
        failed = sum(1 for o in self.outcomes.values() if o.outcome == "failed")
        pending = sum(1 for o in self.outcomes.values() if o.outcome == "pending")
        return done, failed, pending

    @property
    def failed_targets(self) -> list[BulkTarget]:
        """Targets whose outcome is failed (what "Retry failed" asks for again)."""
        return [t for t in self.targets if (o := self.outcomes.get(t.case_id)) and o.outcome == "failed"]


def target_hash(action: ResponseAction, targets: Sequence[BulkTarget]) -> str:
    """SHA-256 over the action and the sorted object ids: the frozen set's fingerprint."""
    document = {"action": action.value, "targets": sorted(t.object_id.lower() for t in targets)}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def child_request_id(bulk_id: str, case_id: str) -> str:
    """The id of the per-identity request a bulk request runs through (the same on every replica)."""
    return f"{bulk_id}.{case_id}"


def parent_bulk_id(request: ActionRequest) -> str | None:
    """The bulk request ``request`` runs one identity of, when it is such a (child) request."""
    bulk_id, dot, case_id = request.id.rpartition(".")
    return bulk_id if dot and bulk_id and case_id == request.case_id else None


def item_outcome(result: ActionResult) -> ItemOutcome:
    """One identity's result as its bulk request's outcome for it."""
    if not result.succeeded:
        return ItemOutcome(outcome="failed", detail=result.summary)
    return ItemOutcome(outcome="verified" if result.verified else "pending", detail=result.summary)


def rechecked(bulk: BulkRequest, case_id: str, result: ActionResult) -> BulkRequest | None:
    """``bulk`` with the re-check of an identity that was pending verification, or ``None`` when
    nothing changes (it was not pending, or still is)."""
    known = bulk.outcomes.get(case_id)
    if known is None or known.outcome != "pending":
        return None
    outcome = item_outcome(result)
    if outcome.outcome == "pending":
        return None
    return bulk.model_copy(update={"outcomes": {**bulk.outcomes, case_id: outcome}})


def bulk_blast_radius(
    policy: Policy, action: ResponseAction, targets: int, started_last_hour: int
) -> Refused | bool:
    """Whether a bulk of ``targets`` may run given ``started_last_hour`` destructive actions.

    ``False``: within the limit; ``True``: past it, allowed by the policy's explicit
    ``storm.max_bulk``; :class:`Refused` otherwise.
    """
    if action not in policy.destructive_actions:
        return False
    limit = policy.blast_radius_per_hour
    total = started_last_hour + targets
    if total <= limit:
        return False
    max_bulk = policy.storm.max_bulk
    if max_bulk is not None and targets <= max_bulk:
        return True
    beyond = (
        f"the policy's storm.max_bulk allows at most {max_bulk} targets per bulk request"
        if max_bulk is not None
        else "the policy sets no storm.max_bulk, which is what allows a bulk request past it"
    )
    return Refused(
        f"The blast-radius limit applies: {targets} targets would bring destructive actions in the past "
        f"hour to {total}, over the limit of {limit} per hour, and {beyond}; nothing was done. "
        "Choose a smaller cluster, or ask your security admin to set storm.max_bulk in the policy."
    )


def open_bulk(
    campaign: Campaign,
    *,
    bulk_id: str,
    scope: str,
    scope_label: str,
    action: ResponseAction,
    actor: Actor,
    roles: ActorRoles,
    reason: str,
    candidates: Sequence[tuple[Case, bool, str]],
    policy: Policy,
    now: datetime,
    started_last_hour: int,
    retry_of: str = "",
) -> BulkRequest | Refused:
    """A new bulk request on ``candidates`` (each case with whether it is protected and why it is
    privileged), or the refusal a person reads.

    Protected accounts are left out and listed; contained identities are left out of a disable.
    The requester, when an approver, counts as the first of at least two distinct sign-offs.
    The single-action rules apply first (responders, a reason, its length) through
    :func:`bot.domain.approval.open_request`'s wording.
    """
    if policy.responders.empty:
        return Refused(
            "No responders are configured, so nobody can act. "
            "Ask your security admin to set them in the policy."
        )
    if not roles.responder:
        return not_a_responder(actor)
    if action not in BULK_ACTIONS:
        return Refused(f"{action.label} is not offered as a bulk action; nothing was done.")
    if not _has_visible_text(reason):
        return Refused("Type a reason before you act; nothing was done.")
    too_long = _too_long("reason", reason)
    if too_long is not None:
        return too_long
    protected = [case.identity.label for case, is_protected, _ in candidates if is_protected]
    targets = [
        BulkTarget(
            case_id=case.id,
            object_id=case.identity.object_id or "",
            upn=case.identity.upn or "",
            label=case.identity.label,
            privileged_reason=privileged,
        )
        for case, is_protected, privileged in candidates
        if not is_protected
        and case.resolved
        and not case.merged_into
        and not (action is ResponseAction.DISABLE_ACCOUNT and case.status is CaseStatus.CONTAINED)
    ]
    if not targets:
        left = f" ({len(protected)} protected account(s) left out)" if protected else ""
        return Refused(f"No identity in {scope_label} can be acted on{left}; nothing was done.")
    over = bulk_blast_radius(policy, action, len(targets), started_last_hour)
    if isinstance(over, Refused):
        return over
    approvals = (actor,) if roles.approver else ()
    approval = ActionRequest(
        id=bulk_id,
        case_id=campaign.id,
        action=action,
        requester=actor,
        reason=reason.strip(),
        created_at=now,
        expires_at=now + policy.expiry,
        approvals=approvals,
        required_approvals=policy.storm.required_approvals,
        privileged_reason=(
            f"{len([t for t in targets if t.privileged_reason])} privileged target(s)"
            if any(t.privileged_reason for t in targets)
            else ""
        ),
        idempotency_key=f"bulk:{campaign.id}:{action.value}:{bulk_id}",
    )
    return BulkRequest(
        id=bulk_id,
        campaign_id=campaign.id,
        scope=scope,
        scope_label=scope_label,
        approval=approval,
        targets=tuple(targets),
        protected=tuple(protected),
        target_hash=target_hash(action, targets),
        started_last_hour=started_last_hour,
        over_blast_radius=over,
        retry_of=retry_of,
    )


def bulk_step_up(policy: Policy, bulk: BulkRequest) -> StepUp | None:
    """The policy's ``step_up`` when it covers ``bulk``: its action is one of ``step_up.actions``,
    or (``privileged_targets``) any identity of its frozen target set is privileged."""
    return policy.step_up_for(bulk.action, privileged_target=bool(bulk.privileged))


def bulk_sign_off_step_up(policy: Policy, bulk: BulkRequest, event: Event, now: datetime) -> StepUp | None:
    """The fresh sign-in ``event`` on ``bulk`` needs before it may count, if any.

    The single-action rule, applied to bulk requests: step-up guards the sign-off that lets the
    action run, so every approval (and retry) that would count needs it; a sign-off the approval
    rules refuse anyway (not an approver, the requester again, expired) gets that refusal instead.
    """
    if not isinstance(event, Approve | Retry):
        return None
    step_up = bulk_step_up(policy, bulk)
    if step_up is None or isinstance(decide(bulk.approval, event, policy, now), Refused):
        return None
    return step_up


def bulk_opening_step_up(policy: Policy, bulk: BulkRequest) -> StepUp | None:
    """The fresh sign-in opening ``bulk`` (or retrying its failed identities) needs: only when
    the requester's own sign-off would let it run, which a bulk request never allows (it always
    needs two distinct approvers); kept so that a policy change can never skip the check."""
    if bulk.state is not RequestState.APPROVED:
        return None
    return bulk_step_up(policy, bulk)


def scope_cases(scope: str, members: Sequence[Case]) -> tuple[str, list[Case]] | None:
    """The label and cases a card's ``scope`` names (a cluster key or ``severity:<level>``)."""
    if scope.startswith("severity:"):
        try:
            severity = Severity(scope.partition(":")[2])
        except ValueError:
            return None
        return f"all {severity.value} severity identities", [c for c in members if c.severity is severity]
    for cluster in clusters(members):
        if cluster.key == scope:
            wanted = set(cluster.case_ids)
            return cluster.label, [c for c in members if c.id in wanted]
    return None
