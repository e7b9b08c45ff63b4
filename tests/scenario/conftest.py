"""Every scenario runs on both Teams transports: botbuilder and the Microsoft 365 Agents SDK."""

from __future__ import annotations

import pytest

TEAMS_SDKS = ("botbuilder", "agents")


@pytest.fixture(params=TEAMS_SDKS)
def teams_sdk(request: pytest.FixtureRequest) -> str:
    """``TEAMS_SDK`` of the bot under test: each test runs ``[botbuilder]`` and ``[agents]``."""
    sdk: str = request.param
    return sdk
