"""Shared fixtures: the sandbox tenant, the recording Bot Connector and the bot, all on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config.settings import Settings, load_settings
from devtools.sandbox import SandboxTenant
from tests.support.connector import RecordingConnector
from tests.support.harness import CHANNEL_ID, BotHarness

RESPONDER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
SECOND_RESPONDER = {"id": "aaaaaaaa-0000-4000-8000-000000000002", "name": "Megan Bowen"}
OUTSIDER = {"id": "aaaaaaaa-0000-4000-8000-0000000000ff", "name": "Eve Outsider"}
# A responder who may ask for actions but not approve them.
REQUESTER_ONLY = {"id": "aaaaaaaa-0000-4000-8000-000000000003", "name": "Rita Requester"}
BREAKGLASS_UPN = "breakglass@contoso.com"


def write_policy(path: Path, **overrides: Any) -> Path:
    """A policy file for the tests: Alex and Megan approve, Rita only requests."""
    policy: dict[str, Any] = {
        "responders": {"users": [RESPONDER["id"], SECOND_RESPONDER["id"], REQUESTER_ONLY["id"]]},
        "approvers": {"users": [RESPONDER["id"], SECOND_RESPONDER["id"]]},
        "approvals": {"disableAccount": 1},
        "protected_accounts": [BREAKGLASS_UPN],
        "expiry_minutes": 30,
        "reminder_minutes": 10,
        "blast_radius_per_hour": 20,
    }
    policy.update(overrides)
    path.write_text(yaml.safe_dump(policy))
    return path


SCENARIO: dict[str, Any] = {
    "users": [
        {
            "id": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01",
            "userPrincipalName": "adele.vance@contoso.com",
            "displayName": "Adele Vance",
        },
        {
            "id": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03",
            "userPrincipalName": "lee.gu@contoso.com",
            "displayName": "Lee Gu",
        },
        {"id": RESPONDER["id"], "userPrincipalName": "alex.wilber@contoso.com", "displayName": "Alex Wilber"},
        {
            "id": SECOND_RESPONDER["id"],
            "userPrincipalName": "megan.admin@contoso.com",
            "displayName": "Megan Bowen",
        },
        {
            "id": "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a99",
            "userPrincipalName": BREAKGLASS_UPN,
            "displayName": "Break Glass (emergency access)",
        },
    ],
    "alerts": [
        {
            "user": "adele.vance@contoso.com",
            "serviceSource": "microsoftDefenderForIdentity",
            "title": "Suspected identity theft (pass-the-ticket)",
            "severity": "high",
            "mitreTechniques": ["T1550.003"],
            "minutes_ago": 40,
        },
        {
            "user": "lee.gu@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "Leaked credentials",
            "severity": "high",
            "minutes_ago": 30,
        },
        {
            "user": BREAKGLASS_UPN,
            "serviceSource": "azureAdIdentityProtection",
            "title": "Unfamiliar sign-in properties",
            "severity": "high",
            "minutes_ago": 25,
        },
    ],
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant(SCENARIO, cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


@pytest.fixture
async def connector() -> AsyncIterator[RecordingConnector]:
    recorder = RecordingConnector()
    await recorder.start()
    yield recorder
    await recorder.stop()


@pytest.fixture
def teams_sdk() -> str:
    """The Teams transport the bot runs on: tests/scenario and the browser test run each test on
    both (their conftest parametrises this fixture); elsewhere the default."""
    return "botbuilder"


@pytest.fixture
def make_settings(tenant: SandboxTenant, tmp_path: Path, teams_sdk: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "sandbox_mode": True,
            "teams_sdk": teams_sdk,
            "microsoft_app_id": "",
            "graph_tenant_id": tenant.tenant_id,
            "graph_client_id": tenant.client_id,
            "graph_client_secret": tenant.client_secret,
            "graph_authority_host": tenant.authority_host,
            "graph_base_url": tenant.graph_base_url,
            "graph_ca_bundle": str(tenant.ca_pem_path),
            "teams_channel_id": CHANNEL_ID,
            "policy_file": str(write_policy(tmp_path / "policy.yaml")),
            "store_url": f"sqlite:///{tmp_path / 'bot.db'}",
            # The sandbox does not enforce Identity Protection's 1 request/s; the pacing itself
            # is tested against the real client in tests/graph.
            "graph_identity_protection_interval": 0.05,
            # Card updates are coalesced for 3 s in production; a scenario waits out the window
            # after every click that follows another. The coalescing itself is tested with its own
            # window (tests/scenario/test_intake.py).
            "card_update_coalesce_seconds": 0.3,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
async def bot(make_settings: Callable[..., Settings], clock: Clock) -> AsyncIterator[BotHarness]:
    harness = BotHarness(make_settings(), clock)
    await harness.start()
    yield harness
    await harness.stop()
