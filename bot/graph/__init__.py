"""Microsoft Graph for remediation-bot: app-only tokens and one client with typed operations.

This is the only package of the bot that imports ``httpx`` and ``msal``. Errors are the
``Graph*`` exceptions of :mod:`bot.errors`.
"""

from bot.graph.auth import GRAPH_DEFAULT_SCOPE, TokenProvider
from bot.graph.client import (
    GraphClient,
    GraphResponse,
    IdentityActionResult,
    JSONObject,
    TokenSource,
    find_account,
    invoke_action_correlation_id,
    path_segment,
)
from bot.graph.http import build_http_client
from bot.graph.odata import odata_datetime, odata_string
from bot.graph.permissions import required_permission

__all__ = [
    "GRAPH_DEFAULT_SCOPE",
    "GraphClient",
    "GraphResponse",
    "IdentityActionResult",
    "JSONObject",
    "TokenProvider",
    "TokenSource",
    "build_http_client",
    "find_account",
    "invoke_action_correlation_id",
    "odata_datetime",
    "odata_string",
    "path_segment",
    "required_permission",
]
