"""Defender for Identity in the sandbox: identity accounts and their response actions.

Every scenario user is an identity (``security.user``) with an ``entraID`` account; a user
synced from AD (it has an on-premises SID) also has an ``activeDirectory`` account, and a
scenario may add accounts of other providers (``okta``). ``invokeAction`` changes the state
the provider holds, as the real action would:

- AD disable/enable runs on a domain controller: the Entra user follows at the next directory
  sync (:meth:`TenantState.run_directory_sync`), which from then on keeps the user disabled.
- Entra disable/enable writes ``accountEnabled``, which for a synced user the next sync undoes.
- revokeAllSessions / requireUserToSignInAgain on Entra reset signInSessionsValidFromDateTime;
  markUserAsCompromised confirms the risky user compromised.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from devtools.sandbox import risk
from devtools.sandbox.state import IdentityRecord, JSONObject, ProviderAccount, TenantState
from devtools.sandbox.wire import GraphProblem, bad_request, iso

IDENTITY_SCHEMA = "microsoft.graph.security.user"

# What each provider supports (the security.account resource page); the order is the docs'.
PROVIDER_ACTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "activeDirectory": ("disable", "enable", "forcePasswordReset"),
        "entraID": (
            "disable",
            "enable",
            "revokeAllSessions",
            "requireUserToSignInAgain",
            "markUserAsCompromised",
        ),
        "okta": ("disable", "enable", "revokeAllSessions"),
    }
)


def cloud_security_identifier(object_id: str) -> str:
    """The SID Entra ID gives a cloud object: ``S-1-12-1-`` and its object id as four integers."""
    raw = uuid.UUID(object_id).bytes_le
    parts = (int.from_bytes(raw[i : i + 4], "little") for i in range(0, 16, 4))
    return "S-1-12-1-" + "-".join(str(part) for part in parts)


def render(record: IdentityRecord, state: TenantState) -> JSONObject:
    """The identity as Graph returns it: a ``security.user``, live from the user it belongs to."""
    user = state.users[record.user_id]
    on_premises = record.account("activeDirectory")
    return {
        "@odata.type": "#microsoft.graph.security.user",
        "id": record.id,
        "displayName": user.get("displayName"),
        "domain": user.get("onPremisesDomainName"),
        "onPremisesSecurityIdentifier": user.get("onPremisesSecurityIdentifier"),
        "cloudSecurityIdentifier": record.cloud_security_identifier,
        # The schema has one flag per identity: that of the account mastering it, AD for a
        # synced user (so an AD disable reads back at once), else the Entra user.
        "isEnabled": on_premises.enabled if on_premises else bool(user.get("accountEnabled")),
        "userPrincipalName": user.get("userPrincipalName"),
        "emailAddress": user.get("mail"),
        "accounts": [
            {
                "identifier": account.identifier,
                "identityProvider": account.identity_provider,
                "actions": list(PROVIDER_ACTIONS.get(account.identity_provider, ())),
            }
            for account in record.accounts
        ],
    }


def invoke_action(state: TenantState, identity_id: str, body: Mapping[str, Any]) -> JSONObject:
    """Run ``body.action`` on one account of the identity; the ``invokeActionResult`` fields.

    Raises :class:`GraphProblem`: 404 for an unknown identity, 400 for an account the identity
    does not have or an action its provider does not support.
    """
    record = state.identities.get(identity_id.lower())
    if record is None:
        raise GraphProblem(404, "NotFound", f"Identity account '{identity_id}' was not found.")
    account_id = str(body["accountId"])
    action = str(body["action"])
    provider = str(body["identityProvider"])
    account = record.account(provider)
    if account is None:
        raise bad_request(f"The identity '{record.id}' has no account in identity provider '{provider}'.")
    if account.identifier.lower() != account_id.lower():
        raise bad_request(
            f"The identity '{record.id}' has no {provider} account '{account_id}' "
            f"(its {provider} account is '{account.identifier}')."
        )
    supported = PROVIDER_ACTIONS.get(provider, ())
    if action not in supported:
        raise bad_request(
            f"The action '{action}' is not supported for identity provider '{provider}' "
            f"(supported: {', '.join(supported) or 'none'})."
        )
    _apply(state, record, account, action)
    correlation_id = str(uuid.uuid4())
    state.identity_actions.append(
        {
            "correlationId": correlation_id,
            "identityAccountId": record.id,
            "accountId": account.identifier,
            "identityProvider": provider,
            "action": action,
            "createdDateTime": iso(state.clock()),
        }
    )
    return {
        "accountId": account.identifier,
        "action": action,
        "identityProvider": provider,
        "correlationId": correlation_id,
    }


def _apply(state: TenantState, record: IdentityRecord, account: ProviderAccount, action: str) -> None:
    user = state.users[record.user_id]
    now = iso(state.clock())
    if account.identity_provider == "entraID":
        if action in ("disable", "enable"):
            user["accountEnabled"] = action == "enable"
        elif action in ("revokeAllSessions", "requireUserToSignInAgain"):
            user["signInSessionsValidFromDateTime"] = now
        elif action == "markUserAsCompromised":
            risk.confirm_compromised(state, record.user_id)
        return
    # activeDirectory and okta: the account in that directory. An AD change reaches the Entra
    # user at the next directory sync, not now.
    if action in ("disable", "enable"):
        account.enabled = action == "enable"
    elif action == "forcePasswordReset":
        account.must_change_password = True
    elif action == "revokeAllSessions":
        account.sessions_revoked_at = now
