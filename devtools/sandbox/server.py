"""The sandbox's aiohttp application: routing, bearer check, contract validation, faults, records.

Every Graph request goes through :meth:`SandboxServer._graph`: authenticate, validate the request
against the contract, apply an injected fault or run the handler, validate the response. A
contract violation is recorded and answered 500 ``SandboxContractViolation`` so the caller fails
loudly instead of a test passing on a request real Graph would reject.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from werkzeug.datastructures import Headers

from devtools.sandbox.contract import Contract, WireRequest, WireResponse
from devtools.sandbox.graph_api import GraphApi, GraphCall
from devtools.sandbox.identity import IdentityEndpoints
from devtools.sandbox.managed_identity import ManagedIdentityEndpoint
from devtools.sandbox.state import Fault, RecordedRequest, TenantState
from devtools.sandbox.throttling import GraphThrottle
from devtools.sandbox.wire import GRAPH_JSON, GraphProblem, graph_error

GRAPH_PREFIX = "/v1.0"

# The error a fault answers when the test gives no body: Graph's usual code and message.
_DEFAULT_FAULTS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        400: ("BadRequest", "Invalid request."),
        401: ("InvalidAuthenticationToken", "Access token validation failure."),
        403: ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
        404: ("Request_ResourceNotFound", "Resource does not exist."),
        409: ("Conflict", "The request conflicts with the current state of the resource."),
        412: ("PreconditionFailed", "The precondition given in the request evaluated to false."),
        429: ("TooManyRequests", "Please retry again later."),
        500: ("InternalServerError", "An internal server error occurred."),
        502: ("BadGateway", "The gateway received an invalid response."),
        503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
        504: ("GatewayTimeout", "The request timed out."),
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (request-id, client-request-id) of the exchange, set by the middleware for the handlers.
_IDS = web.RequestKey("sandbox_ids", tuple[str, str])


@dataclass(frozen=True)
class _Answer:
    status: int
    payload: Any  # a JSON body, a text body (gateway page) or None
    headers: dict[str, str]
    validate: bool


class SandboxServer:
    """Builds the aiohttp application around a :class:`TenantState`."""

    def __init__(self, state: TenantState, contract: Contract, throttle: GraphThrottle | None = None) -> None:
        """Serve ``state``, validating Graph traffic against ``contract``; ``throttle`` applies
        Graph's documented throttling (see :mod:`devtools.sandbox.throttling`)."""
        self._state = state
        self._throttle = throttle
        self._contract = contract
        self._identity = IdentityEndpoints(state)
        self.managed_identity = ManagedIdentityEndpoint(state)
        self._graph_api = GraphApi(state, contract)
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def application(self) -> web.Application:
        """A new aiohttp application for the tenant (identity routes and Graph under /v1.0)."""
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self._identity.routes())
        app.add_routes(self.managed_identity.routes())
        app.router.add_route("*", GRAPH_PREFIX + "/{tail:.*}", self._graph)
        return app

    def abort_connections(self) -> None:
        """Drop every connection still open after shutdown.

        aiohttp closes TLS connections gracefully, waiting for the client's close_notify; an
        idle keep-alive client never sends it, and the socket would outlive the event loop.
        """
        for transport in list(self._transports):
            if isinstance(transport, asyncio.Transport):
                transport.abort()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # One place records every exchange and applies faults to the identity endpoints too.
        arrived = time.monotonic()
        if request.transport is not None:
            self._transports.add(request.transport)
        body = await request.read()
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        request[_IDS] = (request_id, client_request_id)
        form: dict[str, str] | None = None
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        response: web.StreamResponse
        fault = None
        if not request.path.startswith(GRAPH_PREFIX + "/"):
            fault = self._state.take_fault(request.method, request.path)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            response = self._identity_fault(fault, fault.status)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        self._state.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                json=redact(_json_or_none(body)) if form is None else None,
                form=form,
                status=response.status,
                request_id=request_id,
                client_request_id=client_request_id,
                arrived=arrived,
                answered=time.monotonic(),
            )
        )
        return response

    @staticmethod
    def _identity_fault(fault: Fault, status: int) -> web.Response:
        if isinstance(fault.body, str):
            return web.Response(status=status, text=fault.body, content_type="text/html")
        body: Any = fault.body
        if body is None and status >= 400:
            body = {"error": "temporarily_unavailable", "error_description": "Injected fault."}
        return web.json_response(body or {}, status=status, headers=dict(fault.headers))

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        graph_path = raw_path[len(GRAPH_PREFIX) :]
        body = await request.read()
        wire = Contract.wire_request(
            request.method,
            graph_path,
            request.query.items(),
            request.headers,
            request.headers.get("Content-Type", ""),
            _without_password(body),
        )
        where = f"{request.method} {raw_path}"
        answer = await self._answer(request, wire, where, graph_path, body)
        return self._respond(request, wire, where, answer)

    async def _answer(
        self, request: web.Request, wire: WireRequest, where: str, graph_path: str, body: bytes
    ) -> _Answer:
        """Authenticate, validate the request, then apply a fault or run the handler."""
        state = self._state
        try:
            self._authenticate(request)
            # A validator quotes the body it rejects: it sees none of a password (see
            # _without_password), and a non-string one is scrubbed from what it says.
            problems = _scrub(self._contract.request_problems(wire), _json_or_none(body))
            if problems:
                state.violations.extend(f"{where} request: {p}" for p in problems)
                problem = _violation(where, "request", problems)
                # The answer is ours, not Graph's; the path may not even be in the contract.
                return _Answer(500, self._error(problem.code, problem.message, request), {}, False)
            if self._throttle is not None:
                refused = self._throttle.admit(request.method, graph_path, request.query)
                if refused is not None:
                    code, message = _DEFAULT_FAULTS[429]
                    retry = {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
                    return _Answer(429, self._error(code, message, request), retry, True)
            fault = state.take_fault(request.method, request.path)
            if fault is not None and fault.status is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                return self._fault_answer(fault, fault.status, request)
            # The directory syncs on the tenant clock; a request is when the sandbox looks at it.
            state.sync_if_due()
            reply = self._graph_api.handle(
                GraphCall(
                    method=request.method,
                    segments=tuple(unquote(s) for s in graph_path.strip("/").split("/")),
                    query=dict(request.query),
                    body=_json_or_none(body),
                    base_url=f"{request.scheme}://{request.host}{GRAPH_PREFIX}",
                )
            )
            if fault is not None and fault.delay:
                # A late answer to a request Graph did process: the change is made first, so a
                # client that gave up waiting finds it when it reads the state back.
                await asyncio.sleep(fault.delay)
            return _Answer(reply.status, reply.body, {}, True)
        except GraphProblem as problem:
            error = self._error(problem.code, problem.message, request)
            return _Answer(problem.status, error, dict(problem.headers), True)
        except Exception as exc:  # a sandbox bug must fail the test that met it
            state.violations.append(f"{where}: the sandbox crashed: {type(exc).__name__}: {exc}")
            error = self._error("SandboxError", f"{type(exc).__name__}: {exc}", request)
            return _Answer(500, error, {}, False)

    def _respond(self, request: web.Request, wire: WireRequest, where: str, answer: _Answer) -> web.Response:
        """Add Graph's headers, validate the response, and build it."""
        request_id, client_request_id = request[_IDS]
        headers = {
            **answer.headers,
            "request-id": request_id,
            "client-request-id": client_request_id,
            "x-ms-ags-diagnostic": json.dumps(
                {"ServerInfo": {"DataCenter": "Sandbox", "Slice": "E", "Ring": "0"}}
            ),
        }
        status = answer.status
        data, content_type = _encode(answer.payload)
        if answer.validate:
            problems = self._contract.response_problems(
                wire, WireResponse(status, content_type.lower(), Headers(headers), data or None)
            )
            if problems:
                self._state.violations.extend(f"{where} response {status}: {p}" for p in problems)
                violation = _violation(where, f"response {status}", problems)
                status = violation.status
                data, content_type = _encode(self._error(violation.code, violation.message, request))
                headers.pop("Retry-After", None)
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(status=status, body=data or None, headers=headers)

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphProblem(401, "InvalidAuthenticationToken", "Access token is empty.")
        expiry = self._state.tokens.get(token.strip())
        if expiry is None:
            raise GraphProblem(
                401, "InvalidAuthenticationToken", "Access token validation failure. Invalid token."
            )
        if expiry <= self._state.clock():
            raise GraphProblem(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )

    def _fault_answer(self, fault: Fault, status: int, request: web.Request) -> _Answer:
        """The injected answer; a text body is a gateway page, not Graph, so it is not validated."""
        headers = dict(fault.headers)
        if isinstance(fault.body, str):
            return _Answer(status, fault.body, headers, False)
        if fault.body is not None:
            return _Answer(status, dict(fault.body), headers, True)
        if status < 400:
            return _Answer(status, None, headers, True)
        code, message = _DEFAULT_FAULTS.get(status, ("UnknownError", "Injected fault."))
        return _Answer(status, self._error(code, message, request), headers, True)

    def _error(self, code: str, message: str, request: web.Request) -> dict[str, Any]:
        request_id, client_request_id = request[_IDS]
        return graph_error(
            code,
            message,
            request_id=request_id,
            client_request_id=client_request_id,
            now=self._state.clock(),
        )


def redact(body: Any) -> Any:
    """``body`` with ``passwordProfile.password`` replaced by ``***`` (a copy when it had one)."""
    if not isinstance(body, dict):
        return body
    profile = body.get("passwordProfile")
    if not isinstance(profile, dict) or profile.get("password") is None:
        return body
    return {**body, "passwordProfile": {**profile, "password": "***"}}


def _without_password(body: bytes) -> bytes:
    """The body the contract validator sees: a string password replaced by ``***``.

    Another string validates the same (the contract puts no constraint on it), and validator
    messages quote bodies inside nested reprs where no search could find the password again.
    """
    parsed = _json_or_none(body)
    profile = parsed.get("passwordProfile") if isinstance(parsed, dict) else None
    if not isinstance(profile, dict) or not isinstance(profile.get("password"), str):
        return body
    return json.dumps(redact(parsed)).encode("utf-8")


def _scrub(problems: list[str], body: Any) -> list[str]:
    """``problems`` without a non-string password (a string one never reaches the validator)."""
    password = None
    if isinstance(body, dict) and isinstance(body.get("passwordProfile"), dict):
        password = body["passwordProfile"].get("password")
    if password is None or isinstance(password, str) or str(password) == "":
        return problems
    return [problem.replace(str(password), "***") for problem in problems]


def _violation(where: str, part: str, problems: list[str]) -> GraphProblem:
    return GraphProblem(
        500,
        "SandboxContractViolation",
        f"{where} {part} breaks the Graph contract: {'; '.join(problems)}",
    )


def _encode(payload: Any) -> tuple[bytes, str]:
    if payload is None:
        return b"", ""
    if isinstance(payload, str):
        return payload.encode("utf-8"), "text/html; charset=utf-8"
    return json.dumps(payload).encode("utf-8"), GRAPH_JSON


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
