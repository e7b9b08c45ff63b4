"""The one retry policy of every Bot Connector call, whichever SDK sends it.

Each Teams transport's messenger (:class:`bot.teams.messenger.TeamsMessenger` on botbuilder,
:class:`bot.teams_agents.messenger.AgentsMessenger` on the Agents SDK) sends each request through
:meth:`Delivery.send`, which

- keeps calls to one conversation in the order they were made, retries included (a reply that
  waits out a 429 is not overtaken by the next reply);
- waits for a slot in Teams' rate limits (:class:`bot.teams.pacing.Pacer`);
- runs exactly one HTTP request per attempt and turns what went wrong, read by the messenger
  into a :class:`Failure`, into a retry or a :class:`bot.errors.TeamsError`.

The retry policy: a 429 waits for its ``Retry-After`` (seconds, fractional or not, or an
HTTP-date; longer than ``RetryPolicy.longest_retry_after`` gives up); 412, 502, 503, 504 and a
lost answer wait a full-jitter exponential backoff; after ``RetryPolicy.attempts`` the caller gets
:class:`~bot.errors.TeamsThrottled` or :class:`~bot.errors.TeamsUnavailable`. Any other answer
raises :class:`~bot.errors.TeamsError` at once. A new post is a POST that is not idempotent: it
is sent again only after 412, 429 or 503 (Teams did nothing) or a connect that failed (nothing
left); after 502, 504, other 5xx or a lost answer it may have landed, so the caller gets
:class:`~bot.errors.TeamsOutcomeUnknown` instead of a possible second card. Replies and card
updates are sent again in every transient case: a card update is idempotent, and a reply shown
twice is better than a reply lost. Nothing here imports either SDK.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bot.domain.models import Actor, CardRef, ChannelRef
from bot.errors import TeamsError, TeamsOutcomeUnknown, TeamsThrottled, TeamsUnavailable
from bot.retry import backoff_delay, parse_retry_after
from bot.teams.pacing import Lanes, Pacer
from bot.tracing import span
from cards.text import inert, plain

log = logging.getLogger(__name__)

T = TypeVar("T")
AdapterT = TypeVar("AdapterT")
ContextT = TypeVar("ContextT")

# Answers Teams documents as transient (bots/how-to/rate-limit and the conversation API's table).
RETRY_STATUSES = frozenset({412, 429, 502, 503, 504})
# Answers that say the request was not carried out: the only ones after which a POST that
# starts a thread is sent again. 502 and 504 come from a gateway that may have passed it on.
NOT_PROCESSED_STATUSES = frozenset({412, 429, 503})
# A reminder mentions the approvers by name: at most this many, each name at most this long.
MAX_MENTIONS = 20
NAME_CHARS = 120


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call Teams did not take is sent again."""

    attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 16.0
    # A longer Retry-After gives up at once instead of holding the thread's queue that long.
    longest_retry_after: float = 60.0


@dataclass(frozen=True)
class Call:
    """One outbound operation: ``what`` finishes "Teams refused to ..."."""

    what: str
    conversation_id: str
    # False for a POST that starts a thread: sent again only when Teams said it did nothing.
    repeatable: bool


@dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, whatever the SDK raised."""

    status: int  # 0: no HTTP answer
    code: str
    detail: str
    retry_after: str | None
    maybe_sent: bool  # False only when the connection was never established

    def describe(self) -> str:
        if self.status == 0:
            return f"no answer ({self.detail})"
        code = f" {self.code}" if self.code else ""
        return f"HTTP {self.status}{code}: {self.detail}"


ReadFailure = Callable[[Exception], "Failure | None"]
"""The messenger's reading of an exception its SDK raised: ``None`` when it is not a failure of
the request (it is raised as it is)."""


class Delivery:
    """Ordering, pacing and retries of the Bot Connector calls of one messenger."""

    def __init__(
        self,
        read_failure: ReadFailure,
        *,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """``pacer`` defaults to Teams' own limits; ``sleep`` and ``rng`` drive the retry waits, and
        ``now`` (the wall clock) reads a ``Retry-After`` given as an HTTP-date."""
        self._read_failure = read_failure
        self._pacer = pacer or Pacer()
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._now = now or _utc_now
        self._lanes = Lanes()

    def observe_pacing(self, on_wait: Callable[[float], None]) -> None:
        """Report how long each Bot Connector call waited for Teams' rate limits (for metrics)."""
        self._pacer.observe(on_wait)

    async def send(self, call: Call, once: Callable[[], Awaitable[T]]) -> T:
        """Send ``once`` (one Bot Connector request) until it lands or a TeamsError says why not."""
        with span(f"teams {call.what}"):
            return await self._send(call, once)

    async def _send(self, call: Call, once: Callable[[], Awaitable[T]]) -> T:
        # No await before the lane: the order of calls is the order the service made them.
        async with self._lanes.hold(call.conversation_id):
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with self._pacer.slot(call.conversation_id):
                        return await once()
                except Exception as exc:
                    failure = self._read_failure(exc)
                    if failure is None:
                        raise
                    wait = self._next_wait(call, failure, attempt, exc)
                log.warning(
                    "Teams: %s, to %s (%s); attempt %d of %d, next in %.2f s",
                    failure.describe(),
                    call.what,
                    call.conversation_id,
                    attempt,
                    self._retry.attempts,
                    wait,
                )
                await self._sleep(wait)

    def _next_wait(self, call: Call, failure: Failure, attempt: int, exc: Exception) -> float:
        """Seconds to wait before the next attempt; raise the TeamsError when there is none."""
        where = call.conversation_id

        def error(kind: type[TeamsError], message: str) -> TeamsError:
            return kind(
                message, status=failure.status, code=failure.code, conversation_id=where, attempts=attempt
            )

        lost_on_the_way_back = failure.status == 0 or (
            failure.status >= 500 and failure.status not in NOT_PROCESSED_STATUSES
        )
        if lost_on_the_way_back and failure.maybe_sent and not call.repeatable:
            raise error(
                TeamsOutcomeUnknown,
                f"Teams may or may not have carried out the request to {call.what} ({where}): "
                f"{failure.describe()}. It was not sent again, so that the channel does not show "
                "it twice.",
            ) from exc
        retryable = failure.status == 0 or failure.status in RETRY_STATUSES
        if not retryable:
            raise error(TeamsError, f"Teams refused to {call.what} ({where}): {failure.describe()}") from exc
        kind = TeamsThrottled if failure.status == 429 else TeamsUnavailable
        if attempt >= self._retry.attempts:
            raise error(
                kind,
                f"Teams kept failing to {call.what} ({where}) after {attempt} attempts; "
                f"the last: {failure.describe()}",
            ) from exc
        asked = parse_retry_after(failure.retry_after, now=self._now())
        if asked is None:
            return backoff_delay(
                attempt, base=self._retry.backoff_base, cap=self._retry.backoff_cap, rng=self._rng
            )
        if asked > self._retry.longest_retry_after:
            raise error(
                kind,
                f"Teams asked to wait {asked:.0f} s before trying to {call.what} ({where}) again; "
                f"the bot waits at most {self._retry.longest_retry_after:.0f} s.",
            ) from exc
        return asked


def _utc_now() -> datetime:
    return datetime.now(UTC)


def thread_conversation_id(ref: CardRef) -> str:
    """The conversation id of the thread under the card ``ref``."""
    if ";messageid=" in ref.conversation_id:
        return ref.conversation_id
    return f"{ref.conversation_id};messageid={ref.activity_id}"


def thread_root(conversation_id: str) -> str:
    """The root post's id, which is also the thread id Teams puts after ";messageid="."""
    return conversation_id.partition(";messageid=")[2]


class ProactiveMessenger(Generic[AdapterT, ContextT]):
    """What both messengers share: their SDK's adapter and the bot's app id, one :class:`Delivery`,
    and every Bot Connector request sent through it. Each SDK's messenger says how one attempt is
    made (``_once``, in a proactive turn of its own) and how its exceptions read (``_failure``)."""

    def __init__(
        self,
        adapter: AdapterT,
        app_id: str,
        *,
        pacer: Pacer | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """``pacer`` defaults to Teams' own limits; ``sleep`` and ``rng`` drive the retry waits, and
        ``now`` (the wall clock) reads a ``Retry-After`` given as an HTTP-date."""
        self._adapter = adapter
        self._app_id = app_id
        self._delivery = Delivery(self._failure, pacer=pacer, retry=retry, sleep=sleep, rng=rng, now=now)

    def observe_pacing(self, on_wait: Callable[[float], None]) -> None:
        """Report how long each Bot Connector call waited for Teams' rate limits (for metrics)."""
        self._delivery.observe_pacing(on_wait)

    async def _call(self, channel: ChannelRef, call: Call, work: Callable[[ContextT], Awaitable[T]]) -> T:
        """Send ``work`` (one Bot Connector request) through the delivery's retries."""
        return await self._delivery.send(call, lambda: self._once(channel, call, work))

    async def _once(self, channel: ChannelRef, call: Call, work: Callable[[ContextT], Awaitable[T]]) -> T:
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Failure | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Mentioned:
    """One @mention of a reply: who (``object_id``, ``name`` as plain text) and the ``<at>`` text."""

    object_id: str
    name: str
    text: str


def mention_text(text: str, mentions: Sequence[Actor]) -> tuple[str, list[Mentioned]]:
    """A reply's text with ``mentions`` in front, and the mention entities it needs.

    The only mentions a message carries are these entities; a name is inert text in them
    (``text`` itself has every ``<`` escaped by the renderers).
    """
    if not mentions:
        return text, []
    named = [(m, inert(m.label, NAME_CHARS)) for m in mentions[:MAX_MENTIONS]]
    entities = [Mentioned(m.object_id, plain(m.label, NAME_CHARS), f"<at>{name}</at>") for m, name in named]
    return f"{' '.join(e.text for e in entities)} {text}", entities


async def in_own_turn(
    run_turn: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[Any]],
    work: Callable[[Any], Awaitable[T]],
    call: Call,
) -> T:
    """Run ``work`` in the proactive turn ``run_turn`` opens and return what it returned.

    An exception raised in the turn would reach the SDK's ``on_turn_error``, which logs it and
    returns normally (both SDKs): it is kept and raised here instead, so no failure is lost.
    """
    results: list[T] = []
    errors: list[Exception] = []

    async def logic(turn_context: Any) -> None:
        try:
            results.append(await work(turn_context))
        except Exception as exc:  # raised below: on_turn_error would log and swallow it
            errors.append(exc)

    await run_turn(logic)
    if errors:
        raise errors[0]
    if not results:
        raise TeamsError(
            f"The adapter did not run the turn to {call.what}; nothing was sent.",
            conversation_id=call.conversation_id,
        )
    return results[0]
