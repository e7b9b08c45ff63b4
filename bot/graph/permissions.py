"""The application permission each Graph operation of the client needs, to explain a 403.

Written by hand from ``x-ms-permissions`` of the Graph contract (the sandbox's subset plus its
extension file); ``tests/graph/test_graph_permissions.py`` checks the table against the contract.
The bot turns a :class:`~bot.errors.GraphForbidden` into "the app registration lacks
<required_permission(...)>".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class OperationPermission:
    """The least-privileged application permissions one operation needs, all of them together.

    ``note`` says what else Graph checks (an Entra role assigned to the app), if anything.
    """

    permissions: tuple[str, ...]
    note: str = ""

    def describe(self) -> str:
        """``A and B (note)``: readable after "the app registration lacks"."""
        text = " and ".join(self.permissions)
        return f"{text} ({self.note})" if self.note else text


def _needs(*permissions: str, note: str = "") -> OperationPermission:
    return OperationPermission(permissions, note)


USER_PATH = "/users/{user-id}"

# (METHOD, contract path template) -> what the operation needs. The least privileged entry of
# the contract, except where the least one cannot do what the bot does (see GET USER_PATH).
# Bulk actions (bot.tenant.bulk) make these same calls inside POST /$batch, which needs no
# permission of its own: Graph authorizes each request inside a batch as if it came alone, so a
# 403 names the inner operation's permission here, and a bulk action needs exactly what the
# single action needs. /$batch is therefore not in this table.
OPERATIONS: Mapping[tuple[str, str], OperationPermission] = MappingProxyType(
    {
        ("GET", "/security/alerts_v2"): _needs("SecurityAlert.Read.All"),
        ("PATCH", "/security/alerts_v2/{alert-id}"): _needs("SecurityAlert.ReadWrite.All"),
        ("POST", "/security/alerts_v2/{alert-id}/comments"): _needs("SecurityAlert.ReadWrite.All"),
        # The contract's least, User.ReadBasic.All, returns neither accountEnabled nor the
        # onPremises* properties the bot reads.
        ("GET", USER_PATH): _needs("User.Read.All"),
        ("POST", "/users/{user-id}/revokeSignInSessions"): _needs("User.RevokeSessions.All"),
        ("POST", "/users/{user-id}/checkMemberGroups"): _needs("GroupMember.Read.All"),
        ("GET", "/users/{user-id}/transitiveMemberOf/microsoft.graph.directoryRole"): _needs(
            "RoleManagement.Read.Directory"
        ),
        ("GET", "/security/identities/identityAccounts"): _needs("SecurityIdentitiesAccount.Read.All"),
        ("GET", "/security/identities/identityAccounts/{identityAccounts-id}"): _needs(
            "SecurityIdentitiesAccount.Read.All"
        ),
        ("POST", "/security/identities/identityAccounts/{identityAccounts-id}/invokeAction"): _needs(
            "SecurityIdentitiesActions.ReadWrite.All"
        ),
        ("GET", "/identityProtection/riskyUsers"): _needs("IdentityRiskyUser.Read.All"),
        ("GET", "/identityProtection/riskyUsers/{riskyUser-id}"): _needs("IdentityRiskyUser.Read.All"),
        ("POST", "/identityProtection/riskyUsers/confirmCompromised"): _needs(
            "IdentityRiskyUser.ReadWrite.All"
        ),
        ("POST", "/identityProtection/riskyUsers/dismiss"): _needs("IdentityRiskyUser.ReadWrite.All"),
        ("POST", "/identityProtection/riskyUsers/confirmSafe"): _needs("IdentityRiskyUser.ReadWrite.All"),
        ("GET", "/identityProtection/riskDetections"): _needs("IdentityRiskEvent.Read.All"),
    }
)

# PATCH /users/{user-id} needs a permission per property written (the contract's description);
# its operation-wide least, User.ReadWrite.All, would let the bot rewrite any profile.
USER_PROPERTY_PERMISSIONS: Mapping[str, OperationPermission] = MappingProxyType(
    {
        "accountEnabled": _needs(
            "User.EnableDisableAccount.All",
            "User.Read.All",
            note="for an admin, also an Entra admin role assigned to the app that may manage that admin",
        ),
        "passwordProfile": _needs(
            "User-PasswordProfile.ReadWrite.All",
            note="plus an Entra role assigned to the app that may reset this user's password: "
            "User Administrator, or Privileged Authentication Administrator when the user is an admin",
        ),
    }
)
# Any other user property: what the contract lists as least for the whole operation.
OTHER_USER_PROPERTIES = _needs("User.ReadWrite.All")


def required_permission(method: str, path_template: str, *, properties: Collection[str] = ()) -> str:
    """What an app registration needs for ``method path_template``, as text for a person.

    ``path_template`` is a contract template (``/users/{user-id}``) or a concrete path as in
    :attr:`bot.errors.GraphError.path` (``/users/6b1d...``). For PATCH of a user, ``properties``
    names the properties written; without them the answer lists the ones the bot writes.
    Raises ``KeyError`` for an operation the client does not call.
    """
    verb = method.upper()
    template = operation_template(verb, path_template)
    if (verb, template) != ("PATCH", USER_PATH):
        return OPERATIONS[(verb, template)].describe()
    if not properties:
        return "; ".join(
            f"{needed.describe()} to write {name}" for name, needed in USER_PROPERTY_PERMISSIONS.items()
        )
    needs = {USER_PROPERTY_PERMISSIONS.get(name, OTHER_USER_PROPERTIES) for name in sorted(properties)}
    return "; ".join(sorted(needed.describe() for needed in needs))


def operation_template(method: str, path: str) -> str:
    """The table's contract template that ``method path`` matches; literal segments beat parameters.

    ``operation_template("POST", "/identityProtection/riskyUsers/dismiss")`` is that path itself,
    not ``/identityProtection/riskyUsers/{riskyUser-id}``. Raises ``KeyError`` when none matches.
    """
    method = method.upper()
    segments = _segments(path)
    best: tuple[int, str] | None = None
    known = {template for verb, template in OPERATIONS if verb == method}
    if method == "PATCH":
        known.add(USER_PATH)
    for template in known:
        pattern = _segments(template)
        if len(pattern) != len(segments):
            continue
        literal = 0
        for expected, actual in zip(pattern, segments, strict=True):
            if expected.startswith("{") and expected.endswith("}"):
                continue
            if expected.lower() != actual.lower():
                break
            literal += 1
        else:
            if best is None or literal > best[0]:
                best = (literal, template)
    if best is None:
        raise KeyError(f"no permission is known for {method} {path}")
    return best[1]


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("?", 1)[0].strip("/").split("/") if segment]
