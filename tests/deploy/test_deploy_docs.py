"""deploy/: the admin guide's permission table is the code's, and the files agree with each other.

Nothing here needs Docker or the Azure CLI; deploy/README.md says how to check the rest where they
exist. After an intended change to ``bot/graph/permissions.py``, regenerate the table with
``UPDATE_GOLDEN=1 pytest tests/deploy``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from bot.config.settings import ENV_NAMES
from bot.domain.audit import AuditEvent
from bot.graph.permissions import OPERATIONS, USER_PATH, USER_PROPERTY_PERMISSIONS, OperationPermission
from bot.services.siem import siem_record
from bot.web.metrics import COUNTERS, GAUGES, HISTOGRAMS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GUIDE = DEPLOY / "README.md"
BICEP = DEPLOY / "main.bicep"
START = (
    "<!-- permissions-table: generated from bot/graph/permissions.py by tests/deploy/test_deploy_docs.py -->"
)
END = "<!-- /permissions-table -->"

# What the bot does with each operation, in the words of the guide. Every operation of the
# permissions table needs a line here, so a new Graph call cannot reach the guide undocumented.
PURPOSES: dict[tuple[str, str], str] = {
    ("GET", "/security/alerts_v2"): "poll Defender for Identity and Entra ID Protection alerts",
    ("PATCH", "/security/alerts_v2/{alert-id}"): "set the alerts' status after an action",
    ("POST", "/security/alerts_v2/{alert-id}/comments"): "comment on the case's alerts after an action",
    ("GET", USER_PATH): "read an account: enabled, synced, on-premises SID; read it back after an action",
    ("POST", "/users/{user-id}/revokeSignInSessions"): "**Revoke sessions** (and after a password change)",
    ("POST", "/users/{user-id}/checkMemberGroups"): "resolve the policy's groups",
    (
        "GET",
        "/users/{user-id}/transitiveMemberOf/microsoft.graph.directoryRole",
    ): "spot privileged targets (admin roles need two approvers)",
    ("GET", "/security/identities/identityAccounts"): "find the identity in Defender for Identity",
    (
        "GET",
        "/security/identities/identityAccounts/{identityAccounts-id}",
    ): "read its accounts (Active Directory, Entra ID, Okta); read back after an action",
    (
        "POST",
        "/security/identities/identityAccounts/{identityAccounts-id}/invokeAction",
    ): "**Disable / Re-enable / Force password reset** in Active Directory (synced users), **Disable / "
    "Re-enable / Revoke sessions** in Okta, **Require sign-in again / Mark compromised in Defender** on "
    "the Entra ID account, through Defender for Identity",
    ("GET", "/identityProtection/riskyUsers"): "read Entra ID Protection's risky users",
    ("GET", "/identityProtection/riskyUsers/{riskyUser-id}"): "read a user's risk; read back after an action",
    ("POST", "/identityProtection/riskyUsers/confirmCompromised"): "**Confirm compromised**",
    ("POST", "/identityProtection/riskyUsers/dismiss"): "**Dismiss risk**",
    ("POST", "/identityProtection/riskyUsers/confirmSafe"): "**Confirm safe**",
    ("GET", "/identityProtection/riskDetections"): "show the risk detections (IP, location) on the card",
}
PROPERTY_PURPOSES = {
    "accountEnabled": "**Disable / Re-enable account** in Entra ID",
    "passwordProfile": "**Force password change** (cloud-only users)",
}


def _cell(requirement: OperationPermission) -> tuple[str, str]:
    return " + ".join(f"`{p}`" for p in requirement.permissions), requirement.note or ""


def permissions_table() -> str:
    """The guide's table and the list to grant, from ``OPERATIONS`` and ``USER_PROPERTY_PERMISSIONS``."""
    lines = [
        "| what the bot does | Graph call | application permission | also needed |",
        "|---|---|---|---|",
    ]
    for (method, path), requirement in OPERATIONS.items():
        permissions, note = _cell(requirement)
        lines.append(f"| {PURPOSES[(method, path)]} | `{method} {path}` | {permissions} | {note} |")
    for name, requirement in USER_PROPERTY_PERMISSIONS.items():
        permissions, note = _cell(requirement)
        lines.append(f"| {PROPERTY_PURPOSES[name]} | `PATCH {USER_PATH}` `{name}` | {permissions} | {note} |")
    granted = sorted(
        {p for r in (*OPERATIONS.values(), *USER_PROPERTY_PERMISSIONS.values()) for p in r.permissions}
    )
    lines += [
        "",
        f"Grant exactly these {len(granted)} **application** permissions of Microsoft Graph, "
        "then **Grant admin consent**:",
        "",
        *(f"- `{permission}`" for permission in granted),
    ]
    return "\n".join(lines)


def test_every_operation_has_a_purpose() -> None:
    assert set(PURPOSES) == set(OPERATIONS)
    assert set(PROPERTY_PURPOSES) == set(USER_PROPERTY_PERMISSIONS)


def test_the_guide_has_the_permission_table_of_the_code() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert START in text and END in text, f"{GUIDE} lost its table markers"
    before, rest = text.split(START, 1)
    current, after = rest.split(END, 1)
    expected = f"\n{permissions_table()}\n"
    if os.environ.get("UPDATE_GOLDEN") and current != expected:
        GUIDE.write_text(before + START + expected + END + after, encoding="utf-8")
        return
    assert current == expected, "the table is stale: run UPDATE_GOLDEN=1 pytest tests/deploy"


# -- the deployment files agree with each other and with the bot ------------------------------


def _bicep_params(text: str) -> dict[str, tuple[str, bool]]:
    """name -> (type, has a default)."""
    return {
        name: (kind, bool(default))
        for name, kind, default in re.findall(r"^param (\w+) (\w+)( =)?", text, re.MULTILINE)
    }


def test_the_parameters_file_fits_main_bicep() -> None:
    params = _bicep_params(BICEP.read_text(encoding="utf-8"))
    given = json.loads((DEPLOY / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    python_type = {"string": str, "bool": bool, "int": int, "object": dict, "array": list}
    for name, entry in given.items():
        assert name in params, f"main.parameters.json sets {name}, which main.bicep does not declare"
        assert type(entry["value"]) is python_type[params[name][0]], name
    required = {name for name, (_, has_default) in params.items() if not has_default}
    assert required <= set(given), f"main.parameters.json lacks {sorted(required - set(given))}"


def test_the_managed_identity_is_granted_exactly_the_permissions_the_code_calls_for() -> None:
    text = BICEP.read_text(encoding="utf-8")
    block = re.search(r"^param graphAppRoles array = \[\n(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "main.bicep declares no graphAppRoles list"
    granted = re.findall(r"^\s+'([\w.-]+)'$", block.group(1), re.MULTILINE)
    needed = {
        permission
        for requirement in [*OPERATIONS.values(), *USER_PROPERTY_PERMISSIONS.values()]
        for permission in requirement.permissions
    }
    assert len(granted) == len(set(granted)), "a permission is listed twice"
    assert set(granted) == needed, (
        f"missing: {sorted(needed - set(granted))}; not called for: {sorted(set(granted) - needed)}"
    )


def test_the_siem_table_has_the_columns_the_bot_sends() -> None:
    text = BICEP.read_text(encoding="utf-8")
    block = re.search(r"^var auditColumns = \[\n(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "main.bicep declares no auditColumns"
    columns = re.findall(r"name: '(\w+)'", block.group(1))
    event = AuditEvent(
        sequence=1,
        at=datetime(2026, 12, 1, tzinfo=UTC),
        actor_id="a",
        actor_name="b",
        kind="case.opened",
        case_id=None,
        request_id=None,
        identity=None,
        payload={},
        previous_hash="0" * 64,
        hash="1" * 64,
    )
    assert columns == list(siem_record(event)), "the table and bot/services/siem.py disagree"
    assert "'Custom-RemediationBotAudit_CL'" in text  # the stream the bot sends to by default


def test_the_dashboard_plots_only_metrics_the_bot_exposes() -> None:
    dashboard = json.loads((DEPLOY / "dashboards" / "remediation-bot.json").read_text(encoding="utf-8"))
    exposed = (
        set(COUNTERS)
        | set(GAUGES)
        | {f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")}
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(remediation_\w+)", target["expr"])
    }
    assert used and used <= exposed, sorted(used - exposed)


def test_bicep_modules_exist() -> None:
    for path in re.findall(r"^module \w+ '([^']+)'", BICEP.read_text(encoding="utf-8"), re.MULTILINE):
        assert (DEPLOY / path).is_file(), path


def test_the_app_gets_only_variables_the_bot_reads() -> None:
    text = BICEP.read_text(encoding="utf-8")
    variables = set(re.findall(r"name: '(\w+)'\n\s+(?:value|secretRef):", text))
    known = set(ENV_NAMES.values())
    assert variables, "no environment variables found in main.bicep"
    assert variables - {"policy-yaml"} <= known, (
        f"unknown to bot/config/settings.py: {sorted(variables - known)}"
    )
    for required in (
        "MicrosoftAppId",
        "MicrosoftAppType",
        "GRAPH_TENANT_ID",
        "GRAPH_CLIENT_ID",
        "TEAMS_CHANNEL_ID",
    ):
        assert required in variables


def test_every_secret_reference_is_defined() -> None:
    text = BICEP.read_text(encoding="utf-8")
    referenced = set(re.findall(r"secretRef: '([\w-]+)'", text))
    defined = set(re.findall(r"name: '([a-z0-9-]+)'\n\s+(?:keyVaultUrl|value):", text))
    assert referenced and referenced <= defined, sorted(referenced - defined)


def test_the_dockerfile_runs_serve_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.1[12]-slim", text, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 3978$", text, re.MULTILINE)
    assert 'CMD ["remediation-bot", "serve"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "--constraint requirements.lock" in text
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", text, re.MULTILINE)
    allowed = re.findall(r"^!(\S+?)/?$", (ROOT / ".dockerignore").read_text(encoding="utf-8"), re.MULTILINE)
    for line in copied:
        for source in line.split():
            assert source in allowed, f"{source} is copied but .dockerignore keeps it out"
            assert (ROOT / source).exists(), source
