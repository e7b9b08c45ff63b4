"""Storm mode's pure rules: clusters, pages, frozen and hashed target sets, the blast radius."""

from __future__ import annotations

from datetime import timedelta

from bot.domain.approval import Approve, Cancel, Refused, Reject, decide
from bot.domain.campaigns import (
    PAGE_SIZE,
    BulkRequest,
    bulk_blast_radius,
    bulk_opening_step_up,
    bulk_sign_off_step_up,
    clusters,
    open_bulk,
    page_of,
    scope_cases,
    target_hash,
)
from bot.domain.models import CaseStatus, RequestState, ResponseAction
from bot.domain.policy import ActorRoles, Policy, StepUp, StormRule
from devtools.samples import ALEX, CAMPAIGN_POLICY, MEGAN, T0, campaign, campaign_members

RESPONDER = ActorRoles(object_id=ALEX.object_id, responder=True, approver=True)


def _open(**changes: object) -> BulkRequest | Refused:
    members = campaign_members()
    values: dict[str, object] = {
        "bulk_id": "b1",
        "scope": "severity:high",
        "scope_label": "all high severity identities",
        "action": ResponseAction.DISABLE_ACCOUNT,
        "actor": ALEX,
        "roles": RESPONDER,
        "reason": "one spray",
        "candidates": [(c, c.protected, c.privileged_reason) for c in members],
        "policy": CAMPAIGN_POLICY,
        "now": T0,
        "started_last_hour": 0,
    }
    values.update(changes)
    return open_bulk(campaign(), **values)  # type: ignore[arg-type]


def test_clusters_are_largest_first_and_need_two() -> None:
    members = campaign_members()
    lone = members[3].model_copy(
        update={"alerts": (members[3].alerts[0].model_copy(update={"title": "Odd one", "techniques": ()}),)}
    )
    found = clusters([*members[:3], lone, *members[4:]])
    # The IP is shared by all 25; the title and technique by 24 (ties: title before technique).
    assert [c.kind for c in found[:3]] == ["ip", "title", "technique"]
    assert [len(c.case_ids) for c in found[:3]] == [25, 24, 24]
    assert all(len(c.case_ids) >= 2 for c in found)
    assert found[1].key.startswith("cluster:") and "spray" not in found[1].key.lower()


def test_pages_are_ten_flagged_first_and_clamped() -> None:
    members = campaign_members()
    shown, pages, first = page_of(members, 0)
    assert (shown, pages, len(first)) == (0, 3, PAGE_SIZE)
    assert first[0].protected and first[1].privileged_reason  # protected and privileged lead
    assert page_of(members, 99)[0] == 2 and len(page_of(members, 99)[2]) == 5
    assert page_of([], 0) == (0, 1, [])


def test_a_bulk_request_freezes_and_hashes_its_targets_and_leaves_protected_out() -> None:
    bulk = _open()
    assert isinstance(bulk, BulkRequest)
    assert len(bulk.targets) == 24  # the protected break-glass left out
    assert bulk.protected == ("Spray Victim 00 (breakglass@contoso.com)",)
    assert [t.upn for t in bulk.privileged] == ["spray01@contoso.com"]
    assert bulk.target_hash == target_hash(ResponseAction.DISABLE_ACCOUNT, tuple(reversed(bulk.targets)))
    assert bulk.target_hash != target_hash(ResponseAction.REVOKE_SESSIONS, bulk.targets)
    assert bulk.state is RequestState.PENDING and bulk.approval.required_approvals == 2


def test_a_bulk_request_always_needs_two_distinct_approvers() -> None:
    bulk = _open()
    assert isinstance(bulk, BulkRequest)
    again = decide(bulk.approval, Approve(ALEX, RESPONDER), CAMPAIGN_POLICY, T0)
    assert isinstance(again, Refused) and "different approver" in again.reason
    megan = ActorRoles(object_id=MEGAN.object_id, responder=True, approver=True)
    approved = decide(bulk.approval, Approve(MEGAN, megan), CAMPAIGN_POLICY, T0)
    assert not isinstance(approved, Refused) and approved.state is RequestState.APPROVED
    one = CAMPAIGN_POLICY.model_copy(update={"storm": StormRule(approvals=1)})
    assert one.storm.required_approvals == 2


def test_bulk_requests_are_refused_in_the_single_action_words() -> None:
    outsider = ActorRoles(object_id="eve", responder=False)
    refused = _open(roles=outsider)
    assert isinstance(refused, Refused) and "is not an authorized responder" in refused.reason
    refused = _open(reason="  ")
    assert (
        isinstance(refused, Refused) and refused.reason == "Type a reason before you act; nothing was done."
    )
    refused = _open(action=ResponseAction.ENABLE_ACCOUNT)
    assert isinstance(refused, Refused) and "not offered as a bulk action" in refused.reason
    only_protected = [(c, True, "") for c in campaign_members()[:3]]
    refused = _open(candidates=only_protected)
    assert isinstance(refused, Refused) and "3 protected account(s) left out" in refused.reason


def test_contained_identities_are_left_out_of_a_disable() -> None:
    members = [c.model_copy(update={"status": CaseStatus.CONTAINED}) for c in campaign_members()[1:5]]
    refused = _open(candidates=[(c, False, "") for c in members])
    assert isinstance(refused, Refused)
    revoke = _open(candidates=[(c, False, "") for c in members], action=ResponseAction.REVOKE_SESSIONS)
    assert isinstance(revoke, BulkRequest) and len(revoke.targets) == 4


def test_the_blast_radius_counts_the_whole_set() -> None:
    strict = CAMPAIGN_POLICY.model_copy(update={"storm": StormRule()})
    assert bulk_blast_radius(strict, ResponseAction.DISABLE_ACCOUNT, 15, 5) is False
    refused = bulk_blast_radius(strict, ResponseAction.DISABLE_ACCOUNT, 15, 6)
    assert (
        isinstance(refused, Refused) and "bring destructive actions in the past hour to 21" in refused.reason
    )
    assert "sets no storm.max_bulk" in refused.reason
    assert bulk_blast_radius(CAMPAIGN_POLICY, ResponseAction.DISABLE_ACCOUNT, 50, 6) is True
    over = bulk_blast_radius(CAMPAIGN_POLICY, ResponseAction.DISABLE_ACCOUNT, 51, 0)
    assert isinstance(over, Refused) and "at most 50 targets" in over.reason
    assert bulk_blast_radius(strict, ResponseAction.ENABLE_ACCOUNT, 500, 500) is False


def test_scopes_name_a_cluster_or_a_severity() -> None:
    members = campaign_members()
    [title] = [c for c in clusters(members) if c.kind == "title"]
    label, cases = scope_cases(title.key, members) or ("", [])
    assert label == "Alert: Password spray" and len(cases) == 25
    label, cases = scope_cases("severity:medium", members) or ("", [])
    assert label == "all medium severity identities" and len(cases) == 5
    assert scope_cases("severity:catastrophic", members) is None
    assert scope_cases("cluster:0000", members) is None


# -- step-up on bulk sign-offs --------------------------------------------------------------

MEGAN_ROLES = ActorRoles(object_id=MEGAN.object_id, responder=True, approver=True)


def _with_step_up(**when: object) -> Policy:
    values: dict[str, object] = {"context": "c1", "max_age": timedelta(minutes=10), **when}
    return CAMPAIGN_POLICY.model_copy(update={"step_up": StepUp.model_validate(values)})


def _bulk(policy: Policy, **changes: object) -> BulkRequest:
    bulk = _open(policy=policy, **changes)
    assert isinstance(bulk, BulkRequest)
    return bulk


def test_bulk_approvals_need_step_up_for_its_actions_and_privileged_targets() -> None:
    by_action = _with_step_up(actions=frozenset({ResponseAction.DISABLE_ACCOUNT}))
    bulk = _bulk(by_action)
    approve = Approve(MEGAN, MEGAN_ROLES)
    needed = bulk_sign_off_step_up(by_action, bulk, approve, T0)
    assert needed is not None and needed.context == "c1"
    revoke = _bulk(by_action, action=ResponseAction.REVOKE_SESSIONS)
    assert bulk_sign_off_step_up(by_action, revoke, approve, T0) is None

    by_privilege = _with_step_up(privileged_targets=True)
    # spray01 holds an admin role: the whole bulk request needs it.
    privileged = _bulk(by_privilege, action=ResponseAction.REVOKE_SESSIONS)
    assert privileged.privileged
    assert bulk_sign_off_step_up(by_privilege, privileged, approve, T0) is not None
    members = [c for c in campaign_members() if not c.privileged_reason and not c.protected]
    plain_set = _bulk(by_privilege, candidates=[(c, False, "") for c in members])
    assert not plain_set.privileged
    assert bulk_sign_off_step_up(by_privilege, plain_set, approve, T0) is None
    assert bulk_sign_off_step_up(CAMPAIGN_POLICY, privileged, approve, T0) is None  # no step_up at all


def test_only_a_sign_off_that_would_count_asks_for_step_up() -> None:
    policy = _with_step_up(actions=frozenset({ResponseAction.DISABLE_ACCOUNT}))
    bulk = _bulk(policy)
    # The requester again, an expired request, a reject or a cancel: their own answer, no step-up.
    assert bulk_sign_off_step_up(policy, bulk, Approve(ALEX, RESPONDER), T0) is None
    late = T0 + timedelta(hours=1)
    assert bulk_sign_off_step_up(policy, bulk, Approve(MEGAN, MEGAN_ROLES), late) is None
    assert bulk_sign_off_step_up(policy, bulk, Reject(MEGAN, MEGAN_ROLES, "no"), T0) is None
    assert bulk_sign_off_step_up(policy, bulk, Cancel(ALEX), T0) is None


def test_opening_a_bulk_request_never_needs_step_up_as_the_requester_alone_never_suffices() -> None:
    policy = _with_step_up(actions=frozenset({ResponseAction.DISABLE_ACCOUNT}), privileged_targets=True)
    bulk = _bulk(policy)
    assert bulk.state is RequestState.PENDING and len(bulk.approval.approvals) == 1
    assert bulk_opening_step_up(policy, bulk) is None
    # Were a bulk request ever approved on opening, its opening would need it (fail closed).
    approved = bulk.model_copy(
        update={"approval": bulk.approval.model_copy(update={"state": RequestState.APPROVED})}
    )
    assert bulk_opening_step_up(policy, approved) is not None


def test_a_retry_of_the_failed_identities_is_a_new_bulk_request_under_the_same_rule() -> None:
    policy = _with_step_up(actions=frozenset({ResponseAction.DISABLE_ACCOUNT}))
    retry = _bulk(policy, retry_of="b0", candidates=[(c, False, "") for c in campaign_members()[1:3]])
    assert retry.state is RequestState.PENDING and bulk_opening_step_up(policy, retry) is None
    assert bulk_sign_off_step_up(policy, retry, Approve(MEGAN, MEGAN_ROLES), T0) is not None
