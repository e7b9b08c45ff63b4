"""Use cases: what the bot does when an alert arrives, a card is clicked or a channel appears.

The service holds no transport details: Teams is behind :class:`Messenger`, Graph behind
:class:`bot.graph.GraphClient`, state behind :class:`bot.store.base.Store`. Every decision about a
request is made by the pure functions in :mod:`bot.domain.approval`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot import actions
from bot.domain.approval import Finish, Refused, Start, decide, open_request
from bot.domain.models import (
    AccountState,
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    CardRef,
    Case,
    CaseStatus,
    ChannelRef,
    RequestState,
    ResponseAction,
)
from bot.domain.policy import Policy
from bot.errors import DuplicateError, RemediationError, StoreError
from bot.graph import GraphClient
from bot.store.base import Store
from cards.case import DEFAULT_LINKS, REASON_INPUT_ID, PortalLinks, render_case
from cards.replies import render_result_reply

log = logging.getLogger(__name__)


class Messenger(Protocol):
    """The incident channel, in the product's verbs (implemented by ``bot.teams``)."""

    async def post_card(self, channel: ChannelRef, card: dict[str, Any]) -> CardRef:
        """Start a thread with ``card``."""

    async def update_card(self, channel: ChannelRef, ref: CardRef, card: dict[str, Any]) -> None:
        """Replace the card for everyone."""

    async def reply_in_thread(self, channel: ChannelRef, ref: CardRef, text: str) -> str:
        """Reply under the card."""


@dataclass(frozen=True)
class CardAnswer:
    """What the clicker sees: a card that replaces theirs, or an error with a sentence."""

    card: dict[str, Any] | None = None
    error_status: int = 0
    error_message: str = ""


STALE_NOTE = (
    "This card was out of date, so nothing was done. Here is the current state; check it and try again."
)


class RemediationService:
    """The bot's behaviour, wired to its ports by :func:`bot.app.create_app`."""

    def __init__(
        self,
        *,
        store: Store,
        graph: GraphClient,
        messenger: Messenger,
        policy: Policy,
        channel_id: str,
        clock: Callable[[], datetime],
        links: PortalLinks = DEFAULT_LINKS,
        invoke_budget: float = 4.0,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self._store = store
        self._graph = graph
        self._messenger = messenger
        self._policy = policy
        self._channel_id = channel_id
        self._clock = clock
        self._links = links
        self._invoke_budget = invoke_budget
        self._new_id = new_id
        self._case_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

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

    async def drain(self) -> None:
        """Wait for background work (executions, card updates) to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the channel --------------------------------------------------------------------------

    async def register_channel(self, channel: ChannelRef) -> bool:
        """Remember the incident channel when Teams tells us about the configured one.

        Returns whether ``channel`` is the configured channel. Installations elsewhere are
        ignored: cards go only where the admin said.
        """
        if channel.channel_id != self._channel_id:
            log.info("ignoring conversation %s: not the configured incident channel", channel.channel_id)
            return False
        known = await self._store.get_channel()
        if known != channel:
            await self._store.set_channel(channel)
            log.info(
                "incident channel %s registered (service url %s)", channel.channel_id, channel.service_url
            )
        return True

    # -- intake -------------------------------------------------------------------------------

    async def ingest(self, alerts: Sequence[Alert]) -> int:
        """Record alerts into cases (one per identity), bring every card up to date.

        Returns how many alerts were new or changed; repeats of known alerts change nothing.
        """
        changed = 0
        for alert in alerts:
            intake = await self._store.record_alert(alert, new_case_id=self._new_id(), now=self._clock())
            changed += intake.alert_changed
            if intake.case_created:
                log.info("case %s opened for %s", intake.case.id, intake.case.identity.label)
        if changed:
            await self.publish_cards()
        return changed

    async def publish_cards(self) -> None:
        """Post a card for every case that has none, and update every card that is behind."""
        channel = await self._store.get_channel()
        if channel is None:
            log.warning(
                "cards wait: the bot has not been installed in the team of TEAMS_CHANNEL_ID (%s) yet",
                self._channel_id,
            )
            return
        for case in await self._store.list_cases():
            if case.needs_publishing:
                await self._publish(case.id, channel)

    async def _publish(self, case_id: str, channel: ChannelRef) -> Case:
        # One publisher per case at a time keeps posts and updates in order and posts once.
        async with self._case_locks.setdefault(case_id, asyncio.Lock()):
            case = await self._require_case(case_id)
            if not case.needs_publishing:
                return case
            request = await self._latest_request(case.id)
            card = render_case(case, request, links=self._links)
            if case.card is None:
                ref = await self._messenger.post_card(channel, card)
                log.info("case %s card posted (activity %s)", case.id, ref.activity_id)
            else:
                ref = case.card
                await self._messenger.update_card(channel, ref, card)
            shown = case.revision

            def mark(current: Case) -> Case:
                return current.model_copy(
                    update={"card": ref, "published_revision": max(current.published_revision, shown)}
                )

            return await self._store.update_case(case.id, mark)

    # -- clicks -------------------------------------------------------------------------------

    async def handle_card_action(self, actor: Actor, verb: str, data: Mapping[str, Any]) -> CardAnswer:
        """A responder clicked a button on a case card.

        Only ``caseId`` and ``cardVersion`` are read from the card's data (plus the reason the
        person typed); the target and the action come from server state and the verb.
        """
        case_id = data.get("caseId")
        if not isinstance(case_id, str) or not case_id:
            return CardAnswer(
                error_status=400, error_message="The card's data names no case; nothing was done."
            )
        case = await self._store.get_case(case_id)
        if case is None:
            return CardAnswer(
                error_status=404, error_message=f"Case {case_id} does not exist; nothing was done."
            )
        try:
            action = ResponseAction(verb)
        except ValueError:
            return self._answer(
                case, await self._latest_request(case.id), f"Unknown action “{verb}”; nothing was done."
            )
        if data.get("cardVersion") != case.revision:
            return self._answer(case, await self._latest_request(case.id), STALE_NOTE)
        reason = data.get(REASON_INPUT_ID)
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason:
            return self._answer(
                case, await self._latest_request(case.id), "Type a reason before you act; nothing was done."
            )
        outcome = open_request(
            case, action, actor, reason, self._policy, self._clock(), request_id=self._new_id()
        )
        if isinstance(outcome, Refused):
            log.info("case %s: %s refused for %s: %s", case.id, action.value, actor.object_id, outcome.reason)
            return self._answer(case, await self._latest_request(case.id), outcome.reason)
        try:
            request = await self._store.add_request(outcome)
        except DuplicateError:
            # Another click won the race to open a request for this case.
            return self._answer(
                case,
                await self._latest_request(case.id),
                "Another request for this case is already in progress; nothing more was done.",
            )
        log.info("case %s: request %s (%s) by %s", case.id, request.id, action.value, actor.object_id)
        await self._store.update_case(case.id, lambda c: c.revised())
        if request.state is RequestState.APPROVED:
            task = self.spawn(self._execute(request.id), name=f"execute-{request.id}")
            await asyncio.wait({task}, timeout=self._invoke_budget)
        case = await self._require_case(case.id)
        return self._answer(case, await self._latest_request(case.id), None)

    def _answer(self, case: Case, request: ActionRequest | None, note: str | None) -> CardAnswer:
        return CardAnswer(card=render_case(case, request, links=self._links, note=note))

    # -- execution ----------------------------------------------------------------------------

    async def _execute(self, request_id: str) -> None:
        """Claim an approved request, run it once, verify, record, update the card, reply."""
        refusal: list[str] = []

        def claim(current: ActionRequest) -> ActionRequest | None:
            outcome = decide(current, Start(), self._policy, self._clock())
            if isinstance(outcome, Refused):
                refusal.append(outcome.reason)
                return None
            return outcome

        request = await self._store.update_request(request_id, claim)
        if refusal:
            log.info("request %s not started: %s", request_id, refusal[0])
            return
        case = await self._require_case(request.case_id)
        result = await self._run_action(request, case)

        def finish(current: ActionRequest) -> ActionRequest | None:
            outcome = decide(current, Finish(result), self._policy, self._clock())
            return None if isinstance(outcome, Refused) else outcome

        request = await self._store.update_request(request_id, finish)
        log.info("request %s %s: %s", request.id, request.state.value, result.summary)

        def record(current: Case) -> Case:
            changes: dict[str, Any] = {}
            if result.verified_at is not None and result.verified:
                changes["account"] = AccountState(enabled=False, checked_at=result.verified_at)
                changes["status"] = CaseStatus.CONTAINED
            return current.revised(**changes)

        case = await self._store.update_case(case.id, record)
        channel = await self._store.get_channel()
        if channel is None:
            return
        case = await self._publish(case.id, channel)
        if case.card is not None:
            await self._messenger.reply_in_thread(
                channel, case.card, render_result_reply(case, request, links=self._links)
            )

    async def _run_action(self, request: ActionRequest, case: Case) -> ActionResult:
        try:
            return await actions.disable_account(self._graph, case.identity, now=self._clock)
        except RemediationError as exc:
            return ActionResult(succeeded=False, summary=exc.message)

    # -- reads --------------------------------------------------------------------------------

    async def _require_case(self, case_id: str) -> Case:
        case = await self._store.get_case(case_id)
        if case is None:
            raise StoreError(f"case {case_id} vanished")
        return case

    async def _latest_request(self, case_id: str) -> ActionRequest | None:
        requests = await self._store.list_requests(case_id)
        return requests[-1] if requests else None
