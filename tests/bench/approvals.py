"""Approval → executed → thread reply, beside its floor: the time of the calls it makes, at the fakes.

For each approval: from the moment the second approver's click is sent until the result reply in
the card's thread has been answered by the Bot Connector. Its floor is the time the sandbox
tenant and the recording connector themselves spent on the calls that approval made (Graph calls
naming its user or its alerts, Bot Connector calls in its thread), overlapping calls counted
once: a bot that did nothing but make those calls one after another would take that long.

Some approvals are clicked one at a time (each waits for the previous result); the others
back to back on different identities (each clicked as soon as the previous click is answered).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devtools.sandbox import RecordedRequest
from tests.bench.common import Client, action_data, ms, percentile
from tests.bench.invokes import REASON, REQUEST_VERBS, Setup, settle
from tests.bench.seed import RESPONDER, SECOND, Target
from tests.support.harness import CHANNEL_ID


@dataclass
class Approval:
    target: Target
    sent: float
    replied: float | None
    floor: float
    graph_calls: int
    connector_calls: int
    back_to_back: bool

    def as_dict(self) -> dict[str, Any]:
        latency = None if self.replied is None else self.replied - self.sent
        return {
            "case": self.target.case_id,
            "back_to_back": self.back_to_back,
            "latency_ms": None if latency is None else ms(latency),
            "floor_ms": ms(self.floor),
            "ratio": None if latency is None or self.floor <= 0 else round(latency / self.floor, 2),
            "graph_calls": self.graph_calls,
            "connector_calls": self.connector_calls,
        }


async def _ask(setup: Setup, client: Client, target: Target) -> dict[str, Any] | None:
    """A responder asks for the action the card offers; the approve button's data, if any."""
    card = setup.latest_card(target)
    offered = action_data(card, REQUEST_VERBS) if card is not None else None
    if offered is None:
        offered = ("disableAccount", {"caseId": target.case_id, "cardVersion": target.revision})
    verb, data = offered
    click = await client.post(
        setup.bot.url, setup.click(target, RESPONDER, verb, {**data, "reason": REASON}), setup.headers
    )
    approve = action_data(click.card, ("approve",)) if click.card is not None else None
    return None if approve is None else approve[1]


async def _approve(setup: Setup, client: Client, target: Target, data: dict[str, Any]) -> float:
    click = await client.post(setup.bot.url, setup.click(target, SECOND, "approve", data), setup.headers)
    return click.sent


async def _reply_at(setup: Setup, target: Target, sent: float, limit: float = 120.0) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sends = setup.thread_sends(target, sent)
        if sends:
            answered = _answered(setup, target, sends[0].at)
            return answered if answered is not None else sends[0].at
        await asyncio.sleep(0.02)
    return None


def _answered(setup: Setup, target: Target, accepted: float) -> float | None:
    conversation = f"{CHANNEL_ID};messageid={target.activity_id}"
    for exchange in setup.connector.exchanges:
        if (
            exchange.kind == "send"
            and exchange.conversation_id == conversation
            and exchange.arrived <= accepted <= exchange.answered
        ):
            return exchange.answered
    return None


def floor_of(setup: Setup, target: Target, start: float, end: float) -> tuple[float, int, int]:
    """Time the fakes spent on this approval's calls in [start, end], overlaps counted once."""
    marks = (target.user_id.lower(), target.upn.lower(), *(a.lower() for a in target.alert_ids))
    graph = [
        r for r in setup.tenant.requests if start <= r.arrived and r.answered <= end and _names(r, marks)
    ]
    conversation = f"{CHANNEL_ID};messageid={target.activity_id}"
    teams = [
        e
        for e in setup.connector.exchanges
        if start <= e.arrived and e.answered <= end and e.conversation_id == conversation
    ]
    spans = [(r.arrived, r.answered) for r in graph] + [(e.arrived, e.answered) for e in teams]
    return _union(spans), len(graph), len(teams)


def _names(request: RecordedRequest, marks: Sequence[str]) -> bool:
    if not request.path.startswith("/v1.0/"):
        return False
    text = " ".join([request.path, *request.query.values(), json.dumps(request.json or "")]).lower()
    return any(mark and mark in text for mark in marks)


def _union(spans: list[tuple[float, float]]) -> float:
    total = 0.0
    end = float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


async def approval_latency(
    setup: Setup, client: Client, *, one_at_a_time: int, back_to_back: int
) -> list[Approval]:
    """``one_at_a_time`` approvals each after the previous result, then ``back_to_back`` approvals
    on as many different identities clicked one right after another."""
    results: list[Approval] = []
    targets = setup.targets
    for n in range(one_at_a_time):
        target = targets[n % len(targets)]
        data = await _ask(setup, client, target)
        if data is None:
            continue
        await settle(setup.bot)
        sent = await _approve(setup, client, target, data)
        replied = await _reply_at(setup, target, sent)
        results.append(_approval(setup, target, sent, replied, back_to_back=False))
        await settle(setup.bot)
    batch = targets[:back_to_back]
    asked: list[tuple[Target, dict[str, Any]]] = []
    for target in batch:
        data = await _ask(setup, client, target)
        if data is not None:
            asked.append((target, data))
    await settle(setup.bot)
    sent_at: list[tuple[Target, float]] = []
    for target, data in asked:
        sent_at.append((target, await _approve(setup, client, target, data)))
    for target, sent in sent_at:
        replied = await _reply_at(setup, target, sent)
        results.append(_approval(setup, target, sent, replied, back_to_back=True))
    await settle(setup.bot)
    return results


def _approval(
    setup: Setup, target: Target, sent: float, replied: float | None, *, back_to_back: bool
) -> Approval:
    floor, graph_calls, connector_calls = floor_of(
        setup, target, sent, replied if replied is not None else sent
    )
    return Approval(target, sent, replied, floor, graph_calls, connector_calls, back_to_back)


def summary(approvals: Sequence[Approval]) -> dict[str, Any]:
    latencies = [a.replied - a.sent for a in approvals if a.replied is not None]
    floors = [a.floor for a in approvals if a.replied is not None]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    f50, f95 = percentile(floors, 50), percentile(floors, 95)
    return {
        "approvals": len(approvals),
        "without_reply": sum(1 for a in approvals if a.replied is None),
        "back_to_back": sum(1 for a in approvals if a.back_to_back),
        "latency_p50_ms": ms(p50),
        "latency_p95_ms": ms(p95),
        "floor_p50_ms": ms(f50),
        "floor_p95_ms": ms(f95),
        "ratio_p50": round(p50 / f50, 2) if f50 > 0 else None,
        "ratio_p95": round(p95 / f95, 2) if f95 > 0 else None,
        "each": [a.as_dict() for a in approvals],
    }
