"""What every benchmark shares: the processes it measures, the client that clicks, the statistics."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devtools.sandbox import SandboxTenant
from tests.support.botauth import ChannelKeys
from tests.support.harness import BOT_ID, CHANNEL_ID, TEAM_ID
from tests.support.replica import free_port

# Where results go: tests/bench/results, or BENCH_RESULTS (e.g. to keep a one-off run apart).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results")
AUDIT_KEY = "benchmark audit key, thirty-two characters or more"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_ids = itertools.count(1)


def quick() -> bool:
    """``BENCH_QUICK=1``: fewer clicks and smaller storms, for a look in a few minutes."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


# -- processes -------------------------------------------------------------------------------------


class Process:
    """A benchmarked process: its CPU time and memory read from /proc."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(list(args), env=env, stdout=self._log, stderr=subprocess.STDOUT)

    async def wait_healthy(self, limit: float = 90.0) -> None:
        """Until ``/healthz`` answers."""
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.log_path.name}: exited: {self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/healthz") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.log_path.name}: no /healthz in {limit:.0f} s: {self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-size:]

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> float:
        """SIGTERM; returns how long it took to exit (SIGKILL after 30 s)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return time.monotonic() - started


@dataclass
class Auth:
    """The Bot Framework side of authentication: the channel's signing keys and the bot's identity."""

    keys: ChannelKeys
    tenant: SandboxTenant

    @property
    def app_id(self) -> str:
        # msal gets the outbound token from the sandbox tenant, which knows only its own client.
        return self.tenant.client_id

    def env(self) -> dict[str, str]:
        return {
            "MicrosoftAppId": self.app_id,
            "MicrosoftAppPassword": self.tenant.client_secret,
            "MicrosoftAppType": "SingleTenant",
            "MicrosoftAppTenantId": self.tenant.tenant_id,
            "BENCH_OPENID_METADATA_URL": self.keys.metadata_url,
            "BENCH_TOKEN_AUTHORITY": self.tenant.authority,
            "BENCH_TOKEN_CA": str(self.tenant.ca_pem_path),
        }

    def header(self, service_url: str) -> dict[str, str]:
        """A channel token as the Bot Connector sends it (one per run: Teams reuses its tokens)."""
        return {"Authorization": f"Bearer {self.keys.token(audience=self.app_id, service_url=service_url)}"}


def bot_env(
    tenant: SandboxTenant, auth: Auth, *, store_url: str, policy: Path, port: int, **extra: str
) -> dict[str, str]:
    """The environment of ``remediation-bot serve`` against ``tenant``, authentication on."""
    env = {
        **os.environ,
        **auth.env(),
        "SANDBOX_MODE": "false",
        "AUDIT_HMAC_KEY": AUDIT_KEY,
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
    env.pop("TEST_POSTGRES_URL", None)
    return env


def start_bot(env: dict[str, str], log_path: Path) -> Process:
    """``remediation-bot serve`` with botbuilder's Microsoft endpoints on loopback."""
    return Process([sys.executable, "-m", "tests.bench.secured", "serve"], env, log_path, int(env["PORT"]))


ECHO_APP_ID = "0d5e3c4b-1f2a-4b6c-8d7e-9f0a1b2c3d4e"
ECHO_SERVICE_URL = "https://smba.trafficmanager.net/amer/"


def start_echo(keys: ChannelKeys, log_path: Path) -> Process:
    """The baseline: a bare botbuilder CloudAdapter echo bot, authentication on (see secured.py)."""
    port = free_port()
    env = {
        **os.environ,
        "MicrosoftAppId": ECHO_APP_ID,
        "MicrosoftAppPassword": "echo-bot-never-calls-out",
        "MicrosoftAppType": "MultiTenant",
        "BENCH_OPENID_METADATA_URL": keys.metadata_url,
        "PORT": str(port),
    }
    return Process([sys.executable, "-m", "tests.bench.secured", "echo"], env, log_path, port)


# -- activities ------------------------------------------------------------------------------------


def install_activity(service_url: str, tenant_id: str) -> dict[str, Any]:
    """What Teams sends when the bot is added to the team of the incident channel."""
    return {
        "type": "conversationUpdate",
        "id": f"install-{next(_ids)}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": "29:admin", "aadObjectId": "admin-object-id", "name": "Security Admin"},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {
            "id": CHANNEL_ID,
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": tenant_id,
        },
        "membersAdded": [{"id": BOT_ID}],
        "channelData": {
            "eventType": "teamMemberAdded",
            "team": {"id": TEAM_ID, "name": "Incident Response"},
            "channel": {"id": CHANNEL_ID},
            "tenant": {"id": tenant_id},
        },
    }


def click_activity(
    service_url: str, tenant_id: str, activity_id: str, user: dict[str, str], verb: str, data: dict[str, Any]
) -> dict[str, Any]:
    """An ``adaptiveCard/action`` invoke: ``user`` clicked ``verb`` on the card posted as ``activity_id``."""
    conversation = f"{CHANNEL_ID};messageid={activity_id}"
    return {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": f"invoke-{next(_ids)}",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": f"29:{user['id']}", "aadObjectId": user["id"], "name": user["name"]},
        "recipient": {"id": BOT_ID, "name": "Remediation Bot"},
        "conversation": {
            "id": conversation,
            "isGroup": True,
            "conversationType": "channel",
            "tenantId": tenant_id,
        },
        "channelData": {"team": {"id": TEAM_ID}, "channel": {"id": CHANNEL_ID}, "tenant": {"id": tenant_id}},
        "replyToId": activity_id,
        "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
    }


def card_actions(card: Any) -> list[dict[str, Any]]:
    """Every ``Action.Execute`` on a card (nested action sets included)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def action_data(card: Any, verbs: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """The first of ``verbs`` the card offers, with its data."""
    actions = {a.get("verb"): a for a in card_actions(card)}
    for verb in verbs:
        if verb in actions:
            return verb, dict(actions[verb].get("data") or {})
    return None


# -- the client ------------------------------------------------------------------------------------


@dataclass
class Click:
    """One click as the client saw it."""

    sent: float
    answered: float
    status: int
    body: Any

    @property
    def seconds(self) -> float:
        return self.answered - self.sent

    @property
    def card(self) -> Any:
        if isinstance(self.body, dict) and isinstance(self.body.get("value"), dict):
            return self.body["value"]
        return None


class Client:
    """The one HTTP client every benchmark clicks with (bot and echo bot alike)."""

    def __init__(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self._http.close()

    async def post(self, url: str, activity: dict[str, Any], headers: dict[str, str]) -> Click:
        body = json.dumps(activity).encode()
        sent = time.monotonic()
        try:
            async with self._http.post(
                f"{url}/api/messages", data=body, headers={"Content-Type": "application/json", **headers}
            ) as answer:
                raw = await answer.read()
                answered = time.monotonic()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Click(sent, time.monotonic(), 0, f"{type(exc).__name__}: {exc}".rstrip(": "))
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Click(sent, answered, status, parsed)


async def closed_loop(
    workers: int, clicks: int, seconds: float, one: Callable[[int], Awaitable[Click]]
) -> tuple[list[Click], float]:
    """``workers`` concurrent clickers, each clicking again as soon as answered, until ``clicks``
    were sent or ``seconds`` passed (then the ones in flight finish). Returns the clicks and the
    wall time from the first send to the last answer."""
    counter = itertools.count()
    done: list[Click] = []
    started = time.monotonic()
    deadline = started + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            n = next(counter)
            if n >= clicks:
                return
            done.append(await one(n))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done, time.monotonic() - started


# -- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1) if not math.isnan(seconds) else math.nan


@dataclass
class Figures:
    """Latency percentiles (ms), throughput and errors of one set of clicks."""

    clicks: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    per_second: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, clicks: Sequence[Click], wall: float, ok: Callable[[Click], bool]) -> Figures:
        good = [c.seconds for c in clicks if ok(c)]
        kinds = Counter(_error_kind(c) for c in clicks if not ok(c))
        return cls(
            extra={"error_kinds": dict(kinds)} if kinds else {},
            clicks=len(clicks),
            errors=len(clicks) - len(good),
            p50_ms=ms(percentile(good, 50)),
            p95_ms=ms(percentile(good, 95)),
            p99_ms=ms(percentile(good, 99)),
            max_ms=ms(max(good, default=math.nan)),
            per_second=round(len(clicks) / wall, 1) if wall > 0 else math.nan,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "clicks": self.clicks,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "per_second": self.per_second,
            **self.extra,
        }


def _error_kind(click: Click) -> str:
    """What went wrong, in a few words: no answer (and why), the HTTP status, or no card."""
    if click.status == 0:
        return f"no answer ({str(click.body).split(':')[0]})"
    if click.status != 200:
        return f"HTTP {click.status}"
    code = click.body.get("statusCode") if isinstance(click.body, dict) else None
    return f"answered without a card (statusCode {code})"


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """``results/<name>``; NaN (no sample) is written as null."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(_no_nan(payload), indent=2, default=str) + "\n")
    return path


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
