"""What the bot has stored, as plain data: tests compare it before and after a refused request."""

from __future__ import annotations

from typing import Any

from bot.store.base import Store


async def stored_state(store: Store) -> dict[str, Any]:
    """Cases (with their alerts), requests, the channel reference and the audit trail."""
    cases = await store.list_cases()
    requests = [r.model_dump(mode="json") for case in cases for r in await store.list_requests(case.id)]
    channel = await store.get_channel()
    return {
        "cases": [case.model_dump(mode="json") for case in cases],
        "requests": requests,
        "channel": None if channel is None else channel.model_dump(mode="json"),
        "audit": [(event.sequence, event.kind) for event in await store.list_audit()],
    }
