"""The composition root: builds the aiohttp application and wires every part together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from aiohttp import web

from bot.config.policy_file import policy_from_settings
from bot.config.settings import Settings
from bot.domain.policy import Policy
from bot.errors import RemediationError, StoreError
from bot.graph import GraphClient, TokenProvider, build_http_client
from bot.graph.auth import GRAPH_DEFAULT_SCOPE
from bot.graph.signin import EntraSignIn
from bot.monitor.ingestion import MONITOR_SCOPE, LogsIngestionSink
from bot.services import Ports, RemediationService, ServiceSettings
from bot.services.siem import AuditStream
from bot.store import open_store
from bot.store.base import Store
from bot.teams.edge import TeamsTransport, handle_activity
from bot.teams.routing import ActivityRouter
from bot.tenant.directory import Directory
from bot.tenant.intake import WATERMARK_KEY, AlertPoller
from bot.web.approval_page import ApprovalPage
from bot.web.jsonguard import UnsafeJson, load_json, read_at_most
from bot.web.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bot.web.metrics import Metrics
from bot.web.push import MAX_BODY_BYTES as MAX_PUSH_BYTES
from bot.web.push import PushAuthenticator, Rejection, parse_push
from cards.case import PortalLinks

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", RemediationService)
STORE = web.AppKey("store", Store)
POLLER = web.AppKey("poller", AlertPoller)
BOT = web.AppKey("bot", ActivityRouter)
SWEEP_INTERVAL_SECONDS = 30.0  # expiry and reminders are minutes-scale; half a minute is precise enough
# On SIGTERM: how long requests being answered may still take (the listener is closed first), and
# how long background work may still run before it is cancelled (its job released): the process
# exits within about five seconds (container platforms send SIGKILL after their own grace).
SHUTDOWN_REQUEST_SECONDS = 1.5
SHUTDOWN_GRACE_SECONDS = 2.0


def graph_tokens(settings: Settings, scope: str = GRAPH_DEFAULT_SCOPE) -> TokenProvider:
    """The bot's credential the settings choose (managed identity, certificate or client secret),
    for Graph or, with ``scope``, another Microsoft API (Azure Monitor's ingestion)."""
    if settings.graph_managed_identity:
        return TokenProvider(
            tenant_id=settings.graph_tenant_id,
            client_id=settings.graph_client_id,
            managed_identity=settings.graph_managed_identity,
            authority_host=settings.graph_authority_host,
            ca_bundle=settings.graph_ca_bundle or None,
            scope=scope,
        )
    return TokenProvider(
        tenant_id=settings.graph_tenant_id,
        client_id=settings.graph_client_id,
        client_secret=settings.graph_client_secret.get_secret_value() or None,
        certificate_path=settings.graph_certificate_path or None,
        certificate_thumbprint=settings.graph_certificate_thumbprint or None,
        authority_host=settings.graph_authority_host,
        ca_bundle=settings.graph_ca_bundle or None,
        scope=scope,
    )


# Azure Database for PostgreSQL's Entra ID resource: its tokens are the connections' passwords.
POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


def database_password(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> Callable[[], Awaitable[str]] | None:
    """With STORE_ENTRA_AUTH, what gives each database connection its password (an Entra ID
    token of the bot's credential, closed with ``stack``); ``None`` otherwise."""
    if not settings.store_entra_auth:
        return None
    tokens = graph_tokens(settings, POSTGRES_SCOPE)
    stack.push_async_callback(tokens.aclose)
    return tokens.token


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def teams_transport(settings: Settings) -> TeamsTransport:
    """The Teams transport ``TEAMS_SDK`` names: botbuilder (the default) or the Microsoft 365
    Agents SDK. Both answer ``/api/messages`` and send cards through :mod:`bot.teams.edge` and
    the same retry and pacing rules; README "Teams SDK" says what differs."""
    if settings.teams_sdk == "agents":
        from bot.teams_agents.transport import AgentsTransport

        return AgentsTransport(settings)
    from bot.teams.adapter import BotbuilderTransport

    return BotbuilderTransport(settings)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    graph: GraphClient | None = None,
    clock: Callable[[], datetime] = utc_now,
    poll: bool = True,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> web.Application:
    """The bot's aiohttp application.

    ``store`` and ``graph`` default to the real ones built from ``settings``; ``poll=False``
    leaves polling to the caller (tests drive :meth:`AlertPoller.poll_once` themselves).
    ``monotonic`` and ``sleep`` time the coalescing of card updates (tests move them).
    The HTTP client and the store are opened and closed by the app's ``cleanup_ctx``.
    """
    policy = policy_from_settings(settings)
    page = _approval_page(settings, policy, clock)
    app = web.Application(client_max_size=1024 * 1024, middlewares=[page.headers] if page else [])
    transport = teams_transport(settings)
    messenger = transport.messenger
    links = PortalLinks(defender=settings.defender_portal_url, entra=settings.entra_portal_url)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            the_store = store or await open_store(
                settings.store_url.get_secret_value(),
                audit_key=settings.audit_key,
                password=database_password(settings, stack),
            )
            if store is None:
                stack.push_async_callback(the_store.close)
            the_graph = graph
            if the_graph is None:
                http = build_http_client(
                    ca_bundle=settings.graph_ca_bundle or None, timeout=settings.graph_timeout_seconds
                )
                stack.push_async_callback(http.aclose)
                tokens = graph_tokens(settings)
                stack.push_async_callback(tokens.aclose)
                the_graph = GraphClient(
                    http,
                    tokens,
                    settings.graph_base_url,
                    identity_protection_interval=settings.graph_identity_protection_interval,
                )
            service = RemediationService(
                Ports(
                    store=the_store,
                    graph=the_graph,
                    directory=Directory(the_graph, policy, clock=clock),
                    messenger=messenger,
                    policy=policy,
                    clock=clock,
                    monotonic=monotonic,
                    sleep=sleep,
                ),
                ServiceSettings(
                    channel_id=settings.teams_channel_id,
                    links=links,
                    recheck_after=timedelta(seconds=settings.verify_recheck_seconds),
                    alert_status=settings.alert_status_after_action,
                    coalesce_seconds=settings.card_update_coalesce_seconds,
                    job_lease=timedelta(seconds=settings.job_lease_seconds),
                    card_lease=timedelta(seconds=settings.card_lease_seconds),
                    approval_page_url=settings.approval_page_base if page else "",
                    batch_concurrency=settings.graph_batch_concurrency,
                ),
            )
            poller = AlertPoller(
                the_graph,
                the_store,
                service.ingest,
                clock=clock,
                lookback=timedelta(minutes=settings.poll_lookback_minutes),
            )
            the_graph.observe(service.metrics.graph_call)
            messenger.observe_pacing(service.metrics.pacing_wait)
            if settings.metrics_port:
                await _serve_metrics(stack, service.metrics, settings, the_store, clock)
            app[SERVICE] = service
            app[STORE] = the_store
            app[POLLER] = poller
            app[BOT] = ActivityRouter(service, settings.tenant_id)
            if page is not None:
                stack.push_async_callback(page.aclose)
            # On SIGTERM (begun as soon as the listener closes, see stop_taking_work; awaited here,
            # after the loops below are cancelled): no new jobs are claimed, running work gets a
            # short grace, then is cancelled and its execution job released to another replica.
            stack.push_async_callback(finish_background_work, service)
            if poll:
                # Several replicas may run; only the one holding the store's lock polls.
                poll_as_leader = _as_leader(the_store, "poller", poller.poll_once, "polling")
                polling = asyncio.create_task(_every(settings.poll_interval_seconds, poll_as_leader, "poll"))
                stack.push_async_callback(_cancel, polling)
                # The sweep also sends the cards a dead replica left unsent: at least once per
                # card lease, so they wait no longer than the lease after it lapses.
                sweep_every = min(SWEEP_INTERVAL_SECONDS, settings.card_lease_seconds)
                sweeping = asyncio.create_task(_every(sweep_every, service.sweep, "sweep"))
                stack.push_async_callback(_cancel, sweeping)
                working = asyncio.create_task(_every(settings.job_poll_seconds, service.run_jobs, "jobs"))
                stack.push_async_callback(_cancel, working)
                if settings.audit_ingestion_endpoint:
                    streaming = await _stream_audit(stack, settings, the_store)
                    stack.push_async_callback(_cancel, streaming)
            yield

    app.cleanup_ctx.append(resources)
    # The background work's shutdown, started while requests being answered still finish (in
    # parallel rather than after them: the two waits together stay within the five seconds).
    stopping: list[asyncio.Task[None]] = []

    async def stop_taking_work(app: web.Application) -> None:
        service = app.get(SERVICE)
        if service is not None and not stopping:
            stopping.append(asyncio.create_task(service.shutdown(SHUTDOWN_GRACE_SECONDS)))

    async def finish_background_work(service: RemediationService) -> None:
        if not stopping:
            stopping.append(asyncio.create_task(service.shutdown(SHUTDOWN_GRACE_SECONDS)))
        await stopping[0]

    app.on_shutdown.append(stop_taking_work)

    async def messages(request: web.Request) -> web.Response:
        return await handle_activity(
            request, transport.inbound, request.app[BOT], authenticate=settings.auth_enabled
        )

    authenticator = (
        PushAuthenticator(push_secret)
        if (push_secret := settings.push_shared_secret.get_secret_value())
        else None
    )

    async def alerts(request: web.Request) -> web.Response:
        return await handle_push(request, request.app[SERVICE], authenticator, clock, request.app[STORE])

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        # Ready = the store answers and the incident channel is known (cards can be posted).
        try:
            version = await request.app[STORE].schema_version()
            channel = await request.app[STORE].get_channel()
        except RemediationError as exc:
            return web.json_response({"status": "unavailable", "reason": exc.message}, status=503)
        if channel is None:
            reason = "the bot has not been installed in the team of TEAMS_CHANNEL_ID yet"
            return web.json_response({"status": "waiting", "reason": reason, "schema": version}, status=503)
        return web.json_response({"status": "ready", "schema": version})

    async def metrics(request: web.Request) -> web.Response:
        return await _scrape(request.app[SERVICE].metrics, request.app[STORE], clock)

    app.router.add_post("/api/messages", messages)
    app.router.add_post("/api/alerts", alerts)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if settings.metrics_on_main_port:
        app.router.add_get("/metrics", metrics)
    if page is not None:
        app.router.add_routes(page.routes())
    return app


def _approval_page(settings: Settings, policy: Policy, clock: Callable[[], datetime]) -> ApprovalPage | None:
    """The approval page when ``APPROVAL_PAGE_URL`` is set (off otherwise: no route, no link)."""
    if not settings.approval_page_base:
        return None
    key = settings.approval_page_session_key.get_secret_value()
    if not key:
        # SANDBOX_MODE only (settings require the key otherwise): sessions end with the process.
        key = secrets.token_urlsafe(32)
    sign_in = EntraSignIn(
        tenant_id=settings.graph_tenant_id,
        client_id=settings.graph_client_id,
        redirect_uri=settings.approval_redirect_uri,
        http=build_http_client(
            ca_bundle=settings.graph_ca_bundle or None, timeout=settings.graph_timeout_seconds
        ),
        clock=clock,
        client_secret=settings.graph_client_secret.get_secret_value() or None,
        certificate_path=settings.graph_certificate_path or None,
        certificate_thumbprint=settings.graph_certificate_thumbprint or None,
        authority_host=settings.graph_authority_host,
        ca_bundle=settings.graph_ca_bundle or None,
    )
    return ApprovalPage(
        service=lambda request: request.app[SERVICE],
        store=lambda request: request.app[STORE],
        sign_in=sign_in,
        policy=policy,
        base_url=settings.approval_page_base,
        session_key=key,
        session_minutes=settings.approval_page_session_minutes,
        clock=clock,
    )


async def _scrape(metrics: Metrics, store: Store, clock: Callable[[], datetime]) -> web.Response:
    """``GET /metrics``: the gauges read from the store now, then every metric."""
    now = clock()
    try:
        backlog = await store.job_backlog()
        metrics.set_backlog(backlog.pending, backlog.oldest_enqueued_at, now)
        metrics.set_poll_lag(await store.get_watermark(WATERMARK_KEY), now)
    except RemediationError as exc:
        # The counters and histograms still tell something; the gauges keep their last value.
        log.warning("metrics: the store could not be read for the gauges: %s", exc.message)
    return web.Response(body=metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _serve_metrics(
    stack: contextlib.AsyncExitStack,
    metrics: Metrics,
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime],
) -> None:
    """``/metrics`` alone on ``METRICS_HOST:METRICS_PORT``, away from the public port."""

    async def scrape(request: web.Request) -> web.Response:
        return await _scrape(metrics, store, clock)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)


def _push_error(status: int, code: str, message: str, details: Sequence[dict[str, str]] = ()) -> web.Response:
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return web.json_response({"error": error}, status=status)


async def handle_push(
    request: web.Request,
    service: RemediationService,
    authenticator: PushAuthenticator | None,
    clock: Callable[[], datetime],
    store: Store,
) -> web.Response:
    """``POST /api/alerts``: 202 when stored (idempotent by alert id), else a precise error.

    The order is what keeps hostile input harmless: sizes, then the JSON read safely (depth,
    Unicode) before any signature work, then the signature, then every item validated, then the
    replay claimed in the store (so a copy of the request is refused by every replica), and only
    then are the alerts stored; if that fails the claim is released so the sender may retry.
    Anything unexpected is logged with its stack and answered with a JSON 500, never a bare page.
    """
    try:
        return await _push(request, service, authenticator, clock, store)
    except Exception:
        log.exception("push: unexpected failure from %s", request.remote)
        return _push_error(
            500, "InternalError", "The bot failed to handle this request; nothing was stored. Try again."
        )


async def _push(
    request: web.Request,
    service: RemediationService,
    authenticator: PushAuthenticator | None,
    clock: Callable[[], datetime],
    store: Store,
) -> web.Response:
    if authenticator is None:
        return _push_error(404, "NotEnabled", "Push intake is off: set PUSH_SHARED_SECRET to turn it on.")
    if request.content_type != "application/json":
        return _push_error(415, "UnsupportedMediaType", "Send alerts as application/json.")
    if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
        return _push_error(413, "PayloadTooLarge", f"At most {MAX_PUSH_BYTES} bytes per request.")
    body = await read_at_most(request.content.iter_chunked(64 * 1024), MAX_PUSH_BYTES)
    if body is None:
        return _push_error(413, "PayloadTooLarge", f"At most {MAX_PUSH_BYTES} bytes per request.")
    try:
        data = load_json(body)
    except UnsafeJson as exc:
        return _push_error(400, "BadRequest", exc.message)
    refused = authenticator.check(request.headers, body)
    if refused is not None:
        log.warning("push refused from %s: %s", request.remote, refused.message)
        return _push_error(refused.status, "Unauthorized", refused.message)
    parsed = parse_push(data, now=clock)
    if isinstance(parsed, Rejection):
        return _push_error(
            parsed.status,
            "BadRequest" if parsed.status == 400 else "PayloadTooLarge",
            parsed.message,
            parsed.errors,
        )
    claim = authenticator.replay_claim(request.headers)
    try:
        fresh = await store.claim_replay(claim.key, expires_at=claim.expires_at, now=utc_now())
    except RemediationError as exc:
        log.error("push: the replay check failed: %s", exc.message)
        return _push_error(503, "Unavailable", "The bot's store is unavailable; send the request again.")
    if not fresh:
        log.warning("push refused from %s: a replay of a request already received", request.remote)
        return _push_error(401, "Unauthorized", "This signed request was already received (replay).")
    try:
        changed = await service.ingest(parsed, publish=False)
    except BaseException as exc:
        # Nothing (or nothing lasting) was stored: let the sender retry this very request.
        await _release(store, claim.key)
        if not isinstance(exc, RemediationError):
            raise
        log.error("push: storing %d alert(s) failed: %s", len(parsed), exc.message)
        return _push_error(503, "Unavailable", "The alerts could not be stored; send the request again.")
    service.schedule_publish()
    return web.json_response({"accepted": len(parsed), "newOrChanged": changed}, status=202)


async def _release(store: Store, key: str) -> None:
    try:
        await store.release_replay(key)
    except RemediationError as exc:
        # The claim then expires on its own; until then a retry of the same request is refused.
        log.error("push: the replay claim could not be released: %s", exc.message)


async def _stream_audit(
    stack: contextlib.AsyncExitStack, settings: Settings, store: Store
) -> asyncio.Task[None]:
    """Ship the audit trail to the SIEM table every AUDIT_INGESTION_INTERVAL_SECONDS (leader only)."""
    sink = LogsIngestionSink(
        settings.audit_ingestion_endpoint,
        settings.audit_ingestion_rule_id,
        settings.audit_ingestion_stream,
        graph_tokens(settings, MONITOR_SCOPE),
        ca_bundle=settings.graph_ca_bundle or None,
    )
    stack.push_async_callback(sink.close)
    stream = AuditStream(store, sink)

    ship_as_leader = _as_leader(store, "audit-stream", stream.ship, "streaming the audit trail")
    return asyncio.create_task(
        _every(settings.audit_ingestion_interval_seconds, ship_as_leader, "audit stream")
    )


def _as_leader(
    store: Store, role: str, work: Callable[[], Awaitable[int]], doing: str
) -> Callable[[], Awaitable[int]]:
    """``work``, run only by the replica holding the store's ``role`` lock (0 on the others)."""

    async def run() -> int:
        try:
            if not await store.try_lead(role):
                return 0
        except StoreError as exc:
            log.warning("leadership unknown (%s); not %s this round", exc.message, doing)
            return 0
        return await work()

    return run


async def _every(interval: float, work: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``work`` every ``interval`` seconds; one failure is logged and never stops the loop."""
    while True:
        try:
            done = await work()
            if name == "poll" and done:
                log.info("poll: %s new or changed identity alert(s)", done)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.0f s", name, interval)
        await asyncio.sleep(interval)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
