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
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from werkzeug.datastructures import Headers

from devtools.sandbox.contract import Contract, WireRequest, WireResponse
from devtools.sandbox.graph_api import GraphApi, GraphCall
from devtools.sandbox.identity import IdentityEndpoints
from devtools.sandbox.ingestion import IngestionEndpoint
from devtools.sandbox.managed_identity import ManagedIdentityEndpoint
from devtools.sandbox.signin import SignInState
from devtools.sandbox.state import Fault, RecordedRequest, TenantState
from devtools.sandbox.throttling import GraphThrottle
from devtools.sandbox.wire import GRAPH_JSON, GraphProblem, bad_request, graph_error

GRAPH_PREFIX = "/v1.0"
# At most this many requests in one JSON batch (https://learn.microsoft.com/graph/json-batching).
MAX_BATCH_REQUESTS = 20
_HTML = "text/html; charset=utf-8"

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
class _Call:
    """One Graph request as the sandbox handles it: sent alone, or one request of a ``$batch``."""

    method: str
    graph_path: str  # the raw path after /v1.0, as sent (percent-encoded), without the query
    path: str  # the decoded full path (/v1.0/...), what faults are matched against and recorded
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    request_id: str
    client_request_id: str
    base_url: str

    def wire(self) -> WireRequest:
        """The request as the contract validator sees it (without any password)."""
        content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        return Contract.wire_request(
            self.method, self.graph_path, self.query, self.headers, content_type, _without_password(self.body)
        )

    def inner(self, step: Mapping[str, Any]) -> _Call:
        """A request of this batch, carrying the batch's token as Graph authorizes it."""
        url = str(step["url"])
        relative = url if url.startswith("/") else "/" + url
        raw_path, _, raw_query = relative.partition("?")
        headers = {str(k): str(v) for k, v in (step.get("headers") or {}).items()}
        authorization = next((v for k, v in self.headers.items() if k.lower() == "authorization"), "")
        client_request_id = next(
            (v for k, v in headers.items() if k.lower() == "client-request-id"), self.client_request_id
        )
        headers["Authorization"] = authorization
        body = step.get("body")
        return _Call(
            method=str(step["method"]).upper(),
            graph_path=raw_path,
            path=GRAPH_PREFIX + unquote(raw_path),
            query=tuple(parse_qsl(raw_query, keep_blank_values=True)),
            headers=headers,
            body=b"" if body is None else json.dumps(body).encode("utf-8"),
            request_id=str(uuid.uuid4()),
            client_request_id=client_request_id,
            base_url=self.base_url,
        )


@dataclass(frozen=True)
class _Answer:
    status: int
    payload: Any  # a JSON body, a text body (gateway page) or None
    headers: dict[str, str]
    validate: bool


class SandboxServer:
    """Builds the aiohttp application around a :class:`TenantState`."""

    def __init__(
        self,
        state: TenantState,
        contract: Contract,
        throttle: GraphThrottle | None = None,
        sign_in: SignInState | None = None,
    ) -> None:
        """Serve ``state``, validating Graph traffic against ``contract``; ``throttle`` applies
        Graph's documented throttling (see :mod:`devtools.sandbox.throttling`); ``sign_in`` holds
        interactive sign-in's keys, redirect URIs and codes."""
        self._state = state
        self._throttle = throttle
        self._contract = contract
        self._identity = IdentityEndpoints(state, sign_in)
        self.managed_identity = ManagedIdentityEndpoint(state)
        self.ingestion = IngestionEndpoint(state)
        self._graph_api = GraphApi(state, contract)
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    def application(self) -> web.Application:
        """A new aiohttp application for the tenant (identity routes and Graph under /v1.0)."""
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self._identity.routes())
        app.add_routes(self.managed_identity.routes())
        app.add_routes(self.ingestion.routes())
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
        request_id, client_request_id = request[_IDS]
        call = _Call(
            method=request.method,
            graph_path=raw_path[len(GRAPH_PREFIX) :],
            path=request.path,
            query=tuple(request.query.items()),
            headers=dict(request.headers),
            body=await request.read(),
            request_id=request_id,
            client_request_id=client_request_id,
            base_url=f"{request.scheme}://{request.host}{GRAPH_PREFIX}",
        )
        where = f"{request.method} {raw_path}"
        answer = await self._answer(call, where)
        status, headers, data, content_type = self._finish(call, where, answer)
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(status=status, body=data or None, headers=headers)

    async def _answer(self, call: _Call, where: str, *, in_batch: bool = False) -> _Answer:
        """Authenticate, validate the request, then apply a fault or run the handler."""
        state = self._state
        try:
            self._authenticate(call.headers)
            if call.method == "POST" and unquote(call.graph_path) == "/$batch" and not in_batch:
                return await self._batch(call, where)
            problems = _scrub(self._contract.request_problems(call.wire()), _json_or_none(call.body))
            if problems:
                state.violations.extend(f"{where} request: {p}" for p in problems)
                problem = _violation(where, "request", problems)
                # The answer is ours, not Graph's; the path may not even be in the contract.
                return _Answer(500, self._error(problem.code, problem.message, call), {}, False)
            if self._throttle is not None:
                refused = self._throttle.admit(call.method, call.graph_path, dict(call.query))
                if refused is not None:
                    code, message = _DEFAULT_FAULTS[429]
                    retry = {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
                    return _Answer(429, self._error(code, message, call), retry, True)
            fault = state.take_fault(call.method, call.path)
            if fault is not None and fault.status is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                return self._fault_answer(fault, fault.status, call)
            # The directory syncs on the tenant clock; a request is when the sandbox looks at it.
            state.sync_if_due()
            reply = self._graph_api.handle(
                GraphCall(
                    method=call.method,
                    segments=tuple(unquote(s) for s in call.graph_path.strip("/").split("/")),
                    query=dict(call.query),
                    body=_json_or_none(call.body),
                    base_url=call.base_url,
                )
            )
            if fault is not None and fault.delay:
                # A late answer to a request Graph did process: the change is made first, so a
                # client that gave up waiting finds it when it reads the state back.
                await asyncio.sleep(fault.delay)
            return _Answer(reply.status, reply.body, {}, True)
        except GraphProblem as problem:
            error = self._error(problem.code, problem.message, call)
            return _Answer(problem.status, error, dict(problem.headers), True)
        except Exception as exc:  # a sandbox bug must fail the test that met it
            state.violations.append(f"{where}: the sandbox crashed: {type(exc).__name__}: {exc}")
            error = self._error("SandboxError", f"{type(exc).__name__}: {exc}", call)
            return _Answer(500, error, {}, False)

    async def _batch(self, call: _Call, where: str) -> _Answer:
        """``POST /$batch``: check the envelope as Graph does, then run each request through
        :meth:`_answer` as if it came alone (validation, throttling, faults, handlers).

        A malformed batch is answered 400 as Graph answers it, and recorded as a violation:
        a client that sends one has a bug. The responses come in reverse order of the requests
        (Graph promises no order), so a client must match them by id.
        """
        steps = _batch_steps(_json_or_none(call.body))
        if isinstance(steps, str):
            self._state.violations.append(f"{where} request: {steps} (Graph answers 400)")
            raise bad_request(steps)
        problems = _scrub(self._contract.request_problems(call.wire()), _json_or_none(call.body))
        if problems:
            self._state.violations.extend(f"{where} request: {p}" for p in problems)
            problem = _violation(where, "request", problems)
            return _Answer(500, self._error(problem.code, problem.message, call), {}, False)
        if any("dependsOn" in step for step in steps):
            raise GraphProblem(
                501, "SandboxNotImplemented", "The sandbox tenant does not implement dependsOn in $batch."
            )
        fault = self._state.take_fault(call.method, call.path)
        if fault is not None and fault.status is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return self._fault_answer(fault, fault.status, call)
        responses = []
        for step in steps:
            inner = call.inner(step)
            inner_where = f"{inner.method} {GRAPH_PREFIX}{inner.graph_path} (in $batch)"
            arrived = time.monotonic()
            answer = await self._answer(inner, inner_where, in_batch=True)
            status, headers, data, content_type = self._finish(inner, inner_where, answer)
            item_headers = {"Cache-Control": "no-cache"}
            if "Retry-After" in headers:
                item_headers["Retry-After"] = headers["Retry-After"]
            item: dict[str, Any] = {"id": step["id"], "status": status, "headers": item_headers}
            if data:
                item_headers["Content-Type"] = content_type
                item["body"] = _json_or_none(data) if content_type != _HTML else data.decode("utf-8")
            responses.append(item)
            self._state.batched_requests.append(
                RecordedRequest(
                    method=inner.method,
                    path=inner.path,
                    query=dict(inner.query),
                    json=redact(_json_or_none(inner.body)),
                    form=None,
                    status=status,
                    request_id=inner.request_id,
                    client_request_id=inner.client_request_id,
                    arrived=arrived,
                    answered=time.monotonic(),
                    batch_request_id=call.request_id,
                )
            )
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)  # the batch ran; its answer comes late
        return _Answer(200, {"responses": responses[::-1]}, {}, True)

    def _finish(self, call: _Call, where: str, answer: _Answer) -> tuple[int, dict[str, str], bytes, str]:
        """Add Graph's headers and validate the response: (status, headers, body, content type)."""
        headers = {
            **answer.headers,
            "request-id": call.request_id,
            "client-request-id": call.client_request_id,
            "x-ms-ags-diagnostic": json.dumps(
                {"ServerInfo": {"DataCenter": "Sandbox", "Slice": "E", "Ring": "0"}}
            ),
        }
        status = answer.status
        data, content_type = _encode(answer.payload)
        if answer.validate:
            problems = self._contract.response_problems(
                call.wire(), WireResponse(status, content_type.lower(), Headers(headers), data or None)
            )
            if problems:
                self._state.violations.extend(f"{where} response {status}: {p}" for p in problems)
                violation = _violation(where, f"response {status}", problems)
                status = violation.status
                data, content_type = _encode(self._error(violation.code, violation.message, call))
                headers.pop("Retry-After", None)
        return status, headers, data, content_type

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
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

    def _fault_answer(self, fault: Fault, status: int, call: _Call) -> _Answer:
        """The injected answer; a text body is a gateway page, not Graph, so it is not validated."""
        headers = dict(fault.headers)
        if isinstance(fault.body, str):
            return _Answer(status, fault.body, headers, False)
        if fault.body is not None:
            return _Answer(status, dict(fault.body), headers, True)
        if status < 400:
            return _Answer(status, None, headers, True)
        code, message = _DEFAULT_FAULTS.get(status, ("UnknownError", "Injected fault."))
        return _Answer(status, self._error(code, message, call), headers, True)

    def _error(self, code: str, message: str, call: _Call) -> dict[str, Any]:
        return graph_error(
            code,
            message,
            request_id=call.request_id,
            client_request_id=call.client_request_id,
            now=self._state.clock(),
        )


def redact(body: Any) -> Any:
    """``body`` with every ``passwordProfile.password`` replaced by ``***`` (a copy when it had one).

    Batches are searched too: a password reset inside ``/$batch`` carries its password in the
    request's ``body``.
    """
    if isinstance(body, list):
        return [redact(item) for item in body]
    if not isinstance(body, dict):
        return body
    copied: dict[str, Any] = {}
    for key, value in body.items():
        if key == "passwordProfile" and isinstance(value, dict) and value.get("password") is not None:
            copied[key] = {**value, "password": "***"}
        else:
            copied[key] = redact(value)
    return copied


def _without_password(body: bytes) -> bytes:
    """The body the contract validator sees: every string password replaced by ``***``.

    Another string validates the same (the contract puts no constraint on it), and validator
    messages quote bodies inside nested reprs where no search could find the password again.
    """
    parsed = _json_or_none(body)
    if not _has_string_password(parsed):
        return body
    return json.dumps(_redact_strings(parsed)).encode("utf-8")


def _redact_strings(body: Any) -> Any:
    if isinstance(body, list):
        return [_redact_strings(item) for item in body]
    if not isinstance(body, dict):
        return body
    copied: dict[str, Any] = {}
    for key, value in body.items():
        if key == "passwordProfile" and isinstance(value, dict) and isinstance(value.get("password"), str):
            copied[key] = {**value, "password": "***"}
        else:
            copied[key] = _redact_strings(value)
    return copied


def _has_string_password(body: Any) -> bool:
    if isinstance(body, list):
        return any(_has_string_password(item) for item in body)
    if not isinstance(body, dict):
        return False
    profile = body.get("passwordProfile")
    if isinstance(profile, dict) and isinstance(profile.get("password"), str):
        return True
    return any(_has_string_password(value) for value in body.values())


def _scrub(problems: list[str], body: Any) -> list[str]:
    """``problems`` without any non-string password (a string one never reaches the validator)."""
    for password in _non_string_passwords(body):
        problems = [problem.replace(password, "***") for problem in problems]
    return problems


def _non_string_passwords(body: Any) -> list[str]:
    found: list[str] = []
    if isinstance(body, list):
        for item in body:
            found += _non_string_passwords(item)
    elif isinstance(body, dict):
        profile = body.get("passwordProfile")
        if isinstance(profile, dict):
            password = profile.get("password")
            if password is not None and not isinstance(password, str) and str(password) != "":
                found.append(str(password))
        for value in body.values():
            found += _non_string_passwords(value)
    return found


def _batch_steps(body: Any) -> list[dict[str, Any]] | str:
    """The requests of a batch body, or what makes it malformed (Graph answers that 400)."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        return "Invalid batch payload format: the body must be a JSON object with a 'requests' array."
    steps = body["requests"]
    if not steps:
        return "Invalid batch payload format: the 'requests' array is empty."
    if len(steps) > MAX_BATCH_REQUESTS:
        return f"Too many requests in the batch: {len(steps)}; at most {MAX_BATCH_REQUESTS} are allowed."
    seen: set[str] = set()
    for position, step in enumerate(steps):
        where = f"requests[{position}]"
        if not isinstance(step, dict):
            return f"Invalid batch payload format: {where} is not an object."
        for name in ("id", "method", "url"):
            if not isinstance(step.get(name), str) or not step[name].strip():
                return f"Invalid batch payload format: {where} has no '{name}'."
        batch_id = step["id"].lower()
        if batch_id in seen:
            return f"Batch request ids must be unique; '{step['id']}' is used more than once."
        seen.add(batch_id)
        url = step["url"]
        if "://" in url or url.startswith("//"):
            return f"Invalid batch payload format: {where} url must be relative to the version root: {url!r}."
        path = unquote(("/" + url.lstrip("/")).split("?", 1)[0])
        if path.rstrip("/").lower() == "/$batch":
            return f"Invalid batch payload format: {where} cannot be a batch itself."
        headers = step.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
        ):
            return f"Invalid batch payload format: {where} headers must be an object of strings."
        if "body" in step and not any(k.lower() == "content-type" for k in (headers or {})):
            return f"Invalid batch payload format: {where} has a body but no Content-Type header."
        if "dependsOn" in step:
            depends = step["dependsOn"]
            if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
                return f"Invalid batch payload format: {where} dependsOn must be an array of ids."
    return [dict(step) for step in steps]


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
