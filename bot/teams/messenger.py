"""Posting, updating and replying in the incident channel, named in the product's verbs.

This is the only place that knows how Teams threads work: a new channel post is a new
conversation (``POST /v3/conversations``), its conversation id becomes
``<channel id>;messageid=<root activity id>``, and anything sent to that id lands in the thread.

Every Bot Connector call goes through one chokepoint, :meth:`TeamsMessenger._call`, which

- keeps calls to one conversation in the order they were made, retries included (a reply that
  waits out a 429 is not overtaken by the next reply);
- waits for a slot in Teams' rate limits (:class:`bot.teams.pacing.Pacer`);
- runs exactly one HTTP request per attempt, in a proactive turn of its own, and turns what
  went wrong into a retry or a :class:`bot.errors.TeamsError`.

The retry policy: a 429 waits for its ``Retry-After`` (seconds, fractional or not, or an
HTTP-date; longer than ``RetryPolicy.longest_retry_after`` gives up); 412, 502, 503, 504 and a
lost answer wait a full-jitter exponential backoff; after ``RetryPolicy.attempts`` the caller gets
:class:`~bot.errors.TeamsThrottled` or :class:`~bot.errors.TeamsUnavailable`. Any other answer
raises :class:`~bot.errors.TeamsError` at once. A new post is a POST that is not idempotent: it
is sent again only after 412, 429 or 503 (Teams did nothing) or a connect that failed (nothing
left); after 502, 504, other 5xx or a lost answer it may have landed, so the caller gets
:class:`~bot.errors.TeamsOutcomeUnknown` instead of a possible second card. Replies and card
updates are sent again in every transient case: a card update is idempotent, and a reply shown
twice is better than a reply lost.

How botbuilder 4.17.1 surfaces failures, and why the chokepoint looks the way it does:

- An HTTP error answer raises ``ErrorResponseException`` (an ``msrest`` ``HttpOperationError``):
  ``.response`` is the ``requests.Response`` (``status_code``, ``headers``), ``.error.error`` the
  deserialized ``{"error": {"code", "message"}}`` body.
- No answer raises ``msrest.exceptions.ClientRequestError`` wrapping the ``requests`` exception;
  a refused or timed-out *connect* (urllib3 ``ConnectTimeoutError`` and its subclass
  ``NewConnectionError``) means the request never left.
- Inside ``continue_conversation`` the adapter hands an exception raised by the callback to
  ``on_turn_error``, which logs it and returns normally: a failed update or reply would be lost
  without a trace. So the callback catches the exception and the messenger raises it afterwards.
- msrest's own transport retries (urllib3 ``Retry``, 3 attempts with 0.8 s backoff) would send
  requests the pacer never saw: PUTs again on 408 and 5xx, on a 429 or 503 carrying
  ``Retry-After`` (only whole seconds: a fractional value makes urllib3 raise ``InvalidHeader``)
  and on a lost answer; any method again on a failed connect. (POSTs are not retried on answers:
  msrest allows them through ``method_whitelist``, which urllib3 2 no longer reads.) They are
  switched off for the connector client of each turn: this module is the one retry policy.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from botbuilder.core import BotAdapter, CardFactory, MessageFactory, TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (
    Activity,
    ChannelAccount,
    ConversationAccount,
    ConversationParameters,
    ConversationReference,
    Mention,
)
from msrest.exceptions import ClientRequestError, HttpOperationError
from urllib3.exceptions import ConnectTimeoutError
from urllib3.util.retry import Retry

from bot.domain.models import Actor, CardRef, ChannelRef
from bot.errors import TeamsError, TeamsOutcomeUnknown, TeamsThrottled, TeamsUnavailable
from bot.retry import backoff_delay, parse_retry_after
from bot.teams.pacing import Lanes, Pacer
from bot.tracing import span
from cards.text import inert, plain

log = logging.getLogger(__name__)

T = TypeVar("T")

# Answers Teams documents as transient (bots/how-to/rate-limit and the conversation API's table).
RETRY_STATUSES = frozenset({412, 429, 502, 503, 504})
# Answers that say the request was not carried out: the only ones after which a POST that
# starts a thread is sent again. 502 and 504 come from a gateway that may have passed it on.
NOT_PROCESSED_STATUSES = frozenset({412, 429, 503})

# urllib3 gives up at once and hands every answer back, so that the messenger sees each one.
# A reminder mentions the approvers by name: at most this many, each name at most this long.
MAX_MENTIONS = 20
NAME_CHARS = 120
_NO_TRANSPORT_RETRIES = Retry(total=0, raise_on_status=False)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call Teams did not take is sent again."""

    attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 16.0
    # A longer Retry-After gives up at once instead of holding the thread's queue that long.
    longest_retry_after: float = 60.0


@dataclass(frozen=True)
class _Call:
    """One outbound operation: ``what`` finishes "Teams refused to ..."."""

    what: str
    conversation_id: str
    # False for a POST that starts a thread: sent again only when Teams said it did nothing.
    repeatable: bool


@dataclass(frozen=True)
class _Failure:
    """What went wrong with one attempt, whatever botbuilder raised."""

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


class TeamsMessenger:
    """Sends cards and thread replies to Teams through the Bot Connector, outside any turn."""

    def __init__(
        self,
        adapter: CloudAdapter,
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
        self._pacer = pacer or Pacer()
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._now = now or _utc_now
        self._lanes = Lanes()

    def observe_pacing(self, on_wait: Callable[[float], None]) -> None:
        """Report how long each Bot Connector call waited for Teams' rate limits (for metrics)."""
        self._pacer.observe(on_wait)

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a new thread in ``channel`` with ``card``; return where it landed."""
        params = ConversationParameters(
            is_group=True,
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
            channel_data={"channel": {"id": channel.channel_id}, "tenant": {"id": channel.tenant_id}},
            tenant_id=channel.tenant_id,
            activity=_card_activity(card),
        )

        async def create(turn_context: TurnContext) -> Any:
            # The same request CloudAdapter.create_conversation makes, but through the turn's
            # connector client, whose transport retries are off (see the module docstring).
            client = turn_context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY]
            return await client.conversations.create_conversation(params)

        # New posts land in the channel's conversation: that is their pacing key.
        call = _Call("post a card", channel.channel_id, repeatable=False)
        created = await self._call(channel, call, create)
        conversation_id: str = created.id or channel.channel_id
        # The root post's id is also the thread id Teams puts after ";messageid=".
        thread_root = conversation_id.partition(";messageid=")[2]
        return CardRef(conversation_id=conversation_id, activity_id=thread_root or created.activity_id or "")

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card of an existing post for everyone in the channel."""

        async def update(turn_context: TurnContext) -> None:
            activity = _card_activity(card)
            activity.id = ref.activity_id
            activity.conversation = ConversationAccount(id=ref.conversation_id, is_group=True)
            await turn_context.update_activity(activity)

        thread = _thread_conversation_id(ref)
        await self._call(channel, _Call("update the card", thread, repeatable=True), update)

    async def post_card_in_thread(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> CardRef:
        """Post ``card`` as a reply in the thread of ``ref``; return where it landed (a reply's
        own reference: updating it replaces that reply's card).

        Like a new post, a reply whose answer was lost may have landed: it is not sent again
        then (the caller gets :class:`~bot.errors.TeamsOutcomeUnknown`).
        """

        async def send(turn_context: TurnContext) -> str:
            response = await turn_context.send_activity(_card_activity(card))
            return (response.id if response else "") or ""

        thread = _thread_conversation_id(ref)
        activity_id = await self._call(
            channel, _Call("post a card in the thread", thread, repeatable=False), send
        )
        return CardRef(conversation_id=thread, activity_id=activity_id)

    async def reply_in_thread(
        self, channel: ChannelRef, ref: CardRef, text: str, mentions: Sequence[Actor] = ()
    ) -> str:
        """Post ``text`` (markdown) as a reply in the card's thread, @mentioning ``mentions``.

        A reply lost on its way back (timeout, 502/504) is sent again: a reply shown twice is
        better than a reply missing from the case's record in the channel.
        """
        message = MessageFactory.text(text)
        if mentions:
            # The only mentions a message carries are these entities; a name is inert text in
            # them (``text`` itself has every ``<`` escaped by the renderers).
            named = [(m, inert(m.label, NAME_CHARS)) for m in mentions[:MAX_MENTIONS]]
            message.text = f"{' '.join(f'<at>{name}</at>' for _, name in named)} {text}"
            message.entities = [
                Mention(
                    mentioned=ChannelAccount(id=m.object_id, name=plain(m.label, NAME_CHARS)),
                    text=f"<at>{name}</at>",
                    type="mention",
                )
                for m, name in named
            ]

        async def reply(turn_context: TurnContext) -> str:
            response = await turn_context.send_activity(message)
            return (response.id if response else "") or ""

        thread = _thread_conversation_id(ref)
        return await self._call(channel, _Call("reply in the thread", thread, repeatable=True), reply)

    # -- the chokepoint -------------------------------------------------------------------------

    async def _call(self, channel: ChannelRef, call: _Call, work: Callable[[TurnContext], Awaitable[T]]) -> T:
        """Send ``work`` (one Bot Connector request) in a span of the trace; see :meth:`_send`."""
        with span(f"teams {call.what}"):
            return await self._send(channel, call, work)

    async def _send(self, channel: ChannelRef, call: _Call, work: Callable[[TurnContext], Awaitable[T]]) -> T:
        """Send ``work`` (one Bot Connector request) until it lands or a TeamsError says why not."""
        # No await before the lane: the order of calls is the order the service made them.
        async with self._lanes.hold(call.conversation_id):
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with self._pacer.slot(call.conversation_id):
                        return await self._once(channel, call, work)
                except (HttpOperationError, ClientRequestError) as exc:
                    failure = _failure(exc)
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

    async def _once(self, channel: ChannelRef, call: _Call, work: Callable[[TurnContext], Awaitable[T]]) -> T:
        """One attempt, in a proactive turn of its own (a fresh connector client each time)."""
        reference = ConversationReference(
            channel_id="msteams",
            service_url=channel.service_url,
            conversation=ConversationAccount(
                id=call.conversation_id, is_group=True, tenant_id=channel.tenant_id
            ),
            bot=ChannelAccount(id=channel.bot_id or self._app_id, name=channel.bot_name),
        )
        results: list[T] = []
        errors: list[Exception] = []

        async def logic(turn_context: TurnContext) -> None:
            _switch_off_transport_retries(turn_context)
            try:
                results.append(await work(turn_context))
            except Exception as exc:  # raised below: on_turn_error would log and swallow it
                errors.append(exc)

        await self._adapter.continue_conversation(reference, logic, self._app_id)
        if errors:
            raise errors[0]
        if not results:
            raise TeamsError(
                f"The Bot Framework adapter did not run the turn to {call.what}; nothing was sent.",
                conversation_id=call.conversation_id,
            )
        return results[0]

    def _next_wait(self, call: _Call, failure: _Failure, attempt: int, exc: Exception) -> float:
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


def _failure(exc: HttpOperationError | ClientRequestError) -> _Failure:
    """Read a botbuilder (msrest) exception: an HTTP error answer, or no answer at all."""
    if isinstance(exc, HttpOperationError):
        response = exc.response
        body = getattr(exc.error, "error", None)  # ErrorResponse -> Error(code, message)
        return _Failure(
            status=int(getattr(response, "status_code", 0) or 0),
            code=str(getattr(body, "code", "") or ""),
            detail=str(getattr(body, "message", "") or exc.message),
            retry_after=(getattr(response, "headers", None) or {}).get("Retry-After"),
            maybe_sent=True,
        )
    causes = list(_causes(exc))
    return _Failure(
        status=0,
        code="",
        detail=f"{type(causes[-1]).__name__}: {causes[-1]}",
        retry_after=None,
        # A connect that failed or timed out (refused, unknown host) sent nothing.
        maybe_sent=not any(isinstance(cause, ConnectTimeoutError) for cause in causes),
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: msrest's ``inner_exception``, requests' first argument,
    urllib3's ``reason`` and ``__cause__`` (not ``__context__``, which can be unrelated)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        links = (
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            current.__cause__,
            *current.args,
        )
        current = next((link for link in links if isinstance(link, BaseException)), None)


def _switch_off_transport_retries(turn_context: TurnContext) -> None:
    """Make the turn's connector client send each request once (see the module docstring).

    msrest applies its retry policy to a requests session when the client is built; its
    ``session_configuration_callback`` runs before every request and may reconfigure it.
    """
    client = turn_context.turn_state.get(BotAdapter.BOT_CONNECTOR_CLIENT_KEY)
    config = getattr(client, "config", None)
    if config is not None:
        config.session_configuration_callback = _without_transport_retries


def _without_transport_retries(session: Any, global_config: Any, local_config: Any, **kwargs: Any) -> Any:
    for transport in session.adapters.values():
        transport.max_retries = _NO_TRANSPORT_RETRIES
    return kwargs


def _thread_conversation_id(ref: CardRef) -> str:
    if ";messageid=" in ref.conversation_id:
        return ref.conversation_id
    return f"{ref.conversation_id};messageid={ref.activity_id}"


def _card_activity(card: dict[str, Any]) -> Activity:
    activity: Activity = MessageFactory.attachment(CardFactory.adaptive_card(card))
    return activity
