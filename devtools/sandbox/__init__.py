"""A local Microsoft 365 tenant for tests and the demo: Entra ID tokens and Graph over TLS.

``SandboxTenant`` is a real aiohttp server on loopback; the bot's own Graph client (msal and
httpx) talks to it exactly as to Microsoft. Every Graph exchange is validated against the
OpenAPI contract in ``contract/``. ``python -m devtools.sandbox`` runs one standalone.
"""

from devtools.sandbox.contract import SUBSET_PATH, SUBSET_SHA256, load_contract
from devtools.sandbox.scenario import load_scenario
from devtools.sandbox.state import ProviderAccount, RecordedRequest
from devtools.sandbox.tenant import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_TENANT_ID,
    SandboxTenant,
)
from devtools.sandbox.tls import IssuedClientCertificate

DEMO_SCENARIO = SUBSET_PATH.parent.parent / "scenarios" / "demo.yaml"
# The demo's POLICY_FILE: its groups and protected account are those of DEMO_SCENARIO.
DEMO_POLICY = SUBSET_PATH.parent.parent / "scenarios" / "demo-policy.yaml"

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_POLICY",
    "DEMO_SCENARIO",
    "DEMO_TENANT_ID",
    "SUBSET_PATH",
    "SUBSET_SHA256",
    "IssuedClientCertificate",
    "ProviderAccount",
    "RecordedRequest",
    "SandboxTenant",
    "load_contract",
    "load_scenario",
]
