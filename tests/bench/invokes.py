"""Card clicks against the bot as its own process, authentication on, beside a bare echo bot.

For each store size (only the cases clicked on, or those plus a year of history: 10,000 closed
cases and 10,000 finished requests) and each concurrency (1, 20, 200 clickers), one bot process
serves a pool of as many cases as there are clickers, and the benchmark measures:

- **refused clicks**: someone who is not a responder clicks "Disable account" (refused, nothing
  changes);
- **request clicks**: a responder asks for "Disable account" (or "Re-enable" on a contained
  case), which needs a second approver: the request is stored and announced;
- **approvals that execute**: the second approver approves; the account is changed through Graph,
  read back, the card updated, the thread told and the alerts commented on.

Latency is per click at the client (p50/p95/p99), throughput is clicks per second of wall time,
CPU is the bot process's user+system seconds from the first click until it is idle again,
divided by the clicks. The echo bot (botbuilder's CloudAdapter answering every click with a
card, authentication on) runs in the same run on the same machine with the same client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.sandbox import SandboxTenant
from tests.bench.common import (
    ECHO_APP_ID,
    ECHO_SERVICE_URL,
    Auth,
    Click,
    Client,
    Figures,
    Process,
    action_data,
    bot_env,
    click_activity,
    closed_loop,
    install_activity,
    start_bot,
)
from tests.bench.seed import OUTSIDER, RESPONDER, SECOND, Target, copy_database, seed_targets, write_policy
from tests.support.botauth import ChannelKeys
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import CHANNEL_ID
from tests.support.replica import free_port

REQUEST_VERBS = ("disableAccount", "enableAccount")
REASON = "benchmark: sign-in from an anonymous IP address"
ECHO_TENANT = "5f1c9b8e-2d4a-4c3e-9a7b-0d6e8f1a2b3c"


@dataclass
class Setup:
    """One bot process, its sandbox tenant and its Bot Connector, and the cases it holds."""

    tenant: SandboxTenant
    connector: RecordingConnector
    keys: ChannelKeys
    bot: Process
    targets: list[Target]
    headers: dict[str, str]

    @property
    def service_url(self) -> str:
        return self.connector.service_url

    def click(self, target: Target, user: dict[str, str], verb: str, data: dict[str, Any]) -> dict[str, Any]:
        return click_activity(self.service_url, self.tenant.tenant_id, target.activity_id, user, verb, data)

    _indexed: int = 0
    _cards: dict[str, Any] = field(default_factory=dict)
    _sends: dict[str, list[ConnectorCall]] = field(default_factory=dict)

    def _index(self) -> None:
        """Take in the connector's calls since the last look (the benchmark looks often)."""
        calls = self.connector.calls
        for call in calls[self._indexed :]:
            if call.kind == "send":
                self._sends.setdefault(call.conversation_id, []).append(call)
            else:
                card = call.card
                if card is not None:
                    self._cards[call.activity_id] = card
        self._indexed = len(calls)

    def latest_card(self, target: Target) -> Any:
        """The card as the channel shows it now (the last the connector accepted for that post)."""
        self._index()
        return self._cards.get(target.activity_id)

    def thread_sends(self, target: Target, after: float) -> list[ConnectorCall]:
        """Messages the connector accepted into the card's thread since ``after``."""
        self._index()
        sends = self._sends.get(f"{CHANNEL_ID};messageid={target.activity_id}", [])
        return [c for c in sends if c.at >= after]


async def start_setup(
    workdir: Path,
    *,
    pool: int,
    template: Path | None,
    keys: ChannelKeys,
    name: str,
    extra_env: dict[str, str] | None = None,
) -> Setup:
    """A sandbox with ``pool`` users, a store holding their cases (and ``template``'s history), the bot."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    tenant = SandboxTenant(_scenario(pool), cert_dir=workdir / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    database = workdir / "bot.db"
    if template is not None:
        copy_database(template, database)
    store_url = f"sqlite:///{database}"
    targets = await seed_targets(store_url, tenant.alerts())
    auth = Auth(keys, tenant)
    env = bot_env(
        tenant,
        auth,
        store_url=store_url,
        policy=write_policy(workdir / "policy.yaml"),
        port=free_port(),
        POLL_LOOKBACK_MINUTES="60",
        **(extra_env or {}),
    )
    bot = start_bot(env, workdir / f"{name}.log")
    await bot.wait_healthy()
    headers = auth.header(connector.service_url)
    setup = Setup(tenant, connector, keys, bot, targets, headers)
    async with _one_client() as client:
        answer = await client.post(
            bot.url, install_activity(connector.service_url, tenant.tenant_id), headers
        )
    if answer.status not in (200, 201):
        raise RuntimeError(f"the install was refused: {answer.status} {answer.body}: {bot.log_tail()}")
    await settle(bot)
    return setup


def _scenario(pool: int) -> dict[str, Any]:
    from tests.bench.seed import target_scenario

    return target_scenario(pool)


class _one_client:
    async def __aenter__(self) -> Client:
        self.client = Client()
        return self.client

    async def __aexit__(self, *_: object) -> None:
        await self.client.close()


async def stop_setup(setup: Setup) -> dict[str, Any]:
    """Stop everything; what the bot process left behind (peak memory, exit time, contract)."""
    rss = setup.bot.peak_rss_mb()
    exit_seconds = setup.bot.stop()
    await setup.connector.stop()
    await setup.tenant.stop()
    return {
        "peak_rss_mb": round(rss, 1),
        "sigterm_exit_seconds": round(exit_seconds, 2),
        "graph_contract_violations": len(setup.tenant.violations),
    }


async def settle(bot: Process, *, quiet: float = 0.3, limit: float = 60.0) -> None:
    """Until the bot's CPU time stops growing (its background work after a click is done)."""
    deadline = time.monotonic() + limit
    last = bot.cpu_seconds()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = bot.cpu_seconds()
        if now - last < 0.02:
            return
        last = now


def card_answered(click: Click) -> bool:
    """The bot answered with a card (a refusal or the new state): what Teams shows the clicker."""
    return click.status == 200 and isinstance(click.body, dict) and click.body.get("statusCode") == 200


@dataclass
class Measured:
    figures: Figures
    cpu_seconds: float
    # The benchmark's own process (client, sandbox tenant, connector) over the same span: it shares
    # the machine with the bot, so a client that is busy shows here.
    own_cpu_seconds: float = 0.0

    @property
    def cpu_per_click(self) -> float | None:
        return self.cpu_seconds / self.figures.clicks if self.figures.clicks else None

    def as_dict(self) -> dict[str, Any]:
        per = self.cpu_per_click
        clicks = self.figures.clicks
        return {
            **self.figures.as_dict(),
            "cpu_ms_per_click": None if per is None else round(per * 1000, 1),
            "benchmark_cpu_ms_per_click": round(self.own_cpu_seconds / clicks * 1000, 1) if clicks else None,
        }


async def measure(
    bot: Process, run: Callable[[], Awaitable[tuple[list[Click], float]]], ok: Callable[[Click], bool]
) -> Measured:
    """Run one phase and settle; CPU from its start until the bot is idle again."""
    before, own = bot.cpu_seconds(), own_cpu_seconds()
    clicks, wall = await run()
    await settle(bot)
    return Measured(Figures.of(clicks, wall, ok), bot.cpu_seconds() - before, own_cpu_seconds() - own)


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


WARM_UP = 3  # clicks before measuring: the first ones fetch signing keys and fill caches


async def refused_clicks(setup: Setup, client: Client, workers: int, clicks: int, seconds: float) -> Measured:
    """Someone outside the policy clicks "Disable account" on the pool's cards, round robin."""
    targets = setup.targets

    async def one(n: int) -> Click:
        target = targets[n % len(targets)]
        data = {"caseId": target.case_id, "cardVersion": target.revision, "reason": REASON}
        return await client.post(
            setup.bot.url, setup.click(target, OUTSIDER, "disableAccount", data), setup.headers
        )

    for n in range(WARM_UP):
        await one(n)
    await settle(setup.bot)
    return await measure(setup.bot, lambda: closed_loop(workers, clicks, seconds, one), card_answered)


@dataclass
class Round:
    """One round on the whole pool: every case requested, then every request approved."""

    requests: list[Click] = field(default_factory=list)
    request_wall: float = 0.0
    request_cpu: float = 0.0
    request_own_cpu: float = 0.0
    approvals: list[Click] = field(default_factory=list)
    approval_wall: float = 0.0
    approval_cpu: float = 0.0
    approval_own_cpu: float = 0.0
    # Seconds from each approval's click to its result in the thread (None: no result came).
    replies: list[float | None] = field(default_factory=list)
    # Request clicks whose answer offered no Approve button (refused, stale card): not approved.
    unapprovable: int = 0


async def request_and_approve(setup: Setup, client: Client, *, reply_timeout: float = 180.0) -> Round:
    """Every case of the pool at once: a responder asks, the second approver approves, and the
    round ends when every result is in its thread (or ``reply_timeout`` passed)."""
    bot = setup.bot
    result = Round()
    asks: list[tuple[Target, str, dict[str, Any]]] = []
    for target in setup.targets:
        card = setup.latest_card(target)
        offered = action_data(card, REQUEST_VERBS) if card is not None else None
        if offered is None:
            offered = ("disableAccount", {"caseId": target.case_id, "cardVersion": target.revision})
        verb, data = offered
        asks.append((target, verb, {**data, "reason": REASON}))

    cpu, own = bot.cpu_seconds(), own_cpu_seconds()
    started = time.monotonic()
    result.requests = list(
        await asyncio.gather(
            *(
                client.post(bot.url, setup.click(t, RESPONDER, verb, data), setup.headers)
                for t, verb, data in asks
            )
        )
    )
    result.request_wall = time.monotonic() - started
    await settle(bot)
    result.request_cpu, result.request_own_cpu = bot.cpu_seconds() - cpu, own_cpu_seconds() - own

    approvals: list[tuple[Target, dict[str, Any]]] = []
    for (target, _, _), click in zip(asks, result.requests, strict=True):
        offered = action_data(click.card, ("approve",)) if click.card is not None else None
        if offered is not None:
            approvals.append((target, offered[1]))
    result.unapprovable = len(asks) - len(approvals)
    cpu, own = bot.cpu_seconds(), own_cpu_seconds()
    started = time.monotonic()
    result.approvals = list(
        await asyncio.gather(
            *(
                client.post(bot.url, setup.click(t, SECOND, "approve", data), setup.headers)
                for t, data in approvals
            )
        )
    )
    result.approval_wall = time.monotonic() - started
    deadline = time.monotonic() + reply_timeout
    pending = list(zip(approvals, result.approvals, strict=True))
    while pending and time.monotonic() < deadline:
        pending = [(a, c) for a, c in pending if not setup.thread_sends(a[0], c.sent)]
        await asyncio.sleep(0.05)
    for (target, _), click in zip(approvals, result.approvals, strict=True):
        sends = setup.thread_sends(target, click.sent)
        result.replies.append(sends[0].at - click.sent if sends else None)
    await settle(bot)
    result.approval_cpu, result.approval_own_cpu = bot.cpu_seconds() - cpu, own_cpu_seconds() - own
    return result


def round_figures(rounds: Sequence[Round]) -> tuple[Measured, Measured, list[float | None]]:
    requests = [c for r in rounds for c in r.requests]
    approvals = [c for r in rounds for c in r.approvals]
    request_figures = Figures.of(requests, sum(r.request_wall for r in rounds), card_answered)
    approval_figures = Figures.of(approvals, sum(r.approval_wall for r in rounds), card_answered)
    replies = [s for r in rounds for s in r.replies]
    approval_figures.extra["executed_with_reply"] = sum(1 for s in replies if s is not None)
    request_figures.extra["answered_without_approve_button"] = sum(r.unapprovable for r in rounds)
    return (
        Measured(request_figures, sum(r.request_cpu for r in rounds), sum(r.request_own_cpu for r in rounds)),
        Measured(
            approval_figures, sum(r.approval_cpu for r in rounds), sum(r.approval_own_cpu for r in rounds)
        ),
        replies,
    )


async def echo_clicks(
    echo: Process, keys: ChannelKeys, client: Client, workers: int, clicks: int, seconds: float
) -> Measured:
    """The refused clicks' activity, against the echo bot."""
    headers = {"Authorization": f"Bearer {keys.token(audience=ECHO_APP_ID, service_url=ECHO_SERVICE_URL)}"}

    async def one(n: int) -> Click:
        data = {"caseId": f"case-{n % 7}", "cardVersion": 3, "reason": REASON}
        activity = click_activity(
            ECHO_SERVICE_URL, ECHO_TENANT, "echo-card", OUTSIDER, "disableAccount", data
        )
        return await client.post(echo.url, activity, headers)

    for n in range(WARM_UP):
        await one(n)
    await settle(echo)
    return await measure(echo, lambda: closed_loop(workers, clicks, seconds, one), card_answered)
