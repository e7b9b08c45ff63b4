"""``remediation-bot demo``: the bot, a sandbox tenant and the Microsoft 365 Agents Playground.

Everything runs on this machine: the sandbox tenant plays Entra ID and Microsoft Graph (seeded
with compromised identities), the Playground plays Teams. The browser test drives the same stack
(:class:`DemoStack`), so what the demo shows is what the acceptance test checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bot.config.settings import load_settings
from bot.web.app import create_app
from devtools.sandbox import DEMO_TENANT_ID, SandboxTenant, load_scenario
from devtools.sandbox.scenario import expand_campaigns
from devtools.sandbox.signin import DEMO_MFA_CODE, DEMO_PASSWORD

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEMO_SCENARIO = Path(__file__).resolve().parent / "sandbox" / "scenarios" / "demo.yaml"
DEMO_POLICY = DEMO_SCENARIO.with_name("demo-policy.yaml")
DEMO_CAMPAIGN = DEMO_SCENARIO.with_name("demo-campaign.yaml")
PLAYGROUND_BIN = ROOT / "node_modules" / ".bin" / "agentsplayground"

# The Playground must name the sandbox tenant: the bot accepts activities from that tenant only.
TENANT_ID = DEMO_TENANT_ID
TEAM = {"id": "19:secops-incidents@thread.tacv2", "name": "Security Operations"}
BOT = {"id": "28:remediation-bot", "name": "Remediation Bot"}
# The Playground's signed-in user: the on-call responder of the demo policy.
RESPONDER = {
    "id": "29:alex-wilber",
    "name": "Alex Wilber",
    "aadObjectId": "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51",
    "upn": "alex.wilber@contoso.com",
}
# The second approver signs in on the approval page with her admin account.
SECOND_APPROVER_UPN = "adm-megan.bowen@contoso.com"
# The other people in the Playground's mock team (it wants exactly five).
_OTHERS = [
    ("29:megan-bowen", "Megan Bowen", "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a52", "megan.bowen@contoso.com"),
    (
        "29:isaiah-langer",
        "Isaiah Langer",
        "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a53",
        "isaiah.langer@contoso.com",
    ),
    (
        "29:patti-fernandez",
        "Patti Fernandez",
        "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a54",
        "patti.fernandez@contoso.com",
    ),
    (
        "29:lynne-robbins",
        "Lynne Robbins",
        "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a55",
        "lynne.robbins@contoso.com",
    ),
    ("29:nestor-wilke", "Nestor Wilke", "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a56", "nestor.wilke@contoso.com"),
]


def demo_scenario() -> dict[str, Any]:
    """The demo tenant: demo.yaml's people and alerts, plus the password spray of
    demo-campaign.yaml (one campaign card beside the individual cards)."""
    campaigns = yaml.safe_load(DEMO_CAMPAIGN.read_text(encoding="utf-8"))["campaigns"]
    return expand_campaigns({**load_scenario(DEMO_SCENARIO), "campaigns": campaigns})


def playground_config() -> dict[str, Any]:
    """The Playground's mock Teams: our team, our responder, five other people."""

    def person(user_id: str, name: str, object_id: str, upn: str) -> dict[str, str]:
        given, _, surname = name.partition(" ")
        return {
            "id": user_id,
            "name": name,
            "userPrincipleName": upn,  # sic: the Playground's schema spells it this way
            "aadObjectId": object_id,
            "givenName": given,
            "surname": surname,
            "email": upn,
        }

    return {
        "version": "0.1.1",
        "tenantId": TENANT_ID,
        "bot": BOT,
        "currentUser": person(RESPONDER["id"], RESPONDER["name"], RESPONDER["aadObjectId"], RESPONDER["upn"]),
        "users": [person(*other) for other in _OTHERS],
        "personalChat": {"id": "personal-chat-id"},
        "groupChat": {"id": "group-chat-id", "name": "SOC on-call"},
        "team": {
            "id": TEAM["id"],
            "name": TEAM["name"],
            "aadGroupId": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
            "channels": [],
        },
    }


@dataclass
class DemoStack:
    """The running demo: sandbox tenant, bot, and (optionally) the Playground."""

    workdir: Path
    bot_port: int = 3978
    playground_port: int = 56150
    with_playground: bool = True
    # The Teams transport (TEAMS_SDK): empty takes the environment's, else botbuilder.
    teams_sdk: str = ""
    tenant: SandboxTenant | None = None
    bot_url: str = ""
    playground_url: str = ""
    _runner: web.AppRunner | None = None
    _playground: asyncio.subprocess.Process | None = None
    _closers: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        """Start every part and wait until each answers."""
        if self.workdir.exists():
            shutil.rmtree(self.workdir)  # every demo starts from a fresh tenant and store
        self.workdir.mkdir(parents=True)
        self.tenant = SandboxTenant(demo_scenario(), cert_dir=self.workdir / "tenant")
        await self.tenant.start()
        if self.bot_port == 0:
            # The approval page's redirect URI names the port, so it is chosen before the bot starts.
            self.bot_port = _free_port()
        self.bot_url = f"http://127.0.0.1:{self.bot_port}"
        self.tenant.add_redirect_uri(f"{self.bot_url}/approve/callback")
        settings = load_settings(
            sandbox_mode=True,
            microsoft_app_id="",
            graph_tenant_id=self.tenant.tenant_id,
            graph_client_id=self.tenant.client_id,
            graph_client_secret=self.tenant.client_secret,
            graph_authority_host=self.tenant.authority_host,
            graph_base_url=self.tenant.graph_base_url,
            graph_ca_bundle=str(self.tenant.ca_pem_path),
            teams_channel_id=TEAM["id"],
            policy_file=str(DEMO_POLICY),
            store_url=f"sqlite:///{self.workdir / 'demo.db'}",
            poll_interval_seconds=5,
            approval_page_url=self.bot_url,
            **({"teams_sdk": self.teams_sdk} if self.teams_sdk else {}),
        )
        self._runner = web.AppRunner(create_app(settings))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.bot_port).start()
        if self.with_playground:
            await self._start_playground()

    async def _start_playground(self) -> None:
        if not PLAYGROUND_BIN.exists():
            raise RuntimeError(
                f"The Agents Playground is not installed ({PLAYGROUND_BIN} is missing): run `npm ci` "
                "in the project folder (`make demo` does it for you)."
            )
        folder = self.workdir / "playground"
        folder.mkdir()
        (folder / ".m365agentsplayground.yml").write_text(
            yaml.safe_dump(playground_config(), sort_keys=False)
        )
        output = folder / "playground.log"
        env = {
            **os.environ,
            "TEAMSAPPTESTER_BROWSER": "none",
            "M365_AGENTS_PLAYGROUND_LOGFILE": str(folder / "playground-internal.log"),
        }
        with output.open("wb") as sink:
            self._playground = await asyncio.create_subprocess_exec(
                str(PLAYGROUND_BIN),
                "-e",
                f"{self.bot_url}/api/messages",
                "-c",
                "msteams",
                "--disable-telemetry",
                "-p",
                str(self.playground_port),
                cwd=folder,
                env=env,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        port = await self._wait_for_playground(output)
        self.playground_port = port
        self.playground_url = f"http://127.0.0.1:{port}"

    async def _wait_for_playground(self, output: Path, limit: float = 60.0) -> int:
        assert self._playground is not None
        deadline = asyncio.get_running_loop().time() + limit
        async with aiohttp.ClientSession() as http:
            while True:
                if self._playground.returncode is not None:
                    raise RuntimeError(f"the Agents Playground exited; see {output}")
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"the Agents Playground did not start in {limit:.0f} s; see {output}")
                printed = await asyncio.to_thread(output.read_text, errors="replace")
                found = re.search(r"Listening on (\d+)", printed)
                if found:
                    port = int(found.group(1))
                    if await _playground_ready(http, port):
                        return port
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Stop the Playground, the bot and the tenant."""
        if self._playground is not None and self._playground.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._playground.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._playground.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._playground.pid, signal.SIGKILL)
                await self._playground.wait()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.tenant is not None:
            await self.tenant.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _playground_ready(http: aiohttp.ClientSession, port: int) -> bool:
    """The Playground prints its port before loading its mock data; ping and read the config back."""
    base = f"http://127.0.0.1:{port}"
    try:
        async with http.get(f"{base}/_debug/ping") as ping:
            if ping.status != 200:
                return False
        async with http.get(f"{base}/_internal/v1/config") as answer:
            config = json.loads(await answer.text())["config"]
    except (aiohttp.ClientError, ValueError, KeyError):
        return False
    return bool(config.get("currentUser", {}).get("aadObjectId") == RESPONDER["aadObjectId"])


async def run_demo(*, bot_port: int = 3978, playground: bool = True) -> int:
    """Run the demo until Ctrl-C; print where to look and what to click."""
    stack = DemoStack(workdir=ROOT / "demo-run", bot_port=bot_port, with_playground=playground)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stack.start()
        print(_instructions(stack), flush=True)
        await stop.wait()
    finally:
        await stack.stop()
    return 0


def _instructions(stack: DemoStack) -> str:
    lines = [
        "",
        "remediation-bot demo is running (authentication is OFF: local sandbox only).",
        f"  bot:            {stack.bot_url}/api/messages",
        f"  sandbox tenant: {stack.tenant.graph_base_url if stack.tenant else ''}",
    ]
    if stack.playground_url:
        lines += [
            f"  Teams (Agents Playground): {stack.playground_url}",
            "",
            f"Open {stack.playground_url} in a browser, then:",
            f"  1. In the left pane pick “{TEAM['name']} - General”: one card per compromised identity.",
            "  2. On a card, type a reason and click “Disable account”",
            f"     (you are {RESPONDER['name']}, an on-call responder in the demo policy).",
            "  3. The card turns to “Contained” and its thread shows the verified result.",
            "  4. Patrick O'Brien is a Helpdesk Administrator: disabling him needs two approvers, and the",
            "     demo policy asks the approval for a fresh MFA sign-in. Ask on his card as Alex; it shows",
            "     “awaiting second approver”. Then approve as Megan Bowen on the approval page: click",
            "     “Open approval page” on the card (or open the link below), sign in as",
            f"     {SECOND_APPROVER_UPN} with the password {DEMO_PASSWORD}, enter the code",
            f"     {DEMO_MFA_CODE} when asked for MFA, and click Approve. The card turns to “Contained”.",
            "     (Your browser warns about the sandbox's own certificate on the sign-in page: it is a",
            "     throwaway CA made for this run; continue.)",
            "  5. Break Glass is a protected account: the card says so and offers no action.",
            "  6. Grady Archie was disabled by automatic attack disruption: his card says “Already contained",
            "     automatically” and offers “Keep contained” or a roll-back that needs two approvers.",
            "  7. A password spray reached 25 people at once: they are one campaign card (storm mode), not",
            "     25 cards. Page through them, click “Show card” for one person's own card (in its thread),",
            "     or request a bulk action for a cluster: it waits for two approvers other than you.",
        ]
    lines += ["", f"Approval page: {stack.bot_url}/approve/<case id> (linked from every card)"]
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)
