"""Scenarios: a short YAML/JSON description of a tenant, expanded into full Graph objects.

A scenario has ``users`` (Graph user properties; ``userPrincipalName`` and ``displayName``
required), ``alerts`` and ``riskyUsers`` that name their user by UPN and give times as
``minutes_ago`` relative to the sandbox clock, and ``groups`` and ``directoryRoles`` whose
``members`` name users by UPN or object id and groups by object id (groups may nest). See
``scenarios/demo.yaml``.

Defender for Identity's identities need no entry: every user is one, with an ``entraID``
account and, when it has an ``onPremisesSecurityIdentifier``, an ``activeDirectory`` account.
``identityAccounts`` adds accounts of other providers: ``{user: UPN, accounts:
[{identityProvider: okta, identifier: ...}]}``. Risk detections are derived for each risky user
from its Identity Protection alerts (IP address and country from their IP evidence), after an
earlier anonymized-IP sign-in every risky user has.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from devtools.sandbox.identities import cloud_security_identifier
from devtools.sandbox.state import IdentityRecord, ProviderAccount
from devtools.sandbox.wire import iso

JSONObject = dict[str, Any]

IDENTITY_SOURCES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        # serviceSource -> (productName, id prefix of the alerts the sandbox makes)
        "microsoftDefenderForIdentity": ("Microsoft Defender for Identity", "ad"),
        "azureAdIdentityProtection": ("Microsoft Entra ID Protection", "ip"),
    }
)

# Keys of an alert spec that are shorthand rather than Graph alert properties.
_ALERT_SHORTHAND = frozenset(
    {
        "user",
        "users",
        "minutes_ago",
        "updated_minutes_ago",
        "first_activity_minutes_ago",
        "last_activity_minutes_ago",
        "device",
        "ip",
        "user_roles",
    }
)
_RISKY_SHORTHAND = frozenset({"user", "minutes_ago"})
_IDENTITY_KEYS = frozenset({"user", "accounts"})
_ACCOUNT_KEYS = frozenset({"identityProvider", "identifier"})
# Providers a scenario may add accounts of; AD and Entra ID accounts come from the users.
_EXTRA_PROVIDERS = frozenset({"okta"})

# Identity Protection alert title -> (riskEventType, detectionTimingType, activity) of the
# detection behind it; leaked credentials and password sprays are found offline, not at sign-in.
_DETECTIONS_BY_TITLE: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "Unfamiliar sign-in properties": ("unfamiliarFeatures", "realtime", "signin"),
        "Anonymous IP address": ("anonymizedIPAddress", "realtime", "signin"),
        "Atypical travel": ("unlikelyTravel", "offline", "signin"),
        "Leaked credentials": ("leakedCredentials", "offline", "user"),
        "Password spray": ("passwordSpray", "offline", "signin"),
    }
)
# A city for the countries of the demo's IP evidence (Graph reports both).
_CITIES: Mapping[str, str] = MappingProxyType(
    {"NL": "Amsterdam", "RU": "Moscow", "BR": "Sao Paulo", "DE": "Frankfurt am Main", "US": "Ashburn"}
)
# The earlier sign-in every risky user has: a Tor exit node (the range of the demo alerts' IP).
_EARLIER_SIGN_IN = {"address": "185.220.100.240", "countryLetterCode": "DE"}
_GROUP_KEYS = frozenset({"id", "displayName", "description", "members"})
_ROLE_KEYS = frozenset({"id", "displayName", "description", "roleTemplateId", "members"})
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def load_scenario(source: Mapping[str, Any] | Path | str) -> JSONObject:
    """A scenario as a dict, read from a YAML/JSON file when given a path (``campaigns``
    expanded into their users and alerts)."""
    if isinstance(source, Mapping):
        return expand_campaigns(dict(source))
    path = Path(source)
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a scenario is a mapping with users, alerts, riskyUsers")
    return expand_campaigns(loaded)


_CAMPAIGN_KEYS = frozenset(
    {"count", "upn", "displayName", "title", "serviceSource", "severity", "minutes_ago", "ip"}
)


def expand_campaigns(scenario: JSONObject) -> JSONObject:
    """``campaigns``: many users hit by one attack, in a few lines. Each entry makes ``count``
    users (``upn`` and ``displayName`` are patterns with ``{n}``, e.g. ``spray{n:02d}@...``)
    and one alert each (``title``, ``serviceSource``, ``severity``, ``minutes_ago``, ``ip``)."""
    campaigns = scenario.pop("campaigns", None) or []
    users = list(scenario.get("users") or [])
    alerts = list(scenario.get("alerts") or [])
    for spec in campaigns:
        unknown = set(spec) - _CAMPAIGN_KEYS
        if unknown:
            raise ValueError(f"campaign {spec.get('title')!r}: unknown {sorted(unknown)}")
        for n in range(int(spec["count"])):
            upn = str(spec["upn"]).format(n=n + 1)
            users.append({"userPrincipalName": upn, "displayName": str(spec["displayName"]).format(n=n + 1)})
            alert: JSONObject = {
                "user": upn,
                "serviceSource": spec["serviceSource"],
                "title": spec["title"],
                "severity": spec.get("severity", "high"),
                "minutes_ago": spec.get("minutes_ago", 0),
            }
            if "ip" in spec:
                alert["ip"] = spec["ip"]
            alerts.append(alert)
    return {**scenario, "users": users, "alerts": alerts} if campaigns else scenario


class ScenarioBuilder:
    """Expands scenario entries into Graph objects; checks keys against the contract."""

    def __init__(
        self,
        *,
        tenant_id: str,
        user_properties: frozenset[str],
        alert_properties: frozenset[str],
        risky_user_properties: frozenset[str],
    ) -> None:
        """``*_properties`` are the contract's property names for each Graph type."""
        self._tenant_id = tenant_id
        self._user_properties = user_properties
        self._alert_properties = alert_properties
        self._risky_user_properties = risky_user_properties
        self._incidents: dict[str, str] = {}

    def user(self, spec: Mapping[str, Any], now: datetime) -> JSONObject:
        """A full Graph user from a partial one."""
        unknown = set(spec) - self._user_properties
        if unknown:
            raise ValueError(f"user {spec.get('userPrincipalName')}: unknown {sorted(unknown)}")
        upn = _required(spec, "userPrincipalName", "user")
        _required(spec, "displayName", f"user {upn}")
        synced = bool(spec.get("onPremisesSecurityIdentifier"))
        user: JSONObject = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-user:{upn.lower()}")),
            "accountEnabled": True,
            "businessPhones": [],
            "mail": upn,
            "otherMails": [],
            "proxyAddresses": [f"SMTP:{upn}"],
            "userType": "Member",
            "createdDateTime": iso(now - timedelta(days=400)),
            "onPremisesSyncEnabled": True if synced else None,
            "onPremisesSecurityIdentifier": None,
            "onPremisesSamAccountName": None,
            "onPremisesDomainName": None,
            "onPremisesUserPrincipalName": upn if synced else None,
            "onPremisesLastSyncDateTime": iso(now - timedelta(minutes=17)) if synced else None,
            "signInSessionsValidFromDateTime": iso(now - timedelta(days=30)),
            "lastPasswordChangeDateTime": iso(now - timedelta(days=30)),
            "passwordProfile": None,
        }
        user.update(spec)
        return user

    def alert(
        self, spec: Mapping[str, Any], users: Mapping[str, JSONObject], now: datetime, index: int
    ) -> JSONObject:
        """A full ``security.alert`` with user (and device/IP) evidence from a short spec."""
        title = _required(spec, "title", "alert")
        unknown = set(spec) - self._alert_properties - _ALERT_SHORTHAND
        if unknown:
            raise ValueError(f"alert {title!r}: unknown {sorted(unknown)}")
        source = _required(spec, "serviceSource", f"alert {title!r}")
        product, prefix = IDENTITY_SOURCES.get(source, ("Microsoft Defender XDR", "da"))
        upns = list(spec.get("users") or [_required(spec, "user", f"alert {title!r}")])
        accounts = [_find(users, upn, f"alert {title!r}") for upn in upns]

        def minutes_ago(key: str, default: float) -> datetime:
            return now - timedelta(minutes=float(spec.get(key, default)))

        ago = float(spec.get("minutes_ago", 0))
        created = minutes_ago("minutes_ago", 0)
        updated = minutes_ago("updated_minutes_ago", ago)
        # The activity behind an alert precedes it: by default 9 minutes to 1 minute before.
        first = minutes_ago("first_activity_minutes_ago", ago + 9)
        last = minutes_ago("last_activity_minutes_ago", ago + 1)
        digest = hashlib.sha256(f"{self._tenant_id}:{index}:{title}".encode()).hexdigest()
        alert_id = str(spec.get("id") or f"{prefix}{digest[:32]}")
        incident = self._incidents.setdefault(accounts[0]["id"], str(1001 + len(self._incidents)))
        alert: JSONObject = {
            "id": alert_id,
            "providerAlertId": digest[32:64],
            "incidentId": incident,
            "status": "new",
            "severity": "medium",
            "classification": None,
            "determination": None,
            "serviceSource": source,
            "detectionSource": source,
            "productName": product,
            "detectorId": str(uuid.UUID(digest[:32])),
            "tenantId": self._tenant_id,
            "title": title,
            "description": "",
            "recommendedActions": "",
            "category": "CredentialAccess",
            "assignedTo": None,
            "alertWebUrl": f"https://security.microsoft.com/alerts/{alert_id}?tid={self._tenant_id}",
            "incidentWebUrl": (f"https://security.microsoft.com/incidents/{incident}?tid={self._tenant_id}"),
            "actorDisplayName": None,
            "threatDisplayName": None,
            "threatFamilyName": None,
            "mitreTechniques": [],
            "createdDateTime": iso(created),
            "lastUpdateDateTime": iso(updated),
            "resolvedDateTime": None,
            "firstActivityDateTime": iso(first),
            "lastActivityDateTime": iso(last),
            "systemTags": [],
            "alertPolicyId": None,
            "additionalData": {},
            "comments": [],
        }
        alert.update({k: v for k, v in spec.items() if k not in _ALERT_SHORTHAND})
        roles = list(spec.get("user_roles", ["compromised"]))
        alert["evidence"] = [_user_evidence(u, created, roles) for u in accounts]
        if "device" in spec:
            alert["evidence"].append(_device_evidence(spec["device"], created))
        if "ip" in spec:
            alert["evidence"].append(_ip_evidence(spec["ip"], created))
        return alert

    def risky_user(
        self, spec: Mapping[str, Any], users: Mapping[str, JSONObject], now: datetime
    ) -> JSONObject:
        """A full ``riskyUser`` (its id is the user's object id) from a short spec."""
        upn = _required(spec, "user", "riskyUser")
        unknown = set(spec) - self._risky_user_properties - _RISKY_SHORTHAND
        if unknown:
            raise ValueError(f"riskyUser {upn}: unknown {sorted(unknown)}")
        user = _find(users, upn, "riskyUser")
        risky: JSONObject = {
            "id": user["id"],
            "isDeleted": False,
            "isProcessing": False,
            "riskLastUpdatedDateTime": iso(now - timedelta(minutes=float(spec.get("minutes_ago", 0)))),
            "riskLevel": "high",
            "riskState": "atRisk",
            "riskDetail": "none",
            "userDisplayName": user["displayName"],
            "userPrincipalName": user["userPrincipalName"],
        }
        risky.update({k: v for k, v in spec.items() if k not in _RISKY_SHORTHAND})
        return risky

    def identity(self, user: Mapping[str, Any], extra: Mapping[str, Any] | None) -> IdentityRecord:
        """The Defender for Identity identity of ``user``; ``extra`` is its identityAccounts entry.

        The AD account's identifier is a GUID (the AD objectGUID, as in the docs' examples),
        derived from the SID; the Entra ID account's is the user's object id.
        """
        upn = str(user["userPrincipalName"])
        accounts: list[ProviderAccount] = []
        sid = user.get("onPremisesSecurityIdentifier")
        if sid:
            guid = uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-ad-object:{sid}")
            # A synced user disabled in Entra ID was disabled in AD (by attack disruption, say):
            # the directory sync carries AD's state to Entra ID, never the other way.
            enabled = user.get("accountEnabled") is not False
            accounts.append(ProviderAccount("activeDirectory", str(guid), enabled=enabled))
        accounts.append(ProviderAccount("entraID", str(user["id"])))
        for spec in (extra or {}).get("accounts") or []:
            unknown = set(spec) - _ACCOUNT_KEYS
            if unknown:
                raise ValueError(f"identityAccounts {upn}: unknown {sorted(unknown)}")
            provider = _required(spec, "identityProvider", f"identityAccounts {upn}")
            if provider not in _EXTRA_PROVIDERS:
                raise ValueError(
                    f"identityAccounts {upn}: {provider} accounts come from the user; "
                    f"add only {', '.join(sorted(_EXTRA_PROVIDERS))}"
                )
            accounts.append(ProviderAccount(provider, _required(spec, "identifier", f"{provider} {upn}")))
        identity_id = uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-identity:{self._tenant_id}:{upn.lower()}")
        return IdentityRecord(
            id=str(identity_id),
            user_id=str(user["id"]),
            cloud_security_identifier=cloud_security_identifier(str(user["id"])),
            accounts=accounts,
        )

    def risk_detections(
        self, risky: Mapping[str, Any], alerts: Iterable[Mapping[str, Any]]
    ) -> list[JSONObject]:
        """The ``riskDetection`` objects behind a risky user (see the module docstring)."""
        user_id = str(risky["id"])
        last = datetime.fromisoformat(str(risky["riskLastUpdatedDateTime"]))
        found: list[tuple[str, str, str, datetime, Mapping[str, Any] | None, str]] = [
            ("anonymizedIPAddress", "realtime", "signin", last - timedelta(days=1), _EARLIER_SIGN_IN, "low")
        ]
        for alert in alerts:
            if alert["serviceSource"] != "azureAdIdentityProtection":
                continue
            if not any(_evidence_user_id(e) == user_id for e in alert["evidence"]):
                continue
            event, timing, activity = _DETECTIONS_BY_TITLE.get(
                str(alert["title"]), ("unfamiliarFeatures", "realtime", "signin")
            )
            ip = next((e for e in alert["evidence"] if "ipAddress" in e), None)
            where = {"address": ip["ipAddress"], "countryLetterCode": ip["countryLetterCode"]} if ip else None
            detected = datetime.fromisoformat(str(alert["createdDateTime"]))
            found.append((event, timing, activity, detected, where, str(risky["riskLevel"])))
        return [self._detection(risky, index, *finding) for index, finding in enumerate(found)]

    def _detection(
        self,
        risky: Mapping[str, Any],
        index: int,
        event: str,
        timing: str,
        activity: str,
        detected: datetime,
        where: Mapping[str, Any] | None,
        level: str,
    ) -> JSONObject:
        seed = f"{self._tenant_id}:{risky['id']}:{index}:{event}"
        digest = hashlib.sha256(seed.encode()).hexdigest()
        realtime = timing == "realtime"
        country = str(where["countryLetterCode"]) if where and where.get("countryLetterCode") else None
        return {
            "id": digest,
            # A real-time detection names the sign-in request it judged; an offline one none.
            "requestId": str(uuid.UUID(digest[:32])) if realtime else None,
            "correlationId": str(uuid.UUID(digest[32:])) if realtime else None,
            "riskEventType": event,
            "riskState": risky["riskState"],
            "riskLevel": level,
            "riskDetail": risky["riskDetail"],
            "source": "IdentityProtection",
            "detectionTimingType": timing,
            "activity": activity,
            "tokenIssuerType": "AzureAD",
            "ipAddress": str(where["address"]) if where else None,
            "location": (
                {
                    "city": _CITIES.get(country),
                    "state": None,
                    "countryOrRegion": country,
                    "geoCoordinates": None,
                }
                if country
                else None
            ),
            "activityDateTime": iso(detected - timedelta(minutes=1 if realtime else 90)),
            "detectedDateTime": iso(detected),
            "lastUpdatedDateTime": iso(detected),
            "userId": risky["id"],
            "userDisplayName": risky["userDisplayName"],
            "userPrincipalName": risky["userPrincipalName"],
            "additionalInfo": None,
        }

    def group(self, spec: Mapping[str, Any]) -> JSONObject:
        """A group (id and displayName; members are resolved by :meth:`members`)."""
        name = _required(spec, "displayName", "group")
        unknown = set(spec) - _GROUP_KEYS
        if unknown:
            raise ValueError(f"group {name!r}: unknown {sorted(unknown)}")
        group_id = _object_id(spec, f"sandbox-group:{name}", f"group {name!r}")
        return {"id": group_id, "displayName": name, "description": spec.get("description")}

    def directory_role(self, spec: Mapping[str, Any]) -> JSONObject:
        """An activated directory role as Graph returns it (``directoryRole``)."""
        name = _required(spec, "displayName", "directoryRole")
        unknown = set(spec) - _ROLE_KEYS
        if unknown:
            raise ValueError(f"directoryRole {name!r}: unknown {sorted(unknown)}")
        template = _required(spec, "roleTemplateId", f"directoryRole {name!r}")
        if not _GUID.match(template):
            raise ValueError(f"directoryRole {name!r}: roleTemplateId {template!r} is not a GUID")
        # A role's object id differs from its template id in every tenant, as in Graph.
        role_id = _object_id(spec, f"sandbox-role:{self._tenant_id}:{template.lower()}", f"role {name!r}")
        return {
            "id": role_id,
            "deletedDateTime": None,
            "description": spec.get("description"),
            "displayName": name,
            "roleTemplateId": template.lower(),
        }

    @staticmethod
    def members(
        owner: str,
        names: Iterable[Any],
        users: Mapping[str, JSONObject],
        groups: Mapping[str, JSONObject],
    ) -> set[str]:
        """Object ids (lower-case) of the ``members`` of a group or role: UPNs, user or group ids."""
        resolved: set[str] = set()
        user_ids = {str(u["id"]).lower() for u in users.values()}
        for name in names:
            text = str(name)
            if "@" in text:
                resolved.add(str(_find(users, text, owner)["id"]).lower())
            elif text.lower() in user_ids or text.lower() in groups:
                resolved.add(text.lower())
            else:
                raise ValueError(f"{owner}: member {text!r} is no user or group of the scenario")
        return resolved


def _object_id(spec: Mapping[str, Any], seed: str, what: str) -> str:
    given = spec.get("id")
    if given is None:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))
    if not isinstance(given, str) or not _GUID.match(given):
        raise ValueError(f"{what}: id {given!r} is not a GUID")
    return given.lower()


def _required(spec: Mapping[str, Any], key: str, what: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what}: {key} is required")
    return value


def _find(users: Mapping[str, JSONObject], upn: str, what: str) -> JSONObject:
    for user in users.values():
        if str(user["userPrincipalName"]).lower() == upn.lower():
            return user
    raise ValueError(f"{what}: no user {upn} in the scenario")


def identity_extras(specs: Iterable[Any], users: Mapping[str, JSONObject]) -> dict[str, JSONObject]:
    """The scenario's ``identityAccounts`` entries by the object id of the user they extend."""
    extras: dict[str, JSONObject] = {}
    for spec in specs:
        unknown = set(spec) - _IDENTITY_KEYS
        if unknown:
            raise ValueError(f"identityAccounts: unknown {sorted(unknown)}")
        user = _find(users, _required(spec, "user", "identityAccounts"), "identityAccounts")
        extras[str(user["id"])] = dict(spec)
    return extras


def _evidence_user_id(evidence: Mapping[str, Any]) -> str | None:
    account = evidence.get("userAccount")
    return str(account["azureAdUserId"]) if isinstance(account, Mapping) else None


def _evidence_base(kind: str, created: datetime, roles: list[str]) -> JSONObject:
    return {
        "@odata.type": f"#microsoft.graph.security.{kind}",
        "createdDateTime": iso(created),
        "verdict": "suspicious",
        "remediationStatus": "none",
        "remediationStatusDetails": None,
        "roles": roles,
        "detailedRoles": [],
        "tags": [],
    }


def _user_evidence(user: Mapping[str, Any], created: datetime, roles: list[str]) -> JSONObject:
    upn = str(user["userPrincipalName"])
    local, _, domain = upn.partition("@")
    evidence = _evidence_base("userEvidence", created, roles)
    evidence["stream"] = None
    evidence["userAccount"] = {
        # Defender names synced accounts the way AD does (sAMAccountName in the AD domain).
        "accountName": user.get("onPremisesSamAccountName") or local,
        "domainName": user.get("onPremisesDomainName") or domain,
        "userSid": user.get("onPremisesSecurityIdentifier"),
        "azureAdUserId": user["id"],
        "userPrincipalName": upn,
        "displayName": user.get("displayName"),
        "activeDirectoryObjectGuid": None,
        "resourceAccessEvents": [],
    }
    return evidence


def _device_evidence(device: Mapping[str, Any], created: datetime) -> JSONObject:
    evidence = _evidence_base("deviceEvidence", created, ["source"])
    host = str(device["hostName"])
    domain = str(device.get("dnsDomain", ""))
    evidence.update(
        {
            "hostName": host,
            "deviceDnsName": f"{host}.{domain}".lower() if domain else host.lower(),
            "dnsDomain": domain or None,
            "ntDomain": device.get("ntDomain"),
            "osPlatform": device.get("osPlatform", "Windows11"),
            "lastIpAddress": device.get("lastIpAddress"),
            "mdeDeviceId": device.get("mdeDeviceId"),
            "azureAdDeviceId": device.get("azureAdDeviceId"),
            "loggedOnUsers": [],
            "ipInterfaces": [],
            "resourceAccessEvents": [],
        }
    )
    return evidence


def _ip_evidence(ip: Mapping[str, Any], created: datetime) -> JSONObject:
    evidence = _evidence_base("ipEvidence", created, ["attacker"])
    evidence.update(
        {
            "ipAddress": str(ip["address"]),
            "countryLetterCode": ip.get("countryLetterCode"),
            "location": None,
            "stream": None,
        }
    )
    return evidence
