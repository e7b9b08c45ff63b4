"""The policy file: the shipped ones load, and every kind of mistake names its key."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.policy_file import DEFAULT_PRIVILEGED_ROLE_TEMPLATES, load_policy, policy_from_settings
from bot.config.settings import load_settings
from bot.domain.models import ResponseAction
from bot.domain.policy import Principals
from bot.errors import ConfigError
from devtools.sandbox import DEMO_POLICY

ROOT = Path(__file__).resolve().parents[2]
ALEX = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51"
SOC_RESPONDERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c01"
SOC_APPROVERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c02"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_policy_loads() -> None:
    policy = load_policy(ROOT / "policy.example.yaml")

    assert policy.approvals == {ResponseAction.DISABLE_ACCOUNT: 1}
    assert policy.privileged_role_templates == frozenset(DEFAULT_PRIVILEGED_ROLE_TEMPLATES)
    assert policy.protected_users == {"breakglass@contoso.com"}
    assert policy.expiry == timedelta(minutes=30)
    assert policy.reminder_after == timedelta(minutes=10)
    assert policy.blast_radius_per_hour == 20


def test_the_example_policy_steps_up_on_privileged_targets() -> None:
    step_up = load_policy(ROOT / "policy.example.yaml").step_up

    assert step_up is not None
    assert step_up.context == "c1"
    assert step_up.max_age == timedelta(minutes=10)
    assert step_up.applies(ResponseAction.DISABLE_ACCOUNT, privileged_target=True)
    assert not step_up.applies(ResponseAction.DISABLE_ACCOUNT, privileged_target=False)


def test_step_up_for_named_actions(tmp_path: Path) -> None:
    path = _write(tmp_path, "step_up: {context: c7, max_age_minutes: 5, when: {actions: [disableAccount]}}\n")

    policy = load_policy(path)

    assert policy.step_up_for(ResponseAction.DISABLE_ACCOUNT, privileged_target=False) is not None
    assert policy.step_up_for(ResponseAction.REVOKE_SESSIONS, privileged_target=True) is None
    assert policy.step_up is not None and policy.step_up.max_age == timedelta(minutes=5)


def test_the_demo_policy_names_the_demo_groups() -> None:
    policy = load_policy(DEMO_POLICY)

    assert policy.responders == Principals(groups=frozenset({SOC_RESPONDERS}))
    assert policy.approvers == Principals(groups=frozenset({SOC_APPROVERS}))
    assert policy.approvals_for(ResponseAction.DISABLE_ACCOUNT) == 1
    assert policy.approvals_for(ResponseAction.DISABLE_ACCOUNT, privileged_target=True) == 2
    assert len(policy.privileged_role_templates) == 8
    assert policy.protected_users == {"breakglass@contoso.com"}


def test_the_eight_default_role_templates() -> None:
    assert set(DEFAULT_PRIVILEGED_ROLE_TEMPLATES.values()) == {
        "Global Administrator",
        "Privileged Role Administrator",
        "Security Administrator",
        "User Administrator",
        "Privileged Authentication Administrator",
        "Helpdesk Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
    }


def test_every_key_is_optional(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, f"responders: {{users: [{ALEX.upper()}]}}\n"))

    assert policy.responders.users == {ALEX}  # object ids are kept lower-case
    assert policy.approvers.empty
    assert policy.approvals == {}
    assert policy.privileged_role_templates == frozenset(DEFAULT_PRIVILEGED_ROLE_TEMPLATES)
    assert policy.privileged_groups == frozenset()
    assert policy.protected_users == frozenset()
    assert (policy.expiry, policy.reminder_after, policy.blast_radius_per_hour) == (
        timedelta(minutes=30),
        timedelta(minutes=10),
        20,
    )


def test_explicit_values_and_switches(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
responders: {{users: [{ALEX}], groups: []}}
approvers:
  users:
  groups: [{SOC_APPROVERS}]
approvals: {{disableAccount: 2}}
privileged_targets: {{roles: [], groups: [{SOC_RESPONDERS}]}}
protected_accounts: [BreakGlass@Contoso.com, {GLOBAL_ADMIN}]
expiry_minutes: 15
reminder_minutes: null
blast_radius_per_hour: 3
""",
    )

    policy = load_policy(path)

    assert policy.approvers == Principals(groups=frozenset({SOC_APPROVERS}))  # `users:` (null) is none
    assert policy.approvals_for(ResponseAction.DISABLE_ACCOUNT) == 2
    assert policy.privileged_role_templates == frozenset()  # `roles: []` turns role checks off
    assert policy.privileged_groups == {SOC_RESPONDERS}
    assert policy.protected_users == {"breakglass@contoso.com", GLOBAL_ADMIN}
    assert policy.expiry == timedelta(minutes=15)
    assert policy.reminder_after is None
    assert policy.blast_radius_per_hour == 3


BAD_FILES: list[tuple[str, str, str]] = [
    # (file text, the key the message must name, what the message must say)
    ("respondrs: {users: []}\n", "respondrs", "unknown key"),
    ("responders: {user: []}\n", "responders.user", "unknown key"),
    ("responders: [alex]\n", "responders", "must be a mapping"),
    ("responders: {users: alex}\n", "responders.users", "must be a list"),
    ("responders: {users: [alex.wilber@contoso.com]}\n", "responders.users[0]", "GUID"),
    (f"approvers: {{groups: [{SOC_APPROVERS}, SOC Approvers]}}\n", "approvers.groups[1]", "GUID"),
    ("approvers: {users: [12345]}\n", "approvers.users[0]", "GUID"),
    ("approvals: {disableAccount: 3}\n", "approvals.disableAccount", "must be 1 or 2"),
    ("approvals: {disableAccount: 0}\n", "approvals.disableAccount", "must be 1 or 2"),
    ("approvals: {disableAccount: true}\n", "approvals.disableAccount", "must be 1 or 2"),
    ("approvals: {disableAccount: '2'}\n", "approvals.disableAccount", "must be 1 or 2"),
    ("approvals: {disableAccount: 1.0}\n", "approvals.disableAccount", "must be 1 or 2"),
    ("approvals: {resetPassword: 2}\n", "approvals.resetPassword", "unknown action"),
    ("approvals: 2\n", "approvals", "must be a mapping"),
    (f"privileged_targets: {{roles: [{GLOBAL_ADMIN}, Helpdesk]}}\n", "privileged_targets.roles[1]", "GUID"),
    ("privileged_targets: {groups: [x]}\n", "privileged_targets.groups[0]", "GUID"),
    ("privileged_targets: {users: []}\n", "privileged_targets.users", "unknown key"),
    ("protected_accounts: [breakglass]\n", "protected_accounts[0]", "user principal name"),
    ("protected_accounts: breakglass@contoso.com\n", "protected_accounts", "must be a list"),
    ("expiry_minutes: 0\n", "expiry_minutes", "greater than 0"),
    ("expiry_minutes: -5\n", "expiry_minutes", "greater than 0"),
    ("expiry_minutes: '30'\n", "expiry_minutes", "number of minutes"),
    ("expiry_minutes: 10\nreminder_minutes: 10\n", "reminder_minutes", "shorter than expiry_minutes"),
    ("reminder_minutes: 0\n", "reminder_minutes", "greater than 0"),
    ("blast_radius_per_hour: 0\n", "blast_radius_per_hour", "at least 1"),
    ("blast_radius_per_hour: 2.5\n", "blast_radius_per_hour", "whole number"),
    ("step_up: c1\n", "step_up", "must be a mapping"),
    ("step_up: {context: c0, when: {privileged_targets: true}}\n", "step_up.context", "c1 to c99"),
    ("step_up: {context: C1, when: {privileged_targets: true}}\n", "step_up.context", "c1 to c99"),
    ("step_up: {context: c100, when: {privileged_targets: true}}\n", "step_up.context", "c1 to c99"),
    ("step_up: {when: {privileged_targets: true}}\n", "step_up.context", "c1 to c99"),
    ("step_up: {context: c1}\n", "step_up.when", "applies to nothing"),
    (
        "step_up: {context: c1, when: {privileged_targets: 'yes'}}\n",
        "step_up.when.privileged_targets",
        "true or false",
    ),
    ("step_up: {context: c1, when: {actions: [wipe]}}\n", "step_up.when.actions[0]", "unknown action"),
    ("step_up: {context: c1, when: {bulk: true}}\n", "step_up.when.bulk", "unknown key"),
    (
        "step_up: {context: c1, max_age_minutes: 0, when: {actions: [disableAccount]}}\n",
        "step_up.max_age_minutes",
        "greater than 0",
    ),
    (
        "step_up: {context: c1, maxAge: 5, when: {actions: [disableAccount]}}\n",
        "step_up.maxAge",
        "unknown key",
    ),
    ("storm: {threshold: 0}\n", "storm.threshold", "at least 1"),
    ("storm: {window_minutes: 0}\n", "storm.window_minutes", "greater than 0"),
    ("storm: {approvals: 1}\n", "storm.approvals", "at least 2"),
    ("storm: {max_bulk: -1}\n", "storm.max_bulk", "at least 1"),
    ("storm: {threshhold: 5}\n", "storm.threshhold", "unknown key"),
    ("storm: 20\n", "storm", "must be a mapping"),
]


def test_storm_mode_defaults_and_explicit_values(tmp_path: Path) -> None:
    default = load_policy(_write(tmp_path, "blast_radius_per_hour: 20\n")).storm
    assert (default.threshold, default.window, default.required_approvals, default.max_bulk) == (
        20,
        timedelta(minutes=10),
        2,
        None,
    )
    path = _write(tmp_path, "storm: {threshold: 50, window_minutes: 5, approvals: 3, max_bulk: 2000}\n")
    storm = load_policy(path).storm
    assert (storm.threshold, storm.window, storm.required_approvals, storm.max_bulk) == (
        50,
        timedelta(minutes=5),
        3,
        2000,
    )


@pytest.mark.parametrize(("text", "key", "problem"), BAD_FILES, ids=[b[1] + ":" + b[2] for b in BAD_FILES])
def test_a_bad_policy_names_its_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_policy(path)

    assert caught.value.variable == "POLICY_FILE"
    assert caught.value.message.startswith(f"POLICY_FILE: {path}: {key}: ")
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("- responders\n", "must be a mapping"),
        ("responders: {users: [\n", "not valid YAML: line"),
        ("approvals: {disableAccount: 1}\napprovals: {disableAccount: 2}\n", "'approvals' twice"),
        (f"responders: {{users: [{ALEX}], users: []}}\n", "'users' twice"),
    ],
)
def test_a_broken_file_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        load_policy(path)

    assert caught.value.message.startswith(f"POLICY_FILE: {path}: ")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as caught:
        load_policy(tmp_path / "nope.yaml")
    assert caught.value.variable == "POLICY_FILE"


# -- settings ---------------------------------------------------------------------------------


def _settings(**overrides: Any) -> Any:
    return load_settings(
        sandbox_mode=True,
        microsoft_app_id="",
        graph_tenant_id="t",
        graph_client_id="c",
        graph_client_secret="s",
        teams_channel_id="19:x@thread.tacv2",
        **overrides,
    )


def test_without_a_policy_file_responders_request_and_approve() -> None:
    policy = policy_from_settings(_settings(responders=[ALEX]))

    assert policy.responders == policy.approvers == Principals(users=frozenset({ALEX}))
    # Privileged targets still need two people: the default admin roles apply without a file too.
    assert policy.privileged_role_templates == frozenset(DEFAULT_PRIVILEGED_ROLE_TEMPLATES)
    assert policy.protected_users == frozenset()


def test_with_a_policy_file_the_file_decides() -> None:
    policy = policy_from_settings(_settings(policy_file=str(DEMO_POLICY)))

    assert policy == load_policy(DEMO_POLICY)


def test_a_policy_file_that_does_not_exist_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file") as caught:
        _settings(policy_file=str(tmp_path / "policy.yaml"))
    assert caught.value.variable == "POLICY_FILE"


def test_responders_and_a_policy_file_do_not_mix() -> None:
    with pytest.raises(ConfigError, match="POLICY_FILE") as caught:
        _settings(policy_file=str(DEMO_POLICY), responders=[ALEX])
    assert caught.value.variable == "RESPONDERS"


def test_the_policy_file_variable_is_documented() -> None:
    assert "\nPOLICY_FILE=" in (ROOT / ".env.example").read_text()
