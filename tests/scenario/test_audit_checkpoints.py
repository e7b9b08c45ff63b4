"""The audit checkpoint in the thread: after an action the result reply carries the trail's head,
and an auditor holding those lines can tell when the newest events are later cut off."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.config.settings import Settings
from bot.domain.audit import SANDBOX_AUDIT_KEY, AuditKey, parse_checkpoint
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, Clock
from tests.scenario.test_approvals import Channel
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness

KEY_SECRET = "the deployment's audit key from Key Vault - 32+ chars"
KEY = AuditKey.from_secret(KEY_SECRET)
LINE = re.compile(r"Audit checkpoint #\d+ · [0-9a-f]{16} · k-[0-9a-f]{12} · mac [0-9a-f]{16}")


@pytest.fixture
async def start_channel(
    make_settings: Callable[..., Settings],
    clock: Clock,
    tenant: SandboxTenant,
    connector: RecordingConnector,
) -> AsyncIterator[Callable[..., Awaitable[Channel]]]:
    started: list[BotHarness] = []

    async def start(**settings: object) -> Channel:
        harness = BotHarness(make_settings(**settings), clock)
        await harness.start()
        started.append(harness)
        channel = Channel(harness, connector, tenant)
        await channel.open()
        return channel

    yield start
    for harness in started:
        await harness.stop()


def _result_reply(channel: Channel, name: str) -> str:
    replies = [text for text in channel.thread(name) if "Result:" in text]
    assert replies, f"no result reply under {name}'s card"
    return replies[-1]


async def _cli(*argv: str) -> int:
    # The CLI runs its own event loop, so it runs beside this one, as an auditor's shell would.
    return await asyncio.to_thread(main, list(argv))


async def test_the_result_reply_carries_a_checkpoint_an_auditor_verifies_against(
    start_channel: Callable[..., Awaitable[Channel]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channel = await start_channel(audit_hmac_key=KEY_SECRET)

    await channel.click("Lee Gu", RESPONDER, "disableAccount", reason="leaked credentials")

    reply = _result_reply(channel, "Lee Gu")
    assert "**Disable account succeeded**" in reply
    found = LINE.search(reply)
    assert found is not None, reply
    assert reply.endswith(found.group(0)), "the checkpoint is the reply's last line"
    checkpoint = parse_checkpoint(found.group(0))
    assert checkpoint.key_id == KEY.key_id
    store = channel.bot.app[STORE]
    events = await store.list_audit()
    # The checkpoint covers the action's own result: its event is at or before the head.
    result = next(e for e in events if e.kind == "action.succeeded")
    assert result.sequence <= checkpoint.sequence
    assert events[checkpoint.sequence - 1].hash.startswith(checkpoint.hash)
    verdict = await store.verify_audit(checkpoints=[checkpoint])
    assert verdict.ok and verdict.checkpoints == 1

    # The auditor copies the thread's line into a file, with only the key and the database.
    await channel.bot.stop()
    lines = tmp_path / "checkpoints.txt"
    lines.write_text(found.group(0) + "\n", encoding="utf-8")
    monkeypatch.setenv("AUDIT_HMAC_KEY", KEY_SECRET)
    url = channel.bot.settings.store_url.get_secret_value()
    capsys.readouterr()
    assert await _cli("audit", "verify", "--store-url", url, "--checkpoints", str(lines)) == 0
    assert "1 checkpoint matched" in capsys.readouterr().out

    # Someone with the database (but not the key) cuts off the trail from the action's result on.
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        db.execute("DELETE FROM audit_events WHERE sequence >= ?", (result.sequence,))
    db.close()

    assert await _cli("audit", "verify", "--store-url", url) == 0, "without the checkpoint: unnoticed"
    capsys.readouterr()
    assert await _cli("audit", "verify", "--store-url", url, "--checkpoints", str(lines)) == 5
    out = capsys.readouterr().out
    assert out.startswith(
        f"audit chain broken: the trail ends at event {result.sequence - 1}, "
        f"but checkpoint #{checkpoint.sequence} was published"
    )
    assert "(truncated)" in out


async def test_the_demo_checkpoint_names_the_public_sandbox_key(
    start_channel: Callable[..., Awaitable[Channel]],
) -> None:
    channel = await start_channel()

    await channel.click("Lee Gu", RESPONDER, "disableAccount", reason="leaked credentials")

    found = LINE.search(_result_reply(channel, "Lee Gu"))
    assert found is not None
    assert parse_checkpoint(found.group(0)).key_id == SANDBOX_AUDIT_KEY.key_id
