"""Runs the bot as its own process (``remediation-bot serve``), the way a replica runs.

The benchmark and the several-replica tests use it, so the bot they measure or kill is the
production entry point with its configuration from the environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from devtools.sandbox import SandboxTenant
from tests.support.harness import CHANNEL_ID


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def replica_env(
    tenant: SandboxTenant, *, store_url: str, policy: Path, port: int, **extra: str
) -> dict[str, str]:
    """The environment of a bot process pointed at ``tenant`` in sandbox mode."""
    return {
        **os.environ,
        "SANDBOX_MODE": "true",
        "MicrosoftAppId": "",
        "GRAPH_TENANT_ID": tenant.tenant_id,
        "GRAPH_CLIENT_ID": tenant.client_id,
        "GRAPH_CLIENT_SECRET": tenant.client_secret,
        "GRAPH_AUTHORITY_HOST": tenant.authority_host,
        "GRAPH_BASE_URL": tenant.graph_base_url,
        "GRAPH_CA_BUNDLE": str(tenant.ca_pem_path),
        "TEAMS_CHANNEL_ID": CHANNEL_ID,
        "POLICY_FILE": str(policy),
        "STORE_URL": store_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


class Replica:
    """One bot process; ``url`` is its listener."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.log_path = log_path

    async def wait_healthy(self, limit: float = 60.0) -> None:
        """Until ``/healthz`` answers (the store is open, migrations applied)."""
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the bot exited: {self.log_path.read_text(errors='replace')[-2000:]}")
                try:
                    async with http.get(f"{self.url}/healthz") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the bot did not answer /healthz in {limit:.0f} s")

    async def post(self, activity: dict[str, Any]) -> tuple[int, Any]:
        """POST one activity to this replica's ``/api/messages``."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/api/messages", json=activity) as answer,
        ):
            body: Any = (
                await answer.json() if answer.content_type == "application/json" else await answer.text()
            )
            return answer.status, body

    def kill(self) -> None:
        """SIGKILL: the replica dies with no chance to clean up, as a crashed host would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    @property
    def peak_rss_mb(self) -> float:
        """The process's peak resident memory (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0
