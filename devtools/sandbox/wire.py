"""Small helpers for what the sandbox puts on the wire: timestamps and Graph error bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Graph's own JSON content type, parameters included, so clients see what they will see live.
GRAPH_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)


def iso(moment: datetime) -> str:
    """A Graph ``DateTimeOffset``: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Read a Graph timestamp (``Z`` or an offset, up to 7 fractional digits)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def graph_error(
    code: str, message: str, *, request_id: str, client_request_id: str, now: datetime
) -> dict[str, Any]:
    """Graph's error body: ``{"error": {"code", "message", "innerError": {...}}}``."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                # Graph writes this date without a zone (the contract allows exactly that).
                "date": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


class GraphProblem(Exception):
    """Raised by a Graph handler to answer with a Graph error (status, code, message)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphProblem:
    """A 400 with Graph's usual code."""
    return GraphProblem(400, code, message)
