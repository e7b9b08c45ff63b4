"""The use cases composed into the one object the transport and the app talk to.

Owns :class:`RemediationService`: it builds each use case from the ports and settings, shares
the plumbing between them (audit log, task supervisor, transitions, card views, metrics, this
replica's id) and exposes their public verbs. It holds no behaviour of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from functools import partial
from typing import Any

from bot.domain.approval import Event
from bot.domain.authn import TEAMS_CLICK, Authentication
from bot.domain.models import ActionRequest, Actor, Alert, Case, ChannelRef, ResponseAction
from bot.domain.policy import ActorRoles
from bot.services.audit_log import AuditLog
from bot.services.bulk import BulkExecution
from bot.services.campaigns import CAMPAIGN_VERBS, CampaignDesk
from bot.services.channel import IncidentChannel
from bot.services.clicks import Clicks
from bot.services.enrichment import Enricher
from bot.services.execution import Execution
from bot.services.intake import Intake
from bot.services.ports import BulkActions, CardAnswer, Ports, ServiceSettings
from bot.services.publishing import Publisher
from bot.services.queries import Queries
from bot.services.reporting import Reporter
from bot.services.sweeper import Sweeper
from bot.services.tasks import TaskSupervisor
from bot.services.transitions import Transition, Transitions
from bot.services.views import CaseViews
from bot.tenant.actions import Executor
from bot.tenant.batch import GraphBatcher
from bot.tenant.bulk import BulkActions as GraphBulkActions
from bot.tenant.resolver import IdentityResolver
from bot.tracing import span
from bot.web.metrics import Metrics

# The verbs a card click may carry; any other is labelled "other" (a metric label stays bounded).
CARD_VERBS = frozenset(
    {"refresh", "approve", "reject", "cancel", "retry", *(a.value for a in ResponseAction), *CAMPAIGN_VERBS}
)


class RemediationService:
    """The bot's behaviour, wired to its ports by :func:`bot.web.app.create_app`."""

    def __init__(
        self, ports: Ports, settings: ServiceSettings, *, bulk_actions: BulkActions | None = None
    ) -> None:
        replica = uuid.uuid4().hex[:8]
        self.metrics = Metrics()
        self.tasks = TaskSupervisor()
        audit = AuditLog(ports.store, ports.clock)
        views = CaseViews(ports.store, ports.directory, settings.links, settings.approval_page_url)
        self.views = views
        self.transitions = Transitions(ports.store, ports.policy, ports.clock)
        executor = Executor(ports.graph, ports.clock, recheck_after=settings.recheck_after)
        enricher = Enricher(ports.store, ports.graph, ports.directory, ports.clock)
        self.publisher = Publisher(
            ports,
            settings,
            views=views,
            enricher=enricher,
            tasks=self.tasks,
            metrics=self.metrics,
            replica=replica,
        )
        reporter = Reporter(ports, settings, audit=audit, views=views, publisher=self.publisher)
        self.execution = Execution(
            ports,
            settings,
            audit=audit,
            views=views,
            transitions=self.transitions,
            reporter=reporter,
            executor=executor,
            metrics=self.metrics,
            replica=replica,
        )
        resolver = IdentityResolver(ports.graph, ports.clock)
        self.intake = Intake(
            ports, audit=audit, resolver=resolver, publisher=self.publisher, metrics=self.metrics
        )
        self.clicks = Clicks(
            ports,
            settings,
            audit=audit,
            views=views,
            transitions=self.transitions,
            publisher=self.publisher,
            execution=self.execution,
            tasks=self.tasks,
            metrics=self.metrics,
        )
        self.sweeper = Sweeper(
            ports,
            audit=audit,
            views=views,
            transitions=self.transitions,
            intake=self.intake,
            publisher=self.publisher,
            reporter=reporter,
            executor=executor,
        )
        self.campaigns = CampaignDesk(
            ports,
            settings,
            audit=audit,
            publisher=self.publisher,
            enricher=enricher,
            transitions=self.transitions,
            tasks=self.tasks,
            metrics=self.metrics,
            replica=replica,
        )
        self.publisher.campaign_cards = self.campaigns.publish_campaigns
        reporter.campaign_changed = partial(self.campaigns.touch, urgent=False)
        self.bulk = BulkExecution(
            ports,
            settings,
            audit=audit,
            desk=self.campaigns,
            transitions=self.transitions,
            enricher=enricher,
            executor=executor,
            # Graph JSON batching (bot.tenant.bulk); OneByOne runs the single executor per identity.
            actions=bulk_actions
            or GraphBulkActions(
                ports.graph,
                clock=ports.clock,
                batcher=GraphBatcher(ports.graph, concurrency=settings.batch_concurrency),
                recheck_after=settings.recheck_after,
            ),
            metrics=self.metrics,
            replica=replica,
        )
        self.campaigns.on_approved = self.bulk.run_jobs
        self._bulk_runner: asyncio.Task[Any] | None = None
        self.channel_registry = IncidentChannel(ports, settings, audit=audit, metrics=self.metrics)
        self.queries = Queries(ports)

    # -- background work ----------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> Any:
        """Run ``work`` in the background (see :class:`TaskSupervisor`)."""
        return self.tasks.spawn(work, name=name)

    async def drain(self) -> None:
        """Wait for background work (executions, card updates, replies) to finish."""
        await self.tasks.drain()

    async def shutdown(self, grace: float) -> None:
        """Stop taking work, give what runs ``grace`` seconds, then cancel it (releasing its jobs)."""
        self.execution.stop()
        self.bulk.stop()
        await self.tasks.drain(grace)

    # -- the verbs of each use case -----------------------------------------------------------

    async def register_channel(self, channel: ChannelRef, *, actor: Actor | None = None) -> bool:
        """See :meth:`IncidentChannel.register_channel`."""
        return await self.channel_registry.register_channel(channel, actor=actor)

    async def refuse_activity(self, reason: str, **details: str) -> None:
        """See :meth:`IncidentChannel.refuse_activity`."""
        await self.channel_registry.refuse_activity(reason, **details)

    async def ingest(self, alerts: Sequence[Alert], *, publish: bool = True) -> int:
        """See :meth:`Intake.ingest`."""
        return await self.intake.ingest(alerts, publish=publish)

    async def settle_unresolved(self) -> int:
        """See :meth:`Intake.settle_unresolved`."""
        return await self.intake.settle_unresolved()

    async def contain(self, actor: Actor, upn: str) -> str:
        """See :meth:`Intake.contain`."""
        return await self.intake.contain(actor, upn)

    def schedule_publish(self) -> None:
        """See :meth:`Publisher.schedule_publish`."""
        self.publisher.schedule_publish()

    async def publish_cards(self) -> None:
        """See :meth:`Publisher.publish_cards`."""
        await self.publisher.publish_cards()

    async def handle_card_action(
        self, actor: Actor, verb: str, data: Mapping[str, Any], *, via: Authentication = TEAMS_CLICK
    ) -> CardAnswer:
        """See :meth:`Clicks.handle_card_action` (case cards) and :meth:`CampaignDesk.handle`
        (campaign cards); timed for the invoke histogram."""
        started = time.perf_counter()
        outcome = "failed"
        label = verb if verb in CARD_VERBS else "other"
        try:
            with span("card click", verb=label):
                if verb in CAMPAIGN_VERBS:
                    answer = await self.campaigns.handle(actor, verb, data, via=via)
                else:
                    answer = await self.clicks.handle_card_action(actor, verb, data, via=via)
            outcome = f"http_{answer.error_status}" if answer.error_status else "answered"
            return answer
        finally:
            self.metrics.observe(
                "remediation_invoke_duration_seconds",
                time.perf_counter() - started,
                verb=label,
                outcome=outcome,
            )

    async def transition(self, request_id: str, event: Event) -> Transition:
        """See :meth:`Transitions.apply`."""
        return await self.transitions.apply(request_id, event)

    async def run_jobs(self) -> int:
        """See :meth:`Execution.run_jobs`; bulk jobs (:meth:`BulkExecution.run_jobs`) run in a
        task of their own, so a long bulk action never holds up single executions."""
        if self._bulk_runner is None or self._bulk_runner.done():
            self._bulk_runner = self.tasks.spawn(self.bulk.run_jobs(), name="bulk-jobs")
        return await self.execution.run_jobs()

    async def sweep(self) -> None:
        """See :meth:`Sweeper.sweep` and :meth:`CampaignDesk.sweep`."""
        await self.sweeper.sweep()
        await self.campaigns.sweep()

    async def roles_of(self, object_id: str) -> ActorRoles:
        """See :meth:`Queries.roles_of`."""
        return await self.queries.roles_of(object_id)

    async def pending_requests(self) -> list[tuple[Case, ActionRequest]]:
        """See :meth:`Queries.pending_requests`."""
        return await self.queries.pending_requests()

    async def history(self, upn: str) -> list[Any]:
        """See :meth:`Queries.history`."""
        return await self.queries.history(upn)

    async def thread_of_card(self, activity_id: str) -> str | None:
        """See :meth:`Queries.thread_of_card`."""
        return await self.queries.thread_of_card(activity_id)

    async def channel(self) -> ChannelRef | None:
        """See :meth:`Queries.channel`."""
        return await self.queries.channel()
