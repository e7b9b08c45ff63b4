"""Bulk response actions: one action for many identities, carried out through Graph JSON batching.

A campaign's "disable all" must reach a thousand identities in minutes without one Graph call
per identity. :class:`BulkActions` plans every target exactly as a single action does
(:func:`bot.domain.plans.plan_for`: a user synced from on-premises Active Directory is changed
there through Defender for Identity's ``invokeAction``, a cloud-only user in Entra ID, risk in
Entra ID Protection), sends the writes in batches of 20 (:mod:`bot.tenant.batch`), then reads
every target back, batched the same way, and judges what it read with the single action's own
rules (:func:`bot.tenant.actions.verdict`). Each target gets one :class:`BulkResult`, carrying
the :class:`~bot.domain.models.ActionResult` a single action would have produced.

Steps run in the order the plan gives them, as phases across all targets: each synced
target's on-premises disable is sent before its Entra ID disable, as for one identity. What
Graph refused is not read back (nothing changed there).

Identity Protection is not batched: its limit is one request per second per tenant for all
apps, counted per request inside a batch too, and its 429s carry no ``Retry-After``
(https://learn.microsoft.com/graph/throttling-limits#identity-protection-and-conditional-access-service-limits).
``confirmCompromised`` takes up to 60 users per call, so a bulk confirmation is one paced call
per 60 users, and it is read back by listing the users Identity Protection shows as confirmed
compromised since the run started (500 per page), not by one read per user.

**Exactly once.** Graph has no idempotency key for any of these writes: ``client-request-id``
(sent on every request, derived from the target's idempotency key and the step, so a retried
campaign sends the same one) only names the request in Graph's logs and support cases; Graph
does not deduplicate on it. So:

- a write whose outcome is unknown (a 5xx or a lost answer for a POST) is never sent again; the
  read-back decides, as for single actions;
- ``PATCH /users/{id}`` sets absolute values (``accountEnabled=false``, a password), so sending
  it twice changes nothing more; a second ``revokeSignInSessions`` or ``confirmCompromised``
  leaves the same state, a second Defender ``invokeAction`` queues a second Action Center entry
  (and, for ``forcePasswordReset``, asks for a new password again);
- this process remembers the idempotency keys it has dispatched (the last 100,000): a later
  :meth:`BulkActions.run` with the same key reads the target back and sends nothing, and a run
  started while another carries the same key out sends nothing for it;
- across replicas, the caller records "dispatched" durably where :meth:`BulkActions.run` calls
  ``on_dispatch`` (just before each batch's first writes go out; if recording fails, they are
  not sent); a replica taking over after a crash finishes the dispatched targets with
  :meth:`BulkActions.verify`, which only reads, and may run the others.

Use one :class:`BulkActions` per process (its memory of dispatched keys is the process's), e.g.
``BulkActions(graph, clock=clock, batcher=GraphBatcher(graph, concurrency=settings.
graph_batch_concurrency), recheck_after=...)``, and give it whole target sets (or large
slices): batches of 20 are made across all of them and ``concurrency`` go at once.

A new password set by a forced password change lives only in the batch being sent; it is
never logged, stored or returned.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from bot.domain.approval import Refused
from bot.domain.models import (
    ActionResult,
    Case,
    IdentityFacts,
    LinkedAccount,
    Provider,
    ResponseAction,
    StepOutcome,
    Verification,
)
from bot.domain.plans import Operation, Step, plan_for
from bot.errors import GraphError, GraphOutcomeUnknown
from bot.graph import GraphClient, invoke_action_correlation_id, odata_datetime, path_segment
from bot.graph.client import RISKY_USERS_BATCH
from bot.graph.odata import all_of
from bot.log_context import ids_bound
from bot.tenant.actions import (
    CLOCK_SKEW,
    await_sync,
    explain,
    generate_password,
    read_back_of,
    summarize,
    verdict,
)
from bot.tenant.batch import BatchAnswer, BatchRequest, GraphBatcher

log = logging.getLogger(__name__)

# The verbs a bulk request may carry: the single actions' own names (ResponseAction values).
BULK_ACTIONS: tuple[ResponseAction, ...] = (
    ResponseAction.DISABLE_ACCOUNT,
    ResponseAction.REVOKE_SESSIONS,
    ResponseAction.FORCE_PASSWORD_CHANGE,
    ResponseAction.CONFIRM_COMPROMISED,
)

Outcome = Literal["verified", "failed", "pending"]
# Awaited with the keys of targets about to be dispatched (see BulkActions.run).
OnDispatch = Callable[[Sequence[str]], Awaitable[None]]
# How a step is judged: written in this run, dispatched earlier and interrupted, or re-checked.
_Mode = Literal["fresh", "interrupted", "recheck"]

# Identity Protection lists at most this many risky users per page.
RISKY_USERS_PAGE = 500
# Users not in the confirmed-compromised listing are read one by one (one per second) up to this
# many; the rest stay pending and are read again at the next check.
RISKY_USER_SINGLE_READS = 10
# The namespace of the client-request-ids derived from idempotency keys.
_REQUEST_ID_NAMESPACE = uuid.UUID("0b6f6c64-57f4-4d39-9a3c-6a2a4ad2c7b1")

# Graph's documented limits the floor is computed from (see devtools/sandbox/throttling.py and
# https://learn.microsoft.com/graph/throttling-limits).
_IDENTITY_WRITES = (3000, 150.0)  # writes per 2 minutes 30 seconds per app and tenant
_IDENTITY_UNITS = {"S": (3500, 10.0), "M": (5000, 10.0), "L": (8000, 10.0)}
_IDENTITY_PROTECTION_INTERVAL = 1.0  # one request per second per tenant
_BATCH = 20
# An Entra object id: what a case is keyed on once resolved, and what riskyUsers are keyed by.
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# How many dispatched idempotency keys this process remembers (the oldest are forgotten first).
_LEDGER_SIZE = 100_000
# Failed targets logged one by one per run (the rest are counted): a storm must not flood the log.
_LOGGED_FAILURES = 20


class TargetFields(Protocol):
    """What :meth:`BulkActions.run` reads of a target: :class:`BulkTarget`'s six fields.

    Any object with them will do (a port's own dataclass of the same shape); only a
    :class:`BulkTarget` can also carry the identity's known ``defender_accounts``.
    """

    @property
    def key(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def upn(self) -> str: ...
    @property
    def on_premises(self) -> bool: ...
    @property
    def defender_account_id(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str: ...


@dataclass(frozen=True)
class BulkTarget:
    """One identity of a bulk action.

    ``key`` is the caller's (the case key); ``user_id`` the Entra object id acted on;
    ``on_premises`` whether the user is synced from Active Directory; ``defender_account_id``
    the Defender for Identity identity (the ``identityAccounts`` id ``invokeAction`` is called
    on), if any; ``idempotency_key`` the caller's key for this target's action (a retried
    campaign passes the same one). ``defender_accounts`` are the identity's accounts as a case
    knows them (:attr:`IdentityFacts.linked`); when empty and the user is synced, the account
    identifiers are read from Defender for Identity in the same batches.
    """

    key: str
    user_id: str
    upn: str
    on_premises: bool
    defender_account_id: str | None
    idempotency_key: str
    defender_accounts: tuple[LinkedAccount, ...] = ()

    @classmethod
    def from_case(cls, case: Case, idempotency_key: str) -> BulkTarget:
        """The target for a resolved case, with the accounts its facts hold."""
        if not case.identity.object_id:
            raise ValueError(f"case {case.id} is not resolved to an Entra object id")
        linked = case.facts.linked
        # The identity invokeAction is called on: its AD account's, else its first account's.
        owner = next(
            (a for a in linked if a.provider is Provider.ACTIVE_DIRECTORY), linked[0] if linked else None
        )
        return cls(
            key=case.identity.key,
            user_id=case.identity.object_id,
            upn=case.identity.upn or "",
            on_premises=case.facts.synced,
            defender_account_id=owner.identity_id if owner is not None else None,
            idempotency_key=idempotency_key,
            defender_accounts=linked,
        )


@dataclass(frozen=True)
class BulkResult:
    """What became of one target: ``verified`` (done, and reading back shows it), ``failed``
    (with a plain reason; nothing more will happen), or ``pending`` (Graph accepted it, and
    reading back does not show it yet, or cannot: ``result.recheck_at`` says when to read again).

    ``graph_status`` is the HTTP status of the write that failed (else of the first write),
    None when nothing was sent; ``correlation_id`` Defender's Action Center id, if a step has
    one; ``result`` the :class:`ActionResult` a single action would have recorded.
    """

    key: str
    outcome: Outcome
    detail: str
    graph_status: int | None
    correlation_id: str | None
    result: ActionResult | None = None


@dataclass(eq=False)
class _Work:
    """One target during a run: its plan, each step's outcome so far, and what was read back."""

    target: TargetFields
    started: datetime
    steps: tuple[Step, ...] = ()
    refused: str = ""
    # Per step: the outcome of the write (None: not sent), whether its fate is unknown, status.
    written: list[StepOutcome | None] = field(default_factory=list)
    unknown: set[int] = field(default_factory=set)
    statuses: list[int | None] = field(default_factory=list)
    accounts: tuple[LinkedAccount, ...] = ()
    # Read back: user properties, the Defender identity, the risky user (None: not read).
    user: Mapping[str, Any] | None = None
    identity: Mapping[str, Any] | None = None
    risky: Mapping[str, Any] | None = None
    read_errors: dict[str, str] = field(default_factory=dict)


class BulkActions:
    """Carries out one response action for many identities through batched Graph calls."""

    def __init__(
        self,
        graph: GraphClient,
        *,
        clock: Callable[[], datetime],
        batcher: GraphBatcher | None = None,
        recheck_after: timedelta = timedelta(minutes=2),
        new_password: Callable[[], str] = generate_password,
    ) -> None:
        """``clock`` stamps verifications; ``batcher`` sets the batches' concurrency (default 4)."""
        self._graph = graph
        self._clock = clock
        self._batcher = batcher or GraphBatcher(graph)
        self._recheck_after = recheck_after
        self._new_password = new_password
        # (action, idempotency key) -> when this process first dispatched it (see the module docstring).
        self._dispatched: OrderedDict[tuple[ResponseAction, str], datetime] = OrderedDict()
        # (action, idempotency key) of the targets a run of this object is carrying out now.
        self._running: set[tuple[ResponseAction, str]] = set()

    async def run(
        self,
        action: str,
        targets: Sequence[TargetFields],
        *,
        deadline: float | None = None,
        on_dispatch: OnDispatch | None = None,
    ) -> list[BulkResult]:
        """Carry out ``action`` (a :data:`BULK_ACTIONS` verb) on every target; one result each,
        in the order given.

        ``deadline`` is an instant of the Graph client's monotonic clock
        (:meth:`GraphClient.monotonic`): no retry waits past it, and a write not sent by then
        fails with that reason (nothing was done, so it may be asked for again). A target whose
        idempotency key this process dispatched before is only read back.

        ``on_dispatch`` is awaited with the keys of the targets whose first write is about to
        go out, batch by batch, just before it goes: the place to record "dispatched" durably
        (a takeover then reads back exactly those, and may send the others). If it raises,
        those targets are not sent at all and fail with its message.
        """
        verb = _bulk_action(action)
        _check_unique(targets)
        now = self._clock()
        work = [_Work(t, self._dispatched.get((verb, t.idempotency_key), now)) for t in targets]
        # Another run of this process is carrying the same key out right now: not twice.
        busy = [w for w in work if (verb, w.target.idempotency_key) in self._running]
        for w in busy:
            w.refused = (
                "Already being carried out by another run of this bot for the same request; not sent twice."
            )
        work_now = [w for w in work if not w.refused]
        again = {id(w) for w in work_now if (verb, w.target.idempotency_key) in self._dispatched}
        fresh = [w for w in work_now if id(w) not in again]
        claimed = {(verb, w.target.idempotency_key) for w in fresh}
        self._running |= claimed
        try:
            await self._plan(verb, work_now, deadline)
            for phase in range(max((len(w.steps) for w in fresh), default=0)):
                # A target whose first write was held back (not dispatched) gets no later step.
                ready = [
                    w
                    for w in fresh
                    if not w.refused
                    and phase < len(w.steps)
                    and (phase == 0 or (verb, w.target.idempotency_key) in self._dispatched)
                ]
                await self._write(verb, phase, ready, deadline, on_dispatch)
            await self._read(work_now, deadline)
        finally:
            self._running -= claimed
        results = [self._judge(verb, w, "interrupted" if id(w) in again else "fresh") for w in work]
        _log_tally(verb, results)
        return results

    async def verify(
        self,
        action: str,
        targets: Sequence[TargetFields],
        *,
        since: datetime,
        interrupted: bool = True,
        deadline: float | None = None,
    ) -> list[BulkResult]:
        """Read every target back and judge ``action``'s steps; nothing is sent.

        ``since`` is when the action was dispatched. ``interrupted=True`` finishes a run that
        stopped (a replica died): a step that does not show is reported failed, "not sent
        again". ``interrupted=False`` re-checks results Graph accepted (pending ones): what
        still does not show is reported as not having taken effect.
        """
        verb = _bulk_action(action)
        _check_unique(targets)
        work = [_Work(t, since) for t in targets]
        await self._plan(verb, work, deadline)
        await self._read(work, deadline)
        mode: _Mode = "interrupted" if interrupted else "recheck"
        results = [self._judge(verb, w, mode) for w in work]
        _log_tally(verb, results)
        return results

    # -- planning -------------------------------------------------------------------------------

    async def _plan(self, verb: ResponseAction, work: list[_Work], deadline: float | None) -> None:
        """Each target's steps, as :func:`plan_for` routes them; AD accounts read where unknown."""
        lookups = [
            w
            for w in work
            if w.target.on_premises and w.target.defender_account_id and not _known_accounts(w.target)
        ]
        if lookups:
            requests = [
                BatchRequest(
                    "GET",
                    f"/security/identities/identityAccounts/{path_segment(str(w.target.defender_account_id))}",
                )
                for w in lookups
            ]
            answers = await self._batcher.send(requests, deadline=deadline)
            for w, answer in zip(lookups, answers, strict=True):
                if answer.ok:
                    w.accounts = _linked(answer.body, str(w.target.defender_account_id))
                elif answer.status != 404:
                    # Without knowing its AD account, half the action would be done (and undone
                    # by the next sync): nothing is sent for this identity.
                    w.refused = (
                        "Its Defender for Identity account could not be read "
                        f"({_read_error(answer)}), so nothing was sent; retry."
                    )
        for w in work:
            if w.refused:
                continue
            accounts = _known_accounts(w.target) or w.accounts
            facts = IdentityFacts(synced=w.target.on_premises, linked=accounts)
            planned = plan_for(verb, facts, w.target.upn or w.target.user_id)
            if isinstance(planned, Refused):
                w.refused = planned.reason
                continue
            w.steps = planned
            w.written = [None] * len(planned)
            w.statuses = [None] * len(planned)

    # -- writing --------------------------------------------------------------------------------

    async def _write(
        self,
        verb: ResponseAction,
        phase: int,
        work: list[_Work],
        deadline: float | None,
        on_dispatch: OnDispatch | None,
    ) -> None:
        """Send step ``phase`` of every target: batched, or paced for Identity Protection."""
        risk = [w for w in work if w.steps[phase].operation is Operation.RISK_CONFIRM_COMPROMISED]
        batched = [w for w in work if w.steps[phase].operation is not Operation.RISK_CONFIRM_COMPROMISED]

        async def dispatching(chosen: Sequence[_Work]) -> None:
            # Only a target's first write dispatches it; later steps follow a dispatched one.
            first = [w for w in chosen if (verb, w.target.idempotency_key) not in self._dispatched]
            if first and on_dispatch is not None:
                await on_dispatch([w.target.key for w in first])
            for w in first:
                self._dispatched[(verb, w.target.idempotency_key)] = w.started
            while len(self._dispatched) > _LEDGER_SIZE:
                self._dispatched.popitem(last=False)

        if batched:

            async def before_send(indexes: list[int]) -> None:
                await dispatching([batched[i] for i in indexes])

            requests = [self._request(w, phase) for w in batched]
            answers = await self._batcher.send(requests, deadline=deadline, before_send=before_send)
            del requests  # a password reset's body holds the new password
            for w, answer in zip(batched, answers, strict=True):
                self._record(w, phase, answer)
        for start in range(0, len(risk), RISKY_USERS_BATCH):
            chunk = risk[start : start + RISKY_USERS_BATCH]
            await self._confirm(chunk, phase, deadline, dispatching)

    def _request(self, w: _Work, phase: int) -> BatchRequest:
        step = w.steps[phase]
        user = f"/users/{path_segment(w.target.user_id)}"
        request_id = str(
            uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{w.target.idempotency_key}:{phase}:{step.operation.value}")
        )
        op = step.operation
        if op in (Operation.ENTRA_DISABLE, Operation.ENTRA_ENABLE):
            body: dict[str, Any] = {"accountEnabled": op is Operation.ENTRA_ENABLE}
            return BatchRequest("PATCH", user, body=body, client_request_id=request_id)
        if op is Operation.ENTRA_RESET_PASSWORD:
            profile = {"forceChangePasswordNextSignIn": True, "password": self._new_password()}
            return BatchRequest(
                "PATCH", user, body={"passwordProfile": profile}, client_request_id=request_id
            )
        if op is Operation.ENTRA_REVOKE_SESSIONS:
            # The batching docs: a POST inside a batch carries a body, empty if the call takes none.
            return BatchRequest(
                "POST",
                f"{user}/revokeSignInSessions",
                body={},
                idempotent=False,
                client_request_id=request_id,
            )
        if op is Operation.DEFENDER_ACTION and step.account is not None:
            return BatchRequest(
                "POST",
                f"/security/identities/identityAccounts/{path_segment(step.account.identity_id)}/invokeAction",
                body={
                    "accountId": step.account.identifier,
                    "action": step.defender_action,
                    "identityProvider": step.provider.value,
                },
                idempotent=False,
                client_request_id=request_id,
            )
        raise ValueError(f"{op.value} is not sent in a batch")

    def _record(self, w: _Work, phase: int, answer: BatchAnswer) -> None:
        step = w.steps[phase]
        base = StepOutcome(step=step.label, provider=step.provider, ok=False, message="")
        w.statuses[phase] = answer.status or None
        if answer.ok:
            correlation_id = ""
            if step.operation is Operation.DEFENDER_ACTION:
                correlation_id = invoke_action_correlation_id(answer.body) or ""
                if not correlation_id:
                    # Queued or not, it cannot be tracked: read back, never send again.
                    w.unknown.add(phase)
                    w.written[phase] = base.model_copy(update={"graph_request_id": answer.request_id})
                    return
            w.written[phase] = base.model_copy(
                update={
                    "ok": True,
                    "message": "Graph accepted it.",
                    "graph_request_id": answer.request_id,
                    "correlation_id": correlation_id,
                }
            )
            return
        error = answer.error or GraphError(f"Graph answered {answer.status}", status=answer.status)
        if isinstance(error, GraphOutcomeUnknown):
            with ids_bound(case_key=w.target.key, graph_request_id=error.request_id):
                log.warning("%s: outcome unknown (%s); reading back", step.label, error.message)
            w.unknown.add(phase)
            w.written[phase] = base.model_copy(update={"graph_request_id": error.request_id})
            return
        w.written[phase] = base.model_copy(
            update={"message": explain(step, error), "graph_request_id": error.request_id}
        )

    async def _confirm(
        self,
        chunk: list[_Work],
        phase: int,
        deadline: float | None,
        dispatching: Callable[[Sequence[_Work]], Awaitable[None]],
    ) -> None:
        """``confirmCompromised`` for up to 60 users in one paced call (not batchable, see above)."""
        held = ""
        if deadline is not None and self._graph.monotonic() > deadline:
            held = "the deadline passed first"
        else:
            try:
                await dispatching(chunk)
            except Exception as exc:
                held = str(exc) or type(exc).__name__
        if held:
            for w in chunk:
                step = w.steps[phase]
                w.written[phase] = StepOutcome(
                    step=step.label,
                    provider=step.provider,
                    ok=False,
                    message=f"{step.label}: not sent: {held}; nothing was done.",
                )
            return
        try:
            response = await self._graph.confirm_compromised([w.target.user_id for w in chunk])
        except GraphOutcomeUnknown as exc:
            for w in chunk:
                w.unknown.add(phase)
                w.statuses[phase] = exc.status or None
                w.written[phase] = StepOutcome(
                    step=w.steps[phase].label,
                    provider=w.steps[phase].provider,
                    ok=False,
                    message="",
                    graph_request_id=exc.request_id,
                )
            return
        except GraphError as exc:
            for w in chunk:
                w.statuses[phase] = exc.status or None
                self._record(w, phase, BatchAnswer(exc.status, None, {}, exc.request_id, 1, exc))
            return
        for w in chunk:
            self._record(w, phase, BatchAnswer(response.status, response.body, {}, response.request_id, 1))

    # -- reading back ---------------------------------------------------------------------------

    async def _read(self, work: list[_Work], deadline: float | None) -> None:
        """Read every planned target back: users and identities batched, risk listed."""
        users: list[tuple[_Work, list[str]]] = []
        identities: list[_Work] = []
        risky: list[_Work] = []
        for w in work:
            needs = {read_back_of(step) for step in _to_read(w)}
            properties = sorted(n.split(":", 1)[1] for n in needs if n.startswith("user:"))
            if properties:
                users.append((w, properties))
            if "identityAccount" in needs:
                identities.append(w)
            if "riskyUser" in needs:
                risky.append(w)
        requests = [
            BatchRequest(
                "GET",
                f"/users/{path_segment(w.target.user_id)}",
                params={"$select": ",".join(["id", *props])},
            )
            for w, props in users
        ]
        requests += [
            BatchRequest(
                "GET",
                f"/security/identities/identityAccounts/{path_segment(_identity_id(w))}",
                params={"$select": "id,isEnabled"},
            )
            for w in identities
        ]
        answers = await self._batcher.send(requests, deadline=deadline) if requests else []
        for (w, _), answer in zip(users, answers[: len(users)], strict=True):
            if answer.ok and isinstance(answer.body, dict):
                w.user = answer.body
            else:
                w.read_errors["user"] = _read_error(answer)
        for w, answer in zip(identities, answers[len(users) :], strict=True):
            if answer.ok and isinstance(answer.body, dict):
                w.identity = answer.body
            else:
                w.read_errors["identityAccount"] = _read_error(answer)
        if risky:
            await self._read_risky(risky, deadline)

    async def _read_risky(self, work: list[_Work], deadline: float | None) -> None:
        """Who Identity Protection lists as confirmed compromised since the earliest start."""
        since = min(w.started for w in work) - CLOCK_SKEW
        wanted = {w.target.user_id.lower(): w for w in work}
        try:
            async for item in self._graph.list_risky_users(
                filter=all_of(
                    "riskState eq 'confirmedCompromised'",
                    f"riskLastUpdatedDateTime ge {odata_datetime(since)}",
                ),
                top=RISKY_USERS_PAGE,
                select=["id", "riskState", "riskDetail", "riskLastUpdatedDateTime"],
            ):
                found = wanted.get(str(item.get("id", "")).lower())
                if found is not None:
                    found.risky = item
        except GraphError as exc:
            for w in work:
                w.read_errors["riskyUser"] = exc.message
            return
        missing = [w for w in work if w.risky is None]
        # Graph may not have moved riskLastUpdatedDateTime of a user confirmed before: a few
        # are read one by one; the rest stay pending for the next check.
        for w in missing[:RISKY_USER_SINGLE_READS]:
            if deadline is not None and self._graph.monotonic() > deadline:
                break
            try:
                w.risky = await self._graph.get_risky_user(w.target.user_id)
            except GraphError as exc:
                w.read_errors["riskyUser"] = exc.message

    # -- judging --------------------------------------------------------------------------------

    def _judge(self, verb: ResponseAction, w: _Work, mode: _Mode) -> BulkResult:
        target = w.target
        if w.refused:
            return BulkResult(target.key, "failed", w.refused, None, None)
        outcomes = [self._step(w, index, step, mode) for index, step in enumerate(w.steps)]
        # As a single action's run (not its re-check or resume): a synced user's cloud-side
        # change holds only until the next sync unless the on-premises account changed too.
        on_prem_done = any(o.ok and o.provider is Provider.ACTIVE_DIRECTORY for o in outcomes)
        if mode == "fresh" and target.on_premises and not on_prem_done:
            outcomes = [await_sync(step, o) for step, o in zip(w.steps, outcomes, strict=True)]
        result = summarize(verb, outcomes, now=self._clock(), recheck_after=self._recheck_after)
        outcome: Outcome = "verified" if result.verified else ("pending" if result.succeeded else "failed")
        failing = next((i for i, o in enumerate(outcomes) if not o.ok), None)
        status = w.statuses[failing] if failing is not None else None
        if status is None:
            status = next((s for s in w.statuses if s is not None), None)
        correlation = next((o.correlation_id for o in outcomes if o.correlation_id), None)
        return BulkResult(target.key, outcome, result.summary, status, correlation, result)

    def _step(self, w: _Work, index: int, step: Step, mode: _Mode) -> StepOutcome:
        """One step's outcome from its write (if sent in this run) and what was read back."""
        base = StepOutcome(step=step.label, provider=step.provider, ok=False, message="")
        written = w.written[index]
        unknown = index in w.unknown
        if mode == "fresh":
            if written is None:
                return base.model_copy(update={"message": f"{step.label}: not sent."})
            if not written.ok and not unknown:
                return written  # refused by Graph, or not sent before the deadline
        request_id = written.graph_request_id if written is not None else ""
        verification, state, error = self._verdict(w, step)
        # Graph accepted the write (in this run, or earlier for a re-check): judge it as accepted.
        accepted = mode == "recheck" or (mode == "fresh" and not unknown)
        if error:
            if accepted:
                start = written if written is not None and written.ok else _accepted(base)
                return start.model_copy(
                    update={
                        "verification": Verification.PENDING,
                        "verified_state": f"could not read back: {error}",
                    }
                )
            return base.model_copy(
                update={
                    "graph_request_id": request_id,
                    "message": (
                        f"{step.label}: its outcome is unknown and reading back failed ({error}); it was "
                        "not sent again. Check the account, then retry from the card."
                    ),
                }
            )
        read = {"verification": verification, "verified_state": state, "verified_at": self._clock()}
        if accepted:
            start = written if mode == "fresh" and written is not None else _accepted(base)
            outcome = start.model_copy(update=read)
            if mode == "recheck" and verification is Verification.PENDING:
                outcome = outcome.model_copy(
                    update={
                        "verification": Verification.CONTRADICTED,
                        "message": f"{step.label}: reading back shows {state}",
                    }
                )
            return outcome
        found = base.model_copy(update={**read, "ok": True, "graph_request_id": request_id})
        if unknown:
            # Sent in this run, its outcome unknown: the single action's words for it.
            if verification is Verification.VERIFIED:
                return found.model_copy(
                    update={
                        "message": "The call timed out, but reading back shows it took effect.",
                        "note": (
                            "The call timed out, but reading back shows it took effect; "
                            "it was not sent again."
                        ),
                    }
                )
            if verification is Verification.UNVERIFIABLE:
                return base.model_copy(
                    update={
                        "graph_request_id": request_id,
                        "message": (
                            "Graph's answer was lost, and this action has no state to read back: it may "
                            "already be queued. Check the Defender Action Center before retrying."
                        ),
                    }
                )
            return found.model_copy(
                update={
                    "ok": False,
                    "verification": Verification.CONTRADICTED,
                    "message": (
                        "The call timed out and reading back does not show the change; "
                        "it was not sent again. Retry from the card."
                    ),
                }
            )
        # Dispatched before (by this process, or a replica that stopped): read only, as resume does.
        if verification is Verification.VERIFIED:
            return found.model_copy(
                update={
                    "message": "Found done by reading back.",
                    "note": (
                        "The run was interrupted; reading back shows it took effect, "
                        "so it was not sent again."
                    ),
                }
            )
        if verification is Verification.UNVERIFIABLE:
            return found.model_copy(
                update={
                    "ok": False,
                    "message": (
                        "The run was interrupted and Graph shows no state to read back: it "
                        "was not sent again. Check the Action Center, then retry from the card."
                    ),
                }
            )
        return found.model_copy(
            update={
                "ok": False,
                "verification": Verification.CONTRADICTED,
                "message": "The run was interrupted before this took effect; it was not sent again. "
                "Retry from the card.",
            }
        )

    def _verdict(self, w: _Work, step: Step) -> tuple[Verification, str, str]:
        """(verification, state read, "" or why nothing could be read) for one step."""
        needs = read_back_of(step)
        if not needs:
            return Verification.UNVERIFIABLE, "no state to read back through Graph; see the Action Center", ""
        kind = "user" if needs.startswith("user:") else needs
        read = {"user": w.user, "identityAccount": w.identity, "riskyUser": w.risky}[kind]
        if read is None:
            if kind in w.read_errors:
                return Verification.PENDING, "", w.read_errors[kind]
            if kind == "riskyUser":
                # Not (yet) among the users Identity Protection lists as confirmed compromised.
                return Verification.PENDING, "riskState not yet shown as confirmedCompromised", ""
            return Verification.PENDING, "", "no answer"
        verification, state = verdict(step, read, w.started)
        return verification, state, ""


# -- the floor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What a bulk action sends for a set of identities when nothing is throttled or fails."""

    lookups: int  # Defender for Identity identities read to find their AD account
    phases: tuple[tuple[int, int], ...]  # per step: (identity-and-access writes, Defender writes)
    user_reads: int
    defender_reads: int
    identity_protection_calls: int


def _shape(verb: ResponseAction, n: int, on_premises: int, accounts_known: bool) -> _Shape:
    if n < 0 or not 0 <= on_premises <= n:
        raise ValueError("need 0 <= on_premises <= n")
    cloud = n - on_premises
    lookups = 0 if accounts_known else on_premises
    if verb is ResponseAction.CONFIRM_COMPROMISED:
        calls = math.ceil(n / RISKY_USERS_BATCH) + math.ceil(n / RISKY_USERS_PAGE)
        return _Shape(0, (), 0, 0, calls)
    if verb is ResponseAction.DISABLE_ACCOUNT:
        # Step 1: AD (synced) and Entra ID (cloud-only); step 2: Entra ID of the synced.
        phases = ((cloud, on_premises), (on_premises, 0)) if on_premises else ((n, 0),)
        return _Shape(lookups, phases, n, on_premises, 0)
    if verb is ResponseAction.REVOKE_SESSIONS:
        return _Shape(0, ((n, 0),), n, 0, 0)
    # Force password change: cloud-only users twice (password, sessions), synced ones in AD.
    return _Shape(lookups, ((cloud, on_premises), (cloud, 0)), cloud, 0, 0)


def requests_floor(action: str, n: int, *, on_premises: int = 0, accounts_known: bool = True) -> int:
    """How many Graph HTTP requests ``action`` on ``n`` identities takes when nothing is
    throttled or fails: batches of 20 (each step across all identities, then the reads) and
    Identity Protection's own calls. ``accounts_known``: the targets carry their Defender for
    Identity accounts (else the synced ones are looked up first)."""
    shape = _shape(_bulk_action(action), n, on_premises, accounts_known)
    batches = math.ceil(shape.lookups / _BATCH)
    batches += sum(math.ceil((a + b) / _BATCH) for a, b in shape.phases)
    batches += math.ceil((shape.user_reads + shape.defender_reads) / _BATCH)
    return batches + shape.identity_protection_calls


def floor_seconds(
    action: str,
    n: int,
    *,
    on_premises: int = 0,
    tenant_users: int | None = None,
    round_trip: float = 0.0,
    concurrency: int = 4,
    accounts_known: bool = True,
) -> float:
    """The least time Graph's documented limits allow for ``action`` on ``n`` identities.

    ``on_premises`` of them are synced from AD (routed through Defender for Identity, which has
    no documented limit); ``tenant_users`` sizes the tenant's identity-and-access quota
    (default: ``n``). What binds (the numbers of :mod:`devtools.sandbox.throttling`, from
    https://learn.microsoft.com/graph/throttling-limits), starting from full buckets:

    - identity and access: 3,000 writes per 150 s per app and tenant, and 3,500/5,000/8,000
      resource units per 10 s (S/M/L tenant); every write and every ``$select``-ed user read
      costs one unit;
    - Identity Protection: one request per second per tenant (``confirmCompromised`` takes 60
      users per call; the read-back lists 500 per page).

    Below those quotas the limits allow any speed, so the floor is then the round trips:
    ``round_trip`` is what one batch takes to be answered (as measured), and ``concurrency``
    how many batches are answered at once. Each step goes out across all identities before the
    next, then the reads. (The sandbox tenant answers one batch at a time: give it
    ``concurrency=1`` and its own time per batch.)
    """
    verb = _bulk_action(action)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    shape = _shape(verb, n, on_premises, accounts_known)
    if n == 0:
        return 0.0
    if verb is ResponseAction.CONFIRM_COMPROMISED:
        calls = shape.identity_protection_calls
        return (calls - 1) * _IDENTITY_PROTECTION_INTERVAL + calls * round_trip
    writes = sum(a for a, _ in shape.phases)
    units = writes + shape.user_reads
    size = _tenant_size(tenant_users if tenant_users is not None else n)
    capacity, seconds = _IDENTITY_UNITS[size]
    write_cap, write_seconds = _IDENTITY_WRITES
    limited = max(
        0.0,
        (writes - write_cap) / (write_cap / write_seconds),
        (units - capacity) / (capacity / seconds),
    )
    rounds = [shape.lookups, *(a + b for a, b in shape.phases), shape.user_reads + shape.defender_reads]
    trips = sum(math.ceil(math.ceil(items / _BATCH) / concurrency) for items in rounds if items)
    return max(limited, trips * round_trip)


def _tenant_size(users: int) -> str:
    if users < 50:
        return "S"
    return "M" if users <= 500 else "L"


# -- helpers ----------------------------------------------------------------------------------


def _bulk_action(action: str) -> ResponseAction:
    """The verb as a :class:`ResponseAction`; anything else is refused (fail closed)."""
    for verb in BULK_ACTIONS:
        if action == verb.value:
            return verb
    raise ValueError(
        f"{action!r} is not a bulk action; one of {', '.join(v.value for v in BULK_ACTIONS)} is needed"
    )


def _check_unique(targets: Iterable[TargetFields]) -> None:
    """One target per person and per key: a repeated one would be acted on twice."""
    keys: set[str] = set()
    users: set[str] = set()
    for target in targets:
        if not _GUID.match(target.user_id) or not target.idempotency_key:
            raise ValueError(f"target {target.key!r} needs an Entra object id and an idempotency key")
        user = target.user_id.lower()
        if target.key in keys or user in users:
            raise ValueError(f"target {target.key!r} ({target.user_id}) is listed twice")
        keys.add(target.key)
        users.add(user)


def _to_read(w: _Work) -> list[Step]:
    """The steps whose state must be read: all of them when nothing was written in this run
    (a re-run, a takeover, a re-check), else those Graph accepted or may have carried out."""
    if all(written is None for written in w.written):
        return list(w.steps)
    return [
        step
        for index, step in enumerate(w.steps)
        if index in w.unknown or ((written := w.written[index]) is not None and written.ok)
    ]


def _known_accounts(target: TargetFields) -> tuple[LinkedAccount, ...]:
    return target.defender_accounts if isinstance(target, BulkTarget) else ()


def _identity_id(w: _Work) -> str:
    step = next(s for s in _to_read(w) if read_back_of(s) == "identityAccount")
    assert step.account is not None
    return step.account.identity_id


def _linked(body: Any, identity_id: str) -> tuple[LinkedAccount, ...]:
    """The accounts of a Defender for Identity identity, read as identities.py reads them."""
    found: list[LinkedAccount] = []
    accounts = body.get("accounts") if isinstance(body, dict) else None
    for account in accounts if isinstance(accounts, list) else []:
        if not isinstance(account, dict):
            continue
        raw = account.get("identityProvider", account.get("provider"))
        provider = next(
            (p for p in Provider if isinstance(raw, str) and raw.lower() == p.value.lower()),
            None,
        )
        identifier = account.get("identifier")
        if provider is None or not isinstance(identifier, str) or not identifier:
            continue
        actions = account.get("actions")
        found.append(
            LinkedAccount(
                identity_id=identity_id,
                identifier=identifier,
                provider=provider,
                actions=frozenset(str(a) for a in actions) if isinstance(actions, list) else frozenset(),
            )
        )
    return tuple(found)


def _accepted(base: StepOutcome) -> StepOutcome:
    return base.model_copy(update={"ok": True, "message": "Graph accepted it."})


def _read_error(answer: BatchAnswer) -> str:
    return answer.error.message if answer.error is not None else f"Graph answered {answer.status}"


def _log_tally(verb: ResponseAction, results: Sequence[BulkResult]) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    log.info(
        "bulk %s on %d identities: %s",
        verb.value,
        len(results),
        ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "none",
    )
    failed = [r for r in results if r.outcome == "failed"]
    for result in failed[:_LOGGED_FAILURES]:
        with ids_bound(
            case_key=result.key,
            graph_status=result.graph_status,
            graph_request_id=result.result.graph_request_id if result.result else None,
            correlation_ids=result.result.correlation_ids if result.result else None,
        ):
            log.warning("bulk %s failed for one identity: %s", verb.value, result.detail)
    if len(failed) > _LOGGED_FAILURES:
        log.warning(
            "bulk %s: %d more failures not logged one by one", verb.value, len(failed) - _LOGGED_FAILURES
        )
