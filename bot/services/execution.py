"""Running approved actions: the job queue, starting, taking over, dispatching once, finishing.

Owns :class:`Execution`: every replica claims queued execution jobs from the store; the worker
holding a job starts its request (blast radius counted in the same transaction), sends the
action at most once across every worker (the dispatch mark), verifies and records the result
(the first worker to record it wins) and has it reported. A job whose worker died or was
stopped is taken over: an attempt never sent is run, a sent one is read back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from functools import partial

from bot.domain.approval import Abort, Finish, Refused, Start, may_run
from bot.domain.models import ActionRequest, ActionResult, Case, RequestState
from bot.domain.plans import plan
from bot.errors import ConflictError, RemediationError
from bot.faults import fault_point
from bot.log_context import bind_ids, fresh_ids
from bot.services.audit_log import AuditLog
from bot.services.ports import Ports, ServiceSettings
from bot.services.reporting import Reporter
from bot.services.tasks import renewing
from bot.services.transitions import Transitions
from bot.services.views import CaseViews
from bot.store.base import Job
from bot.tenant.actions import Executor
from bot.tracing import continuing
from bot.web.metrics import Metrics

log = logging.getLogger(__name__)

EXECUTE_JOB = "execute"
# The first line of a correction: a worker that was stopped (not killed) for longer than its
# lease sent the action after another had read the account back and recorded it as not done.
LATE_NOTE = (
    "Correction: the interrupted run took effect after all (the replica running it was paused, "
    "then sent it). The state read back now is below."
)


class Execution:
    """Claims execution jobs and carries each request's attempt through to its report."""

    def __init__(
        self,
        ports: Ports,
        settings: ServiceSettings,
        *,
        audit: AuditLog,
        views: CaseViews,
        transitions: Transitions,
        reporter: Reporter,
        executor: Executor,
        metrics: Metrics,
        replica: str,
    ) -> None:
        self._store = ports.store
        self._directory = ports.directory
        self._clock = ports.clock
        self._settings = settings
        self._audit = audit
        self._views = views
        self._transitions = transitions
        self._reporter = reporter
        self._executor = executor
        self._metrics = metrics
        self._replica = replica
        self._stopping = False

    async def run_jobs(self) -> int:
        """Claim queued executions and run them until none is left; returns how many ran.

        Every replica calls this (after a click, and every few seconds); the store hands each
        job to one worker at a time. The worker renews its lease while it works, so a job is
        claimed again only when its worker died or was stopped for longer than the lease.

        Each claim is a worker of its own (the replica's id and a fresh suffix): a replica runs
        several of these loops at once, and the one that claims a job again after a pause must
        not share the claim with the paused one that held it before, or both would carry on.
        """
        ran = 0
        while not self._stopping:
            worker = f"{self._replica}.{uuid.uuid4().hex[:6]}"
            job = await self._store.claim_job(EXECUTE_JOB, worker, self._settings.job_lease)
            if job is None:
                return ran
            try:
                async with renewing(
                    partial(self._holds, job), self._settings.job_lease, f"execution job {job.key}"
                ):
                    await self._execute(job)
                if not await self._carried_through(job):
                    # Never finish a job whose request is still to run or to report (this worker
                    # lost the job meanwhile): once the lease lapses the next claim carries it on.
                    log.warning(
                        "execution job %s: its request is not finished; left to the next claim", job.key
                    )
                    continue
                await self._store.finish_job(job.key, job.worker)
            except asyncio.CancelledError:
                # Shutting down mid-job: hand it back so another replica takes it at once (a
                # dispatched attempt is read back there, never sent again).
                await self._release(job)
                raise
            except ConflictError:
                log.warning("execution job %s was taken over by another worker", job.key)
                continue
            except Exception:
                # Left unfinished on purpose: once the lease lapses another attempt resumes it.
                log.exception("execution job %s failed; it will be resumed", job.key)
                continue
            ran += 1
        return ran

    def stop(self) -> None:
        """Claim no more jobs (the replica is shutting down); the running one carries on."""
        self._stopping = True

    async def _release(self, job: Job) -> None:
        try:
            await self._store.release_job(job.key, job.worker)
        except RemediationError as exc:
            # Its lease then lapses on its own and another replica takes it over after that.
            log.warning("could not release execution job %s: %s", job.key, exc.message)
        else:
            log.warning("execution job %s released unfinished: another replica takes it over", job.key)

    async def _carried_through(self, job: Job) -> bool:
        """Nothing is left for ``job``: its request ended and was reported (or is gone, or has a
        newer attempt with a job of its own)."""
        request = await self._store.get_request(str(job.payload.get("requestId", "")))
        if request is None or request.idempotency_key != job.key:
            return True
        if request.state in (RequestState.APPROVED, RequestState.EXECUTING):
            return False
        ended = request.state in (RequestState.SUCCEEDED, RequestState.FAILED)
        return not ended or request.reported_attempt >= request.attempt

    async def _holds(self, job: Job) -> bool:
        """Renew this worker's claim on ``job``; ``False`` once another worker has taken it over."""
        return await self._store.renew_job(job.key, job.worker, self._settings.job_lease)

    @fresh_ids(lambda self, job: {"job": job.key, "request_id": job.payload.get("requestId")})
    @continuing("execute action", lambda self, job: job.payload.get("traceparent"))
    async def _execute(self, job: Job) -> None:
        """Carry one execution job on from wherever its request stands.

        - *approved*: start it (blast radius counted and the request claimed in one store
          transaction), send the action once, verify, record the result, report it;
        - *executing*: the worker that started it died or was stopped (its lease lapsed): take
          it over. An attempt never dispatched is run; a dispatched one is read back and never
          sent again;
        - *succeeded* / *failed*: the result is stored; report it if the thread was not told.
        """
        request = await self._store.get_request(str(job.payload.get("requestId", "")))
        if request is None or request.idempotency_key != job.key:
            return  # gone, or a job of an earlier attempt (a retry queued the next one)
        bind_ids(case_id=request.case_id)
        if request.state is RequestState.APPROVED:
            await self._start(request, job)
        elif request.state is RequestState.EXECUTING:
            await self._take_over(request, job)
        elif request.state in (RequestState.SUCCEEDED, RequestState.FAILED):
            await self._reporter.report(request)

    async def _current_approvers(self, request: ActionRequest) -> frozenset[str]:
        """The request's sign-offs who are approvers right now (object ids, lower-case)."""
        current: set[str] = set()
        for signer in request.approvals:
            if (await self._directory.roles_of(signer.object_id)).approver:
                current.add(signer.object_id.lower())
        return frozenset(current)

    async def _start(self, request: ActionRequest, job: Job) -> None:
        start = Start(current_approvers=await self._current_approvers(request))
        fault_point("action.claimed")
        started = await self._transitions.apply(request.id, start)
        case = await self._views.require_case(request.case_id)
        if not started.won:
            latest = started.request
            if latest.state is RequestState.APPROVED:
                # Approved but not allowed to run any more: say so and close the request as failed.
                await self.fail_unstarted(case, latest, started.refusal)
            elif latest.idempotency_key != job.key:
                pass  # an earlier attempt's job
            elif latest.state is RequestState.EXECUTING and await self._holds(job):
                # Started after this worker read it as approved, by one that had lost this job
                # (stopped past its lease): that one sends nothing now, so this one, holding the
                # job, carries it on. Finishing the job here would leave it executing for ever.
                await self._take_over(latest, job)
            elif latest.state in (RequestState.SUCCEEDED, RequestState.FAILED):
                await self._reporter.report(latest)
            return
        await self._audit.write(
            "action.started",
            case=case,
            request=started.request,
            idempotency_key=started.request.idempotency_key,
            attempt=started.request.attempt,
        )
        fault_point("action.started")
        await self._run(case, started.request, job)

    async def _take_over(self, request: ActionRequest, job: Job) -> None:
        """Finish an attempt whose worker stopped: run it if it was never sent, else read back."""
        case = await self._views.require_case(request.case_id)
        log.warning(
            "request %s: its worker stopped before finishing (job claimed %d times); taking it over",
            request.id,
            job.attempts,
        )
        await self._audit.write(
            "action.taken_over",
            case=case,
            request=request,
            attempt=request.attempt,
            dispatched=request.dispatched,
        )
        if request.dispatched:
            await self._resume(case, request)
            return
        # Nothing was sent: it may run now if it still may (expiry and approvers checked again).
        refused = may_run(request, await self._current_approvers(request), self._clock())
        if refused is not None:
            not_run = ActionResult(succeeded=False, summary=f"Not run: {refused.reason}")
            await self._finish(case, request, not_run, "action.failed")
            return
        await self._run(case, request, job)

    async def _run(self, case: Case, request: ActionRequest, job: Job) -> None:
        """Send the attempt's action (at most once across every worker), verify, record, report."""
        steps = plan(request.action, case, request.providers, request.extras)
        if isinstance(steps, Refused):
            result = ActionResult(succeeded=False, summary=steps.reason)
        elif not await self._holds(job):
            log.warning(
                "request %s: this worker lost its job before sending; the new holder runs it", request.id
            )
            return
        elif await self._dispatch(request):
            fault_point("action.dispatched")
            result = await self._executor.run(
                request.action, case, steps, key=request.step_key_base, done=request.done_steps
            )
            fault_point("graph.answered")
        else:
            # Another worker dispatched this attempt first (one that had lost this job and woke
            # up): it is never sent twice. Read it back, unless that worker finished it already.
            latest = await self._store.get_request(request.id)
            if (
                latest is not None
                and latest.state is RequestState.EXECUTING
                and latest.attempt == request.attempt
            ):
                await self._resume(case, latest)
            return
        await self._finish(case, request, result, "action.succeeded" if result.succeeded else "action.failed")

    async def _dispatch(self, request: ActionRequest) -> bool:
        """Mark the attempt dispatched just before its first Graph call; ``False`` if it was already.

        The mark is the fence between a worker and one taking its job over: of the two, only the
        one whose mark is written sends anything. A taker that finds the mark reads back instead.
        """

        def mark(latest: ActionRequest) -> ActionRequest | None:
            if (
                latest.state is not RequestState.EXECUTING
                or latest.attempt != request.attempt
                or latest.dispatched
            ):
                return None
            return latest.model_copy(update={"dispatched": True})

        _, marked = await self._store.swap_request(request.id, mark)
        return marked is not None

    async def _resume(self, case: Case, request: ActionRequest) -> None:
        """Finish a dispatched attempt by reading the state back; nothing is sent again."""
        steps = plan(request.action, case, request.providers, request.extras)
        if isinstance(steps, Refused):
            result = ActionResult(succeeded=False, summary=steps.reason)
        else:
            started = request.started_at or self._clock()
            result = await self._executor.resume(
                request.action, case, steps, started, key=request.step_key_base
            )
        log.warning("request %s resumed after an interruption: %s", request.id, result.summary)
        await self._finish(case, request, result, "action.resumed")

    async def _finish(self, case: Case, request: ActionRequest, result: ActionResult, kind: str) -> None:
        """Record the attempt's result (once: the first worker to record it wins) and report it."""
        bind_ids(correlation_ids=result.correlation_ids, graph_request_id=result.graph_request_id)
        finished = await self._transitions.apply(request.id, Finish(result))
        if not finished.won:
            # This worker was taken over while it ran, and the new one recorded a result first.
            log.warning(
                "request %s: a late result was not recorded (%s): %s",
                request.id,
                finished.refusal,
                result.summary,
            )
            await self._audit.write(
                "action.late_result",
                case=case,
                request=finished.request,
                attempt=request.attempt,
                summary=result.summary,
                verified_state=result.verified_state,
            )
            stored = finished.request.result
            if result.succeeded and stored is not None and not stored.succeeded:
                # The other worker read back before this one's call landed and recorded that it did
                # not take effect: correct the card and the thread rather than leave them wrong.
                late = finished.request.model_copy(update={"result": result})
                await self._reporter.after_result(case.id, late, first=False, prefix=LATE_NOTE)
            return
        request = finished.request
        log.info("request %s %s: %s", request.id, request.state.value, result.summary)
        outcome = "succeeded" if result.succeeded else "failed"
        self._metrics.add("remediation_actions_total", action=request.action.value, outcome=outcome)
        if request.started_at is not None:
            self._metrics.observe(
                "remediation_action_duration_seconds",
                (self._clock() - request.started_at).total_seconds(),
                action=request.action.value,
                outcome=outcome,
            )
        await self._audit.write(
            kind,
            case=case,
            request=request,
            attempt=request.attempt,
            summary=result.summary,
            verified=result.verified,
            verified_state=result.verified_state,
            graph_request_id=result.graph_request_id,
            correlation_ids=result.correlation_ids,
            steps=[step.model_dump(mode="json") for step in result.steps],
        )
        await self._reporter.report(request)

    async def fail_unstarted(self, case: Case, request: ActionRequest, reason: str) -> None:
        """Close an approved request that may not run any more, and say why in the thread."""
        aborted = await self._transitions.apply(request.id, Abort(reason))
        if not aborted.won:
            return
        log.info("request %s not started: %s", request.id, reason)
        await self._audit.write("request.refused", case=case, request=aborted.request, reason=reason)
        # Closing it frees the case for a new request (one active request per case).
        await self._store.update_case(case.id, lambda c: c.revised())
        await self._reporter.report(aborted.request)
