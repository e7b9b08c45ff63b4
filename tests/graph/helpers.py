"""Helpers shared by the Graph client tests."""

from __future__ import annotations

from devtools.sandbox import SandboxTenant


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers each wait instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def graph_calls(tenant: SandboxTenant) -> list[str]:
    """``METHOD path status`` of every Graph request the sandbox answered."""
    return [f"{r.method} {r.path} {r.status}" for r in tenant.requests if r.path.startswith("/v1.0/")]


def token_requests(tenant: SandboxTenant) -> int:
    """How many times the token endpoint was called."""
    return sum(1 for r in tenant.requests if r.path.endswith("/oauth2/v2.0/token"))
