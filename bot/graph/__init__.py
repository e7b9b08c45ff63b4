"""Microsoft Graph for remediation-bot: app-only tokens and one client with typed operations.

This is the only package of the bot that imports ``httpx`` and ``msal``. Errors are the
``Graph*`` exceptions of :mod:`bot.errors`.
"""

from bot.graph.auth import GRAPH_DEFAULT_SCOPE, TokenProvider
from bot.graph.client import GraphClient, GraphResponse, JSONObject, TokenSource
from bot.graph.http import build_http_client
from bot.graph.odata import odata_datetime, odata_string

__all__ = [
    "GRAPH_DEFAULT_SCOPE",
    "GraphClient",
    "GraphResponse",
    "JSONObject",
    "TokenProvider",
    "TokenSource",
    "build_http_client",
    "odata_datetime",
    "odata_string",
]
