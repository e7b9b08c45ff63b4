"""Storm mode reads every member's facts, pass after pass, however large the campaign: the card
marks protected and privileged accounts, and "disable all" routes by them without reading each
identity again while it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.services.campaigns import ENRICH_PER_PASS
from bot.web.app import STORE
from devtools.sandbox import SandboxTenant
from tests.conftest import Clock
from tests.scenario.test_storm import (
    ROOMY,
    Storm,
    card_text,
    storm_factory,  # noqa: F401 (the storm's fixture, used by its name)
)

# More members than one pass of fact reading takes.
MEMBERS = ENRICH_PER_PASS + 15


def _user(i: int) -> dict[str, str]:
    return {
        "id": f"5e000000-0000-4000-8000-{i:012d}",
        "userPrincipalName": f"wave{i:03d}@contoso.com",
        "displayName": f"Wave Victim {i:03d}",
    }


WAVE: dict[str, Any] = {
    "users": [_user(i) for i in range(MEMBERS)],
    "alerts": [
        {
            "user": _user(i)["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": "Password spray",
            "severity": "high",
            "minutes_ago": 5,
        }
        for i in range(MEMBERS)
    ],
}


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant(WAVE, cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


async def test_every_members_facts_are_read_past_one_pass(
    storm_factory: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    storm: Storm = await storm_factory(**ROOMY)
    await storm.bot.service.drain()
    store = storm.bot.app[STORE]
    [campaign] = await store.list_campaigns()
    members = await store.list_campaign_cases(campaign.id)
    assert len(members) == MEMBERS
    assert all(case.target_checked for case in members)
    text = card_text(storm.campaign_card())
    assert f"{MEMBERS} compromised identities" in text and "not checked yet" not in text
