"""The Graph operations the sandbox implements, over :class:`TenantState`.

Handlers get a parsed :class:`GraphCall` and return a :class:`Reply` or raise
:class:`GraphProblem`; authentication, contract validation, faults and recording happen around
them in :mod:`devtools.sandbox.server`.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from devtools.sandbox import identities, risk
from devtools.sandbox.contract import Contract
from devtools.sandbox.odata_filter import Field, FilterError, parse_filter
from devtools.sandbox.state import Cursor, JSONObject, TenantState
from devtools.sandbox.wire import GraphProblem, bad_request, iso, parse_iso

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

ALERT_SCHEMA = "microsoft.graph.security.alert"
USER_SCHEMA = "microsoft.graph.user"
RISKY_USER_SCHEMA = "microsoft.graph.riskyUser"
RISK_DETECTION_SCHEMA = "microsoft.graph.riskDetection"
DIRECTORY_ROLE_SCHEMA = "microsoft.graph.directoryRole"
IDENTITY_SCHEMA = identities.IDENTITY_SCHEMA

# Graph's page sizes: alerts_v2 defaults larger and allows up to 2000; the sandbox defaults
# small so that paging is exercised without thousands of alerts.
ALERTS_PAGE = (50, 2000)
RISKY_USERS_PAGE = (20, 500)
RISK_DETECTIONS_PAGE = (20, 500)
IDENTITY_ACCOUNTS_PAGE = (100, 1000)
# confirmCompromised and dismiss take at most this many user ids (documented for dismiss).
RISKY_USERS_ACTION_LIMIT = 60
# What PATCH /security/alerts_v2/{id} may change (the alert update docs).
WRITABLE_ALERT_PROPERTIES = ("assignedTo", "classification", "determination", "status")
# Directory relationships (transitiveMemberOf): Graph's documented default and maximum.
DIRECTORY_PAGE = (100, 999)
# checkMemberGroups evaluates at most this many group ids per request.
CHECK_MEMBER_GROUPS_LIMIT = 20

# What GET /users/{id} returns without $select (Graph's documented default set).
DEFAULT_USER_SELECT = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)

# Properties an app may PATCH on a user in the sandbox; accountEnabled and passwordProfile are
# the remediation ones, the rest are ordinary profile fields.
WRITABLE_USER_PROPERTIES = frozenset(
    {
        "accountEnabled",
        "passwordProfile",
        "passwordPolicies",
        "displayName",
        "givenName",
        "surname",
        "jobTitle",
        "department",
        "officeLocation",
        "mobilePhone",
        "businessPhones",
        "usageLocation",
        "city",
        "country",
        "companyName",
        "employeeId",
        "otherMails",
        "preferredLanguage",
        "state",
        "streetAddress",
        "postalCode",
    }
)
# On a user synced from AD these are the only ones the cloud may change (AD masters the rest).
SYNCED_WRITABLE = frozenset({"accountEnabled", "passwordProfile", "passwordPolicies", "usageLocation"})

_MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class GraphCall:
    """A Graph request after authentication: decoded path segments after ``/v1.0``, query, body."""

    method: str
    segments: tuple[str, ...]
    query: Mapping[str, str]
    body: Any
    base_url: str


@dataclass(frozen=True)
class Reply:
    """What a handler answers: a status and a JSON body (None for 204)."""

    status: int
    body: JSONObject | None


class NotImplementedBySandbox(GraphProblem):
    """The contract has the operation but the sandbox does not implement it (yet)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(
            501, "SandboxNotImplemented", f"The sandbox tenant does not implement {method} {path}."
        )


@dataclass(frozen=True)
class _Collection:
    name: str
    context: str
    schema: str
    fields: Mapping[str, Field]
    orderable: frozenset[str]
    # None keeps the collection's own order (identities have no timestamp to sort by).
    default_order: tuple[str, bool] | None
    page: tuple[int, int]
    items: Callable[[], Mapping[str, JSONObject]]


class GraphApi:
    """The sandbox's Graph operations: alerts_v2, users, Identity Protection, Defender for Identity."""

    def __init__(self, state: TenantState, contract: Contract) -> None:
        """Serve ``state``; filter fields and selectable properties come from ``contract``."""
        self._state = state
        self._contract = contract
        string = Field("string")
        stamp = Field("datetime")
        boolean = Field("boolean")

        def enum(name: str) -> Field:
            return Field("string", contract.enum(name))

        self._alerts = _Collection(
            name="alerts",
            context="security/alerts_v2",
            schema=ALERT_SCHEMA,
            fields={
                "serviceSource": enum("microsoft.graph.security.serviceSource"),
                "detectionSource": enum("microsoft.graph.security.detectionSource"),
                "status": enum("microsoft.graph.security.alertStatus"),
                "severity": enum("microsoft.graph.security.alertSeverity"),
                "classification": enum("microsoft.graph.security.alertClassification"),
                "determination": enum("microsoft.graph.security.alertDetermination"),
                "assignedTo": string,
                "createdDateTime": stamp,
                "lastUpdateDateTime": stamp,
            },
            orderable=frozenset({"createdDateTime", "lastUpdateDateTime"}),
            default_order=("createdDateTime", True),
            page=ALERTS_PAGE,
            items=lambda: state.alerts,
        )
        self._risky_users = _Collection(
            name="riskyUsers",
            context="identityProtection/riskyUsers",
            schema=RISKY_USER_SCHEMA,
            fields={
                "riskLevel": enum("microsoft.graph.riskLevel"),
                "riskState": enum("microsoft.graph.riskState"),
                "riskDetail": enum("microsoft.graph.riskDetail"),
                "userPrincipalName": string,
                "id": string,
                "riskLastUpdatedDateTime": stamp,
                "isDeleted": boolean,
                "isProcessing": boolean,
            },
            orderable=frozenset({"riskLastUpdatedDateTime"}),
            default_order=("riskLastUpdatedDateTime", True),
            page=RISKY_USERS_PAGE,
            items=lambda: state.risky_users,
        )
        self._risk_detections = _Collection(
            name="riskDetections",
            context="identityProtection/riskDetections",
            schema=RISK_DETECTION_SCHEMA,
            fields={
                "userId": string,
                "userPrincipalName": string,
                "riskEventType": string,
                "ipAddress": string,
                "riskLevel": enum("microsoft.graph.riskLevel"),
                "riskState": enum("microsoft.graph.riskState"),
                "detectionTimingType": enum("microsoft.graph.riskDetectionTimingType"),
                "detectedDateTime": stamp,
                "activityDateTime": stamp,
            },
            orderable=frozenset({"detectedDateTime", "activityDateTime", "lastUpdatedDateTime"}),
            default_order=("detectedDateTime", True),
            page=RISK_DETECTIONS_PAGE,
            items=lambda: state.risk_detections,
        )
        self._identity_accounts = _Collection(
            name="identityAccounts",
            context="security/identities/identityAccounts",
            schema=IDENTITY_SCHEMA,
            fields={
                "id": string,
                "onPremisesSecurityIdentifier": string,
                "cloudSecurityIdentifier": string,
                "userPrincipalName": string,
                "displayName": string,
                "domain": string,
                "isEnabled": boolean,
            },
            orderable=frozenset(),
            default_order=None,
            page=IDENTITY_ACCOUNTS_PAGE,
            items=lambda: {key: identities.render(r, state) for key, r in state.identities.items()},
        )

    def handle(self, call: GraphCall) -> Reply:
        """Answer one Graph call, or raise :class:`GraphProblem`."""
        route = (call.method, call.segments)
        match route:
            case ("GET", ("security", "alerts_v2")):
                return self._list(self._alerts, call)
            case ("GET", ("security", "alerts_v2", alert_id)):
                return self._get_alert(call, alert_id)
            case ("PATCH", ("security", "alerts_v2", alert_id)):
                return self._update_alert(call, alert_id)
            case ("POST", ("security", "alerts_v2", alert_id, "comments")):
                return self._add_alert_comments(call, alert_id)
            case ("GET", ("security", "identities", "identityAccounts")):
                return self._list(self._identity_accounts, call)
            case ("GET", ("security", "identities", "identityAccounts", identity_id)):
                return self._get_identity_account(call, identity_id)
            case ("POST", ("security", "identities", "identityAccounts", identity_id, "invokeAction")):
                return self._invoke_action(call, identity_id)
            case ("GET", ("identityProtection", "riskyUsers")):
                return self._list(self._risky_users, call)
            case (
                "POST",
                (
                    "identityProtection",
                    "riskyUsers",
                    "confirmCompromised" | "dismiss" | "confirmSafe" as verb,
                ),
            ):
                return self._risky_users_action(call, verb)
            case ("GET", ("identityProtection", "riskyUsers", risky_user_id)):
                return self._get_risky_user(call, risky_user_id)
            case ("GET", ("identityProtection", "riskDetections")):
                return self._list(self._risk_detections, call)
            case ("GET", ("users", user_id)):
                return self._get_user(call, user_id)
            case ("PATCH", ("users", user_id)):
                return self._update_user(call, user_id)
            case ("POST", ("users", user_id, "revokeSignInSessions")):
                return self._revoke_sign_in_sessions(call, user_id)
            case ("POST", ("users", user_id, "checkMemberGroups")):
                return self._check_member_groups(call, user_id)
            case ("GET", ("users", user_id, "transitiveMemberOf", "microsoft.graph.directoryRole")):
                return self._transitive_roles(call, user_id)
        raise NotImplementedBySandbox(call.method, "/" + "/".join(call.segments))

    # -- collections -----------------------------------------------------------------------

    def _list(self, collection: _Collection, call: GraphCall) -> Reply:
        query = dict(call.query)
        token = query.pop("$skiptoken", None)
        if token is not None:
            if query:
                raise bad_request(f"$skiptoken cannot be combined with {', '.join(sorted(query))}")
            cursor = self._state.cursors.pop(token, None)
            if cursor is None or cursor.collection != collection.name:
                raise bad_request("The $skiptoken is invalid or has expired.")
            current = collection.items()
            remaining = [current[i] for i in cursor.ids if i in current]
            return self._page(collection, call, remaining, cursor.top, cursor.select)
        _refuse_unknown_options(query, {"$filter", "$top", "$select", "$orderby"})
        top = _top(query.get("$top"), collection.page)
        select = self._select(query.get("$select"), collection.schema)
        items = list(collection.items().values())
        if "$filter" in query:
            try:
                predicate = parse_filter(query["$filter"], collection.fields)
            except FilterError as exc:
                raise bad_request(str(exc)) from exc
            items = [item for item in items if predicate(item)]
        order = _order(query.get("$orderby"), collection)
        if order is not None:
            field, descending = order
            items.sort(key=lambda item: (parse_iso(item[field]), str(item["id"])), reverse=descending)
        return self._page(collection, call, items, top, select)

    def _page(
        self,
        collection: _Collection,
        call: GraphCall,
        items: Sequence[JSONObject],
        top: int,
        select: tuple[str, ...] | None,
    ) -> Reply:
        body: JSONObject = {
            "@odata.context": f"{call.base_url}/$metadata#{collection.context}",
            "value": [_project(item, select) for item in items[:top]],
        }
        rest = tuple(str(item["id"]) for item in items[top:])
        if rest:
            # The cursor snapshots the ids: an alert added mid-paging neither repeats nor
            # shifts earlier ones into the next page.
            token = secrets.token_urlsafe(12)
            self._state.cursors[token] = Cursor(collection.name, rest, top, select)
            body["@odata.nextLink"] = f"{call.base_url}/{'/'.join(call.segments)}?$skiptoken={token}"
        return Reply(200, body)

    def _select(self, raw: str | None, schema: str) -> tuple[str, ...] | None:
        if raw is None:
            return None
        names = tuple(name.strip() for name in raw.split(",") if name.strip())
        known = self._contract.properties(schema)
        for name in names:
            if name not in known:
                raise bad_request(f"Could not find a property named '{name}' on type '{schema}'.")
        return names

    # -- users -----------------------------------------------------------------------------

    def _user(self, user_id: str) -> JSONObject:
        user = self._state.find_user(user_id)
        if user is None:
            raise GraphProblem(
                404,
                "Request_ResourceNotFound",
                f"Resource '{user_id}' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        return user

    def _get_user(self, call: GraphCall, user_id: str) -> Reply:
        query = dict(call.query)
        _refuse_unknown_options(query, {"$select"})
        user = self._user(user_id)
        select = self._select(query.get("$select"), USER_SCHEMA) or DEFAULT_USER_SELECT
        body = {"@odata.context": f"{call.base_url}/$metadata#users/$entity"}
        body.update(_project(user, select))
        return Reply(200, body)

    def _update_user(self, call: GraphCall, user_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        user = self._user(user_id)
        changes: JSONObject = call.body if isinstance(call.body, dict) else {}
        known = self._contract.properties(USER_SCHEMA)
        for name in changes:
            if name not in known:
                raise bad_request(f"Invalid property '{name}'.", code="Request_BadRequest")
            if name not in WRITABLE_USER_PROPERTIES:
                raise bad_request(
                    f"Property '{name}' is read-only and cannot be set.", code="Request_BadRequest"
                )
            if user.get("onPremisesSyncEnabled") and name not in SYNCED_WRITABLE:
                raise bad_request(
                    "Unable to update the specified properties for on-premises mastered "
                    "Directory Sync objects or objects currently undergoing migration.",
                    code="Request_BadRequest",
                )
        for name, value in changes.items():
            if name == "passwordProfile":
                self._set_password_profile(user, value)
            else:
                user[name] = copy.deepcopy(value)
        return Reply(204, None)

    def _set_password_profile(self, user: JSONObject, profile: Mapping[str, Any] | None) -> None:
        profile = profile or {}
        password = profile.get("password")
        if password is not None:
            if len(str(password)) < _MIN_PASSWORD_LENGTH:
                raise bad_request(
                    "The specified password does not comply with password complexity "
                    "requirements. Please provide a different password.",
                    code="Request_BadRequest",
                )
            user["lastPasswordChangeDateTime"] = iso(self._state.clock())
            self._state.passwords[str(user["id"])] = str(password)
        # Graph never returns the password itself.
        user["passwordProfile"] = {
            "forceChangePasswordNextSignIn": bool(profile.get("forceChangePasswordNextSignIn")),
            "forceChangePasswordNextSignInWithMfa": bool(profile.get("forceChangePasswordNextSignInWithMfa")),
            "password": None,
        }

    # -- alerts ----------------------------------------------------------------------------

    def _alert(self, alert_id: str) -> JSONObject:
        alert = self._state.alerts.get(alert_id)
        if alert is None:
            raise GraphProblem(404, "NotFound", f"Alert '{alert_id}' was not found.")
        return alert

    def _alert_reply(self, call: GraphCall, alert: JSONObject, select: tuple[str, ...] | None) -> Reply:
        body: JSONObject = {"@odata.context": f"{call.base_url}/$metadata#security/alerts_v2/$entity"}
        body.update(_project(alert, select))
        return Reply(200, body)

    def _get_alert(self, call: GraphCall, alert_id: str) -> Reply:
        query = dict(call.query)
        _refuse_unknown_options(query, {"$select"})
        alert = self._alert(alert_id)
        return self._alert_reply(call, alert, self._select(query.get("$select"), ALERT_SCHEMA))

    def _update_alert(self, call: GraphCall, alert_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        alert = self._alert(alert_id)
        changes: JSONObject = call.body if isinstance(call.body, dict) else {}
        for name in changes:
            if name not in WRITABLE_ALERT_PROPERTIES:
                raise bad_request(
                    f"Property '{name}' of an alert cannot be updated "
                    f"(updatable: {', '.join(WRITABLE_ALERT_PROPERTIES)})."
                )
        now = iso(self._state.clock())
        if "status" in changes and changes["status"] != alert["status"]:
            # resolvedDateTime tracks the status: set on resolving, cleared on reopening.
            alert["resolvedDateTime"] = now if changes["status"] == "resolved" else None
        alert.update(copy.deepcopy(changes))
        alert["lastUpdateDateTime"] = now
        return self._alert_reply(call, alert, None)

    def _add_alert_comments(self, call: GraphCall, alert_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        alert = self._alert(alert_id)
        # The docs send one alertComment; the Graph OpenAPI an array of them. Both are taken.
        given = call.body if isinstance(call.body, list) else [call.body]
        texts = [item.get("comment") if isinstance(item, dict) else None for item in given]
        if not texts or any(not isinstance(text, str) or not text.strip() for text in texts):
            raise bad_request("A comment needs a non-empty 'comment'.")
        now = iso(self._state.clock())
        for text in texts:
            alert["comments"].append(
                {
                    "comment": text,
                    "createdByDisplayName": self._state.app_display_name,
                    "createdDateTime": now,
                }
            )
        # lastUpdateDateTime is left alone: the docs do not say a comment changes it, and the
        # bot's own comments must not bring its alerts back to its poller as updates.
        context = f"{call.base_url}/$metadata#security/alerts_v2('{alert_id}')/comments"
        return Reply(200, {"@odata.context": context, "value": copy.deepcopy(alert["comments"])})

    # -- Defender for Identity -------------------------------------------------------------

    def _get_identity_account(self, call: GraphCall, identity_id: str) -> Reply:
        query = dict(call.query)
        _refuse_unknown_options(query, {"$select"})
        record = self._state.identities.get(identity_id.lower())
        if record is None:
            raise GraphProblem(404, "NotFound", f"Identity account '{identity_id}' was not found.")
        select = self._select(query.get("$select"), IDENTITY_SCHEMA)
        body: JSONObject = {
            "@odata.context": f"{call.base_url}/$metadata#security/identities/identityAccounts/$entity"
        }
        body.update(_project(identities.render(record, self._state), select))
        return Reply(200, body)

    def _invoke_action(self, call: GraphCall, identity_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        body = call.body if isinstance(call.body, dict) else {}
        result = identities.invoke_action(self._state, identity_id, body)
        # The documented schema (a plain invokeActionResult); the docs' example wraps it in
        # "value" with "provider": clients must read both, tests serve that one by a fault.
        context = f"{call.base_url}/$metadata#microsoft.graph.security.invokeActionResult"
        return Reply(200, {"@odata.context": context, **result})

    # -- Identity Protection ---------------------------------------------------------------

    def _get_risky_user(self, call: GraphCall, risky_user_id: str) -> Reply:
        query = dict(call.query)
        _refuse_unknown_options(query, {"$select"})
        risky = next(
            (r for key, r in self._state.risky_users.items() if key.lower() == risky_user_id.lower()), None
        )
        if risky is None:
            raise GraphProblem(404, "NotFound", f"The risky user '{risky_user_id}' was not found.")
        select = self._select(query.get("$select"), RISKY_USER_SCHEMA)
        body: JSONObject = {
            "@odata.context": f"{call.base_url}/$metadata#identityProtection/riskyUsers/$entity"
        }
        body.update(_project(risky, select))
        return Reply(200, body)

    def _risky_users_action(self, call: GraphCall, verb: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        body = call.body if isinstance(call.body, dict) else {}
        user_ids = [str(i) for i in body.get("userIds") or []]
        if not user_ids:
            raise bad_request("The userIds parameter must name at least one user.")
        if len(user_ids) > RISKY_USERS_ACTION_LIMIT:
            raise bad_request(f"At most {RISKY_USERS_ACTION_LIMIT} userIds are allowed per request.")
        apply = {
            "confirmCompromised": risk.confirm_compromised,
            "dismiss": risk.dismiss,
            "confirmSafe": risk.confirm_safe,
        }[verb]
        # The docs say nothing of ids that name no (risky) user: the service answers 204 for the
        # batch and skips them, so a 204 does not prove that each user changed; read back.
        for user_id in user_ids:
            apply(self._state, user_id)
        return Reply(204, None)

    # -- users -----------------------------------------------------------------------------

    def _revoke_sign_in_sessions(self, call: GraphCall, user_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        user = self._user(user_id)
        user["signInSessionsValidFromDateTime"] = iso(self._state.clock())
        # The documented answer (the service sometimes sends 204 instead; see the contract).
        return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#Edm.Boolean", "value": True})

    # -- memberships -----------------------------------------------------------------------

    def _check_member_groups(self, call: GraphCall, user_id: str) -> Reply:
        _refuse_unknown_options(dict(call.query), set())
        user = self._user(user_id)
        body = call.body if isinstance(call.body, dict) else {}
        asked = [str(i) for i in body.get("groupIds", [])]
        if len(asked) > CHECK_MEMBER_GROUPS_LIMIT:  # the contract says so too; Graph answers 400
            raise bad_request(
                f"Too many group ids: at most {CHECK_MEMBER_GROUPS_LIMIT} per request.",
                code="Request_BadRequest",
            )
        for group_id in asked:
            # Graph evaluates the list as one request: one malformed id fails all of it.
            if not _GUID.match(group_id):
                raise bad_request(f"Invalid GUID:{group_id}", code="Request_BadRequest")
        member_of = self._state.transitive_groups(str(user["id"]))
        found = list(dict.fromkeys(g.lower() for g in asked if g.lower() in member_of))
        return Reply(
            200,
            {"@odata.context": f"{call.base_url}/$metadata#Collection(Edm.String)", "value": found},
        )

    def _transitive_roles(self, call: GraphCall, user_id: str) -> Reply:
        query = dict(call.query)
        token = query.pop("$skiptoken", None)
        _refuse_unknown_options(query, {"$select", "$top", "$count"})
        # The contract demands the ConsistencyLevel header; Graph also wants $count=true here.
        if query.get("$count") != "true":
            raise GraphProblem(
                400,
                "Request_UnsupportedQuery",
                "An OData cast on a transitive members list is supported only with the advanced "
                "query parameters: the ConsistencyLevel: eventual header and $count=true.",
            )
        user = self._user(user_id)
        held = sorted(
            self._state.transitive_roles(str(user["id"])),
            key=lambda role: (str(role["displayName"]), str(role["id"])),
        )
        collection = f"transitiveRoles:{user['id']}"
        if token is not None:
            cursor = self._state.cursors.pop(token, None)
            if cursor is None or cursor.collection != collection:
                raise bad_request("The $skiptoken is invalid or has expired.")
            by_id = {str(role["id"]): role for role in held}
            page_items = [by_id[i] for i in cursor.ids if i in by_id]
            top, select = cursor.top, cursor.select
        else:
            page_items = held
            top = _top(query.get("$top"), DIRECTORY_PAGE)
            select = self._select(query.get("$select"), DIRECTORY_ROLE_SCHEMA)
        shape = f"({','.join(select)})" if select else ""
        body: JSONObject = {
            "@odata.context": f"{call.base_url}/$metadata#directoryRoles{shape}",
            "@odata.count": len(held),
            "value": [_project(role, select) for role in page_items[:top]],
        }
        rest = tuple(str(role["id"]) for role in page_items[top:])
        if rest:
            next_token = secrets.token_urlsafe(12)
            self._state.cursors[next_token] = Cursor(collection, rest, top, select)
            # Directory next links keep the advanced query option and add the $skiptoken.
            path = "/".join(quote(segment, safe="@") for segment in call.segments)
            body["@odata.nextLink"] = f"{call.base_url}/{path}?$count=true&$skiptoken={next_token}"
        return Reply(200, body)


def _refuse_unknown_options(query: Mapping[str, str], supported: Iterable[str]) -> None:
    allowed = set(supported)
    for name in query:
        if name not in allowed:
            raise bad_request(
                f"The sandbox does not implement the query option '{name}' here "
                f"(supported: {', '.join(sorted(allowed)) or 'none'})."
            )


def _top(raw: str | None, page: tuple[int, int]) -> int:
    default, maximum = page
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError as exc:
        raise bad_request(f"Invalid $top value '{raw}'.") from exc
    if not 1 <= top <= maximum:
        raise bad_request(f"Invalid $top value {top}: it must be between 1 and {maximum}.")
    return top


def _order(raw: str | None, collection: _Collection) -> tuple[str, bool] | None:
    if raw is None:
        return collection.default_order
    field, _, direction = raw.strip().partition(" ")
    direction = direction.strip().lower() or "asc"
    if field not in collection.orderable or direction not in {"asc", "desc"}:
        raise bad_request(
            f"The sandbox cannot order by '{raw}' (use one of "
            f"{', '.join(sorted(collection.orderable)) or 'no property'} with asc or desc)."
        )
    return field, direction == "desc"


def _project(item: Mapping[str, Any], select: Sequence[str] | None) -> JSONObject:
    if select is None:
        return copy.deepcopy(dict(item))
    # Graph keeps the type annotation of a derived type (security.user) under $select.
    names = ["@odata.type", *select] if "@odata.type" in item else select
    return {name: copy.deepcopy(item[name]) for name in names if name in item}
