"""The Graph client: typed methods named after Graph operations over one request chokepoint."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from bot.errors import GraphError, GraphOutcomeUnknown
from bot.graph import decode
from bot.graph.odata import all_of, any_equal, odata_datetime, odata_string
from bot.graph.pacing import Pacer
from bot.graph.permissions import operation_template
from bot.retry import backoff_delay, parse_retry_after
from bot.tracing import annotate, span

JSONObject = dict[str, Any]

# 503/504 are the transient answers Graph documents; other 5xx (500, 502) usually repeat.
_RETRY_UNAVAILABLE = frozenset({503, 504})

# checkMemberGroups evaluates at most 20 group ids per request.
CHECK_MEMBER_GROUPS_BATCH = 20

# An OData cast on transitiveMemberOf is an "advanced query": Graph refuses it without these.
_ADVANCED_QUERY = {"ConsistencyLevel": "eventual"}

# JSON batching: at most 20 requests in one POST /$batch.
MAX_BATCH_REQUESTS = 20

# confirmCompromised and dismiss take at most 60 user ids per request.
RISKY_USERS_BATCH = 60

# Every request under this prefix shares Identity Protection's 1 request/second tenant limit.
_IDENTITY_PROTECTION = "/identityProtection/"

# Transport failures raised before any byte of the request left: nothing can have happened,
# so even a non-idempotent call may be sent again. Every other failure (a read timeout, a
# dropped connection, a write error) may come after Graph received the whole request.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
)

# Answers to a non-idempotent call that do not rule out that it was carried out: a gateway
# (502, 504) or the service (500) failed after the request reached it. 501 says the operation
# does not exist and 503 that it was not processed (safe to retry, like 429).
_OUTCOME_UNKNOWN_STATUSES = frozenset({500, 502, 504})


class TokenSource(Protocol):
    """Anything that hands out a bearer token for Graph (``TokenProvider`` in production)."""

    async def token(self) -> str:
        """A valid access token."""
        ...


@dataclass(frozen=True)
class GraphResponse:
    """A successful Graph answer: status, parsed JSON body (None if empty), request id, headers."""

    status: int
    body: Any
    request_id: str
    headers: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class IdentityActionResult:
    """What Defender for Identity said to an invokeAction: the id that tracks the action.

    ``raw`` is the body as Graph sent it (kept for the audit trail); ``request_id`` names the
    request for Microsoft support. No API polls an action's status: read the account back, and
    find the action in the Action Center history by ``correlation_id``.
    """

    correlation_id: str
    raw: Any
    request_id: str


class GraphClient:
    """Calls Microsoft Graph; every call goes through :meth:`_request`.

    The chokepoint adds the bearer token, ``Accept`` and a fresh ``client-request-id``; retries
    429 (honouring ``Retry-After``, fractional seconds or an HTTP-date), 503/504 and transport
    failures with full-jitter exponential backoff, at most ``max_attempts`` times; and turns
    every other error answer into the typed exceptions of :mod:`bot.errors`.

    **Exactly once on the wire.** The remediation POSTs (invokeAction, revokeSignInSessions,
    confirmCompromised, dismiss, alert comments) are not idempotent: sent twice, an action runs
    twice. For those, a failure that may come after Graph received the request (a read timeout,
    a dropped connection, a 500/502/504) is never retried; it raises
    :class:`~bot.errors.GraphOutcomeUnknown`, and the caller reads the state back. A connect
    error (nothing was sent) and a 429 or 503 answer (Graph says it did not process the request)
    are retried as for every other call. GET and PATCH (which sets absolute values) keep the
    full retry policy.

    **Identity Protection pacing.** Every request under ``/identityProtection/`` (retries and
    pages included) waits for a slot of one shared :class:`~bot.graph.pacing.Pacer`: one request
    per ``identity_protection_interval`` seconds per client, because Graph allows one per second
    per tenant and its 429s there carry no ``Retry-After``.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenSource,
        base_url: str,
        *,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        identity_protection_interval: float = 1.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """Wrap a shared ``httpx.AsyncClient``; ``base_url`` is e.g. ``https://graph.microsoft.com/v1.0``.

        ``sleep``, ``rng`` and ``monotonic`` exist so tests observe the waits instead of waiting;
        ``now`` (the wall clock) reads a ``Retry-After`` given as an HTTP-date.
        ``identity_protection_interval`` is the pacing of ``/identityProtection/`` (0 turns it off).
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._tokens = tokens
        self._base_url = base_url.rstrip("/")
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._now = now or _utc_now
        self._monotonic = monotonic
        self._identity_protection = Pacer(identity_protection_interval, sleep=sleep, clock=monotonic)
        self._observer: Callable[[str, int, float], None] | None = None

    def observe(self, observer: Callable[[str, int, float], None]) -> None:
        """Call ``observer(operation, status, seconds)`` after every Graph call (for metrics).

        ``operation`` is the method and the contract path template (``PATCH /users/{user-id}``),
        never a concrete id; ``status`` is the final HTTP status, 0 when no answer came.
        """
        self._observer = observer

    # -- alerts and users ------------------------------------------------------------------

    async def list_alerts(
        self,
        *,
        service_sources: Sequence[str],
        updated_after: datetime | None,
        top: int = 100,
        select: Sequence[str] | None = None,
    ) -> AsyncIterator[JSONObject]:
        """Alerts (``security.alert``) from the given service sources, following every page.

        Permission: SecurityAlert.Read.All.
        """
        filter_text = all_of(
            any_equal("serviceSource", service_sources) if service_sources else "",
            f"lastUpdateDateTime gt {odata_datetime(updated_after)}" if updated_after else "",
        )
        params: dict[str, str] = {"$top": str(top)}
        if filter_text:
            params["$filter"] = filter_text
        if select:
            params["$select"] = ",".join(select)
        async for item in self._pages("/security/alerts_v2", params):
            yield item

    async def get_user(self, user_id: str, select: Sequence[str]) -> JSONObject:
        """One user by object id or user principal name, with the ``select``-ed properties.

        Permission: User.Read.All (the contract's least, User.ReadBasic.All, omits
        accountEnabled and the onPremises* properties).
        """
        params = {"$select": ",".join(select)} if select else None
        path = f"/users/{_segment(user_id)}"
        return _object(await self._request("GET", path, params=params), "GET", path)

    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> GraphResponse:
        """PATCH a user (204 expected), e.g. ``{"accountEnabled": False}`` to disable sign-in.

        Permission: User.EnableDisableAccount.All + User.Read.All for accountEnabled;
        User-PasswordProfile.ReadWrite.All for passwordProfile (contract: users_UpdateUser).
        """
        return await self._request("PATCH", f"/users/{_segment(user_id)}", json=dict(changes))

    async def revoke_sign_in_sessions(self, user_id: str) -> GraphResponse:
        """Invalidate the user's refresh tokens and session cookies (signInSessionsValidFromDateTime).

        Takes effect within minutes; does not reach B2B guests (they sign in at home). Docs say
        200 ``{"value": true}``, the service may answer 204: any 2xx is success. Not retried once
        possibly sent (see the class docstring). Permission: User.RevokeSessions.All.
        """
        path = f"/users/{_segment(user_id)}/revokeSignInSessions"
        return await self._request("POST", path, idempotent=False)

    # -- Defender for Identity -------------------------------------------------------------

    async def list_identity_accounts(
        self, *, sid: str | None = None, upn: str | None = None
    ) -> list[JSONObject]:
        """Identities Defender for Identity observes, by on-premises SID and/or UPN, every page.

        The contract documents ``$filter=onPremisesSecurityIdentifier eq '...'``; ``upn``
        filters on the top-level ``userPrincipalName`` of ``security.user`` (the derived type
        every identity is). Without either, every identity. Permission:
        SecurityIdentitiesAccount.Read.All.
        """
        filter_text = all_of(
            f"onPremisesSecurityIdentifier eq {odata_string(sid)}" if sid else "",
            f"userPrincipalName eq {odata_string(upn)}" if upn else "",
        )
        params = {"$filter": filter_text} if filter_text else {}
        return [item async for item in self._pages("/security/identities/identityAccounts", params)]

    async def get_identity_account(self, identity_account_id: str) -> JSONObject:
        """One identity (``security.user``) with its ``accounts`` per identity provider.

        Permission: SecurityIdentitiesAccount.Read.All.
        """
        path = f"/security/identities/identityAccounts/{_segment(identity_account_id)}"
        return _object(await self._request("GET", path), "GET", path)

    async def invoke_identity_action(
        self, identity_account_id: str, *, account_id: str, action: str, identity_provider: str
    ) -> IdentityActionResult:
        """Run a Defender for Identity response action on one account of an identity.

        ``account_id`` is that account's ``identifier`` and ``identity_provider`` its provider
        (``activeDirectory``, ``entraID``, ``okta``); AD actions run on a domain controller
        through the sensor. The answer is parsed defensively: plain or wrapped in ``value``
        (docs), ``identityProvider`` or ``provider``. An answer without a correlation id raises
        :class:`~bot.errors.GraphOutcomeUnknown`; it is never taken for success. Not retried
        once possibly sent. Permission: SecurityIdentitiesActions.ReadWrite.All.
        """
        path = f"/security/identities/identityAccounts/{_segment(identity_account_id)}/invokeAction"
        body = {"accountId": account_id, "action": action, "identityProvider": identity_provider}
        response = await self._request("POST", path, json=body, idempotent=False)
        correlation_id = invoke_action_correlation_id(response.body)
        if correlation_id is None:
            raise GraphOutcomeUnknown(
                f"Graph answered POST {path} with {response.status} but no correlationId, so the "
                f"{action} action on the {identity_provider} account cannot be tracked; whether "
                "Defender for Identity queued it is unknown: read the account state back",
                status=response.status,
                request_id=response.request_id,
                method="POST",
                path=path,
            )
        return IdentityActionResult(
            correlation_id=correlation_id, raw=response.body, request_id=response.request_id
        )

    # -- Entra ID Protection (paced: one request per second) -------------------------------

    async def list_risky_users(
        self,
        *,
        filter: str | None = None,
        top: int | None = None,
        select: Sequence[str] | None = None,
    ) -> AsyncIterator[JSONObject]:
        """Risky users from Entra ID Protection, following every page.

        Permission: IdentityRiskyUser.Read.All.
        """
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if top is not None:
            params["$top"] = str(top)
        if select:
            params["$select"] = ",".join(select)
        async for item in self._pages("/identityProtection/riskyUsers", params):
            yield item

    async def get_risky_user(self, user_id: str) -> JSONObject:
        """The user's risk (riskLevel, riskState, riskDetail); the riskyUser id is the user's id.

        404 (:class:`~bot.errors.GraphNotFound`) for a user Identity Protection never flagged.
        Permission: IdentityRiskyUser.Read.All.
        """
        path = f"/identityProtection/riskyUsers/{_segment(user_id)}"
        return _object(await self._request("GET", path), "GET", path)

    async def confirm_compromised(self, user_ids: Sequence[str]) -> GraphResponse:
        """Confirm users compromised: risk high, riskState confirmedCompromised (204).

        At most 60 ids per call. Graph answers 204 for the batch without saying which ids it
        acted on: read the risky users back. Not retried once possibly sent. Permission:
        IdentityRiskyUser.ReadWrite.All.
        """
        body = {"userIds": _risky_user_batch(user_ids)}
        path = "/identityProtection/riskyUsers/confirmCompromised"
        return await self._request("POST", path, json=body, idempotent=False)

    async def dismiss_risky_users(self, user_ids: Sequence[str]) -> GraphResponse:
        """Dismiss the users' risk: riskLevel none, riskState dismissed (204).

        At most 60 ids per call; read the risky users back as for :meth:`confirm_compromised`.
        Not retried once possibly sent. Permission: IdentityRiskyUser.ReadWrite.All.
        """
        body = {"userIds": _risky_user_batch(user_ids)}
        path = "/identityProtection/riskyUsers/dismiss"
        return await self._request("POST", path, json=body, idempotent=False)

    async def confirm_safe(self, user_ids: Sequence[str]) -> GraphResponse:
        """Confirm users safe: their risk level becomes none (204), and Identity Protection learns
        from it (a false positive), where dismiss only clears the risk.

        At most 60 ids per call; read the risky users back as for :meth:`confirm_compromised`.
        Not retried once possibly sent. Permission: IdentityRiskyUser.ReadWrite.All.
        """
        body = {"userIds": _risky_user_batch(user_ids)}
        path = "/identityProtection/riskyUsers/confirmSafe"
        return await self._request("POST", path, json=body, idempotent=False)

    async def list_risk_detections(self, user_id: str, top: int = 20) -> list[JSONObject]:
        """The user's newest ``top`` risk detections (IP, location, riskEventType), newest first.

        ``user_id`` is the object id (riskDetection.userId). One page only: the newest are what
        a responder reads. Permission: IdentityRiskEvent.Read.All.
        """
        if top < 1:
            raise ValueError("top must be at least 1")
        params = {
            "$filter": f"userId eq {odata_string(user_id)}",
            "$orderby": "detectedDateTime desc",
            "$top": str(top),
        }
        path = "/identityProtection/riskDetections"
        body = _object(await self._request("GET", path, params=params), "GET", path)
        return [item for item in body.get("value", []) if isinstance(item, dict)][:top]

    async def list_risk_detections_since(self, since: datetime, top: int = 500) -> AsyncIterator[JSONObject]:
        """Every risk detection detected at or after ``since``, newest first, following pages.

        One paged read serves the context of every card (Identity Protection allows one request
        per second tenant-wide). Permission: IdentityRiskEvent.Read.All.
        """
        params = {
            "$filter": f"detectedDateTime ge {odata_datetime(since)}",
            "$orderby": "detectedDateTime desc",
            "$top": str(top),
        }
        async for item in self._pages("/identityProtection/riskDetections", params):
            yield item

    # -- alert triage ----------------------------------------------------------------------

    async def add_alert_comment(self, alert_id: str, comment: str) -> GraphResponse:
        """Append a comment to an alert; the answer's ``value`` lists every comment (200).

        Not retried once possibly sent: a retry could post the comment twice. Permission:
        SecurityAlert.ReadWrite.All.
        """
        body = {"@odata.type": "microsoft.graph.security.alertComment", "comment": comment}
        path = f"/security/alerts_v2/{_segment(alert_id)}/comments"
        return await self._request("POST", path, json=body, idempotent=False)

    async def update_alert(self, alert_id: str, *, status: str) -> GraphResponse:
        """Set an alert's status (``new``, ``inProgress``, ``resolved``); answers the alert (200).

        Permission: SecurityAlert.ReadWrite.All.
        """
        path = f"/security/alerts_v2/{_segment(alert_id)}"
        return await self._request("PATCH", path, json={"status": status})

    # -- memberships -----------------------------------------------------------------------

    async def check_member_groups(self, user_id: str, group_ids: Sequence[str]) -> set[str]:
        """The ids among ``group_ids`` the user belongs to, directly or through nested groups.

        Graph checks at most 20 groups per call, so longer lists go in batches of 20. Ids come
        back as Graph spells them (lower-case GUIDs). Permission: GroupMember.Read.All (docs pair
        it with User.Read.All, which the bot holds already).
        """
        unique = list(dict.fromkeys(group_ids))
        member_of: set[str] = set()
        path = f"/users/{_segment(user_id)}/checkMemberGroups"
        for start in range(0, len(unique), CHECK_MEMBER_GROUPS_BATCH):
            batch = unique[start : start + CHECK_MEMBER_GROUPS_BATCH]
            body = _object(await self._request("POST", path, json={"groupIds": batch}), "POST", path)
            member_of.update(str(group_id) for group_id in body.get("value", []))
        return member_of

    async def list_directory_roles_of(
        self, user_id: str, *, page_size: int | None = None
    ) -> list[JSONObject]:
        """The directory roles (id, displayName, roleTemplateId) the user holds, directly or via a group.

        Follows every page (``page_size`` sets ``$top``; Graph's default is 100). An advanced
        query (``ConsistencyLevel: eventual``, ``$count=true``): Graph answers from an index that
        can trail a very recent role change briefly. Permission: RoleManagement.Read.Directory
        (with only User.Read.All, roleTemplateId comes back null).
        """
        params = {"$select": "id,displayName,roleTemplateId", "$count": "true"}
        if page_size is not None:
            params["$top"] = str(page_size)
        path = f"/users/{_segment(user_id)}/transitiveMemberOf/microsoft.graph.directoryRole"
        return [role async for role in self._pages(path, params, headers=_ADVANCED_QUERY)]

    # -- JSON batching ---------------------------------------------------------------------

    async def post_batch(
        self, requests: Sequence[Mapping[str, Any]], *, idempotent: bool, deadline: float | None = None
    ) -> GraphResponse:
        """Send one JSON batch (``POST /$batch``) of at most 20 requests; the answer's body holds
        ``responses``, one per request id, in any order.

        The batch itself needs no permission: Graph authorizes each request inside it as if it
        came alone. The chokepoint's policy applies to the batch as a whole (a whole-batch 429 or
        503 is sent again; ``idempotent=False`` when any request inside must not run twice, so
        that a batch whose fate is unknown raises :class:`~bot.errors.GraphOutcomeUnknown`).
        Requests inside are neither checked nor retried here: :mod:`bot.tenant.batch` builds
        them and reads each answer. ``deadline`` (on the client's monotonic clock) stops retries
        that would wait past it.
        """
        if not requests:
            raise ValueError("a batch needs at least one request")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise ValueError(f"at most {MAX_BATCH_REQUESTS} requests per batch, got {len(requests)}")
        body = {"requests": [dict(request) for request in requests]}
        return await self._request("POST", "/$batch", json=body, idempotent=idempotent, deadline=deadline)

    def monotonic(self) -> float:
        """The client's monotonic clock (seconds): deadlines given to it are read on this clock."""
        return self._monotonic()

    async def identity_protection_slot(self) -> None:
        """Wait for the next Identity Protection slot (one request per interval, shared with
        every call of this client under ``/identityProtection/``); a batch carrying such a
        request takes one, since Graph counts each request inside a batch on its own."""
        await self._identity_protection.wait()

    async def sleep(self, seconds: float) -> None:
        """Wait as the client waits between retries (tests give it a virtual sleep)."""
        await self._sleep(seconds)

    def retry_after(self, value: str | None) -> float | None:
        """Seconds a ``Retry-After`` value asks for (seconds or an HTTP-date), None if absent."""
        return parse_retry_after(value, now=self._now())

    def backoff(self, attempt: int) -> float:
        """The client's jittered backoff before attempt ``attempt + 1``."""
        return self._backoff(attempt)

    # -- the chokepoint ------------------------------------------------------------------

    async def _pages(
        self, path: str, params: Mapping[str, str], *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[JSONObject]:
        # The nextLink already carries every query option, so later pages send no params;
        # headers are not part of the link, so every page sends them again.
        next_path: str | None = path
        next_params: Mapping[str, str] | None = params
        while next_path is not None:
            response = await self._request("GET", next_path, params=next_params, headers=headers)
            body = _object(response, "GET", path)
            for item in body.get("value", []):
                yield item
            link = body.get("@odata.nextLink")
            next_path = str(link) if link else None
            next_params = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        deadline: float | None = None,
    ) -> GraphResponse:
        """:meth:`_send` in a span of the trace, timed for the observer (if any)."""
        operation = _operation(method, path, self._base_url)
        started = time.perf_counter()
        status = 0
        with span(f"graph {operation}", **{"http.request.method": method.upper()}):
            try:
                response = await self._send(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers=headers,
                    idempotent=idempotent,
                    deadline=deadline,
                )
                status = response.status
                annotate(**{"http.response.status_code": status, "graph.request_id": response.request_id})
                return response
            except GraphError as exc:
                status = exc.status
                annotate(**{"http.response.status_code": status, "graph.request_id": exc.request_id})
                raise
            finally:
                if self._observer is not None:
                    self._observer(operation, status, time.perf_counter() - started)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        deadline: float | None = None,
    ) -> GraphResponse:
        """Send one Graph call with auth, retries and error decoding; see the class docstring.

        ``path`` is relative to the base URL (``/users/x``) or an absolute ``@odata.nextLink``
        that must point under the same base URL (the bearer token never leaves for other hosts).
        ``headers`` are extra request headers (e.g. ``ConsistencyLevel``); they cannot replace
        the ones the chokepoint sets. ``idempotent=False`` marks a call that must not run twice:
        it is sent again only when Graph surely did not act on it. ``deadline`` (monotonic
        seconds) ends the retries whose wait would pass it.
        """
        url, shown_path = self._resolve(path)
        paced = shown_path.startswith(_IDENTITY_PROTECTION)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self._max_attempts
            if paced:
                await self._identity_protection.wait()
            sent = {
                **(headers or {}),
                "Authorization": f"Bearer {await self._tokens.token()}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
            }
            try:
                answer = await self._http.request(method, url, params=params, json=json, headers=sent)
            except httpx.TransportError as exc:
                if not idempotent and not isinstance(exc, _NOT_SENT):
                    raise decode.outcome_unknown(method, shown_path, exc) from exc
                if last:
                    raise decode.unreachable(method, shown_path, exc, attempts=attempt) from exc
                wait = self._backoff(attempt)
                if self._past(deadline, wait):
                    raise decode.unreachable(method, shown_path, exc, attempts=attempt) from exc
                await self._sleep(wait)
                continue
            status = answer.status_code
            if status < 400:
                return GraphResponse(
                    status=status,
                    body=decode.parse_json(answer.content),
                    request_id=answer.headers.get("request-id", ""),
                    headers=dict(answer.headers),
                )
            if not idempotent and status in _OUTCOME_UNKNOWN_STATUSES:
                raise decode.outcome_unknown_answer(
                    method, shown_path, status, answer.headers, answer.content
                )
            if status != 429 and status not in _RETRY_UNAVAILABLE:
                raise decode.refused(method, shown_path, status, answer.headers, answer.content)
            delay = parse_retry_after(answer.headers.get("Retry-After"), now=self._now())
            if delay is not None and delay > self._backoff_cap:
                # Waiting less than Graph asked earns another 429; give up and say why.
                raise decode.exhausted(
                    method,
                    shown_path,
                    status,
                    answer.headers,
                    answer.content,
                    attempts=attempt,
                    reason=f"and asked to wait {delay:g} s, more than the {self._backoff_cap:g} s cap",
                )
            if last:
                raise decode.exhausted(
                    method, shown_path, status, answer.headers, answer.content, attempts=attempt
                )
            # Identity Protection's 429s (and most 503s) carry no Retry-After: jittered backoff.
            wait = delay if delay is not None else self._backoff(attempt)
            if self._past(deadline, wait):
                raise decode.exhausted(
                    method,
                    shown_path,
                    status,
                    answer.headers,
                    answer.content,
                    attempts=attempt,
                    reason=f"and waiting {wait:g} s more would pass the deadline",
                )
            await self._sleep(wait)

    def _past(self, deadline: float | None, wait: float) -> bool:
        return deadline is not None and self._monotonic() + wait > deadline

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng)

    def _resolve(self, path: str) -> tuple[str, str]:
        """The URL to send and the path shown in error messages (relative, without query)."""
        if path.startswith("/"):
            url = self._base_url + path
        elif path.startswith(self._base_url + "/"):
            url = path
        else:
            raise GraphError(
                f"Refusing to send a Graph token to {urlsplit(path).netloc or path!r}: "
                f"a @odata.nextLink must stay under {self._base_url}",
                path=path,
            )
        relative = url[len(self._base_url) :]
        return url, relative.split("?", 1)[0]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _segment(value: str) -> str:
    # A UPN may carry '#', '/', '?' or '%' (guests: name_contoso.com#EXT#@...); '@' stays readable.
    return quote(value, safe="@")


def path_segment(value: str) -> str:
    """``value`` (an id or a UPN) percent-encoded as one segment of a Graph path."""
    return _segment(value)


def _object(response: GraphResponse, method: str, path: str) -> JSONObject:
    if not isinstance(response.body, dict):
        raise GraphError(
            f"Graph answered {method} {path} with {response.status} but no JSON object",
            status=response.status,
            request_id=response.request_id,
            method=method,
            path=path,
        )
    return response.body


def invoke_action_correlation_id(body: Any) -> str | None:
    """The ``correlationId`` of an invokeAction answer, or None when it carries none.

    The contract's schema is a plain ``invokeActionResult``; the docs' example wraps it in
    ``value`` (and names the provider ``provider``). Both are read; so is a one-element list.
    """
    result = body.get("value", body) if isinstance(body, dict) else None
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    if not isinstance(result, dict):
        return None
    correlation_id = result.get("correlationId")
    if not isinstance(correlation_id, str) or not correlation_id.strip():
        return None
    return correlation_id.strip()


def find_account(identity: Mapping[str, Any], identity_provider: str) -> JSONObject | None:
    """The entry of an identity's ``accounts`` for ``identity_provider`` (e.g. ``activeDirectory``).

    Read as defensively as invokeAction answers: the docs' examples name the key ``provider``
    and spell values ``ActiveDirectory``/``EntraID``, the schema ``identityProvider`` and
    ``activeDirectory``/``entraID``; the comparison ignores case.
    """
    wanted = identity_provider.lower()
    for account in identity.get("accounts") or []:
        if not isinstance(account, dict):
            continue
        provider = account.get("identityProvider", account.get("provider"))
        if isinstance(provider, str) and provider.lower() == wanted:
            return account
    return None


def _risky_user_batch(user_ids: Sequence[str]) -> list[str]:
    # Refused here rather than by Graph: a caller with more users must send several batches,
    # and a failed batch then names which users it covered.
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        raise ValueError("at least one user id is needed")
    if len(ids) > RISKY_USERS_BATCH:
        raise ValueError(f"at most {RISKY_USERS_BATCH} user ids per request, got {len(ids)}")
    return ids


def _operation(method: str, path: str, base_url: str) -> str:
    """``METHOD /template`` of the contract for a metrics label: bounded, never an id."""
    relative = path.removeprefix(base_url).split("?", 1)[0]
    if relative == "/$batch":
        return f"{method.upper()} /$batch"  # needs no permission of its own, so not in the table
    try:
        return f"{method.upper()} {operation_template(method, relative)}"
    except KeyError:
        return f"{method.upper()} other"
