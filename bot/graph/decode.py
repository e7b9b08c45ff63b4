"""Turn Graph's error answers into the typed exceptions of :mod:`bot.errors`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bot.errors import (
    GraphBadRequest,
    GraphConflict,
    GraphError,
    GraphForbidden,
    GraphNotFound,
    GraphOutcomeUnknown,
    GraphThrottled,
    GraphUnavailable,
)

# A gateway page can be long HTML; a person needs only its start.
_SNIPPET_CHARS = 200

_BY_STATUS: Mapping[int, type[GraphError]] = MappingProxyType(
    {
        400: GraphBadRequest,
        401: GraphForbidden,
        403: GraphForbidden,
        404: GraphNotFound,
        409: GraphConflict,
        412: GraphConflict,
    }
)


@dataclass(frozen=True)
class ErrorDetails:
    """What Graph said about a failure: its code, its message and the request id."""

    code: str
    message: str
    request_id: str


def parse_json(content: bytes) -> Any:
    """Parse a body as JSON; None for an empty or non-JSON body."""
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def error_details(headers: Mapping[str, str], content: bytes) -> ErrorDetails:
    """Read ``{"error": {"code", "message", "innerError": {"request-id"}}}`` from an answer.

    The ``request-id`` header wins over ``innerError`` (both name the same request; the header
    is present even when the body is not JSON). A body that is not Graph's error shape still
    yields a readable message: the start of the body text.
    """
    request_id = headers.get("request-id", "")
    body = parse_json(content)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        inner = error.get("innerError")
        if not request_id and isinstance(inner, dict):
            request_id = str(inner.get("request-id") or "")
        return ErrorDetails(
            code=str(error.get("code") or ""),
            message=str(error.get("message") or "").strip() or "(no message)",
            request_id=request_id,
        )
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return ErrorDetails(code="", message="(empty body)", request_id=request_id)
    snippet = " ".join(text.split())[:_SNIPPET_CHARS]
    content_type = headers.get("content-type", "unknown type")
    return ErrorDetails(
        code="", message=f"non-Graph error body ({content_type}): {snippet}", request_id=request_id
    )


def _status_and_code(status: int, code: str) -> str:
    return f"{status} {code}" if code else str(status)


def refused(method: str, path: str, status: int, headers: Mapping[str, str], content: bytes) -> GraphError:
    """The exception for an error Graph answered that is not worth retrying."""
    details = error_details(headers, content)
    cls = _BY_STATUS.get(status, GraphError)
    return cls(
        f"Graph refused {method} {path} ({_status_and_code(status, details.code)}): {details.message}",
        status=status,
        code=details.code,
        request_id=details.request_id,
        method=method,
        path=path,
    )


def exhausted(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    attempts: int,
    reason: str = "",
) -> GraphError:
    """The exception once 429/503/504 answers outlasted every retry (or a wait was too long)."""
    details = error_details(headers, content)
    throttled = status == 429
    cls: type[GraphError] = GraphThrottled if throttled else GraphUnavailable
    verb = "kept throttling" if throttled else "kept failing"
    why = reason or f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    return cls(
        f"Graph {verb} {method} {path} ({_status_and_code(status, details.code)}) {why}: {details.message}",
        status=status,
        code=details.code,
        request_id=details.request_id,
        method=method,
        path=path,
    )


def unreachable(method: str, path: str, exc: Exception, *, attempts: int) -> GraphUnavailable:
    """The exception once transport failures (timeouts, refused connections) outlasted retries."""
    detail = str(exc).strip()
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return GraphUnavailable(
        f"Graph did not answer {method} {path} after {attempts} attempt"
        f"{'s' if attempts != 1 else ''} ({what})",
        status=0,
        method=method,
        path=path,
    )


# What every outcome-unknown message ends with: the one thing the reader must do next.
_READ_BACK = (
    "it may have been carried out, so it was not sent again; its outcome is unknown: "
    "read the state back before trying again"
)


def outcome_unknown(method: str, path: str, exc: Exception) -> GraphOutcomeUnknown:
    """The exception for a non-idempotent call whose request may have been sent when it failed."""
    detail = str(exc).strip()
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return GraphOutcomeUnknown(
        f"Graph did not answer {method} {path} ({what}); {_READ_BACK}",
        status=0,
        method=method,
        path=path,
    )


def outcome_unknown_answer(
    method: str, path: str, status: int, headers: Mapping[str, str], content: bytes
) -> GraphOutcomeUnknown:
    """The exception for a non-idempotent call answered by a 5xx that does not rule out success."""
    details = error_details(headers, content)
    return GraphOutcomeUnknown(
        f"Graph failed {method} {path} ({_status_and_code(status, details.code)}: {details.message}); "
        f"{_READ_BACK}",
        status=status,
        code=details.code,
        request_id=details.request_id,
        method=method,
        path=path,
    )
