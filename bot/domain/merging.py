"""One case per person: merging the duplicate open cases older versions could leave behind.

Older versions keyed a case on the Entra object id when the alert carried one, else on the UPN,
so one person could hold two open cases: one under the object id, one under the UPN (later
learning the object id from Entra ID, but keeping its UPN key). The schema migration that
introduced resolving every identity to its object id merges them; the rules are here, once,
so every store applies the same ones:

- two cases are one person when they name the same object id (by key or by what the case
  learnt), or when one knows no object id and its UPN (case-insensitively) is that of cases of
  exactly one object id; cases of two different object ids are two people, even under one UPN
  (an account renamed or a UPN given to someone new);
- the case kept is the one keyed on the object id, else the oldest; the others' alerts move to
  it and they are closed with the reason;
- every case left open is keyed on its object id when it knows one, else its lower-cased UPN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.models import ActionRequest, Actor, Case, RequestState

BOT_ACTOR = Actor(object_id="remediation-bot", name="remediation-bot")
OPEN_REQUEST_STATES = (RequestState.PENDING, RequestState.APPROVED)


@dataclass(frozen=True)
class MergePlan:
    """What to write: cases that stay open (new data, new key), and the closed duplicates."""

    open_cases: list[tuple[Case, str]]
    closed: list[Case]


def plan_merges(active: Sequence[tuple[Case, str]], *, why: str) -> MergePlan:
    """The merges and re-keys for ``active`` cases (oldest first, each with its stored key).

    ``why`` says where the merge comes from (e.g. the migration), for the closed cases' reason.
    Only cases whose data or key change are returned.
    """
    order = {case.id: n for n, (case, _) in enumerate(active)}
    stored_key = {case.id: key for case, key in active}
    by_object_id: dict[str, list[Case]] = {}
    unresolved: dict[str, list[Case]] = {}
    for case, _ in active:
        if case.identity.object_id:
            by_object_id.setdefault(case.identity.object_id.lower(), []).append(case)
        elif case.identity.upn:
            unresolved.setdefault(case.identity.upn.lower(), []).append(case)
    groups: dict[str, list[Case]] = {oid: list(cases) for oid, cases in by_object_id.items()}
    loose: list[list[Case]] = []
    for upn, cases in unresolved.items():
        owners = [oid for oid, named in by_object_id.items() if any(_upn(c) == upn for c in named)]
        if len(owners) == 1:
            groups[owners[0]] += cases
        elif not owners:
            loose.append(cases)  # the same UPN under keys differing only in letter case
        # More than one object id under that UPN: which person it meant is unknown; it stays
        # unresolved until Entra ID says whose UPN it is now.
    open_cases: list[tuple[Case, str]] = []
    closed: list[Case] = []
    for oid, members in [*groups.items(), *(("", cases) for cases in loose)]:
        members.sort(key=lambda c: (stored_key[c.id].lower() != oid if oid else False, order[c.id]))
        survivor, duplicates = members[0], members[1:]
        for duplicate in duplicates:
            survivor = survivor.absorbing(duplicate)
            reason = (
                f"Merged into case {survivor.id}: both named {survivor.identity.label}, "
                f"one person has one case ({why})."
            )
            closed.append(duplicate.closed_into(survivor.id, reason))
        key = survivor.identity.key
        if duplicates or key != stored_key[survivor.id]:
            open_cases.append((survivor, key))
    return MergePlan(open_cases=open_cases, closed=closed)


def cancelled_for_merge(request: ActionRequest, case: Case, now: datetime) -> ActionRequest:
    """An open request of a case closed into another, cancelled: it is asked again there."""
    return request.model_copy(
        update={
            "state": RequestState.CANCELLED,
            "decided_by": BOT_ACTOR,
            "decision_note": case.closed_reason or f"The case was merged into case {case.merged_into}.",
            "finished_at": now,
        }
    )


def _upn(case: Case) -> str:
    return (case.identity.upn or "").lower()
