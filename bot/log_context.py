"""Ids bound once to every log line of a turn, a job or a poll.

A turn binds its activity id, a click the case and request it concerns, a job its key, request and
case, an execution the Defender correlation ids it got back; every line logged while they are bound
carries them (as JSON fields with ``LOG_FORMAT=json``), with no id repeated by hand in a message.
The ids live in structlog's context variables, so each asyncio task sees only its own.

Bind only ids the bot has checked (read back from its store or from Microsoft's answers), never
raw text from a request: a log line is read by people and by the SIEM.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars, get_contextvars

P = ParamSpec("P")
R = TypeVar("R")


MAX_ID_LENGTH = 256


def _loggable(value: object) -> bool:
    # An id that is empty, overlong or holds control characters (a forged line break) is dropped.
    if value in (None, "", (), []):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_LENGTH and value.isprintable()
    if isinstance(value, list | tuple):
        return all(_loggable(item) for item in value)
    return isinstance(value, int | float | bool)


def _present(ids: Mapping[str, object]) -> dict[str, object]:
    return {name: value for name, value in ids.items() if _loggable(value)}


def bind_ids(**ids: object) -> None:
    """Bind ``ids`` (empty ones skipped) until the enclosing :func:`fresh_ids` scope ends."""
    present = _present(ids)
    if present:
        bind_contextvars(**present)


@contextmanager
def ids_bound(**ids: object) -> Iterator[None]:
    """Bind ``ids`` for the lines logged inside the ``with`` block only."""
    with bound_contextvars(**_present(ids)):
        yield


def fresh_ids(
    ids: Callable[..., Mapping[str, object]] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run the decorated coroutine function with its own ids, restoring the caller's after.

    ``ids`` (given the call's arguments) names the ids to bind at the start; whatever the body
    binds with :func:`bind_ids` ends with the call too, so one job's ids never reach the next
    job's lines, nor one request's the next request's on the same connection.
    """

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            before: dict[str, Any] = get_contextvars()
            try:
                if ids is not None:
                    bind_ids(**ids(*args, **kwargs))
                return await function(*args, **kwargs)
            finally:
                clear_contextvars()
                if before:
                    bind_contextvars(**before)

        return run

    return decorate
