"""Case card parts for the response surface: linked accounts, automatic containment, the choices
a request carries, and the lines that explain look-alike actions.

Each builder returns Adaptive Card elements for :func:`cards.case.render_case` to place; none
decides anything (what is offered comes from :mod:`bot.domain.plans`). Untrusted text (account
identifiers, UPNs) is shown only through :mod:`cards.text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from microsoft_teams.cards import Choice, ChoiceSetInput, Container, Fact, FactSet, TextBlock, ToggleInput

from bot.domain.models import ActionRequest, Case, Provider, ResponseAction
from cards.text import Limits, inert, plain

ACCOUNTS_INPUT_ID = "accounts"
ADD_REVOKE_SESSIONS_INPUT_ID = "addRevokeSessions"
ADD_PASSWORD_CHANGE_INPUT_ID = "addPasswordChange"

ROLLBACK_TITLE = "Roll back (re-enable)"
ROLLBACK_WARNING = (
    "Roll back re-enables the account. Defender raises a 'Suspicious account enablement after "
    "disruption' alert when an account is re-enabled after attack disruption, and two approvers "
    "must sign off with a reason."
)
RISK_DIFFERENCE = (
    "Confirm safe tells Entra ID Protection this was a false positive and feeds its risk model; "
    "Dismiss risk only clears the user's risk."
)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "an unknown time"


def action_title(case: Case, action: ResponseAction) -> str:
    """A button's title: the action's label, except re-enabling what was contained automatically."""
    if action is ResponseAction.ENABLE_ACCOUNT and case.auto_contained_at is not None:
        return ROLLBACK_TITLE
    return action.label


def _state(enabled: bool | None) -> str:
    if enabled is None:
        return "state not shown by Graph"
    return "enabled" if enabled else "disabled"


def linked_accounts(case: Case, limits: Limits) -> list[Any]:
    """Every account Defender for Identity links to the person, with its provider and state.

    Shown when the person has accounts beyond Entra ID (the Account fact covers that one).
    """
    facts = case.facts
    if len(facts.providers) < 2:
        return []
    rows: list[Fact] = []
    for provider in facts.providers:
        if provider is Provider.ENTRA:
            who = case.identity.upn or case.identity.object_id or ""
            state = _state(case.account.enabled)
        else:
            account = next(a for a in facts.linked if a.provider is provider)
            who, state = account.identifier, _state(account.enabled)
        rows.append(
            Fact(title=provider.label, value=inert(f"{plain(who, limits.name)} · {state}", limits.short))
        )
    return [
        TextBlock(text="Linked accounts (Defender for Identity)", weight="Bolder", separator=True, wrap=True),
        FactSet(facts=rows, spacing="Small"),
    ]


def account_picker(case: Case, offered: Sequence[ResponseAction]) -> list[Any]:
    """A multi-select of the person's accounts, all picked: one request acts on every account
    picked, one step each. Only when there is more than one account and an action to run."""
    providers = case.facts.providers
    if len(providers) < 2 or not offered:
        return []
    return [
        ChoiceSetInput(
            id=ACCOUNTS_INPUT_ID,
            label="Accounts to act on (each is done and verified on its own)",
            is_multi_select=True,
            style="expanded",
            value=",".join(p.value for p in providers),
            choices=[Choice(title=p.label, value=p.value) for p in providers],
        )
    ]


def containment_banner(case: Case) -> list[Any]:
    """ "Already contained automatically at T", by what, and what the responder decides now."""
    if case.auto_contained_at is None:
        return []
    items: list[Any] = [
        TextBlock(
            text=f"Already contained automatically at {_time(case.auto_contained_at)}",
            weight="Bolder",
            color="Good",
            wrap=True,
        ),
        TextBlock(
            text=f"By {case.auto_contained_by or 'an unknown party'}.",
            is_subtle=True,
            spacing="None",
            wrap=True,
        ),
    ]
    if case.awaiting_ratification:
        items.append(
            TextBlock(
                text="Keep contained records that a responder stands behind it (and can add a session "
                "revoke or a password change); nothing is re-enabled unless two approvers roll it back.",
                wrap=True,
                spacing="Small",
            )
        )
    elif case.ratified_at is not None:
        items.append(
            TextBlock(
                text=f"Kept contained by a responder at {_time(case.ratified_at)}.",
                wrap=True,
                spacing="Small",
            )
        )
    return [Container(items=items, separator=True, style="good")]


def keep_contained_choices(case: Case, offered: Sequence[ResponseAction]) -> list[Any]:
    """What Keep contained may add: revoke sessions and force a password change."""
    if ResponseAction.KEEP_CONTAINED not in offered:
        return []
    return [
        ToggleInput(
            id=ADD_REVOKE_SESSIONS_INPUT_ID,
            title="With Keep contained, also revoke sessions",
            value="false",
            value_on="true",
            value_off="false",
        ),
        ToggleInput(
            id=ADD_PASSWORD_CHANGE_INPUT_ID,
            title="With Keep contained, also force a password change",
            value="false",
            value_on="true",
            value_off="false",
        ),
    ]


def action_explanations(case: Case, offered: Sequence[ResponseAction]) -> list[Any]:
    """One line under the buttons for actions a responder could confuse, and the roll-back warning."""
    lines: list[Any] = []
    if ResponseAction.ENABLE_ACCOUNT in offered and case.auto_contained_at is not None:
        lines.append(TextBlock(text=ROLLBACK_WARNING, color="Warning", weight="Bolder", wrap=True))
    if ResponseAction.CONFIRM_SAFE in offered and ResponseAction.DISMISS_RISK in offered:
        lines.append(TextBlock(text=RISK_DIFFERENCE, is_subtle=True, wrap=True, size="Small"))
    return lines


def request_scope_lines(request: ActionRequest) -> list[str]:
    """What a request covers beyond its action: the accounts picked and what Keep contained adds
    (nothing when it covers every account and adds nothing). Plain text of the bot's own words."""
    lines = []
    if request.providers:
        lines.append("Accounts: " + ", ".join(p.label for p in request.providers))
    if request.extras:
        lines.append("Adds: " + ", ".join(a.label for a in request.extras))
    return lines


def request_scope_facts(request: ActionRequest) -> list[Fact]:
    """:func:`request_scope_lines` as card facts."""
    return [
        Fact(title=line.split(": ", 1)[0], value=line.split(": ", 1)[1])
        for line in request_scope_lines(request)
    ]
