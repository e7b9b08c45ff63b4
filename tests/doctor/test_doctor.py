"""``remediation-bot doctor`` against the sandbox tenant: all green, then one fault at a time."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli.doctor import (
    FAILING,
    Check,
    DoctorReport,
    Status,
    needed_permissions,
    run_doctor,
    token_roles,
    write_permission_checks,
)
from bot.cli.main import main
from bot.config.settings import Settings
from bot.domain.models import ChannelRef
from bot.errors import ConfigError
from bot.graph.permissions import OPERATIONS, USER_PROPERTY_PERMISSIONS
from bot.store.sqlite import SqliteStore
from devtools.sandbox import SandboxTenant

from .conftest import ALEX, CHANNEL_ID, SOC_RESPONDERS, store_channel

READ_PERMISSIONS = (
    "SecurityAlert.Read.All",
    "IdentityRiskyUser.Read.All",
    "User.Read.All",
    "RoleManagement.Read.Directory",
    "SecurityIdentitiesAccount.Read.All",
    "GroupMember.Read.All",
    "IdentityRiskEvent.Read.All",
)


def statuses(report: DoctorReport) -> dict[str, Status]:
    """Subject -> status; each subject appears once in a run."""
    seen = [check.subject for check in report.checks]
    assert len(seen) == len(set(seen)), seen
    return {check.subject: check.status for check in report.checks}


def only(report: DoctorReport, subject: str) -> Check:
    (check,) = report.find(subject)
    return check


# -- all green --------------------------------------------------------------------------------


@pytest.mark.usefixtures("registered_channel")
async def test_a_complete_configuration_is_ready(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings())

    assert [c.line() for c in report.checks if c.status in FAILING] == []
    assert report.exit_code == 0
    found = statuses(report)
    for permission in READ_PERMISSIONS:
        assert found[permission] is Status.OK, only(report, permission).line()
    for subject in ("responders", "Bot Framework credential", "Graph token", "incident channel"):
        assert found[subject] is Status.OK, only(report, subject).line()
    # The responder named in the policy is the user read, and the policy's groups are checked.
    assert f"responder {ALEX}" in only(report, "User.Read.All").detail
    assert "alex.wilber@contoso.com" in only(report, "User.Read.All").detail
    assert "2 groups: member of 2" in only(report, "GroupMember.Read.All").detail
    assert CHANNEL_ID in only(report, "incident channel").detail
    # Writes cannot be proven without writing: listed, never claimed.
    writes = [c for c in report.checks if c.status is Status.NOT_CHECKED]
    assert {c.subject for c in writes} == {
        "SecurityAlert.ReadWrite.All",
        "User.RevokeSessions.All",
        "SecurityIdentitiesActions.ReadWrite.All",
        "IdentityRiskyUser.ReadWrite.All",
        "User.EnableDisableAccount.All and User.Read.All",
        "User-PasswordProfile.ReadWrite.All",
    }
    assert all("proving it needs a write" in c.detail for c in writes)
    assert (
        "Privileged Authentication Administrator" in only(report, "User-PasswordProfile.ReadWrite.All").detail
    )
    assert report.render().splitlines()[-1].startswith("READY")


@pytest.mark.usefixtures("registered_channel")
async def test_every_permission_of_the_table_gets_a_line(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings())
    text = report.render()
    for requirement in (*OPERATIONS.values(), *USER_PROPERTY_PERMISSIONS.values()):
        for permission in requirement.permissions:
            assert permission in text


@pytest.mark.usefixtures("registered_channel")
async def test_the_command_prints_one_line_per_check_and_exits_0(
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    # The command runs its own event loop; the sandbox tenant serves from this one.
    code = await asyncio.to_thread(main, ["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("remediation-bot doctor: Graph app ")
    assert any(line.startswith("OK           IdentityRiskyUser.Read.All: ") for line in lines)
    assert any(line.startswith("NOT CHECKED  User.RevokeSessions.All: ") for line in lines)
    assert lines[-1].startswith("READY")


# -- a missing permission ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("GET", r"/security/alerts_v2$", "SecurityAlert.Read.All"),
        ("GET", r"/identityProtection/riskyUsers", "IdentityRiskyUser.Read.All"),
        ("GET", r"/v1\.0/users/[^/]+$", "User.Read.All"),
        ("GET", r"/transitiveMemberOf/", "RoleManagement.Read.Directory"),
        ("GET", r"/security/identities/identityAccounts", "SecurityIdentitiesAccount.Read.All"),
        ("POST", r"/checkMemberGroups$", "GroupMember.Read.All"),
        ("GET", r"/identityProtection/riskDetections", "IdentityRiskEvent.Read.All"),
    ],
)
@pytest.mark.usefixtures("registered_channel")
async def test_a_refused_read_names_the_missing_permission(
    method: str,
    path: str,
    permission: str,
    tenant: SandboxTenant,
    make_settings: Callable[..., Settings],
) -> None:
    tenant.inject_fault(method, path, status=403)

    report = await run_doctor(make_settings())

    assert report.exit_code == 1
    missing = [c for c in report.checks if c.status in FAILING]
    assert [c.subject for c in missing] == [permission]
    assert missing[0].status is Status.MISSING
    assert "was refused (403 Authorization_RequestDenied)" in missing[0].detail
    assert f"grant {permission} to the app registration with admin consent" in missing[0].detail
    assert report.render().splitlines()[-1].startswith("NOT READY")


@pytest.mark.usefixtures("registered_channel")
async def test_the_command_exits_1_when_a_permission_is_missing(
    tenant: SandboxTenant,
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)
    tenant.inject_fault("GET", r"/identityProtection/riskyUsers", status=403)

    code = await asyncio.to_thread(main, ["doctor"])

    out = capsys.readouterr().out
    assert code == 1
    assert "MISSING      IdentityRiskyUser.Read.All: GET /identityProtection/riskyUsers was refused" in out
    assert out.splitlines()[-1].startswith("NOT READY (")


def test_a_configuration_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for variable in ("MicrosoftAppId", "SANDBOX_MODE", "GRAPH_TENANT_ID"):
        monkeypatch.delenv(variable, raising=False)
    code = main(["doctor"])
    assert code == 2
    assert "configuration error: MicrosoftAppId" in capsys.readouterr().err


# -- other faults -----------------------------------------------------------------------------


@pytest.mark.usefixtures("registered_channel")
async def test_a_wrong_graph_secret_is_an_error_and_skips_the_reads(
    make_settings: Callable[..., Settings],
) -> None:
    report = await run_doctor(make_settings(graph_client_secret="not-the-secret"))

    assert report.exit_code == 1
    token = only(report, "Graph token")
    assert token.status is Status.ERROR
    assert "No Graph token" in token.detail and "not-the-secret" not in token.detail
    for permission in READ_PERMISSIONS:
        assert only(report, permission).status is Status.SKIPPED
    assert only(report, "Bot Framework credential").status is Status.OK  # its own secret is right


@pytest.mark.usefixtures("registered_channel")
async def test_a_wrong_bot_password_is_an_error(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings(microsoft_app_password="wrong"))
    check = only(report, "Bot Framework credential")
    assert check.status is Status.ERROR
    assert check.detail.startswith("MicrosoftAppId/MicrosoftAppPassword: No Graph token for app")
    assert report.exit_code == 1


@pytest.mark.usefixtures("registered_channel")
async def test_a_responder_who_does_not_exist(make_settings: Callable[..., Settings]) -> None:
    ghost = "0b0e0e0e-0000-4000-8000-00000000dead"
    report = await run_doctor(make_settings(policy_file="", responders=[ghost]))
    check = only(report, "User.Read.All")
    assert check.status is Status.ERROR
    assert f"responder {ghost} does not exist in tenant" in check.detail
    assert report.exit_code == 1


@pytest.mark.usefixtures("registered_channel")
async def test_nobody_named_is_missing_responders(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings(policy_file="", responders=[]))
    check = only(report, "responders")
    assert check.status is Status.MISSING
    assert "nobody can act" in check.detail
    # Without responders or groups the user read falls back to a risky user; groups are not needed.
    assert only(report, "User.Read.All").status is Status.OK
    assert only(report, "GroupMember.Read.All").status is Status.SKIPPED


@pytest.mark.usefixtures("registered_channel")
async def test_groups_only_policy_reads_a_user_named_by_an_alert(
    tenant: SandboxTenant, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "groups-only.yaml"
    policy.write_text(f"responders:\n  groups: [{SOC_RESPONDERS}]\n")
    tenant.inject_fault("GET", r"/identityProtection/riskyUsers", status=403)

    report = await run_doctor(make_settings(policy_file=str(policy)))

    # No responder by name and no risky user: the first alert's evidence names the user to read.
    user = only(report, "User.Read.All")
    assert user.status is Status.OK
    assert "alerted user" in user.detail
    assert only(report, "GroupMember.Read.All").status is Status.OK
    assert [c.subject for c in report.checks if c.status in FAILING] == ["IdentityRiskyUser.Read.All"]


async def test_no_database_yet(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings())
    check = only(report, "incident channel")
    assert check.status is Status.MISSING
    assert "no database at" in check.detail and "remediation-bot serve" in check.detail
    assert report.exit_code == 1


async def test_the_bot_was_not_installed_in_the_team(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    await SqliteStore(settings.sqlite_path).close()  # the bot ran, but nobody installed it in the team
    check = only(await run_doctor(settings), "incident channel")
    assert check.status is Status.MISSING
    assert f"has not been installed in the team of TEAMS_CHANNEL_ID {CHANNEL_ID}" in check.detail


async def test_a_channel_other_than_the_configured_one(
    make_settings: Callable[..., Settings], tenant: SandboxTenant
) -> None:
    settings = make_settings()
    stored = "19:0000aaaa@thread.tacv2"
    await store_channel(
        settings.sqlite_path,
        ChannelRef(channel_id=stored, service_url="https://smba.example/", tenant_id=tenant.tenant_id),
    )
    check = only(await run_doctor(settings), "incident channel")
    assert check.status is Status.MISSING
    assert f"the stored channel is {stored}, not TEAMS_CHANNEL_ID {CHANNEL_ID}" in check.detail


async def test_a_channel_in_another_tenant(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    await store_channel(
        settings.sqlite_path,
        ChannelRef(channel_id=CHANNEL_ID, service_url="https://smba.example/", tenant_id="another-tenant"),
    )
    check = only(await run_doctor(settings), "incident channel")
    assert check.status is Status.ERROR
    assert "in tenant another-tenant but GRAPH_TENANT_ID is" in check.detail


# -- what an Entra token says -----------------------------------------------------------------


def jwt(claims: dict[str, object]) -> str:
    """An unsigned JWT shaped like Entra's (the doctor reads, never trusts, its claims)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.signature"


def test_token_roles_reads_the_roles_claim() -> None:
    assert token_roles(jwt({"roles": ["User.Read.All", "SecurityAlert.Read.All"]})) == {
        "User.Read.All",
        "SecurityAlert.Read.All",
    }
    assert token_roles(jwt({"aud": "https://graph.microsoft.com"})) == frozenset()  # nothing granted
    assert token_roles("opaque-sandbox-token") is None
    assert token_roles("a.!!!.c") is None


def test_write_permissions_are_judged_by_the_token_roles() -> None:
    granted = needed_permissions() - {"User.RevokeSessions.All"}
    checks = {c.subject: c for c in write_permission_checks(granted)}
    revoke = checks["User.RevokeSessions.All"]
    assert revoke.status is Status.MISSING
    assert "the Graph token's roles do not list User.RevokeSessions.All" in revoke.detail
    disable = checks["User.EnableDisableAccount.All and User.Read.All"]
    assert disable.status is Status.NOT_CHECKED
    assert "granted (listed in the Graph token's roles)" in disable.detail
    assert all(c.status is Status.NOT_CHECKED for c in write_permission_checks(None))


def test_needed_permissions_are_the_table() -> None:
    assert "User.ReadWrite.All" not in needed_permissions()  # the bot never asks for it
    assert {"SecurityAlert.Read.All", "User-PasswordProfile.ReadWrite.All"} <= needed_permissions()


# -- the approval page ------------------------------------------------------------------------

PAGE = "https://remediation-bot.contoso.example"
PAGE_KEY = "doctor-test approval page key of 32+ characters"


@pytest.mark.usefixtures("registered_channel")
async def test_the_approval_page_is_off_without_a_url(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings())

    assert only(report, "approval page").status is Status.SKIPPED


@pytest.mark.usefixtures("registered_channel")
async def test_an_unregistered_redirect_uri_is_missing(make_settings: Callable[..., Settings]) -> None:
    report = await run_doctor(make_settings(approval_page_url=PAGE, approval_page_session_key=PAGE_KEY))

    check = only(report, "approval page")
    assert check.status is Status.MISSING
    assert f"{PAGE}/approve/callback" in check.detail and "AADSTS50011" in check.detail
    assert report.exit_code == 1


@pytest.mark.usefixtures("registered_channel")
async def test_a_registered_redirect_uri_is_ok(
    make_settings: Callable[..., Settings], tenant: SandboxTenant
) -> None:
    tenant.add_redirect_uri(f"{PAGE}/approve/callback")

    report = await run_doctor(make_settings(approval_page_url=PAGE, approval_page_session_key=PAGE_KEY))

    assert only(report, "approval page").status is Status.OK
    assert report.exit_code == 0


@pytest.mark.usefixtures("registered_channel")
async def test_step_up_without_the_page_is_missing(
    make_settings: Callable[..., Settings], policy_file: Path
) -> None:
    text = await asyncio.to_thread(policy_file.read_text)
    step_up = "step_up: {context: c1, when: {privileged_targets: true}}\n"
    await asyncio.to_thread(policy_file.write_text, text + step_up)

    report = await run_doctor(make_settings())

    check = only(report, "approval page")
    assert check.status is Status.MISSING and "step_up" in check.detail


def test_the_page_needs_https_and_a_session_key(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as plain_http:
        make_settings(approval_page_url="http://bot.contoso.example", approval_page_session_key=PAGE_KEY)
    with pytest.raises(ConfigError) as no_key:
        make_settings(approval_page_url=PAGE)
    with pytest.raises(ConfigError) as with_path:
        make_settings(approval_page_url=f"{PAGE}/bot", approval_page_session_key=PAGE_KEY)

    assert plain_http.value.variable == "APPROVAL_PAGE_URL"
    assert no_key.value.variable == "APPROVAL_PAGE_SESSION_KEY"
    assert with_path.value.variable == "APPROVAL_PAGE_URL"


def test_the_page_needs_the_app_registrations_own_credential(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(
            graph_client_secret="",
            graph_managed_identity="user",
            approval_page_url=PAGE,
            approval_page_session_key=PAGE_KEY,
        )

    assert caught.value.variable == "APPROVAL_PAGE_URL"
    assert "GRAPH_MANAGED_IDENTITY" in str(caught.value)


def test_doctor_names_every_response_call_under_its_permission() -> None:
    """Confirm safe and the Defender for Identity actions are checked with the rest."""
    granted = needed_permissions() - {"IdentityRiskyUser.ReadWrite.All"}
    checks = {c.subject: c for c in write_permission_checks(granted)}
    risk = checks["IdentityRiskyUser.ReadWrite.All"]
    assert risk.status is Status.MISSING
    assert "POST /identityProtection/riskyUsers/confirmSafe" in risk.detail
    assert "POST /identityProtection/riskyUsers/dismiss" in risk.detail
    defender = checks["SecurityIdentitiesActions.ReadWrite.All"]
    assert "invokeAction" in defender.detail and defender.status is Status.NOT_CHECKED


@pytest.mark.usefixtures("registered_channel")
async def test_a_managed_identity_needs_no_secret_and_is_checked_like_one(
    make_settings: Callable[..., Settings], tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in tenant.managed_identity_environment.items():
        monkeypatch.setenv(name, value)

    report = await run_doctor(make_settings(graph_client_secret="", graph_managed_identity="user"))

    token = only(report, "Graph token")
    assert token.status is Status.OK, token.line()
    assert "user-assigned managed identity" in token.detail
    for permission in READ_PERMISSIONS:
        assert only(report, permission).status is Status.OK, only(report, permission).line()
    assert [r.query.get("client_id") for r in tenant.requests if r.path == "/msi/token"] == [tenant.client_id]


def test_a_managed_identity_beside_a_secret_is_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(graph_managed_identity="system")  # GRAPH_CLIENT_SECRET is still set

    assert "GRAPH_MANAGED_IDENTITY" in str(caught.value)
    assert "must be empty" in str(caught.value)
