"""The bot makes msrest build its per-turn clients faster without changing what they do."""

from __future__ import annotations

from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import MicrosoftAppCredentials
from msrest.universal_http.requests import ClientRetryPolicy

import bot.teams.adapter  # noqa: F401  (applies the change on import, as the app does)

# msrest 0.7.1's own definition of the codes it does not retry.
SAFE = [i for i in range(500) if i != 408] + [501, 505]


def test_the_retry_codes_of_every_client_are_msrests_own() -> None:
    expected = [i for i in range(999) if i not in SAFE]
    assert isinstance(ClientRetryPolicy.safe_codes, frozenset)
    assert ClientRetryPolicy().policy.status_forcelist == expected
    client = ConnectorClient(MicrosoftAppCredentials.empty(), base_url="https://smba.example/")
    assert client.config.retry_policy.policy.status_forcelist == expected
