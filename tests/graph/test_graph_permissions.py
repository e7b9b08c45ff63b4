"""The permission table of bot.graph.permissions agrees with x-ms-permissions in the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import GraphForbidden
from bot.graph import GraphClient, find_account, required_permission
from bot.graph.permissions import OPERATIONS, USER_PATH, USER_PROPERTY_PERMISSIONS, operation_template
from devtools.sandbox import SUBSET_PATH, SandboxTenant
from devtools.sandbox.contract import DEFAULT_EXTENSIONS

# Where the table deliberately is not the contract's least privileged permission, and why.
NOT_THE_LEAST = {
    ("GET", USER_PATH): "User.ReadBasic.All omits accountEnabled and the onPremises* properties",
}
ADELE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"
LEE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"


def _contract_operations() -> dict[tuple[str, str], dict[str, Any]]:
    operations: dict[tuple[str, str], dict[str, Any]] = {}
    for path in (SUBSET_PATH, *DEFAULT_EXTENSIONS):
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        for template, item in document["paths"].items():
            for method, operation in item.items():
                if method in {"get", "post", "patch", "put", "delete"}:
                    operations[(method.upper(), template)] = operation
    return operations


CONTRACT = _contract_operations()


@pytest.mark.parametrize(("method", "template"), sorted(OPERATIONS))
def test_each_entry_is_the_contracts_least_privileged_application_permission(
    method: str, template: str
) -> None:
    application = CONTRACT[(method, template)]["x-ms-permissions"]["application"]
    [permission] = OPERATIONS[(method, template)].permissions
    if (method, template) in NOT_THE_LEAST:
        assert permission in application["higher"]
    else:
        assert permission == application["least"][0]


@pytest.mark.parametrize("user_property", sorted(USER_PROPERTY_PERMISSIONS))
def test_user_property_permissions_are_the_ones_the_patch_description_names(user_property: str) -> None:
    operation = CONTRACT[("PATCH", USER_PATH)]
    application = operation["x-ms-permissions"]["application"]
    needed = USER_PROPERTY_PERMISSIONS[user_property]
    description = " ".join(operation["description"].split())
    own = needed.permissions[0]
    assert own in application["least"] + application["higher"]
    assert f"{user_property} -> {own}" in description
    # A permission paired with it (User.Read.All) is named by the description, not listed.
    for permission in needed.permissions[1:]:
        assert f"+{permission}" in description


def test_password_profile_names_the_entra_role_as_well() -> None:
    text = required_permission("PATCH", USER_PATH, properties=["passwordProfile"])

    assert text.startswith("User-PasswordProfile.ReadWrite.All (plus an Entra role")
    assert "Privileged Authentication Administrator when the user is an admin" in text


@pytest.mark.parametrize(
    ("method", "path", "properties", "expected"),
    [
        ("post", "/identityProtection/riskyUsers/confirmCompromised", (), "IdentityRiskyUser.ReadWrite.All"),
        ("GET", f"/identityProtection/riskyUsers/{LEE_ID}", (), "IdentityRiskyUser.Read.All"),
        ("GET", "/users/patrick.o%27brien@contoso.com", (), "User.Read.All"),
        ("GET", "/security/alerts_v2?$top=5", (), "SecurityAlert.Read.All"),
        (
            "POST",
            "/security/identities/identityAccounts/abc/invokeAction",
            (),
            "SecurityIdentitiesActions.ReadWrite.All",
        ),
        ("PATCH", f"/users/{ADELE_ID}", ["displayName"], "User.ReadWrite.All"),
    ],
)
def test_concrete_paths_find_their_operation(
    method: str, path: str, properties: list[str], expected: str
) -> None:
    assert required_permission(method, path, properties=properties) == expected


def test_patch_user_without_properties_lists_what_the_bot_writes() -> None:
    text = required_permission("PATCH", f"/users/{ADELE_ID}")

    assert text.startswith("User.EnableDisableAccount.All and User.Read.All (")
    assert "to write accountEnabled; User-PasswordProfile.ReadWrite.All (" in text


def test_an_operation_the_client_does_not_call_is_unknown() -> None:
    with pytest.raises(KeyError, match="DELETE /users/x"):
        required_permission("DELETE", "/users/x")
    with pytest.raises(KeyError):
        required_permission("GET", "/security/incidents")


@pytest.mark.asyncio
async def test_every_operation_the_client_sends_is_in_the_table(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    alert_id = tenant.alerts()[0]["id"]
    [identity] = await graph.list_identity_accounts(upn="lee.gu@contoso.com")
    entra = find_account(identity, "entraID")
    assert entra is not None
    _ = [
        a async for a in graph.list_alerts(service_sources=["azureAdIdentityProtection"], updated_after=None)
    ]
    _ = [r async for r in graph.list_risky_users()]
    await graph.get_user(LEE_ID, ["id"])
    await graph.update_user(LEE_ID, {"accountEnabled": False})
    await graph.revoke_sign_in_sessions(LEE_ID)
    await graph.check_member_groups(LEE_ID, ["5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c01"])
    await graph.list_directory_roles_of(LEE_ID)
    await graph.get_identity_account(str(identity["id"]))
    await graph.invoke_identity_action(
        str(identity["id"]),
        account_id=entra["identifier"],
        action="revokeAllSessions",
        identity_provider="entraID",
    )
    await graph.get_risky_user(LEE_ID)
    await graph.confirm_compromised([LEE_ID])
    await graph.dismiss_risky_users([LEE_ID])
    await graph.confirm_safe([LEE_ID])
    await graph.list_risk_detections(LEE_ID)
    await graph.add_alert_comment(alert_id, "seen")
    await graph.update_alert(alert_id, status="inProgress")

    sent = {(r.method, r.path.removeprefix("/v1.0")) for r in tenant.requests if r.path.startswith("/v1.0/")}
    called = {(method, operation_template(method, path)) for method, path in sent}
    # Every operation the client calls is in the table, and the table holds nothing else.
    assert called == {*OPERATIONS, ("PATCH", USER_PATH)}


@pytest.mark.asyncio
async def test_a_403_names_what_the_app_registration_lacks(tenant: SandboxTenant, graph: GraphClient) -> None:
    tenant.inject_fault("POST", r"/revokeSignInSessions$", status=403)

    with pytest.raises(GraphForbidden) as caught:
        await graph.revoke_sign_in_sessions("patrick.o'brien@contoso.com")

    error = caught.value
    assert f"the app registration lacks {required_permission(error.method, error.path)}" == (
        "the app registration lacks User.RevokeSessions.All"
    )
