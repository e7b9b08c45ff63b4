"""How a decision was authenticated: step-up freshness and context, and the facts' digest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.authn import TEAMS_CLICK, Authentication, facts_digest
from bot.domain.models import Case, IdentityRef
from bot.domain.policy import StepUp

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
STEP_UP = StepUp(context="c1", max_age=timedelta(minutes=10), privileged_targets=True)


def _signin(acrs: tuple[str, ...], minutes_ago: float) -> Authentication:
    return Authentication(
        method="signin", acrs=acrs, amr=("pwd", "mfa"), auth_time=NOW - timedelta(minutes=minutes_ago)
    )


def test_a_fresh_sign_in_with_the_context_satisfies_step_up() -> None:
    assert _signin(("c1",), 9).satisfies(STEP_UP, NOW)
    assert _signin(("c2", "c1"), 0).satisfies(STEP_UP, NOW)


def test_an_old_sign_in_another_context_or_a_teams_click_does_not() -> None:
    assert not _signin(("c1",), 11).satisfies(STEP_UP, NOW)
    assert not _signin(("c2",), 1).satisfies(STEP_UP, NOW)
    assert not _signin((), 1).satisfies(STEP_UP, NOW)
    assert not _signin(("c1",), -30).satisfies(STEP_UP, NOW)  # from the future: a forged clock
    assert not TEAMS_CLICK.satisfies(STEP_UP, NOW)
    assert not Authentication(method="signin", acrs=("c1",)).satisfies(STEP_UP, NOW)  # no auth_time


def test_the_audit_record_says_how() -> None:
    assert TEAMS_CLICK.audit() == {"method": "teams-click"}
    assert _signin(("c1",), 2).audit() == {
        "method": "sign-in",
        "acrs": ["c1"],
        "amr": ["pwd", "mfa"],
        "auth_time": (NOW - timedelta(minutes=2)).isoformat(),
    }


def test_the_digest_changes_with_what_is_shown() -> None:
    case = Case(
        id="c-1", identity=IdentityRef(object_id="u-1", upn="a@contoso.com"), alerts=(), opened_at=NOW
    )

    first = facts_digest(case, None)

    assert len(first) == 64 and first == facts_digest(case, None)
    assert facts_digest(case.revised(), None) != first
    assert facts_digest(case.model_copy(update={"privileged_reason": "Global Administrator"}), None) != first
