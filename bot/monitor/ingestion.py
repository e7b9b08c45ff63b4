"""The Azure Monitor Logs Ingestion API through ``azure-monitor-ingestion`` (its async client).

The only module that imports the Azure SDK. Tokens come from the bot's own msal credential (the
Graph app or managed identity), for the ``https://monitor.azure.com/.default`` scope: that
identity needs the *Monitoring Metrics Publisher* role on the data collection rule (main.bicep
assigns it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from azure.monitor.ingestion.aio import LogsIngestionClient

from bot.errors import RemediationError
from bot.graph.auth import TokenProvider

MONITOR_SCOPE = "https://monitor.azure.com/.default"
# msal renews its cached token itself; the SDK is told a short life so it asks again well before.
TOKEN_LIFE_SHOWN = 600


class IngestionError(RemediationError):
    """The ingestion endpoint did not accept a batch; the stream resumes at its cursor."""


class _MsalCredential:
    """azure-core's ``AsyncTokenCredential`` over our msal :class:`TokenProvider`."""

    def __init__(self, tokens: TokenProvider) -> None:
        self._tokens = tokens

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(await self._tokens.token(), int(time.time()) + TOKEN_LIFE_SHOWN)

    async def close(self) -> None:
        await self._tokens.aclose()

    async def __aenter__(self) -> _MsalCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


class LogsIngestionSink:
    """Uploads audit records to one data collection rule's stream."""

    def __init__(
        self,
        endpoint: str,
        rule_id: str,
        stream: str,
        tokens: TokenProvider,
        *,
        ca_bundle: str | None = None,
        retries: int | None = None,
    ) -> None:
        """``retries`` overrides azure-core's retry count for 408/429/5xx answers (default 3)."""
        self._rule_id = rule_id
        self._stream = stream
        self._credential = _MsalCredential(tokens)
        options: dict[str, Any] = {"connection_verify": ca_bundle} if ca_bundle else {}
        if retries is not None:
            options["retry_total"] = retries
        self._client = LogsIngestionClient(endpoint, self._credential, logging_enable=False, **options)

    async def upload(self, records: Sequence[dict[str, Any]]) -> None:
        """Send ``records`` (split into gzip chunks of 1 MB by the SDK), all or raise."""
        try:
            await self._client.upload(self._rule_id, self._stream, list(records))
        except AzureError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            raise IngestionError(
                f"the Logs Ingestion API refused {len(records)} audit record(s)"
                f"{f' ({status})' if status else ''}: {exc.message}"
            ) from exc

    async def close(self) -> None:
        await self._client.close()
        await self._credential.close()
