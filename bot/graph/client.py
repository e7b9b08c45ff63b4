"""The Graph client: typed methods named after Graph operations over one request chokepoint."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from bot.errors import GraphError
from bot.graph import decode
from bot.graph.odata import all_of, any_equal, odata_datetime
from bot.graph.retry import backoff_delay, parse_retry_after

JSONObject = dict[str, Any]

# 503/504 are the transient answers Graph documents; other 5xx (500, 502) usually repeat.
_RETRY_UNAVAILABLE = frozenset({503, 504})

# checkMemberGroups evaluates at most 20 group ids per request.
CHECK_MEMBER_GROUPS_BATCH = 20

# An OData cast on transitiveMemberOf is an "advanced query": Graph refuses it without these.
_ADVANCED_QUERY = {"ConsistencyLevel": "eventual"}


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


class GraphClient:
    """Calls Microsoft Graph; every call goes through :meth:`_request`.

    The chokepoint adds the bearer token, ``Accept`` and a fresh ``client-request-id``; retries
    429 (honouring ``Retry-After``, fractional seconds or an HTTP-date), 503/504 and transport
    failures with full-jitter exponential backoff, at most ``max_attempts`` times; and turns
    every other error answer into the typed exceptions of :mod:`bot.errors`.
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
    ) -> None:
        """Wrap a shared ``httpx.AsyncClient``; ``base_url`` is e.g. ``https://graph.microsoft.com/v1.0``.

        ``sleep`` and ``rng`` exist so tests observe the waits instead of waiting.
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

    # -- Graph operations ------------------------------------------------------------------

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

    async def list_risky_users(
        self, *, filter: str | None = None, top: int | None = None
    ) -> AsyncIterator[JSONObject]:
        """Risky users from Entra ID Protection, following every page.

        Permission: IdentityRiskyUser.Read.All.
        """
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if top is not None:
            params["$top"] = str(top)
        async for item in self._pages("/identityProtection/riskyUsers", params):
            yield item

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
    ) -> GraphResponse:
        """Send one Graph call with auth, retries and error decoding; see the class docstring.

        ``path`` is relative to the base URL (``/users/x``) or an absolute ``@odata.nextLink``
        that must point under the same base URL (the bearer token never leaves for other hosts).
        ``headers`` are extra request headers (e.g. ``ConsistencyLevel``); they cannot replace
        the ones the chokepoint sets.
        """
        url, shown_path = self._resolve(path)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self._max_attempts
            sent = {
                **(headers or {}),
                "Authorization": f"Bearer {await self._tokens.token()}",
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
            }
            try:
                answer = await self._http.request(method, url, params=params, json=json, headers=sent)
            except httpx.TransportError as exc:
                if last:
                    raise decode.unreachable(method, shown_path, exc, attempts=attempt) from exc
                await self._sleep(self._backoff(attempt))
                continue
            status = answer.status_code
            if status < 400:
                return GraphResponse(
                    status=status,
                    body=decode.parse_json(answer.content),
                    request_id=answer.headers.get("request-id", ""),
                    headers=dict(answer.headers),
                )
            if status != 429 and status not in _RETRY_UNAVAILABLE:
                raise decode.refused(method, shown_path, status, answer.headers, answer.content)
            delay = parse_retry_after(answer.headers.get("Retry-After"), now=datetime.now(UTC))
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
            await self._sleep(delay if delay is not None else self._backoff(attempt))

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


def _segment(value: str) -> str:
    # A UPN may carry '#', '/', '?' or '%' (guests: name_contoso.com#EXT#@...); '@' stays readable.
    return quote(value, safe="@")


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
