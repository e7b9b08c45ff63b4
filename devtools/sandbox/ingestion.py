"""The Azure Monitor Logs Ingestion API, as a data collection endpoint serves it.

``POST /dataCollectionRules/{ruleId}/streams/{stream}?api-version=2023-01-01`` with a bearer token
for ``https://monitor.azure.com``, a JSON array of records (``Content-Encoding: gzip`` allowed) of
at most 1 MB, answered ``204 No Content``. An unknown rule is 404, an unknown stream 400, a body
that is not a JSON array of objects 400, a body over 1 MB 413, a missing or invalid token 401;
errors carry ``{"error": {"code", "message"}}``. Sources: learn.microsoft.com/azure/azure-monitor/
logs/logs-ingestion-api-overview ("REST API call", "Limits and restrictions") and the
Ingestion/stable/2023-01-01 REST specification (azure-rest-api-specs, monitor data-plane).

What was accepted is kept in order in :attr:`IngestionEndpoint.received`, for tests to read.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from aiohttp import web

from devtools.sandbox.state import TenantState

API_VERSION = "2023-01-01"
RULE_ID = "dcr-00000000000000000000000000000a11"
STREAM = "Custom-RemediationBotAudit_CL"
MAX_BODY_BYTES = 1024 * 1024


class IngestionEndpoint:
    """One data collection rule with one stream, on the sandbox's host."""

    def __init__(self, state: TenantState) -> None:
        self._state = state
        self.received: list[dict[str, Any]] = []
        self.batches = 0

    def routes(self) -> list[web.RouteDef]:
        """The route to add to the sandbox application."""
        return [web.post("/dataCollectionRules/{rule}/streams/{stream}", self.upload)]

    async def upload(self, request: web.Request) -> web.Response:
        """Accept a batch of records for the rule's stream, all or none."""
        problem = self._token_problem(request)
        if problem is not None:
            return _error(401, "InvalidToken", problem)
        if request.query.get("api-version") != API_VERSION:
            return _error(400, "InvalidApiVersion", f"api-version must be {API_VERSION}.")
        if request.match_info["rule"] != RULE_ID:
            return _error(
                404, "NotFound", f"Data collection rule {request.match_info['rule']!r} was not found."
            )
        if request.match_info["stream"] != STREAM:
            return _error(
                400, "InvalidStream", f"Stream {request.match_info['stream']!r} is not declared in the rule."
            )
        # aiohttp undoes Content-Encoding: gzip itself; a body still gzipped was sent twice over.
        raw = await request.read()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                return _error(400, "InvalidContent", "The body is not valid gzip.")
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, "ContentLengthLimitExceeded", "The body is over 1 MB.")
        try:
            records = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "InvalidContent", "The body is not JSON.")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return _error(400, "InvalidContent", "The body must be a JSON array of objects.")
        self.received.extend(records)
        self.batches += 1
        return web.Response(status=204)

    def _token_problem(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "A bearer token is required."
        expiry = self._state.tokens.get(token.strip())
        if expiry is None:
            return "The token is not valid."
        if expiry <= self._state.clock():
            return "The token has expired."
        return None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
