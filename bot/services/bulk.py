"""Running an approved bulk request: a leased job, in chunks, exactly once per identity.

Owns :class:`BulkExecution` and :class:`OneByOne`.

Each identity of a bulk request runs through a request of its own on its case (the child
request, id ``<bulk id>.<case id>``, approved by the bulk request's sign-offs), so the case
keeps the same guarantees and history as a single action: one active request per case, the
blast-radius count, the result on the case and an audit event per identity. Exactly once per
identity, across every replica:

- a child is made already executing and marked dispatched before anything is sent; its id is
  the same on every worker, so only the worker whose insert won sends it, with the child's
  idempotency key;
- a worker that takes the job over after a crash never sends a dispatched child again: it
  reads the account back (the port's ``verify``) and records that;
- a result is recorded by the first worker to finish the child (the approval state machine's
  ``Finish``); the bulk request keeps each identity's outcome for its progress and summary.

The job is leased and renewed while it runs (as single executions are); a worker that lost it
stops before its next chunk. Chunks run ``batch_concurrency`` at once (GRAPH_BATCH_CONCURRENCY).
The campaign card shows the progress (every :data:`PROGRESS_SECONDS` at most) and the thread
gets one summary at the end, failures listed, with "Retry failed" on the card (a new bulk
request through the same two-person approval).

:class:`OneByOne` implements the :class:`bot.services.ports.BulkActions` port with the
single-identity executor, one identity after another: the bulk path runs end to end on it, and
the Graph JSON batching layer takes its place where it is wired in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Literal

from bot.domain.approval import Abort, Finish, Refused, Start
from bot.domain.campaigns import (
    BulkRequest,
    BulkTarget,
    ItemOutcome,
    bulk_blast_radius,
    child_request_id,
    item_outcome,
)
from bot.domain.models import (
    ActionRequest,
    ActionResult,
    Case,
    CaseStatus,
    RequestState,
    ResponseAction,
)
from bot.domain.plans import blocked, plan
from bot.errors import ConflictError, DuplicateError, RemediationError
from bot.faults import fault_point
from bot.services.audit_log import AuditLog
from bot.services.campaigns import BULK_JOB, CampaignDesk
from bot.services.enrichment import Enricher
from bot.services.ports import BulkActions, BulkResult, Ports, ServiceSettings
from bot.services.tasks import renewing
from bot.services.transitions import Transitions
from bot.store.base import Job, Store
from bot.tenant.actions import Executor
from bot.tenant.bulk import BulkTarget as PortTarget
from bot.tenant.bulk import TargetFields
from bot.web.metrics import Metrics
from cards.text import inert

log = logging.getLogger(__name__)

CHUNK = 20  # identities per round: one Graph JSON batch holds at most 20 requests
PROGRESS_SECONDS = 10.0  # how often a running bulk action's progress is shown on the card, at most
MAX_FAILURES_LISTED = 50


class OneByOne:
    """:class:`BulkActions` through the single-identity executor, one target after another."""

    def __init__(self, store: Store, executor: Executor) -> None:
        self._store = store
        self._executor = executor

    async def run(
        self, action: str, targets: Sequence[TargetFields], *, deadline: float | None = None
    ) -> list[BulkResult]:
        """Run ``action`` on each target's case and read it back, as a single action would."""
        wanted = ResponseAction(action)
        results: list[BulkResult] = []
        for target in targets:
            case = await self._store.get_case(target.key)
            if case is None:
                results.append(BulkResult(target.key, "failed", "The case no longer exists.", None, None))
                continue
            steps = plan(wanted, case)
            if isinstance(steps, Refused):
                results.append(BulkResult(target.key, "failed", steps.reason, None, None))
                continue
            result = await self._executor.run(wanted, case, steps)
            results.append(bulk_result(target.key, result))
        return results

    async def verify(
        self, action: str, targets: Sequence[TargetFields], *, since: datetime, deadline: float | None = None
    ) -> list[BulkResult]:
        """Read each target's case back as a single action's takeover does; nothing is sent."""
        wanted = ResponseAction(action)
        results: list[BulkResult] = []
        for target in targets:
            case = await self._store.get_case(target.key)
            if case is None:
                results.append(BulkResult(target.key, "failed", "The case no longer exists.", None, None))
                continue
            steps = plan(wanted, case)
            if isinstance(steps, Refused):
                results.append(BulkResult(target.key, "failed", steps.reason, None, None))
                continue
            results.append(bulk_result(target.key, await self._executor.resume(wanted, case, steps, since)))
        return results


def bulk_result(key: str, result: ActionResult) -> BulkResult:
    """A single action's result as one bulk outcome."""
    outcome: Literal["verified", "failed", "pending"]
    if not result.succeeded:
        outcome = "failed"
    elif result.verified:
        outcome = "verified"
    else:
        outcome = "pending"
    correlation = result.correlation_ids[0] if result.correlation_ids else None
    return BulkResult(key, outcome, result.summary, None, correlation, result)


def action_result(result: BulkResult) -> ActionResult:
    """One bulk outcome as the result recorded on the identity's own (child) request: the single
    action's own result where the bulk layer kept it (its steps, read-back and correlation ids)."""
    if result.result is not None:
        return result.result
    return ActionResult(
        succeeded=result.outcome != "failed",
        verified=result.outcome == "verified",
        summary=result.detail,
        graph_request_id="",
    )


class BulkExecution:
    """Claims bulk jobs and carries each approved bulk request through to its summary."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        audit: AuditLog,
        desk: CampaignDesk,
        transitions: Transitions,
        enricher: Enricher,
        executor: Executor,
        actions: BulkActions,
        metrics: Metrics,
        replica: str,
    ) -> None:
        self._store = ports.store
        self._directory = ports.directory
        self._policy = ports.policy
        self._clock = ports.clock
        self._monotonic = ports.monotonic
        self._settings = settings
        self._audit = audit
        self._desk = desk
        self._transitions = transitions
        self._enricher = enricher
        self._executor = executor
        self._actions = actions
        self._metrics = metrics
        self._replica = replica
        self._stopping = False

    def stop(self) -> None:
        """Claim no more jobs (shutting down)."""
        self._stopping = True

    async def run_jobs(self) -> int:
        """Claim queued bulk jobs and run them until none is left; returns how many finished."""
        ran = 0
        while not self._stopping:
            worker = f"{self._replica}.{uuid.uuid4().hex[:6]}"
            job = await self._store.claim_job(BULK_JOB, worker, self._settings.job_lease)
            if job is None:
                return ran
            try:
                async with renewing(
                    partial(self._holds, job), self._settings.job_lease, f"bulk job {job.key}"
                ):
                    done = await self._execute(job)
                if not done:
                    log.warning("bulk job %s: not finished; left to the next claim", job.key)
                    continue
                await self._store.finish_job(job.key, job.worker)
            except asyncio.CancelledError:
                try:
                    await self._store.release_job(job.key, job.worker)
                except RemediationError as exc:
                    log.warning("could not release bulk job %s: %s", job.key, exc.message)
                raise
            except ConflictError:
                log.warning("bulk job %s was taken over by another worker", job.key)
                continue
            except Exception:
                log.exception("bulk job %s failed; it will be resumed", job.key)
                continue
            ran += 1
        return ran

    async def _holds(self, job: Job) -> bool:
        return await self._store.renew_job(job.key, job.worker, self._settings.job_lease)

    async def _execute(self, job: Job) -> bool:
        """Carry the job on from where its bulk request stands; ``True`` when nothing is left."""
        bulk = await self._store.get_bulk(str(job.payload.get("bulkId", "")))
        if bulk is None or bulk.approval.idempotency_key != job.key:
            return True
        if bulk.state is RequestState.APPROVED:
            started = await self._start(bulk)
            if started is None:
                return True
            bulk = started
        if bulk.state is RequestState.EXECUTING:
            finished = await self._run(bulk, job)
            if finished is None:
                return False
            bulk = finished
        if (
            bulk.state in (RequestState.SUCCEEDED, RequestState.FAILED)
            and bulk.approval.started_at is not None
        ):
            await self._summarize(bulk)
            latest = await self._store.get_bulk(bulk.id)
            return latest is None or latest.summary_sent
        return True

    async def _current_approvers(self, bulk: BulkRequest) -> frozenset[str]:
        current: set[str] = set()
        for signer in bulk.approval.approvals:
            if (await self._directory.roles_of(signer.object_id)).approver:
                current.add(signer.object_id.lower())
        return frozenset(current)

    async def _start(self, bulk: BulkRequest) -> BulkRequest | None:
        """Start the approved request (expiry, approvers and the blast radius checked again)."""
        started_last_hour = await self._transitions.destructive_last_hour(bulk.action)
        over = bulk_blast_radius(self._policy, bulk.action, len(bulk.targets), started_last_hour)
        if isinstance(over, Refused):
            await self._abort(bulk, over.reason)
            return None
        # The blast radius was counted above for the whole set; Start checks expiry and approvers.
        moved, refusal = await self._desk.apply(bulk.id, Start(await self._current_approvers(bulk)))
        if refusal:
            if moved.state is RequestState.APPROVED:
                await self._abort(moved, refusal)
                return None
            return moved if moved.state is RequestState.EXECUTING else None
        await self._audit.write(
            "bulk.started",
            campaign_id=moved.campaign_id,
            bulk_id=moved.id,
            action=moved.action.value,
            target_hash=moved.target_hash,
            targets=len(moved.targets),
            started_last_hour=started_last_hour,
        )
        self._desk.touch_later(moved.campaign_id)
        return moved

    async def _abort(self, bulk: BulkRequest, reason: str) -> None:
        moved, refusal = await self._desk.apply(bulk.id, Abort(reason))
        if refusal:
            return
        await self._audit.write(
            "bulk.refused", campaign_id=moved.campaign_id, bulk_id=moved.id, reason=reason
        )
        await self._desk.touch(moved.campaign_id, urgent=True)
        await self._desk.say(moved.campaign_id, f"**Bulk request not run**: {inert(reason, 500)}")

    async def _run(self, bulk: BulkRequest, job: Job) -> BulkRequest | None:
        """Run every identity still without an outcome, in chunks of :data:`CHUNK`, up to
        ``batch_concurrency`` chunks at once (while Graph answers one chunk's batch, the next
        chunk's requests are claimed and the last one's results recorded); the finished
        request, or ``None`` when this worker lost the job (the next claim carries on)."""
        remaining = [t for t in bulk.targets if t.case_id not in bulk.outcomes]
        chunks = iter([remaining[start : start + CHUNK] for start in range(0, len(remaining), CHUNK)])
        lost = False
        shown = self._monotonic()
        claiming = asyncio.Lock()

        async def work() -> None:
            nonlocal lost, shown
            for chunk in chunks:  # shared: each chunk is taken by one of the workers
                if lost or not await self._holds(job):
                    lost = True
                    return
                outcomes = await self._run_chunk(bulk, chunk, claiming)
                recorded = await self._record(bulk.id, outcomes)
                # The progress reaches the card every PROGRESS_SECONDS at most (rendering a
                # campaign's card holds this process up), the end at once (see _finish).
                if self._monotonic() - shown < PROGRESS_SECONDS:
                    continue
                shown = self._monotonic()
                channel = await self._store.get_channel()
                if channel is not None:
                    await self._store.swap_campaign(recorded.campaign_id, lambda c: c.revised())
                    await self._desk.publish(recorded.campaign_id, channel)

        workers = max(1, min(self._settings.batch_concurrency, -(-len(remaining) // CHUNK)))
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(work())
        if lost:
            return None
        latest = await self._store.get_bulk(bulk.id)
        return await self._finish(latest if latest is not None else bulk)

    async def _record(self, bulk_id: str, outcomes: dict[str, ItemOutcome]) -> BulkRequest:
        def add(current: BulkRequest) -> BulkRequest | None:
            merged = {**outcomes, **current.outcomes}  # an outcome recorded first stays
            if merged == current.outcomes:
                return None
            return current.model_copy(update={"outcomes": merged})

        stored, _ = await self._store.swap_bulk(bulk_id, add)
        return stored

    async def _claim_child(self, bulk: BulkRequest, target: BulkTarget) -> tuple[ActionRequest, bool] | str:
        """The identity's own request for this bulk request, and whether this worker just made
        it (and so sends it); or why there is none.

        The request is made already executing and marked dispatched: making it is the claim.
        Its id is the same on every worker, so of two workers only the one whose insert wins
        sends anything; the other finds it executing and reads the account back instead. It is
        never left approved, so nothing else (the sweep's queueing of approved requests) runs it.
        """
        child_id = child_request_id(bulk.id, target.case_id)
        existing = await self._store.get_request(child_id)
        if existing is not None:
            return existing, False
        approval = bulk.approval
        now = self._clock()
        child = ActionRequest(
            id=child_id,
            case_id=target.case_id,
            action=approval.action,
            requester=approval.requester,
            reason=approval.reason,
            state=RequestState.EXECUTING,
            created_at=now,
            expires_at=approval.expires_at,
            approvals=approval.approvals,
            required_approvals=approval.required_approvals,
            privileged_reason=target.privileged_reason,
            idempotency_key=f"{target.case_id}:{approval.action.value}:{child_id}",
            started_at=now,
            dispatched=True,
        )
        try:
            return await self._store.add_request(child), True
        except DuplicateError:
            existing = await self._store.get_request(child_id)
            if existing is not None:
                return existing, False  # made by another worker meanwhile: it sends, not this one
            return (
                "Another request for this identity's case was in progress, so the bulk action left it alone."
            )

    async def _run_chunk(
        self, bulk: BulkRequest, chunk: Sequence[BulkTarget], claiming: asyncio.Lock | None = None
    ) -> dict[str, ItemOutcome]:
        """Claim, send and record one chunk. ``claiming``, shared by the chunks running at once,
        lets one chunk claim its identities at a time: the first chunk's batch goes out as soon
        as its own claims are made, instead of after every chunk's claims interleaved."""
        outcomes: dict[str, ItemOutcome] = {}
        sending: list[tuple[PortTarget, ActionRequest, Case]] = []
        reading: list[tuple[ActionRequest, Case]] = []
        async with claiming or contextlib.nullcontext():
            for target in chunk:
                case = await self._store.get_case(target.case_id)
                if case is None or blocked(case):
                    why = blocked(case) if case is not None else "The case no longer exists."
                    outcomes[target.case_id] = ItemOutcome(outcome="failed", detail=why)
                    continue
                if not case.target_checked:
                    try:
                        # Routing needs the facts (an on-premises user is disabled through Defender).
                        case = await self._enricher.enrich(case)
                    except RemediationError as exc:
                        outcomes[target.case_id] = ItemOutcome(
                            outcome="failed",
                            detail=f"The identity could not be read, so nothing was sent: {exc.message}",
                        )
                        continue
                if case.protected:
                    outcomes[target.case_id] = ItemOutcome(
                        outcome="failed", detail="Protected account: the bot never acts on it."
                    )
                    continue
                claimed = await self._claim_child(bulk, target)
                if isinstance(claimed, str):
                    outcomes[target.case_id] = ItemOutcome(outcome="failed", detail=claimed)
                    continue
                child, mine = claimed
                if mine:
                    sending.append((_port_target(case, child), child, case))
                elif child.state is RequestState.EXECUTING:
                    reading.append((child, case))  # dispatched by a worker that stopped: read back
                elif child.result is not None:
                    outcomes[target.case_id] = _outcome(child.result)
                else:
                    outcomes[target.case_id] = ItemOutcome(
                        outcome="failed", detail=f"Not run ({child.state.value})."
                    )
        if sending:
            fault_point("bulk.dispatched")
            results = {r.key: r for r in await self._actions.run(bulk.action.value, [s[0] for s in sending])}
            fault_point("bulk.answered")
            for port, child, case in sending:
                answer = results.get(port.key) or BulkResult(
                    port.key, "failed", "No result came back for it.", None, None
                )
                outcomes[case.id] = await self._finish_child(
                    bulk, child, case, action_result(answer), "action"
                )
        if reading:
            # Dispatched by a worker that stopped: read back together, never sent again.
            since = min(child.started_at or self._clock() for child, _ in reading)
            targets = [_port_target(case, child) for child, case in reading]
            found = {r.key: r for r in await self._actions.verify(bulk.action.value, targets, since=since)}
            for child, case in reading:
                answer = found.get(case.id) or BulkResult(
                    case.id, "failed", "Reading it back gave no answer.", None, None
                )
                outcomes[case.id] = await self._finish_child(
                    bulk, child, case, action_result(answer), "action.resumed"
                )
        return outcomes

    async def _finish_child(
        self, bulk: BulkRequest, child: ActionRequest, case: Case, result: ActionResult, kind: str
    ) -> ItemOutcome:
        """Record one identity's result on its request and case, and audit it (the first worker
        to record it wins; a later one keeps what was recorded)."""
        finished = await self._transitions.apply(child.id, Finish(result))
        if not finished.won:
            stored = finished.request.result
            return (
                _outcome(stored)
                if stored is not None
                else ItemOutcome(outcome="failed", detail=finished.refusal)
            )
        if kind == "action":
            kind = "action.succeeded" if result.succeeded else "action.failed"
        self._metrics.add(
            "remediation_actions_total",
            action=child.action.value,
            outcome="succeeded" if result.succeeded else "failed",
        )
        await self._audit.write(
            kind,
            case=case,
            request=finished.request,
            bulk_id=bulk.id,
            campaign_id=bulk.campaign_id,
            summary=result.summary,
            verified=result.verified,
            correlation_ids=result.correlation_ids,
        )

        def record(latest: Case) -> Case:
            if result.succeeded and child.action is ResponseAction.DISABLE_ACCOUNT:
                return latest.revised(status=CaseStatus.CONTAINED)
            return latest.revised()

        await self._store.update_case(case.id, record)
        # The result is reported on the case: marked reported so no single-action reporter
        # replies for it (the bulk summary in the campaign thread is its report).
        await self._store.update_request(
            child.id,
            lambda latest: (
                latest.model_copy(update={"reported_attempt": latest.attempt})
                if latest.reported_attempt < latest.attempt
                else None
            ),
        )
        return _outcome(result)

    async def _finish(self, bulk: BulkRequest) -> BulkRequest:
        done, failed, pending = bulk.tally()
        label = bulk.action.label
        summary = (
            f"{label}: {done} done and verified, {pending} pending verification, {failed} failed, "
            f"of {len(bulk.targets)}."
        )
        result = ActionResult(succeeded=failed == 0, verified=failed == 0 and pending == 0, summary=summary)
        moved, refusal = await self._desk.apply(bulk.id, Finish(result))
        if refusal:
            return moved
        await self._audit.write(
            "bulk.finished",
            campaign_id=moved.campaign_id,
            bulk_id=moved.id,
            summary=summary,
            target_hash=moved.target_hash,
            failed=[t.object_id for t in moved.failed_targets],
        )
        await self._desk.touch(moved.campaign_id, urgent=True)
        return moved

    async def _summarize(self, bulk: BulkRequest) -> None:
        """The thread summary, at least once (a re-send after a restart says so)."""

        def claim(current: BulkRequest) -> BulkRequest | None:
            if current.summary_sent:
                return None
            return current.model_copy(update={"summary_claims": current.summary_claims + 1})

        _, claimed = await self._store.swap_bulk(bulk.id, claim)
        if claimed is None:
            return
        text = summary_text(claimed)
        if claimed.summary_claims > 1:
            text = "Re-sent after a restart: an earlier copy of this message may be above.\n\n" + text
        await self._desk.say(claimed.campaign_id, await self._audit.with_checkpoint(text))
        await self._store.swap_bulk(
            bulk.id,
            lambda current: (
                None if current.summary_sent else current.model_copy(update={"summary_sent": True})
            ),
        )


def _port_target(case: Case, child: ActionRequest) -> PortTarget:
    """What the bulk layer needs of one identity (its Defender accounts as the case knows them),
    keyed on the case id, with the identity's own request's idempotency key."""
    return replace(PortTarget.from_case(case, child.idempotency_key), key=case.id)


_outcome = item_outcome


def summary_text(bulk: BulkRequest) -> str:
    """The thread summary of a finished bulk request (markdown; untrusted values inert)."""
    done, failed, pending = bulk.tally()
    approval = bulk.approval
    lines = [
        f"**Bulk {inert(bulk.action.label.lower(), 60)} finished**: {done} done and verified, "
        f"{pending} pending verification, {failed} failed, of {len(bulk.targets)} identities in "
        f"{inert(bulk.scope_label, 200)}.",
        f"Requested by {inert(approval.requester.label, 120)}; approved by "
        + ", ".join(inert(a.label, 120) for a in approval.approvals)
        + f". Target set SHA-256 {bulk.target_hash[:16]}.",
    ]
    failures = bulk.failed_targets
    if failures:
        lines.append("Failed:")
        for target in failures[:MAX_FAILURES_LISTED]:
            detail = bulk.outcomes[target.case_id].detail
            lines.append(f"- {inert(target.upn or target.label, 120)}: {inert(detail, 200)}")
        if len(failures) > MAX_FAILURES_LISTED:
            lines.append(f"- … and {len(failures) - MAX_FAILURES_LISTED} more (see the audit log)")
        lines.append('Use "Retry failed" on the campaign card: it asks two approvers again.')
    return "\n\n".join(lines)
