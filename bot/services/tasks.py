"""Background work: spawning it, logging its failures, waiting for it, and renewing leases.

Owns :class:`TaskSupervisor` (every task a use case starts is tracked, so shutdown waits for
executions, card updates and replies) and :func:`renewing` (keeps a store lease alive while a
block of work runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from bot.errors import RemediationError

log = logging.getLogger(__name__)

# At shutdown, how long cancelled work may take to end (an execution releasing its job).
CANCELLED_ENDING_SECONDS = 1.0


class TaskSupervisor:
    """The background tasks of one service; awaited at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``work`` in the background; it is awaited at shutdown and its failure logged."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, grace: float | None = None, *, ending: float = CANCELLED_ENDING_SECONDS) -> None:
        """Wait for background work (executions, card updates, replies) to finish.

        With ``grace``, work still running after that many seconds is cancelled (an execution
        job then releases its lease for another replica), and so is work it starts while it
        ends; the cancelled work gets ``ending`` seconds to end. What is still running then (a
        task that does not end when cancelled) is left behind and named in the log: shutdown
        never waits on it.
        """
        if grace is None:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)
        cancelled: set[asyncio.Task[Any]] = set()
        deadline = loop.time() + ending
        while self._tasks and (left := deadline - loop.time()) > 0:
            for task in self._tasks - cancelled:
                task.cancel()
                cancelled.add(task)
            await asyncio.wait(list(self._tasks), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if self._tasks:
            names = ", ".join(sorted(task.get_name() for task in self._tasks))
            log.warning("shutting down with %d background task(s) still ending: %s", len(self._tasks), names)


@contextlib.asynccontextmanager
async def renewing(renew: Callable[[], Awaitable[bool]], lease: timedelta, what: str) -> AsyncIterator[None]:
    """Renew a lease every third of its length while the block runs.

    A replica that stops renewing (dead, or stopped long enough) loses the lease and another
    takes the work over; this one learns it at its next compare-and-swap, which then fails.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                if not await renew():
                    log.warning("lost the lease on %s: another replica took it over", what)
                    return
            except RemediationError as exc:
                log.warning("could not renew the lease on %s: %s", what, exc.message)

    task = asyncio.create_task(beat(), name=f"renew {what}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
