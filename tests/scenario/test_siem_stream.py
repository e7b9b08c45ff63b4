"""The audit trail streamed to the SIEM table: every event, in order, once, across restarts.

The real azure-monitor-ingestion client (through the bot's msal credential) uploads to the
sandbox's Logs Ingestion endpoint, which checks the token, the rule, the stream and the body.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from bot.config.settings import Settings
from bot.errors import ConfigError, RemediationError
from bot.monitor.ingestion import MONITOR_SCOPE, LogsIngestionSink
from bot.services.siem import EXPORT_NAME, AuditStream
from bot.store import open_store
from bot.store.base import Store
from bot.web.app import STORE, create_app, graph_tokens
from devtools.sandbox import SandboxTenant
from devtools.sandbox.ingestion import RULE_ID, STREAM


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[Store]:
    settings = make_settings()
    opened = await open_store(settings.store_url.get_secret_value(), audit_key=settings.audit_key)
    yield opened
    await opened.close()


def sink(tenant: SandboxTenant, settings: Settings, *, rule: str = RULE_ID) -> LogsIngestionSink:
    return LogsIngestionSink(
        tenant.authority_host,
        rule,
        STREAM,
        graph_tokens(settings, MONITOR_SCOPE),
        ca_bundle=str(tenant.ca_pem_path),
        retries=0,
    )


async def record(store: Store, count: int) -> None:
    for n in range(count):
        await store.append_audit(
            at=datetime.now(UTC),
            kind="case.opened",
            actor_id="remediation-bot",
            actor_name="remediation-bot",
            case_id=f"case-{n}",
            identity=f"user{n}@contoso.com",
            payload={"n": n, "title": 'Password spray ⟂ \\u0000 "quoted"'},
        )


async def test_every_event_reaches_the_table_in_order_with_its_chain(
    store: Store, tenant: SandboxTenant, make_settings: Callable[..., Settings]
) -> None:
    await record(store, 7)
    upload = sink(tenant, make_settings())
    try:
        shipped = await AuditStream(store, upload, batch=3).ship()
        assert await AuditStream(store, upload, batch=3).ship() == 0  # nothing new, nothing again
    finally:
        await upload.close()

    rows = tenant.ingestion.received
    assert shipped == 7 and [row["Sequence"] for row in rows] == list(range(1, 8))
    assert tenant.ingestion.batches == 3
    assert rows[2]["Kind"] == "case.opened" and rows[2]["Identity"] == "user2@contoso.com"
    assert rows[2]["Payload"]["title"] == 'Password spray ⟂ \\u0000 "quoted"'
    # The table's rows chain as the store's events do: each names the hash before it.
    assert all(later["PreviousHash"] == earlier["Hash"] for earlier, later in itertools.pairwise(rows))


async def test_a_refused_batch_is_resent_after_a_restart_and_nothing_twice(
    store: Store, tenant: SandboxTenant, make_settings: Callable[..., Settings]
) -> None:
    await record(store, 12)
    # The second upload is refused (the endpoint or the network fails mid-stream).
    tenant.inject_fault("POST", r"^/dataCollectionRules/", status=None, times=1)
    tenant.inject_fault("POST", r"^/dataCollectionRules/", status=400, times=1)
    first = sink(tenant, make_settings())
    try:
        with pytest.raises(RemediationError, match="refused 5 audit record"):
            await AuditStream(store, first, batch=5).ship()
    finally:
        await first.close()
    assert [row["Sequence"] for row in tenant.ingestion.received] == [1, 2, 3, 4, 5]
    assert await store.export_cursor(EXPORT_NAME) == 5

    # A new process (a restart) resumes at the cursor.
    second = sink(tenant, make_settings())
    try:
        assert await AuditStream(store, second, batch=5).ship() == 7
    finally:
        await second.close()
    assert [row["Sequence"] for row in tenant.ingestion.received] == list(range(1, 13))


async def test_two_replicas_never_move_the_cursor_backwards(store: Store) -> None:
    assert await store.advance_export_cursor(EXPORT_NAME, 0, 10)
    assert not await store.advance_export_cursor(EXPORT_NAME, 0, 5)  # a late replica's batch
    assert await store.export_cursor(EXPORT_NAME) == 10


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("dcr-not-the-rule", "404"), (RULE_ID, "")],
)
async def test_a_wrong_rule_is_refused_in_words(
    store: Store, tenant: SandboxTenant, make_settings: Callable[..., Settings], rule: str, expected: str
) -> None:
    await record(store, 1)
    upload = sink(tenant, make_settings(), rule=rule)
    outcome: Any
    try:
        outcome = await AuditStream(store, upload).ship()
    except RemediationError as exc:
        outcome = exc.message
    finally:
        await upload.close()
    if expected:
        assert expected in str(outcome) and await store.export_cursor(EXPORT_NAME) == 0
    else:
        assert outcome == 1


async def test_the_serving_bot_streams_its_trail_on_its_own(
    make_settings: Callable[..., Settings], tenant: SandboxTenant, clock: Any
) -> None:
    """create_app with its background loops: the stream runs as the leader, every interval."""
    settings = make_settings(
        audit_ingestion_endpoint=tenant.authority_host,
        audit_ingestion_rule_id=RULE_ID,
        audit_ingestion_interval_seconds=0.1,
        poll_interval_seconds=3600,
    )
    app = create_app(settings, clock=clock, poll=True)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        store = app[STORE]
        await record(store, 3)
        stored = [event.sequence for event in await store.list_audit()]
        for _ in range(200):
            if len(tenant.ingestion.received) >= len(stored):
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    # Every event recorded so far went out, in order, once (the poll at start may add more).
    sent = [row["Sequence"] for row in tenant.ingestion.received]
    assert len(stored) >= 3 and sent[: len(stored)] == stored
    assert sent == list(range(1, len(sent) + 1))


def test_half_a_stream_configuration_names_what_is_missing(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="AUDIT_INGESTION_RULE_ID"):
        make_settings(audit_ingestion_endpoint="https://dce.westeurope-1.ingest.monitor.azure.com")
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        make_settings(audit_ingestion_endpoint="http://dce.example", audit_ingestion_rule_id=RULE_ID)
