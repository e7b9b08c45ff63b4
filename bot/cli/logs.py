"""Logging for the command line: JSON lines (or text) with the bound ids, chatty libraries quiet.

Every module logs through the standard library (``logging.getLogger(__name__)``); structlog's
``ProcessorFormatter`` renders each record with the ids bound in :mod:`bot.log_context` (activity,
case, request, job, Graph request id, Defender correlation ids) as fields of their own: one JSON
object per line for a log pipeline, or ``key=value`` text for a person at a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from bot.errors import GraphError, TeamsError
from bot.tracing import trace_id

LogFormat = Literal["json", "text"]


def _error_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The ids an error carries (Graph's request id and status, the Bot Connector's status)."""
    exc_info = event.get("exc_info")
    error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(error, GraphError):
        event.setdefault("graph_request_id", error.request_id or None)
        event.setdefault("graph_status", error.status)
    elif isinstance(error, TeamsError):
        event.setdefault("teams_status", error.status)
    return {name: value for name, value in event.items() if value is not None}


def _trace_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The OpenTelemetry trace the line was logged in, if any."""
    current = trace_id()
    if current is not None:
        event.setdefault("trace_id", current)
    return event


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of the bot's log handler: ``json`` lines or ``text`` with ``key=value`` ids."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _error_ids,
        _trace_id,
    ]
    renderer: Any
    if fmt == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Send every log record to stderr in ``fmt``; msal, botbuilder, httpx and access logs at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # botbuilder and msal are chatty at INFO; their warnings still show.
    for noisy in ("msal", "botbuilder", "botframework", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
